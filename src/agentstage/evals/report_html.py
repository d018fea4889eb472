"""``report.html``: one self-contained page (inline CSS, SVG charts, a few lines of inline script).

A Content-Security-Policy in the page itself forbids loading anything from elsewhere, so the
report opens offline and a model's answer (shown escaped) can never pull in or run anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape

from agentstage.evals.charts import Bar, bar_chart, histogram
from agentstage.evals.metrics import METRICS
from agentstage.evals.report import fmt, fmt_ci, metric_rows

MAX_OUTPUT_CHARS = 20_000
_env = Environment(
    loader=PackageLoader("agentstage.evals", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(report: dict[str, Any], run_url: str | None = None) -> str:
    template = _env.get_template("report.html.j2")
    return template.render(
        report=report,
        metrics=metric_rows(report["metrics"]),
        charts=_metric_charts(report),
        scorer_chart=_scorer_chart(report),
        latency_chart=_latency_chart(report),
        rows=_rows(report, run_url),
        fmt=fmt,
        fmt_ci=fmt_ci,
    )


def _ci(entry: dict[str, Any]) -> tuple[float, float] | None:
    ci = entry.get("ci")
    return (float(ci[0]), float(ci[1])) if ci else None


def _metric_charts(report: dict[str, Any]) -> list[str]:
    """One chart per measured metric: its value over all cases, then per category, with 95% CIs."""
    charts = []
    for spec in METRICS:
        overall = report["metrics"].get(spec.name)
        if not overall or overall["value"] is None:
            continue
        bars = [Bar("all cases", overall["value"], _ci(overall), highlight=True)]
        if len(report["categories"]) > 1:
            for name, category in report["categories"].items():
                entry = category["metrics"].get(spec.name)
                if entry and entry["value"] is not None:
                    bars.append(Bar(name, entry["value"], _ci(entry)))
        maximum = 1.0 if spec.unit == "fraction" else (100.0 if spec.unit == "bleu" else None)
        charts.append(bar_chart(spec.title, bars, _formatter(spec.unit), maximum))
    return charts


def _formatter(unit: str) -> Callable[[float], str]:
    return lambda value: fmt(value, unit)


def _scorer_chart(report: dict[str, Any]) -> str:
    bars = [Bar(name, s["mean"], _ci({"ci": s["mean_ci"]})) for name, s in report["scorers"].items()]
    return bar_chart("Mean score per scorer", bars, lambda v: fmt(v, "fraction"), 1.0)


def _latency_chart(report: dict[str, Any]) -> str:
    values = [
        a["latency_ms"] for c in report["cases"] for a in c["attempts"] if a.get("latency_ms") is not None
    ]
    return histogram("Run duration (runs per bin)", values, lambda v: fmt(v, "ms")) if len(values) > 1 else ""


def _cut(text: str) -> str:
    """Long answers are cut in the page (report.json keeps them whole)."""
    if len(text) <= MAX_OUTPUT_CHARS:
        return text
    return text[:MAX_OUTPUT_CHARS] + f"\n…[{len(text) - MAX_OUTPUT_CHARS:,} more characters in report.json]"


def _rows(report: dict[str, Any], run_url: str | None) -> list[dict[str, Any]]:
    """One row per attempt, with what the detail section below the table shows."""
    rows = []
    for case in report["cases"]:
        for attempt in case["attempts"]:
            run_id = attempt.get("run_id")
            anchor = f"run-{run_id}" if run_id else f"case-{case['case_id']}-{attempt['attempt']}"
            failing = [s["scorer"] for s in attempt["scores"] if not s["passed"]]
            rows.append(
                {
                    "case": case,
                    "attempt": attempt,
                    "anchor": anchor,
                    "run_id": run_id,
                    "external": run_url.replace("{run_id}", run_id) if run_url and run_id else None,
                    "failing": failing,
                    "expected": json.dumps(case["expected"], indent=2, ensure_ascii=False),
                    "output": _cut(attempt.get("output") or ""),
                    "tokens": attempt["usage"].get(
                        "total_tokens",
                        attempt["usage"].get("input_tokens", 0) + attempt["usage"].get("output_tokens", 0),
                    ),
                }
            )
    return rows
