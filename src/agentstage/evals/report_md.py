"""``report.md``: the summary tables of an eval, for a pull request comment or a CI log."""

from __future__ import annotations

from typing import Any

from agentstage.evals.report import fmt, fmt_ci, metric_rows

MAX_CELL = 160


def cell(text: Any) -> str:
    """Table-safe text: one line, pipes escaped, long values cut."""
    flat = " ".join(str(text).split()).replace("|", "\\|")
    return flat if len(flat) <= MAX_CELL else flat[: MAX_CELL - 1] + "…"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def render_markdown(report: dict[str, Any]) -> str:
    summary, run = report["summary"], report["run"]
    verdict = "PASSED" if report["passed"] else "FAILED"
    lines = [
        f"# Eval report: {cell(report['dataset']['path'])}",
        "",
        f"**{verdict}** · {summary['passed']}/{summary['cases']} cases passed · eval `{report['eval_id']}` · "
        f"profile `{run['profile']}` · mode `{run['mode']}` · repeat {run['repeat']} · "
        f"{report['duration_s']:.1f} s · {report['created_at']}",
        "",
    ]
    if run.get("replay_of"):
        lines += [f"Re-scored from the recorded runs of eval `{run['replay_of']}` (no model called).", ""]
    if run.get("interrupted"):
        lines += ["**Interrupted**: runs that had not finished were cancelled.", ""]
    lines += ["## Metrics", ""]
    lines += _table(["metric", "value", "95% CI", "n"], [list(r[1:]) for r in metric_rows(report["metrics"])])
    if report["gates"]:
        lines += ["## Gates", ""]
        rows = [[g["text"], "pass" if g["passed"] else "**FAIL**", g["reason"]] for g in report["gates"]]
        lines += _table(["gate", "result", "value"], rows)
    lines += ["## By category", ""]
    rows = []
    for name, entry in report["categories"].items():
        metrics = entry["metrics"]
        acc = metrics.get("accuracy", {})
        rows.append(
            [
                name,
                f"{entry['passed']}/{entry['cases']}",
                fmt(acc.get("value"), "fraction"),
                fmt_ci(acc.get("ci"), "fraction"),
                fmt(metrics.get("latency_p50_ms", {}).get("value"), "ms"),
                fmt(metrics.get("tokens_per_case", {}).get("value"), "tokens"),
                fmt(metrics.get("cost_per_query", {}).get("value"), "usd"),
            ]
        )
    lines += _table(
        ["category", "passed", "accuracy", "95% CI", "latency p50", "tokens/case", "cost/query"], rows
    )
    lines += ["## Scorers", ""]
    rows = [
        [
            name,
            s["n"],
            fmt(s["mean"], "fraction"),
            fmt_ci(s["mean_ci"], "fraction"),
            fmt(s["pass_rate"], "fraction"),
        ]
        for name, s in report["scorers"].items()
    ]
    lines += _table(["scorer", "runs", "mean", "95% CI", "pass rate"], rows)
    failed = [c for c in report["cases"] if not c["passed"]]
    if failed:
        lines += ["## Failed cases", ""]
        rows = []
        for case in failed:
            for attempt in case["attempts"]:
                if attempt["passed"]:
                    continue
                reasons = [f"{s['scorer']}: {s['explanation']}" for s in attempt["scores"] if not s["passed"]]
                if attempt.get("error"):
                    reasons.insert(0, f"{attempt['status']}: {attempt['error'].get('message')}")
                rows.append(
                    [case["case_id"], case["category"], attempt.get("run_id") or "—", "; ".join(reasons)]
                )
        lines += _table(["case", "category", "run", "why"], rows)
    invalid = report["dataset"]["invalid"]
    if invalid:
        lines += ["## Invalid cases (not run)", ""]
        lines += [
            f"- `{cell(p['file'])}:{p['line']}` `{cell(p['field'])}`: {cell(p['message'])}" for p in invalid
        ]
        lines.append("")
    lines += [
        "Rates are in %, BLEU on sacrebleu's 0-100 scale; 95% CIs are Student-t for means, Wilson for rates.",
        "",
    ]
    return "\n".join(lines)
