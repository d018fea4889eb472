"""What a scorer sees (a :class:`Sample`: one finished run of one case) and what it returns (a :class:`Score`).

A scorer is a small pydantic model whose fields are its parameters, taken from the case's
``expected`` object or its ``scorers`` list, and validated when the dataset loads, so a typo in a
case is reported with its file, line and field before any run starts. It has one method,
:meth:`Scorer.score`, and is registered by name with :func:`register`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from agentstage.core.events import RunEvent
    from agentstage.evals.dataset import EvalCase


class Score(BaseModel):
    """One scorer's verdict on one run: ``value`` in 0..1, and whether it reaches the threshold."""

    scorer: str
    value: float
    passed: bool
    label: str
    explanation: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class JudgeVerdict:
    """What a judge run answered: the run that graded, and its raw output."""

    run_id: str | None
    output: str
    status: str
    error: str | None = None


class Judge(Protocol):
    """Grades with a model: live (a judge run through the run service) or from a recorded verdict."""

    async def __call__(self, prompt: str, profile: str | None) -> JudgeVerdict: ...


@dataclass(frozen=True)
class Sample:
    """One finished run of one case, as the scorers see it."""

    case: EvalCase
    output: str
    status: str
    run_id: str | None = None
    error: dict[str, Any] | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: float = 0.0
    latency_ms: float | None = None
    events: Sequence[RunEvent] = ()
    judge: Judge | None = None

    @property
    def query(self) -> str:
        return self.case.input.query

    def tool_calls(self) -> list[str]:
        """Tool ids (``name:version``) in the order the run called them."""
        return [str(event.data.get("tool", "")) for event in self.events if event.type == "tool.call"]

    def steps(self) -> list[dict[str, Any]]:
        return [dict(event.data) for event in self.events if event.type == "step.started"]


class Scorer(BaseModel):
    """Base of every scorer. Subclasses set ``name`` and ``summary`` and implement :meth:`score`.

    ``threshold`` is the value a score must reach to pass; when a case does not give one, its
    ``constraints.required_accuracy`` is used, then the scorer's ``default_threshold``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    default_threshold: ClassVar[float] = 1.0
    #: Keys of a case's ``expected`` object this scorer reads besides its own fields.
    also_reads: ClassVar[frozenset[str]] = frozenset()
    threshold: float | None = Field(default=None, gt=0, le=1)

    async def score(self, sample: Sample) -> Score:
        raise NotImplementedError

    def verdict(self, value: float, explanation: str, label: str | None = None, **details: Any) -> Score:
        """Turn a value into a Score: passed when it reaches the threshold."""
        value = min(1.0, max(0.0, float(value)))
        passed = value >= self.effective_threshold - 1e-12
        return Score(
            scorer=self.name,
            value=round(value, 6),
            passed=passed,
            label=label or ("pass" if passed else "fail"),
            explanation=explanation,
            details=details,
        )

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else self.default_threshold

    @classmethod
    def parameter_names(cls) -> frozenset[str]:
        """Every key a case may give this scorer: field names, their aliases, and ``also_reads``."""
        names = set(cls.also_reads)
        for name, info in cls.model_fields.items():
            names.add(info.alias or name)
        return frozenset(names)


S = TypeVar("S", bound=type[Scorer])
SCORERS: dict[str, type[Scorer]] = {}


def register(cls: S) -> S:
    """Make a scorer class available by its ``name`` (in datasets and ``agent eval scorers``)."""
    if not cls.name:
        raise ValueError(f"scorer class {cls.__name__!r} has no name")
    SCORERS[cls.name] = cls
    return cls


def short(text: str, limit: int = 80) -> str:
    """A value quoted for an explanation: ``repr``, cut to ``limit`` characters."""
    quoted = repr(text)
    return quoted if len(quoted) <= limit else quoted[: limit - 4] + "…" + quoted[-1]


_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n(.*?)\n?\s*```\s*$", re.S)


def parse_json_output(output: str, allow_fence: bool = True) -> tuple[bool, Any, str]:
    """Parse an answer as JSON, tolerating a Markdown code fence around it unless told not to.

    Returns (ok, value, error message)."""
    text = output.strip()
    fenced = _FENCE.match(text) if allow_fence else None
    if fenced:
        text = fenced.group(1).strip()
    try:
        return True, json.loads(text), ""
    except json.JSONDecodeError as error:
        return False, None, f"{error.msg} at line {error.lineno} column {error.colno}"
