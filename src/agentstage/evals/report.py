"""Reports: ``report.json`` (for machines and for ``compare`` / ``--replay``), ``report.md`` (summary
tables) and ``report.html`` (one self-contained page: inline CSS, SVG and a few lines of script;
no external script, font or CDN, so it opens offline)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agentstage import __version__
from agentstage.errors import InvalidInputError
from agentstage.evals.gates import Gate, evaluate
from agentstage.evals.harness import EvalOptions, RecordedAttempt
from agentstage.evals.metrics import BY_NAME, METRICS, all_attempts, scorer_summary, summarize
from agentstage.evals.results import RESULT_KIND, CaseResult, write_json
from agentstage.evals.sources import Problem

REPORT_KIND = "agentstage.eval.report"
# 1: first version: summary, metrics (value, ci, n), scorers, categories, gates, cases.
REPORT_SCHEMA_VERSION = 1


@dataclass
class EvalRunInfo:
    """What the report says about how the eval was run."""

    eval_id: str
    dataset: Path
    options: EvalOptions
    started_at: datetime
    finished_at: datetime
    results_dir: Path | None = None
    replay_of: str | None = None
    interrupted: bool = False


def build_report(
    info: EvalRunInfo, cases: list[CaseResult], problems: list[Problem], gates: list[Gate]
) -> dict[str, Any]:
    attempts = all_attempts(cases)
    passed = sum(c.passed for c in cases)
    report: dict[str, Any] = {
        "kind": REPORT_KIND,
        "schema_version": REPORT_SCHEMA_VERSION,
        "agentstage_version": __version__,
        "eval_id": info.eval_id,
        "created_at": info.started_at.isoformat(),
        "finished_at": info.finished_at.isoformat(),
        "duration_s": round((info.finished_at - info.started_at).total_seconds(), 3),
        "dataset": {
            "path": str(info.dataset),
            "cases": len(cases),
            "invalid": [p.to_dict() for p in problems],
        },
        "run": {
            "profile": info.options.profile,
            "mode": info.options.mode,
            "parallel": info.options.parallel,
            "repeat": info.options.repeat,
            "judge_profile": info.options.judge_profile,
            "replay_of": info.replay_of,
            "interrupted": info.interrupted,
            "results_dir": str(info.results_dir) if info.results_dir else None,
        },
        "summary": {
            "cases": len(cases),
            "passed": passed,
            "failed": len(cases) - passed,
            "pass_rate": round(passed / len(cases), 6) if cases else None,
            "attempts": len(attempts),
            "attempts_passed": sum(a.passed for a in attempts),
            "run_errors": sum(a.status != "completed" for a in attempts),
            "total_tokens": sum(a.total_tokens for a in attempts),
            "total_cost": round(sum(a.cost for a in attempts), 10),
        },
        "metrics": summarize(attempts),
        "scorers": scorer_summary(attempts),
        "categories": _categories(cases),
        "cases": [c.model_dump(mode="json") for c in cases],
    }
    report["gates"] = evaluate(gates, report)
    report["passed"] = all(g["passed"] for g in report["gates"]) and not problems
    return report


def _categories(cases: list[CaseResult]) -> dict[str, Any]:
    grouped: dict[str, list[CaseResult]] = {}
    for case in cases:
        grouped.setdefault(case.category, []).append(case)
    return {
        name: {
            "cases": len(members),
            "passed": sum(c.passed for c in members),
            "metrics": summarize(all_attempts(members)),
        }
        for name, members in sorted(grouped.items())
    }


# reading -------------------------------------------------------------------------------------------


def report_path(path: Path) -> Path:
    return path / "report.json" if path.is_dir() else path


def load_report(path: Path) -> dict[str, Any]:
    """A report.json (or a directory holding one), validated; a clear usage error otherwise."""
    file = report_path(Path(path))
    if not file.is_file():
        raise InvalidInputError(
            f"no eval report at {str(file)!r} (run `agent eval run ... --report DIR` first)"
        )
    try:
        report = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidInputError(f"cannot read eval report {str(file)!r}: {error}") from None
    if not isinstance(report, dict) or report.get("kind") != REPORT_KIND:
        raise InvalidInputError(f"{str(file)!r} is not an agentstage eval report")
    version = report.get("schema_version")
    if not isinstance(version, int) or version > REPORT_SCHEMA_VERSION:
        raise InvalidInputError(
            f"eval report {str(file)!r} has schema version {version!r}; this agentstage reads up to "
            f"{REPORT_SCHEMA_VERSION} (upgrade agentstage)"
        )
    try:
        report["_cases"] = [CaseResult.model_validate(c) for c in report.get("cases", [])]
    except ValidationError as error:
        raise InvalidInputError(
            f"eval report {str(file)!r} has an invalid case: {error.errors()[0]['msg']}"
        ) from None
    return report


def recorded_attempts(path: Path) -> tuple[dict[str, list[RecordedAttempt]], str]:
    """The runs of an earlier eval, by case id: from its report.json, or from a results directory
    of ``*.run.json`` files. Returns them and the earlier eval's id (or the path)."""
    path = Path(path)
    if report_path(path).is_file():
        report = load_report(path)
        cases: list[CaseResult] = report["_cases"]
        source = str(report.get("eval_id") or path)
    elif path.is_dir():
        cases = _read_result_files(path)
        source = str(path)
    else:
        raise InvalidInputError(f"--replay {str(path)!r}: no report.json or *.run.json results there")
    recorded: dict[str, list[RecordedAttempt]] = {}
    for case in cases:
        recorded[case.case_id] = [
            RecordedAttempt(
                attempt=a.attempt,
                run_id=a.run_id,
                judge_run_ids=[
                    str(s.details["judge_run_id"])
                    for s in a.scores
                    if s.scorer == "llm_judge" and s.details.get("judge_run_id")
                ],
            )
            for a in case.attempts
        ]
    return recorded, source


