"""``agent eval``: run a dataset of cases through the agent, score it, gate on it, compare two evals."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, fail, load_settings, open_service, run_command
from agentstage.interfaces.cli.options import ModeOption, ProfileOption

if TYPE_CHECKING:
    from rich.console import Console

    from agentstage.evals.dataset import Dataset
    from agentstage.evals.gates import Gate
    from agentstage.evals.harness import EvalHarness, RecordedAttempt
    from agentstage.evals.results import CaseResult

app = typer.Typer(
    help="Measure answer quality: run a dataset through the agent, score every answer, gate on the metrics.",
    no_args_is_help=True,
)

EXAMPLES = """
Examples:

  agent eval run samples/eval                                 # every case under the folder
  agent eval run cases.jsonl --parallel 8 --repeat 3 --fail-under accuracy=0.9
  agent eval run samples/eval --fail-under accuracy=80% --fail-over latency_p95_ms=5000
  agent eval run samples/eval --replay samples/eval/results    # re-score recorded runs, no model
  agent eval compare before/ after/ --threshold 0.02
"""


@app.command("run", epilog=EXAMPLES)
def run(
    path: Annotated[Path, typer.Argument(help="A dataset: a directory, a .yaml/.yml, .jsonl or .json file.")],
    profile: ProfileOption = None,
    mode: ModeOption = None,
    parallel: Annotated[int, typer.Option(min=1, max=256, help="Runs at the same time.")] = 4,
    repeat: Annotated[int, typer.Option(min=1, max=100, help="Runs per case (pass only if all pass).")] = 1,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write report.json, report.md and report.html here. Default: the results dir."
        ),
    ] = None,
    results: Annotated[
        Path | None,
        typer.Option("--results", help="Write one NAME.run.json per case here. Default: PATH's results/."),
    ] = None,
    fail_under: Annotated[
        list[str] | None,
        typer.Option(
            "--fail-under", metavar="METRIC=VALUE", help="Fail (exit 1) when METRIC is below VALUE."
        ),
    ] = None,
    fail_over: Annotated[
        list[str] | None,
        typer.Option("--fail-over", metavar="METRIC=VALUE", help="Fail (exit 1) when METRIC is above VALUE."),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay", help="Re-score the runs an earlier eval recorded (its report or results dir)."
        ),
    ] = None,
    judge_profile: Annotated[
        str | None, typer.Option("--judge-profile", help="Profile for llm_judge.")
    ] = None,
    category: Annotated[
        list[str] | None, typer.Option("--category", help="Only this category (repeatable).")
    ] = None,
    case: Annotated[list[str] | None, typer.Option("--case", help="Only this case id (repeatable).")] = None,
    run_url: Annotated[
        str | None,
        typer.Option("--run-url", help="Link runs in report.html to this URL ({run_id} is replaced)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print report.json to stdout instead of tables.")
    ] = False,
) -> None:
    """Run every case of a dataset as a normal agent run, score it, and write the reports.

    Each case is recorded like any run (events, trace, snapshot); its run id is in its result.
    Metrics for --fail-under/--fail-over: accuracy, error_rate, precision, recall, f1, bleu,
    corpus_bleu, rouge_l, judge_score, schema_compliance, json_error_rate, latency_p50_ms,
    latency_p95_ms, latency_mean_ms, tokens_per_case, token_efficiency, cost_per_query,
    scorer.NAME[.pass_rate], category.NAME.METRIC. Without a gate every case must pass.

    Exit codes: 0 every gate passed, 1 a gate failed, 2 usage error or an invalid case (the valid
    cases still run and are reported), 130 interrupted (finished cases are kept).
    """
    from agentstage.errors import UserError
    from agentstage.evals.gates import DEFAULT_GATE, check_measurable, parse_gate

    try:
        gates = [parse_gate(t, ">=") for t in fail_under or []] + [
            parse_gate(t, "<=") for t in fail_over or []
        ]
    except UserError as error:
        fail(error.message)
    if run_url is not None and not (run_url.startswith(("http://", "https://")) and "{run_id}" in run_url):
        fail(f"--run-url must be an http(s) URL containing {{run_id}}, got {run_url!r}")
    if replay is not None and (profile or mode or repeat != 1):
        fail("--replay re-scores recorded runs: --profile, --mode and --repeat do not apply")
    dataset = _load(path, category, case)
    try:
        check_measurable(gates, {s.name for c in dataset.cases for s in c.scorers}, set(dataset.categories()))
    except UserError as error:
        fail(error.message)
    results_dir = results or dataset.root / "results"
    report_dir = report or results_dir
    for directory in (results_dir, report_dir):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            fail(f"cannot create {str(directory)!r}: {error.strerror}")
    job = _Job(dataset, gates or [DEFAULT_GATE], results_dir, report_dir, run_url, replay)
    document = run_command(lambda: job.execute(profile, mode, parallel, repeat, judge_profile))
    raise typer.Exit(_finish(document, as_json, job.report_paths))


def _load(path: Path, categories: list[str] | None, ids: list[str] | None) -> Dataset:
    from agentstage.errors import UserError
    from agentstage.evals.dataset import load_dataset

    try:
        dataset = load_dataset(path).select(categories, ids)
    except UserError as error:
        fail(error.message)
    for problem in dataset.problems:
        typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
    if not dataset.cases:
        fail(f"no valid case to run in {str(path)!r}")
    return dataset


class _Job:
    """One ``agent eval run``: the harness under a progress bar, results written as cases finish."""

    def __init__(
        self,
        dataset: Dataset,
        gates: list[Gate],
        results_dir: Path,
        report_dir: Path,
        run_url: str | None,
        replay: Path | None,
    ):
        self.dataset = dataset
        self.gates = gates
        self.results_dir = results_dir
        self.report_dir = report_dir
        self.run_url = run_url
        self.replay = replay
        self.report_paths: list[Path] = []

    async def execute(
        self, profile: str | None, mode: str | None, parallel: int, repeat: int, judge_profile: str | None
    ) -> dict[str, Any]:
        from agentstage.core.events import utc_now
        from agentstage.core.orchestrators import parse_mode
        from agentstage.errors import AgentstageError
        from agentstage.evals.harness import EvalHarness, EvalOptions
        from agentstage.evals.report import EvalRunInfo, build_report, recorded_attempts, write_reports

        settings = load_settings()
        recorded, replay_of = recorded_attempts(self.replay) if self.replay else ({}, None)
        settings.profile(profile)
        options = EvalOptions(
            profile=profile or settings.default_profile,
            mode=parse_mode(mode or settings.default_mode.value).value,
            parallel=parallel,
            repeat=repeat,
            judge_profile=judge_profile,
        )
        if judge_profile:
            settings.profile(judge_profile)
        started = utc_now()
        async with open_service(settings) as service:
            progress = _Progress(len(self.dataset.cases), self._attempt_count(recorded, repeat))
            harness = EvalHarness(
                service,
                options,
                on_attempt=lambda _case, attempt: progress.run_done(attempt.passed),
                on_case=lambda result: self._save(result, progress),
            )
            _stop_on_interrupt(harness)
            with progress:
                cases = await (
                    harness.rescore(self.dataset, recorded) if self.replay else harness.run(self.dataset)
                )
        info = EvalRunInfo(
            eval_id=harness.eval_id,
            dataset=self.dataset.path,
            options=options,
            started_at=started,
            finished_at=utc_now(),
            results_dir=self.results_dir,
            replay_of=replay_of,
            interrupted=harness.interrupted,
        )
        document = build_report(info, cases, self.dataset.problems, self.gates)
        try:
            self.report_paths = write_reports(document, self.report_dir, self.run_url)
        except OSError as error:
            raise AgentstageError(
                f"cannot write the reports to {str(self.report_dir)!r}: {error}", code="eval_write_failed"
            ) from None
        return document

    def _save(self, result: CaseResult, progress: _Progress) -> None:
        """Each case is written as soon as it is done: an interrupted eval keeps it."""
        from agentstage.evals.results import write_case

        try:
            write_case(self.results_dir, result)
        except OSError as error:
            typer.secho(f"error: cannot write the result of {result.case_id!r}: {error}", fg="red", err=True)
        progress.case_done()

    def _attempt_count(self, recorded: dict[str, list[RecordedAttempt]], repeat: int) -> int:
        if not self.replay:
            return len(self.dataset.cases) * repeat
        return sum(max(1, len(recorded.get(c.id, []))) for c in self.dataset.cases)


def _stop_on_interrupt(harness: EvalHarness) -> None:
    """The first Ctrl-C stops the eval cleanly (finished cases kept, report written); a second one kills it."""
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        typer.secho(
            "interrupted: cancelling the runs in flight and writing the report…", fg="yellow", err=True
        )
        harness.stop("the eval was interrupted (Ctrl-C)")
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)


class _Progress:
    """Cases done, runs done, pass rate so far and the time left, on stderr."""

    def __init__(self, cases: int, attempts: int):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.cases, self.cases_done = cases, 0
        self.done = self.passed = 0
        self.progress = Progress(
            TextColumn("[bold]eval[/] cases {task.fields[cases]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("runs · pass rate {task.fields[rate]} · ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        self.task = self.progress.add_task("eval", total=attempts, rate="—", cases=f"0/{cases}")

    def run_done(self, passed: bool) -> None:
        self.done += 1
        self.passed += passed
        rate = f"{self.passed / self.done:.1%} ({self.passed}/{self.done})"
        self.progress.update(self.task, advance=1, rate=rate)

    def case_done(self) -> None:
        self.cases_done += 1
        self.progress.update(self.task, cases=f"{self.cases_done}/{self.cases}")

    def __enter__(self) -> _Progress:
        self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.progress.stop()


def _finish(document: dict[str, Any], as_json: bool, paths: list[Path]) -> int:
    from rich.console import Console

    if as_json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        _print_summary(Console(highlight=False), document)
    err = Console(stderr=True, highlight=False)
    for gate in document["gates"]:
        style = "green" if gate["passed"] else "red"
        err.print(
            f"gate {gate['text']}: {'pass' if gate['passed'] else 'FAIL'} ({gate['reason']})", style=style
        )
    if paths:
        err.print(f"report: {paths[-1]}  (also {paths[0].name}, {paths[1].name})", style="dim")
    if document["dataset"]["invalid"]:
        err.print(
            f"{len(document['dataset']['invalid'])} invalid case(s) were not run (see above)", style="red"
        )
        return int(Exit.USAGE)
    if any(not g["measured"] for g in document["gates"]):
        return int(Exit.USAGE)
    if document["run"]["interrupted"]:
        return int(Exit.CANCELLED)
    return int(Exit.OK if document["passed"] else Exit.RUN_FAILED)


def _print_summary(console: Console, document: dict[str, Any]) -> None:
    from rich.table import Table

    from agentstage.evals.report import fmt, metric_rows

    summary = document["summary"]
    metrics = Table(title=f"{summary['passed']}/{summary['cases']} cases passed", title_justify="left")
    for column in ("metric", "value", "95% CI", "n"):
        metrics.add_column(column, justify="left" if column == "metric" else "right")
    for _, title, value, ci, n in metric_rows(document["metrics"]):
        metrics.add_row(title, value, ci, str(n))
    console.print(metrics)
    if len(document["categories"]) > 1:
        table = Table(title="by category", title_justify="left")
        for column in ("category", "passed", "accuracy", "latency p50", "tokens/case"):
            table.add_column(column, justify="left" if column == "category" else "right")
        for name, entry in document["categories"].items():
            m = entry["metrics"]
            table.add_row(
                name,
                f"{entry['passed']}/{entry['cases']}",
                fmt(m.get("accuracy", {}).get("value"), "fraction"),
                fmt(m.get("latency_p50_ms", {}).get("value"), "ms"),
                fmt(m.get("tokens_per_case", {}).get("value"), "tokens"),
            )
        console.print(table)
    failed = [c for c in document["cases"] if not c["passed"]]
    for case in failed:
        attempt = next(a for a in case["attempts"] if not a["passed"])
        why = [f"{s['scorer']}: {s['explanation']}" for s in attempt["scores"] if not s["passed"]]
        if attempt.get("error"):
            why.insert(0, f"{attempt['status']}: {attempt['error'].get('message')}")
        console.print(
            f"[red]✗[/] {case['case_id']} (run {attempt.get('run_id') or 'none'}): {'; '.join(why)[:300]}"
        )


@app.command("compare")
def compare(
    a: Annotated[Path, typer.Argument(help="The baseline: a report.json or the directory holding it.")],
    b: Annotated[Path, typer.Argument(help="The candidate: a report.json or the directory holding it.")],
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            "--threshold",
            metavar="[METRIC=]FRACTION",
            help="Largest tolerated relative worsening (default 0.05 = 5%); METRIC=FRACTION for one metric.",
        ),
    ] = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="Never gate on this metric.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Per-metric deltas between two evals, with significance, and the cases that flipped.

    Exit codes: 0 no metric regressed beyond its threshold, 1 one did, 2 usage error.
    """
    from agentstage.errors import UserError
    from agentstage.evals.compare import DEFAULT_THRESHOLD, compare_reports
    from agentstage.evals.report import load_report

    default, per_metric = _thresholds(threshold or [], DEFAULT_THRESHOLD)
    try:
        result = compare_reports(
            load_report(a), load_report(b), threshold=default, per_metric=per_metric, ignore=set(ignore or [])
        )
    except UserError as error:
        fail(error.message)
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        _print_comparison(result)
    raise typer.Exit(Exit.OK if result["passed"] else Exit.RUN_FAILED)


