"""``agent debug``: run like ``agent run``, then show how the run went — its span tree with
timings, its logs (``--verbose``) — and keep everything for later (``--save-logs DIR``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, fail, load_settings, open_services, run_command
from agentstage.interfaces.cli.options import ModeOption, ProfileOption, check_mode
from agentstage.interfaces.cli.run import exit_code, read_question

if TYPE_CHECKING:
    from agentstage.core.records import RunRecord
    from agentstage.runtime.traces import SpanNode


def debug(
    question: Annotated[str | None, typer.Argument(help="What to ask the agent.", show_default=False)] = None,
    mode: ModeOption = None,
    profile: ProfileOption = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", "-f", help="Read the question from a file ('-' = stdin).")
    ] = None,
    trace: Annotated[
        bool, typer.Option("--trace", help="Show every span's attributes and events, not only timings.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show DEBUG log lines as the run goes.")
    ] = False,
    save_logs: Annotated[
        Path | None,
        typer.Option(
            "--save-logs",
            help="Write the run's logs (logs.jsonl), events (events.jsonl), spans (spans.json) and "
            "snapshot (snapshot.json) into this directory.",
        ),
    ] = None,
) -> None:
    """Run the agent on one question and show how it went.

    Streams the answer like `agent run`, then prints the run's span tree with the time each step
    took (model calls, tool calls, their validation and parsing), errors in red. Secrets are masked
    in everything shown or saved. Exit codes as `agent run`: 0 completed, 1 failed, 2 usage or setup error, 130 cancelled.
    """
    text = read_question(question, input_file)
    if save_logs is not None and save_logs.exists() and not save_logs.is_dir():
        fail(f"--save-logs {str(save_logs)!r} exists and is not a directory")
    chosen_mode = check_mode(mode)
    outcome = run_command(lambda: _debug(text, chosen_mode, profile, verbose))
    if save_logs is not None:
        _save(outcome, save_logs)
    _report(outcome, trace, save_logs)
    raise typer.Exit(exit_code(outcome.record))


@dataclass
class Outcome:
    record: RunRecord
    roots: list[SpanNode]
    logs: list[str]
    events: list[str]
    snapshot: dict[str, Any] | None


async def _debug(text: str, mode: str | None, profile: str | None, verbose: bool) -> Outcome:
    from agentstage.interfaces.cli.render import RunView
    from agentstage.interfaces.cli.run import stop_on_interrupt
    from agentstage.runtime.requests import RunRequest
    from agentstage.runtime.wiring import configure_log_lines_for_debug

    settings = load_settings()
    async with open_services(settings) as services:
        configure_log_lines_for_debug(settings, verbose)
        service = services.runs
        with services.telemetry.capture_logs() as lines:
            record = await service.start(RunRequest(input=text, mode=mode, profile=profile))
            stop_on_interrupt(service, record.id)
            with RunView() as view:
                async for event in service.stream(record.id):
                    view.handle(event)
            record = await service.wait(record.id)
            roots = await services.traces.tree(record.id)
        events = [event.to_json() for event in await service.events(record.id)]
        return Outcome(record, roots, list(lines), events, await service.snapshot(record.id))


def _save(outcome: Outcome, into: Path) -> None:
    spans = [span.to_dict() for root in outcome.roots for _, span in root.walk()]
    files = {
        "logs.jsonl": "".join(line + "\n" for line in outcome.logs),
        "events.jsonl": "".join(line + "\n" for line in outcome.events),
        "spans.json": json.dumps(spans, ensure_ascii=False, indent=2) + "\n",
        "snapshot.json": json.dumps(outcome.snapshot, ensure_ascii=False, indent=2) + "\n",
    }
    try:
        into.mkdir(parents=True, exist_ok=True)
        for name, body in files.items():
            (into / name).write_text(body, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write into {str(into)!r}: {error.strerror}", Exit.RUN_FAILED)


def _report(outcome: Outcome, trace: bool, save_logs: Path | None) -> None:
    from rich.text import Text

    from agentstage.interfaces.cli.render import summary_line
    from agentstage.interfaces.cli.trace import render_tree, wide_console

    record = outcome.record
    err = wide_console(stderr=True)
    err.print()
    if outcome.roots:
        err.print(Text(f"trace {record.trace_id}", style="bold"))
        err.print(render_tree(outcome.roots, all_attributes=trace))
    else:
        err.print("no spans were recorded (tracing.enabled is off)", style="yellow")
    if record.error_code and record.status.value == "failed":
        err.print(Text(f"error: {record.error_message}", style="red"))
    if save_logs is not None:
        err.print(f"saved logs.jsonl, events.jsonl, spans.json and snapshot.json in {save_logs}", style="dim")
    style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(record.status.value, "white")
    err.print(summary_line(record), style=f"dim {style}")