def _read_result_files(directory: Path) -> list[CaseResult]:
    cases = []
    for file in sorted(directory.glob("*.run.json")):
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            if isinstance(data, dict) and data.get("kind") == RESULT_KIND:
                cases.append(CaseResult.model_validate(data))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as error:
            raise InvalidInputError(f"cannot read result file {str(file)!r}: {error}") from None
    if not cases:
        raise InvalidInputError(f"--replay {str(directory)!r}: no report.json or *.run.json results there")
    return cases


# formatting ----------------------------------------------------------------------------------------


def fmt(value: float | None, unit: str) -> str:
    """A metric value for people: rates as %, BLEU to 2 places, latency in ms, cost in dollars."""
    if value is None:
        return "—"
    if unit == "fraction":
        return f"{value * 100:.1f}%"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "usd":
        return f"${value:.6f}"
    if unit == "tokens":
        return f"{value:,.1f}"
    return f"{value:.2f}" if unit == "bleu" else f"{value:.3f}"


def fmt_ci(ci: list[float] | None, unit: str) -> str:
    return f"{fmt(ci[0], unit)} to {fmt(ci[1], unit)}" if ci else "—"


def unit_of(metric: str) -> str:
    name = metric.split(".")[-1]
    if metric.startswith("scorer."):
        return "fraction"
    return BY_NAME[name].unit if name in BY_NAME else "ratio"


def metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str, int]]:
    """(name, title, value, 95% CI, n) for each measured metric, in the table's order."""
    rows = []
    for spec in METRICS:
        entry = metrics.get(spec.name)
        if entry:
            rows.append(
                (
                    spec.name,
                    spec.title,
                    fmt(entry["value"], spec.unit),
                    fmt_ci(entry["ci"], spec.unit),
                    entry["n"],
                )
            )
    return rows


# writing -------------------------------------------------------------------------------------------


def write_reports(report: dict[str, Any], directory: Path, run_url: str | None = None) -> list[Path]:
    """report.json, report.md and report.html in ``directory``; returns their paths."""
    from agentstage.evals.report_html import render_html
    from agentstage.evals.report_md import render_markdown

    directory.mkdir(parents=True, exist_ok=True)
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    paths = [directory / "report.json", directory / "report.md", directory / "report.html"]
    write_json(paths[0], public)
    _write_text(paths[1], render_markdown(public))
    _write_text(paths[2], render_html(public, run_url))
    return paths


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