def _thresholds(values: list[str], default: float) -> tuple[float, dict[str, float]]:
    per_metric: dict[str, float] = {}
    for text in values:
        name, _, raw = text.rpartition("=")
        try:
            value = float(raw.strip().removesuffix("%")) / (100 if raw.strip().endswith("%") else 1)
        except ValueError:
            fail(f"--threshold takes FRACTION or METRIC=FRACTION, got {text!r}")
        if value < 0:
            fail(f"--threshold {text!r}: a threshold cannot be negative")
        if name:
            per_metric[name.strip()] = value
        else:
            default = value
    return default, per_metric


def _print_comparison(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from agentstage.evals.report import fmt

    console = Console(highlight=False)
    table = Table(
        title=f"{result['a']['eval_id']} → {result['b']['eval_id']} ({result['common_cases']} common cases)"
    )
    for column in ("metric", "A", "B", "delta", "p", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    for row in result["metrics"]:
        unit = row["unit"]
        delta = row["delta"]
        shown = (
            "—" if delta is None else (f"{delta * 100:+.1f} pts" if unit == "fraction" else f"{delta:+.4g}")
        )
        verdict = "[red]regression[/]" if row["regression"] else ("worse" if row["worse"] else "")
        if row["significant"]:
            verdict += " (significant)"
        p = "—" if row["p_value"] is None else f"{row['p_value']:.3f}"
        table.add_row(row["metric"], fmt(row["a"], unit), fmt(row["b"], unit), shown, p, verdict.strip())
    console.print(table)
    for case_id in result["flipped"]["pass_to_fail"]:
        console.print(f"[red]✗ now fails:[/] {case_id}")
    for case_id in result["flipped"]["fail_to_pass"]:
        console.print(f"[green]✓ now passes:[/] {case_id}")
    if result["only_in_a"] or result["only_in_b"]:
        console.print(
            f"[dim]only in A: {len(result['only_in_a'])} case(s); only in B: {len(result['only_in_b'])}[/]"
        )
    if result["regressions"]:
        typer.secho(f"regression: {', '.join(result['regressions'])}", fg=typer.colors.RED, err=True)


@app.command("scorers")
def scorers(as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False) -> None:
    """List the scorers a case can name (in expected.type or scorers), with their parameters."""
    from agentstage.evals.scorers import SCORERS, scorer_names

    classes = [SCORERS[name] for name in scorer_names()]
    if as_json:
        rows = [
            {
                "name": cls.name,
                "summary": cls.summary,
                "parameters": sorted(cls.parameter_names() - {"threshold"}),
                "default_threshold": cls.default_threshold,
            }
            for cls in classes
        ]
        print(json.dumps(rows, indent=2))
        return
    for cls in classes:
        params = ", ".join(sorted(cls.parameter_names() - {"threshold"})) or "none"
        typer.echo(f"{cls.name:<14} {cls.summary}")
        typer.echo(
            f"{'':<14} parameters: {params}; passes at ≥ {cls.default_threshold:g} unless `threshold` is set"
        )
