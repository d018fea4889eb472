"""``agent runs``: list recorded runs, search them, and show one with its timeline or raw events."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import (
    command_group,
    fail,
    load_settings,
    note,
    open_service,
    run_command,
)
from agentstage.interfaces.cli.output import (
    JsonFlag,
    choose_format,
    console,
    print_columns,
    print_json_lines,
)
from agentstage.interfaces.cli.suggest import complete_formats, complete_run_ids

if TYPE_CHECKING:
    from agentstage.core.events import RunEvent
    from agentstage.core.records import RunRecord
    from agentstage.runtime.service import RunService

app = command_group("Inspect recorded runs: list, search, show.")

STATUSES = ("queued", "running", "completed", "failed", "cancelled")
LIST_FORMATS = ("table", "json")
SHOW_FORMATS = ("text", "json")


@app.command("list")
def list_runs(
    query: Annotated[
        str | None,
        typer.Option("--query", "-q", metavar="TEXT", help="Only runs whose input or output contains TEXT."),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            metavar="STATUS", help=f"Only runs in this state: {', '.join(STATUSES)}.", show_default=False
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=1000, metavar="N", help="How many runs.")
    ] = 20,
    offset: Annotated[int, typer.Option(min=0, max=2**53, metavar="N", help="Skip this many runs.")] = 0,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="FORMAT",
            help="table, or json (one object per line)  [default: table]",
            show_default=False,
            autocompletion=complete_formats(*LIST_FORMATS),
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """List runs, newest first. Ids and statuses are printed whole, piped or not."""
    from agentstage.types import RunStatus

    chosen = choose_format(output_format, as_json, LIST_FORMATS, "table")
    if status is not None and status not in STATUSES:
        fail(f"unknown status {status!r} (choose one of: {', '.join(STATUSES)})")
    if query is not None and not query.strip():
        fail("--query is empty; give the text to search for")

    async def fetch() -> list[dict[str, Any]]:
        async with open_service(load_settings(read_only=True)) as service:
            records = await service.list_runs(
                status=RunStatus(status) if status else None, limit=limit, offset=offset, query=query
            )
            return [{**r.result(), "input": r.input, "created_at": r.created_at.isoformat()} for r in records]

    rows = run_command(fetch)
    if chosen == "json":
        print_json_lines(rows)
        return
    if not rows:
        note(
            "no runs match" if query or status or offset else "no runs recorded yet; start one with agent run"
        )
        return
    headers = ("run", "status", "mode", "profile", "tokens", "cost", "created", "input")
    optional = ("cost", "tokens", "profile", "created", "mode")
    print_columns(headers, [_row(row) for row in rows], shrink="input", optional=optional)


def _row(row: dict[str, Any]) -> list[str]:
    usage = row["usage"] if isinstance(row["usage"], dict) else {}
    return [
        str(row["run_id"]),
        str(row["status"]),
        str(row["mode"]),
        str(row["profile"]),
        str(usage.get("total_tokens", 0)),
        f"${row['cost']:.6f}",
        str(row["created_at"])[:19].replace("T", " "),
        " ".join(str(row["input"]).split()),
    ]


async def resolve_run(service: RunService, reference: str) -> RunRecord:
    """A run by its id, a unique prefix of it, or ``last`` (the most recent run)."""
    from agentstage.errors import InvalidInputError, NotFoundError

    if reference == "last":
        newest = await service.list_runs(limit=1)
        if not newest:
            raise NotFoundError("there are no runs yet; start one with agent run", code="run_not_found")
        return newest[0]
    try:
        return await service.status(reference)
    except NotFoundError:
        matches = await service.list_runs(id_prefix=reference, limit=5) if reference.strip() else []
        if not matches:
            raise
    if len(matches) > 1:
        shown = ", ".join(m.id for m in matches[:4])
        raise InvalidInputError(
            f"run id prefix {reference!r} matches several runs ({shown}{', …' if len(matches) > 4 else ''}); "
            "give more characters",
            code="ambiguous_run_id",
        )
    return matches[0]


@app.command("show")
def show(
    run_id: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="The run's id, a unique start of it, or 'last'.",
            autocompletion=complete_run_ids,
        ),
    ],
    raw_events: Annotated[
        bool, typer.Option("--events", help="Print the raw event log: every event, one JSON line each.")
    ] = False,
    no_events: Annotated[bool, typer.Option("--no-events", help="Leave out the timeline.")] = False,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="FORMAT",
            help="text, or json (one object with its events)  [default: text]",
            show_default=False,
            autocompletion=complete_formats(*SHOW_FORMATS),
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show a run: status, input, answer, usage, and a timeline with streamed text merged."""
    from rich.text import Text

    from agentstage.interfaces.cli.render import result_body, summary_line

    chosen = choose_format(output_format, as_json, SHOW_FORMATS, "text")
    if raw_events and no_events:
        fail("--events and --no-events contradict each other; give one of them")

    async def fetch() -> tuple[RunRecord, list[RunEvent]]:
        async with open_service(load_settings(read_only=True)) as service:
            record = await resolve_run(service, run_id)
            log = await service.events(record.id) if not no_events else []
            return record, list(log)

    record, log = run_command(fetch)
    if chosen == "json":
        body = {**result_body(record), "input": record.input, "snapshot_hash": record.snapshot_hash}
        if not no_events:
            body["events"] = [e.to_json_dict() for e in log]
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return
    if raw_events:
        for event in log:
            print(json.dumps(event.to_json_dict(), ensure_ascii=False, default=str))
        return
    out = console()
    out.print(Text(summary_line(record), style="bold"))
    out.print(Text(f"input: {record.input}"))
    if record.conversation_id:
        out.print(Text(f"conversation: {record.conversation_id}"))
    if record.error_code:
        out.print(Text(f"error ({record.error_code}): {record.error_message}", style="red"))
    if record.output:
        out.print(Text(f"output: {record.output}"))
    for line in timeline(log):
        out.print(Text(line))


