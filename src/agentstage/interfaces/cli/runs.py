"""``agent runs``: list recorded runs and show one with its events."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from agentstage.interfaces.cli.common import fail, open_service, run_command

app = typer.Typer(help="Inspect recorded runs.", no_args_is_help=True)

STATUSES = ("queued", "running", "completed", "failed", "cancelled")


@app.command("list")
def list_runs(
    status: Annotated[
        str | None, typer.Option(help=f"Only runs in this state ({', '.join(STATUSES)}).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many runs (newest first).")] = 20,
    offset: Annotated[int, typer.Option(min=0, max=2**53, help="Skip this many runs.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """List runs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from agentstage.types import RunStatus

    if status is not None and status not in STATUSES:
        fail(f"unknown status {status!r} (choose one of: {', '.join(STATUSES)})")

    async def fetch() -> list[dict[str, object]]:
        async with open_service() as service:
            records = await service.list_runs(
                status=RunStatus(status) if status else None, limit=limit, offset=offset
            )
            return [{**r.result(), "input": r.input, "created_at": r.created_at.isoformat()} for r in records]

    rows = run_command(fetch)
    if as_json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return
    table = Table("run", "status", "mode", "profile", "tokens", "cost", "created", "input")
    for row in rows:
        usage = row["usage"] if isinstance(row["usage"], dict) else {}
        table.add_row(
            str(row["run_id"]),
            str(row["status"]),
            str(row["mode"]),
            str(row["profile"]),
            str(usage.get("total_tokens", 0)),
            f"${row['cost']:.6f}",
            str(row["created_at"])[:19],
            str(row["input"])[:48],
        )
    Console().print(table)


@app.command("show")
def show(
    run_id: Annotated[str, typer.Argument(help="The run's id (from `agent runs list`).")],
    events: Annotated[bool, typer.Option("--events/--no-events", help="Include the event log.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Show a run: status, answer, usage, timings and its events."""
    from rich.console import Console
    from rich.text import Text

    from agentstage.interfaces.cli.render import describe_event, summary_line

    async def fetch() -> tuple[object, list[object]]:
        async with open_service() as service:
            record = await service.status(run_id)
            log = await service.events(run_id) if events else []
            return record, list(log)

    record, log = run_command(fetch)
    from agentstage.core.events import RunEvent
    from agentstage.core.records import RunRecord

    assert isinstance(record, RunRecord)
    if as_json:
        body = {**record.result(), "input": record.input, "snapshot_hash": record.snapshot_hash}
        body["events"] = [e.to_json_dict() for e in log if isinstance(e, RunEvent)]
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return
    console = Console(highlight=False)
    console.print(Text(summary_line(record), style="bold"))
    console.print(f"input: {record.input}")
    if record.error_code:
        console.print(Text(f"error ({record.error_code}): {record.error_message}", style="red"))
    if record.output:
        console.print(f"output: {record.output}")
    for event in log:
        assert isinstance(event, RunEvent)
        detail = describe_event(event)
        if event.type == "message.delta":
            detail = short(event.data["text"])
        line = f"{event.seq:>4} {event.ts.strftime('%H:%M:%S.%f')[:-3]} {event.type:<15} {detail or ''}"
        console.print(Text(line.rstrip()))


def short(text: str) -> str:
    return repr(text if len(text) < 60 else text[:59] + "…")
