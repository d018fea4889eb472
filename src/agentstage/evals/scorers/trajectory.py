"""Trajectory scorers read the run's own event log: which tools it called, in what order, in how many steps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentstage.evals.scorers.base import Sample, Score, Scorer, register


def same_tool(expected: str, called: str) -> bool:
    """``math.calculate`` matches ``math.calculate:v1``; a versioned name must match exactly."""
    return called == expected or (":" not in expected and called.split(":", 1)[0] == expected)


@register
class ToolUsed(Scorer):
    name = "tool_used"
    summary = (
        "The run called every tool in `tools` (`match: all`, the default) or at least one (`match: any`)."
    )
    tools: list[str] = Field(min_length=1)
    match: Literal["all", "any"] = "all"

    async def score(self, sample: Sample) -> Score:
        called = sample.tool_calls()
        used = [t for t in self.tools if any(same_tool(t, c) for c in called)]
        missing = [t for t in self.tools if t not in used]
        value = (1.0 if used else 0.0) if self.match == "any" else len(used) / len(self.tools)
        shown = ", ".join(called) or "no tool"
        text = f"called {shown}" + (f"; missing {missing!r}" if missing else "")
        return self.verdict(value, text, called=called, missing=missing)


@register
class ToolSequence(Scorer):
    name = "tool_sequence"
    summary = (
        "The run called the tools of `sequence` in this order (other calls in between allowed, "
        "unless `exact: true`)."
    )
    sequence: list[str] = Field(min_length=1)
    exact: bool = False

    def _follows(self, called: list[str]) -> bool:
        if self.exact:
            return len(called) == len(self.sequence) and all(
                same_tool(e, c) for e, c in zip(self.sequence, called, strict=True)
            )
        position = 0
        for name in called:
            if position < len(self.sequence) and same_tool(self.sequence[position], name):
                position += 1
        return position == len(self.sequence)

    async def score(self, sample: Sample) -> Score:
        called = sample.tool_calls()
        ok = self._follows(called)
        wanted = " → ".join(self.sequence)
        shown = " → ".join(called) or "no tool"
        text = f"called {shown}" + ("" if ok else f"; expected {'exactly ' if self.exact else ''}{wanted}")
        return self.verdict(1 if ok else 0, text, called=called)


@register
class MaxSteps(Scorer):
    name = "max_steps"
    summary = "The run took at most `max_steps` steps (each `step.started` event: a model turn, a tool call, a plan)."
    max_steps: int = Field(ge=1)

    async def score(self, sample: Sample) -> Score:
        steps = len(sample.steps())
        within = steps <= self.max_steps
        relation = "≤" if within else ">"
        return self.verdict(1 if within else 0, f"{steps} steps {relation} {self.max_steps}", steps=steps)
