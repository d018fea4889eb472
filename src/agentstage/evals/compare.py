"""``agent eval compare A B``: what changed between two evals, and whether it is a regression.

Each metric's delta comes with a p-value from the cases both evals ran: McNemar's exact test when
the per-case values are pass/fail, a paired sign-flip permutation test otherwise. A metric
regresses when it moved the wrong way by more than its threshold, relative to A's value (absolute
when A's value is 0). Cases that passed in A and fail in B (and the reverse) are listed.
"""

from __future__ import annotations

from typing import Any

from agentstage.evals.metrics import METRICS, MetricSpec
from agentstage.evals.results import CaseResult
from agentstage.evals.stats import mcnemar_exact, paired_permutation

DEFAULT_THRESHOLD = 0.05
SIGNIFICANCE = 0.05


def compare_reports(
    a: dict[str, Any],
    b: dict[str, Any],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    per_metric: dict[str, float] | None = None,
    ignore: set[str] | None = None,
) -> dict[str, Any]:
    per_metric, ignore = per_metric or {}, ignore or set()
    cases_a: dict[str, CaseResult] = {c.case_id: c for c in a["_cases"]}
    cases_b: dict[str, CaseResult] = {c.case_id: c for c in b["_cases"]}
    common = sorted(set(cases_a) & set(cases_b))
    rows = []
    for spec in METRICS:
        row = _row(
            spec.name,
            spec,
            a["metrics"].get(spec.name),
            b["metrics"].get(spec.name),
            common,
            cases_a,
            cases_b,
        )
        if row is not None:
            rows.append(row)
    for name in sorted(set(a.get("scorers", {})) | set(b.get("scorers", {}))):
        entry_a, entry_b = a["scorers"].get(name), b["scorers"].get(name)
        row = _row(
            f"scorer.{name}",
            None,
            {"value": entry_a["mean"]} if entry_a else None,
            {"value": entry_b["mean"]} if entry_b else None,
            common,
            cases_a,
            cases_b,
        )
        if row is not None:
            rows.append(row)
    for row in rows:
        limit = per_metric.get(row["metric"], threshold)
        row["threshold"] = limit
        row["regression"] = (
            row["metric"] not in ignore and row["worse"] and _beyond(row["a"], row["b"], limit)
        )
    flipped = {
        "pass_to_fail": [i for i in common if cases_a[i].passed and not cases_b[i].passed],
        "fail_to_pass": [i for i in common if not cases_a[i].passed and cases_b[i].passed],
    }
    regressions = [r["metric"] for r in rows if r["regression"]]
    return {
        "a": _identity(a),
        "b": _identity(b),
        "common_cases": len(common),
        "only_in_a": sorted(set(cases_a) - set(cases_b)),
        "only_in_b": sorted(set(cases_b) - set(cases_a)),
        "metrics": rows,
        "flipped": flipped,
        "regressions": regressions,
        "passed": not regressions,
    }


def _identity(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "eval_id": report.get("eval_id"),
        "dataset": report.get("dataset", {}).get("path"),
        "profile": report.get("run", {}).get("profile"),
        "created_at": report.get("created_at"),
    }


def _row(
    name: str,
    spec: MetricSpec | None,
    entry_a: dict[str, Any] | None,
    entry_b: dict[str, Any] | None,
    common: list[str],
    cases_a: dict[str, CaseResult],
    cases_b: dict[str, CaseResult],
) -> dict[str, Any] | None:
    value_a = entry_a.get("value") if entry_a else None
    value_b = entry_b.get("value") if entry_b else None
    if value_a is None and value_b is None:
        return None
    higher_is_better = spec.higher_is_better if spec else True
    key = spec.key if spec else name
    delta = value_b - value_a if value_a is not None and value_b is not None else None
    worse = delta is not None and (delta < 0 if higher_is_better else delta > 0)
    pairs = [
        (cases_a[i].values[key], cases_b[i].values[key])
        for i in common
        if key in cases_a[i].values and key in cases_b[i].values
    ]
    p_value, test = _significance(pairs)
    return {
        "metric": name,
        "unit": spec.unit if spec else "fraction",
        "higher_is_better": higher_is_better,
        "a": value_a,
        "b": value_b,
        "delta": round(delta, 6) if delta is not None else None,
        "relative": round(delta / abs(value_a), 6) if delta is not None and value_a else None,
        "worse": worse,
        "p_value": round(p_value, 6) if p_value is not None else None,
        "significant": p_value is not None and p_value < SIGNIFICANCE and delta != 0,
        "test": test,
        "paired_cases": len(pairs),
    }


def _significance(pairs: list[tuple[float, float]]) -> tuple[float | None, str | None]:
    if not pairs:
        return None, None
    if all(x in (0.0, 1.0) and y in (0.0, 1.0) for x, y in pairs):
        only_a = sum(1 for x, y in pairs if x == 1.0 and y == 0.0)
        only_b = sum(1 for x, y in pairs if x == 0.0 and y == 1.0)
        return mcnemar_exact(only_a, only_b), "mcnemar"
    return paired_permutation([x for x, _ in pairs], [y for _, y in pairs]), "permutation"


def _beyond(a: float | None, b: float | None, limit: float) -> bool:
    if a is None or b is None:
        return False
    change = abs(b - a)
    return change / abs(a) > limit if a else change > limit