def timeline(log: list[RunEvent]) -> list[str]:
    """One line per event, with each model call's streamed chunks merged into one ``message`` line."""
    from agentstage.interfaces.cli.render import describe_event

    lines: list[str] = []
    pending: list[tuple[RunEvent, dict[str, Any]]] = []  # one model call's deltas, merged when it ends

    def flush() -> None:
        if not pending:
            return
        first, last = pending[0][0], pending[-1][0]
        seqs = f"{first.seq}-{last.seq}" if last.seq != first.seq else str(first.seq)
        chunks = f"({len(pending)} chunk{'s' if len(pending) > 1 else ''})"
        text = json.dumps("".join(str(data["text"]) for _, data in pending), ensure_ascii=False)
        lines.append(f"{seqs:>9} {_stamp(first)} {'message':<15} {chunks} {text}")
        pending.clear()

    for event in log:
        if event.type == "message.delta":
            data = event.data
            if pending and pending[0][1]["call_id"] != data["call_id"]:
                flush()
            pending.append((event, data))
            continue
        flush()
        detail = describe_event(event) or _detail(event)
        lines.append(f"{event.seq:>9} {_stamp(event)} {event.type:<15} {detail}".rstrip())
    flush()
    return lines


def _stamp(event: RunEvent) -> str:
    return event.ts.strftime("%H:%M:%S.%f")[:-3]


def _detail(event: RunEvent) -> str:
    """What the live view leaves out but a record should say: which model, what it cost, why."""
    data = event.data
    match event.type:
        case "model.request":
            return f"{data['provider']}/{data['model']} · {len(data['messages'])} messages"
        case "model.response":
            usage = data.get("usage") or {}
            calls = data.get("tool_calls") or []
            asked = f" · asks for {', '.join(c['name'] for c in calls)}" if calls else ""
            return (
                f"{data['provider']}/{data['model']} · {usage.get('input_tokens', 0)} in, "
                f"{usage.get('output_tokens', 0)} out · {data['finish_reason']} · {data['latency_ms']:.0f} ms{asked}"
            )
        case "step.started" | "step.finished":
            status = f" · {data['status']}" if event.type == "step.finished" else ""
            return f"step {data['step_id']} ({data['kind']}: {data['name']}){status}"
        case "run.completed" | "run.failed" | "run.cancelled":
            error = data.get("error") or {}
            return f"{error.get('code')}: {error.get('message')}" if error else ""
    return ""
