"""Budget scorers: latency, tokens and cost of the run stay within the case's constraints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentstage.evals.scorers.base import Sample, Score, Scorer, register


@register
class Latency(Scorer):
    name = "latency"
    summary = "The run took at most `max_latency_ms` (from start to end, queueing excluded)."
    max_latency_ms: float = Field(gt=0)

    async def score(self, sample: Sample) -> Score:
        if sample.latency_ms is None:
            return self.verdict(0, "the run has no recorded duration", label="unknown")
        within = sample.latency_ms <= self.max_latency_ms
        relation = "≤" if within else ">"
        return self.verdict(
            1 if within else 0,
            f"{sample.latency_ms:.0f} ms {relation} {self.max_latency_ms:g} ms",
            latency_ms=sample.latency_ms,
        )


@register
class Tokens(Scorer):
    name = "tokens"
    summary = "The run used at most `max_tokens` tokens (`count`: total, the default, input or output)."
    max_tokens: int = Field(ge=1)
    count: Literal["total", "input", "output"] = "total"

    async def score(self, sample: Sample) -> Score:
        used = used_tokens(sample.usage, self.count)
        within = used <= self.max_tokens
        relation = "≤" if within else ">"
        return self.verdict(
            1 if within else 0, f"{used} {self.count} tokens {relation} {self.max_tokens}", tokens=used
        )


def used_tokens(usage: dict[str, int], count: str = "total") -> int:
    inputs, outputs = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
    if count == "input":
        return inputs
    if count == "output":
        return outputs
    return int(usage.get("total_tokens", inputs + outputs))


@register
class Cost(Scorer):
    name = "cost"
    summary = "The run cost at most `max_cost` US dollars (from the configured pricing)."
    max_cost: float = Field(ge=0)

    async def score(self, sample: Sample) -> Score:
        within = sample.cost <= self.max_cost
        relation = "≤" if within else ">"
        return self.verdict(
            1 if within else 0, f"${sample.cost:.6f} {relation} ${self.max_cost:g}", cost=sample.cost
        )
