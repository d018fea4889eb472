"""``agent replay``: run a finished run again — exactly from its recording, or live."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, fail, open_service, run_command

if TYPE_CHECKING:
    from agentstage.core.records import RunRecord


def replay(
    run_id: Annotated[
        str,
        typer.Argument(
            metavar="RUN",
            help="The finished run to replay: its id, a unique start of it, or 'last'.",
            show_default=False,
        ),
    ],
    live: Annotated[
        bool, typer.Option("--live", help="Re-run the snapshot's configuration with a real model.")
    ] = False,
    profile: Annotated[
        str | None, typer.Option("--profile", "-p", help="With --live: re-run with this profile instead.")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="With --live: use this model for the profile's first provider."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (no streaming).")] = False,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Print only the summary.")] = False,
) -> None:
    """Replay a finished run as a new run linked to it (`replay_of`).

    By default the replay is exact: the recorded model answers and tool results are fed back, so
    no model is asked, no tool runs and nothing reaches the network; the replay must produce the
    same answer and the same events (types, tool calls, arguments), or it stops with
    `replay_diverged` naming the step where it left the recording. With --live the snapshot's
    configuration runs again for real (optionally with --profile / --model); compare the two
    with `agent snapshot diff ORIGINAL NEW`.

    Exit codes: 0 reproduced (or, live, completed), 1 diverged or failed, 2 usage error.
    """
    if not live and (profile is not None or model is not None):
        fail("--profile and --model change a live re-run; add --live (an exact replay uses the recording)")
    outcome = run_command(lambda: _replay(run_id, live, profile, model, stream=not (as_json or no_stream)))
    record, diverged = outcome
    run_id = record.replay_of or run_id  # 'last' or a prefix, resolved
    if as_json:
        print(
            json.dumps({**record.result(), "replay_of": run_id, "live": live, "diverged": diverged}, indent=2)
        )
    else:
        _summary(record, run_id, live, diverged)
    if record.error_code == "replay_diverged":
        raise typer.Exit(Exit.RUN_FAILED)
    if live:
        raise typer.Exit(
            {"completed": Exit.OK, "cancelled": Exit.CANCELLED}.get(record.status.value, Exit.RUN_FAILED)
        )
    raise typer.Exit(Exit.OK if diverged is None else Exit.RUN_FAILED)


async def _replay(
    run_id: str, live: bool, profile: str | None, model: str | None, *, stream: bool
) -> tuple[RunRecord, dict[str, Any] | None]:
    from agentstage.interfaces.cli.render import RunView
    from agentstage.interfaces.cli.run import stop_on_interrupt
    from agentstage.interfaces.cli.runs import resolve_run

    async with open_service() as service:
        run_id = (await resolve_run(service, run_id)).id
        started = await service.replay(run_id, live=live, profile=profile, model=model)
        stop_on_interrupt(service, started.id)
        if stream:
            with RunView() as view:
                async for event in service.stream(started.id):
                    view.handle(event)
        record = await service.wait(started.id)
        diverged = None
        if not live:
            result = await service.snapshots.diff(run_id, record.id)
            diverged = result["first_divergence"]
        return record, diverged


def _summary(record: RunRecord, original: str, live: bool, diverged: dict[str, Any] | None) -> None:
    from rich.console import Console
    from rich.text import Text

    from agentstage.interfaces.cli.render import summary_line

    err = Console(stderr=True, highlight=False)
    if record.error_code == "replay_diverged":
        err.print(Text(f"error: {record.error_message}", style="red"))
    elif live:
        if record.error_code and record.status.value == "failed":
            err.print(Text(f"error: {record.error_message}", style="red"))
        err.print(
            Text(
                f"re-run of {original}: compare with agent snapshot diff {original} {record.id}", style="dim"
            )
        )
    elif diverged is None:
        how = (
            "the same answer"
            if record.status.value == "completed"
            else f"the same ending ({record.status.value})"
        )
        err.print(
            Text(f"replay of {original} reproduced it exactly: {how} and the same events", style="green")
        )
    else:
        err.print(Text(f"replay of {original} differs at {diverged['where']}", style="red"))
    err.print(summary_line(record), style="dim")
