"""``agent audit``: read the audit log and check that nobody has edited it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, command_group, fail, open_services, run_command

app = command_group("The audit log: who changed what, and every refused request.")


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since {text!r} is not an ISO 8601 date or time (e.g. 2026-01-31 or 2026-01-31T12:00)")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("list")
def list_entries(
    since: Annotated[
        str | None, typer.Option("--since", help="Only rows at or after this ISO date/time.")
    ] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal, e.g. api_key:ci or jwt:alice.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this permission, e.g. config.write.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List audit rows, oldest first."""
    moment = _since(since)

    async def fetch() -> list[dict[str, Any]]:
        async with open_services() as services:
            return await services.audit.entries(since=moment, principal=principal, action=action)

    for row in run_command(fetch):
        row = {**row, "ts": row["ts"].isoformat()}
        if as_json:
            print(json.dumps(row, ensure_ascii=False))
            continue
        status = f" {row['status']}" if row["status"] is not None else ""
        print(
            f"{row['id']:>6}  {row['ts']}  {row['outcome']}{status}  {row['principal']}"
            f"  [{row['tenant'] or '-'}]  {row['action']}  {row['target']}  {row['client'] or ''}"
        )


@app.command("verify")
def verify() -> None:
    """Recompute the hash chain; exit 1 naming the first row that was changed, removed or reordered."""

    async def check() -> tuple[int, str | None]:
        async with open_services() as services:
            return await services.audit.verify()

    count, problem = run_command(check)
    if problem is not None:
        fail(f"the audit log is broken: {problem}", Exit.RUN_FAILED)
    typer.secho(f"audit log intact: {count} rows, hash chain verified", err=True)
