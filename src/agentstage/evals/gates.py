"""Regression gates: ``--fail-under METRIC=VALUE`` (and ``--fail-over`` for costs and latencies).

A metric is a name from :data:`agentstage.evals.metrics.METRICS`, ``scorer.NAME`` (the scorer's
mean value) or ``scorer.NAME.pass_rate``, or ``category.NAME.METRIC``. Rates may be given as
fractions or percentages (``accuracy=0.8`` or ``accuracy=80%``). With no gate at all, the eval
passes only when every case passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from agentstage.errors import InvalidInputError
from agentstage.evals.metrics import BY_NAME, METRICS

Op = Literal[">=", "<="]


@dataclass(frozen=True)
class Gate:
    metric: str
    op: Op
    threshold: float
    text: str

    @property
    def flag(self) -> str:
        return "--fail-under" if self.op == ">=" else "--fail-over"


DEFAULT_GATE = Gate("accuracy", ">=", 1.0, "every case passes (no --fail-under given)")


def parse_gate(text: str, op: Op) -> Gate:
    flag = "--fail-under" if op == ">=" else "--fail-over"
    name, sep, raw = text.partition("=")
    name, raw = name.strip(), raw.strip()
    if not sep or not name or not raw:
        raise InvalidInputError(f"{flag} takes METRIC=VALUE, e.g. {flag} accuracy=0.8; got {text!r}")
    percent = raw.endswith("%")
    try:
        value = float(raw.removesuffix("%"))
    except ValueError:
        raise InvalidInputError(f"{flag} {text!r}: {raw!r} is not a number") from None
    _check_name(name, flag)
    return Gate(name, op, value / 100 if percent else value, text)


def _check_name(name: str, flag: str) -> None:
    parts = name.split(".")
    if (
        parts[0] == "scorer"
        and len(parts) in (2, 3)
        and parts[1]
        and (len(parts) == 2 or parts[2] == "pass_rate")
    ):
        return
    if parts[0] == "category" and len(parts) >= 3 and parts[-1] in BY_NAME:
        return
    if name in BY_NAME:
        return
    known = ", ".join(m.name for m in METRICS)
    raise InvalidInputError(
        f"{flag}: unknown metric {name!r} (one of: {known}; or scorer.NAME, scorer.NAME.pass_rate, "
        "category.NAME.METRIC)"
    )


def check_measurable(gates: Iterable[Gate], scorers: set[str], categories: set[str]) -> None:
    """Refuse, before anything runs, a gate on a metric this dataset cannot measure."""
    for gate in gates:
        parts = gate.metric.split(".")
        if parts[0] == "scorer" and gate.metric not in BY_NAME:
            if parts[1] not in scorers:
                raise InvalidInputError(f"{gate.flag} {gate.text!r}: no case uses the scorer {parts[1]!r}")
            continue
        if parts[0] == "category" and gate.metric not in BY_NAME:
            category = ".".join(parts[1:-1])
            if category not in categories:
                raise InvalidInputError(
                    f"{gate.flag} {gate.text!r}: the dataset has no category {category!r}"
                )
            parts = [parts[-1]]
        spec = BY_NAME[parts[-1]] if parts[0] != "scorer" else None
        if spec is not None and spec.requires and not spec.requires & scorers:
            needed = " or ".join(sorted(spec.requires))
            raise InvalidInputError(
                f"{gate.flag} {gate.text!r}: no case uses {needed}, so {spec.name} is not measured"
            )


def lookup(report: dict[str, Any], metric: str) -> float | None:
    """A metric's value in a report (``report.json`` as a dict); None when it was not measured."""
    parts = metric.split(".")
    if metric in report.get("metrics", {}):
        value = report["metrics"][metric].get("value")
    elif parts[0] == "scorer" and len(parts) in (2, 3):
        entry = report.get("scorers", {}).get(parts[1], {})
        value = entry.get("pass_rate" if len(parts) == 3 else "mean")
    elif parts[0] == "category" and len(parts) >= 3:
        category = report.get("categories", {}).get(".".join(parts[1:-1]), {})
        value = category.get("metrics", {}).get(parts[-1], {}).get("value")
    else:
        value = None
    return float(value) if isinstance(value, int | float) else None


def evaluate(gates: Iterable[Gate], report: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    for gate in gates:
        value = lookup(report, gate.metric)
        if value is None:
            passed, reason = False, "not measured"
        else:
            passed = value >= gate.threshold if gate.op == ">=" else value <= gate.threshold
            relation = {(">=", True): "≥", (">=", False): "<", ("<=", True): "≤", ("<=", False): ">"}
            reason = f"{value:g} {relation[gate.op, passed]} {gate.threshold:g}"
        results.append(
            {
                "metric": gate.metric,
                "op": gate.op,
                "threshold": gate.threshold,
                "value": value,
                "passed": passed,
                "measured": value is not None,
                "text": gate.text,
                "reason": reason,
            }
        )
    return results
