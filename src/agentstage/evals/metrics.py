"""Aggregate metrics: what each one measures, how it is computed over attempts, and which way is better.

One table (:data:`METRICS`) drives the report, the gates (``--fail-under``), and the comparison of
two evals, so a metric means the same thing everywhere. Rates are fractions (0..1, shown as %),
BLEU is on sacrebleu's 0..100 scale, latency in milliseconds, cost in US dollars.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from agentstage.evals.results import AttemptResult, CaseResult
from agentstage.evals.stats import mean_interval, percentile, wilson_interval

Kind = Literal["proportion", "mean", "percentile", "corpus"]
Unit = Literal["fraction", "ms", "tokens", "usd", "bleu", "ratio"]


@dataclass(frozen=True)
class MetricSpec:
    name: str
    title: str
    kind: Kind
    unit: Unit
    higher_is_better: bool
    description: str
    extract: Callable[[AttemptResult], float | None] | None = None
    q: float = 50
    requires: frozenset[str] = frozenset()  # scorers one of which must be in use for it to be measured
    case_key: str = ""  # the per-case value compared between two evals (default: the metric's name)

    @property
    def key(self) -> str:
        return self.case_key or self.name


def _ran(a: AttemptResult) -> bool:
    return a.run_id is not None


def _detail(names: tuple[str, ...], key: str, scale: float = 1.0) -> Callable[[AttemptResult], float | None]:
    def extract(a: AttemptResult) -> float | None:
        for score in a.scores:
            if score.scorer in names and isinstance(score.details.get(key), int | float):
                return float(score.details[key]) * scale
        return None

    return extract


def _value(name: str) -> Callable[[AttemptResult], float | None]:
    def extract(a: AttemptResult) -> float | None:
        score = a.score_of(name)
        return score.value if score is not None and score.label != "error" else None

    return extract


def _schema_ok(a: AttemptResult) -> float | None:
    score = a.score_of("json_schema")
    return float(score.passed) if score is not None else None


def _json_error(a: AttemptResult) -> float | None:
    for score in a.scores:
        if score.scorer in ("json_valid", "json_schema"):
            return 0.0 if score.details.get("json_valid") else 1.0
    return None


def _efficiency(a: AttemptResult) -> float | None:
    used = a.usage.get("output_tokens", 0)
    return a.expected_tokens / used if a.expected_tokens and used > 0 else None


PRF = frozenset({"precision", "recall", "f1"})
METRICS: list[MetricSpec] = [
    MetricSpec("accuracy", "Accuracy", "proportion", "fraction", True, "Share of runs whose scorers all passed.",
               lambda a: float(a.passed)),
    MetricSpec("error_rate", "Run error rate", "proportion", "fraction", False,
               "Share of runs that did not complete (failed, cancelled, rejected, missing).",
               lambda a: float(a.status != "completed")),
    MetricSpec("precision", "Precision", "mean", "fraction", True, "Mean precision (labels or tokens).",
               _detail(("precision", "recall", "f1"), "precision"), requires=PRF),
    MetricSpec("recall", "Recall", "mean", "fraction", True, "Mean recall (labels or tokens).",
               _detail(("precision", "recall", "f1"), "recall"), requires=PRF),
    MetricSpec("f1", "F1", "mean", "fraction", True, "Mean F1 (labels or tokens).",
               _detail(("precision", "recall", "f1"), "f1"), requires=PRF),
    MetricSpec("bleu", "BLEU", "mean", "bleu", True, "Mean sentence BLEU (0..100).",
               _detail(("bleu",), "bleu"), requires=frozenset({"bleu"})),
    MetricSpec("corpus_bleu", "Corpus BLEU", "corpus", "bleu", True,
               "Corpus BLEU over every run scored with bleu (0..100).", requires=frozenset({"bleu"}), case_key="bleu"),
    MetricSpec("rouge_l", "ROUGE-L", "mean", "fraction", True, "Mean ROUGE-L F1.", _value("rouge_l"),
               requires=frozenset({"rouge_l"})),
    MetricSpec("judge_score", "Judge score", "mean", "fraction", True, "Mean llm_judge score.",
               _value("llm_judge"), requires=frozenset({"llm_judge"})),
    MetricSpec("schema_compliance", "Schema compliance", "proportion", "fraction", True,
               "Share of json_schema runs whose answer matched the schema.", _schema_ok,
               requires=frozenset({"json_schema"})),
    MetricSpec("json_error_rate", "JSON error rate", "proportion", "fraction", False,
               "Share of runs expected to answer in JSON whose answer was not valid JSON.", _json_error,
               requires=frozenset({"json_valid", "json_schema"})),
    MetricSpec("latency_p50_ms", "Latency p50", "percentile", "ms", False, "Median run duration.",
               lambda a: a.latency_ms if _ran(a) else None, q=50, case_key="latency_ms"),
    MetricSpec("latency_p95_ms", "Latency p95", "percentile", "ms", False, "95th percentile of run duration.",
               lambda a: a.latency_ms if _ran(a) else None, q=95, case_key="latency_ms"),
    MetricSpec("latency_mean_ms", "Latency mean", "mean", "ms", False, "Mean run duration.",
               lambda a: a.latency_ms if _ran(a) else None, case_key="latency_ms"),
    MetricSpec("tokens_per_case", "Tokens per case", "mean", "tokens", False, "Mean tokens (input + output) per run.",
               lambda a: float(a.total_tokens) if _ran(a) else None),
    MetricSpec("token_efficiency", "Token efficiency", "mean", "ratio", True,
               "Mean of expected answer length / output tokens used (expected length ≈ characters / 4).",
               _efficiency),
    MetricSpec("cost_per_query", "Cost per query", "mean", "usd", False, "Mean cost of a run in US dollars.",
               lambda a: a.cost if _ran(a) else None),
]  # fmt: skip
BY_NAME = {m.name: m for m in METRICS}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def measure(spec: MetricSpec, attempts: list[AttemptResult]) -> dict[str, Any]:
    """One metric over some attempts: ``{"value", "ci": [low, high] | None, "n"}``."""
    if spec.kind == "corpus":
        return _corpus_bleu(attempts)
    assert spec.extract is not None
    values = [v for v in (spec.extract(a) for a in attempts) if v is not None]
    if not values:
        return {"value": None, "ci": None, "n": 0}
    if spec.kind == "percentile":
        return {"value": _rounded(percentile(values, spec.q)), "ci": None, "n": len(values)}
    interval = (
        wilson_interval(int(sum(values)), len(values)) if spec.kind == "proportion" else mean_interval(values)
    )
    ci = [_rounded(max(interval[0], 0.0)), _rounded(min(interval[1], _upper(spec)))] if interval else None
    return {"value": _rounded(statistics.fmean(values)), "ci": ci, "n": len(values)}


def _upper(spec: MetricSpec) -> float:
    """Every metric is non-negative; rates stop at 1 and BLEU at 100, and so do their intervals."""
    return {"fraction": 1.0, "bleu": 100.0}.get(spec.unit, math.inf)


def _corpus_bleu(attempts: list[AttemptResult]) -> dict[str, Any]:
    from sacrebleu.metrics.bleu import BLEU

    pairs = []
    for a in attempts:
        score = a.score_of("bleu")
        if score is not None and score.details.get("references"):
            pairs.append((a.output or "", list(score.details["references"]), score.details))
    if not pairs:
        return {"value": None, "ci": None, "n": 0}
    width = max(len(refs) for _, refs, _ in pairs)
    streams = [[refs[i] if i < len(refs) else None for _, refs, _ in pairs] for i in range(width)]
    first = pairs[0][2]
    metric = BLEU(tokenize=first.get("tokenize", "13a"), lowercase=bool(first.get("lowercase", False)))
    result = metric.corpus_score([h for h, _, _ in pairs], streams)  # type: ignore[arg-type]
    return {"value": _rounded(result.score), "ci": None, "n": len(pairs)}


def summarize(attempts: list[AttemptResult]) -> dict[str, dict[str, Any]]:
    """Every metric over these attempts; metrics nothing measured are left out."""
    measured = {spec.name: measure(spec, attempts) for spec in METRICS}
    return {name: value for name, value in measured.items() if value["n"]}


def scorer_summary(attempts: list[AttemptResult]) -> dict[str, dict[str, Any]]:
    """Per scorer: how many runs it scored, its mean value (95% CI) and pass rate (Wilson 95% CI)."""
    by_scorer: dict[str, list[tuple[float, bool]]] = {}
    for attempt in attempts:
        for score in attempt.scores:
            by_scorer.setdefault(score.scorer, []).append((score.value, score.passed))
    summary = {}
    for name, pairs in sorted(by_scorer.items()):
        values = [v for v, _ in pairs]
        passed = sum(p for _, p in pairs)
        mean_ci, pass_ci = mean_interval(values), wilson_interval(passed, len(pairs))
        summary[name] = {
            "n": len(pairs),
            "mean": _rounded(statistics.fmean(values)),
            "mean_ci": [_rounded(max(mean_ci[0], 0.0)), _rounded(min(mean_ci[1], 1.0))] if mean_ci else None,
            "pass_rate": _rounded(passed / len(pairs)),
            "pass_rate_ci": [_rounded(x) for x in pass_ci] if pass_ci else None,
        }
    return summary


def case_values(result: CaseResult) -> dict[str, float]:
    """A case's own value of each metric (the mean over its attempts), paired between two evals."""
    values: dict[str, float] = {}
    for spec in METRICS:
        if spec.extract is None or spec.key in values:
            continue
        found = [v for v in (spec.extract(a) for a in result.attempts) if v is not None]
        if found:
            values[spec.key] = round(statistics.fmean(found), 6)
    for name in {s.scorer for a in result.attempts for s in a.scores}:
        scored = [s.value for a in result.attempts for s in a.scores if s.scorer == name]
        values[f"scorer.{name}"] = round(statistics.fmean(scored), 6)
    return values


def all_attempts(cases: Iterable[CaseResult]) -> list[AttemptResult]:
    return [a for c in cases for a in c.attempts]
