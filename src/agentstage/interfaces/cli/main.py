"""The ``agent`` command: wiring of command groups only; each group lives in its own module."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstage import __version__
from agentstage.interfaces.cli import (
    audit,
    batch,
    chat,
    completion,
    config,
    debug,
    guard,
    keys,
    replay,
    run,
    runs,
    serve,
    snapshot,
    store,
    tools,
    trace,
    worker,
)
from agentstage.interfaces.cli import eval as eval_cli
from agentstage.interfaces.cli.common import HELP_OPTIONS

app = typer.Typer(
    name="agent",
    help="agentstage: run AI agents, watch them stream, and keep a complete record of every run.",
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"agentstage {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    install_completion: completion.InstallOption = None,
    show_completion: completion.ShowOption = None,
) -> None:
    """Run `agent run "question"` to start; `agent COMMAND --help` for each command."""
    if ctx.invoked_subcommand is None and not ctx.resilient_parsing:
        typer.echo(ctx.get_help())


app.command("run", short_help="Run the agent on one question (stdin joins in when piped).")(run.run)
app.command("debug", short_help="Run the agent, then show its span tree; --save-logs keeps everything.")(
    debug.debug
)
app.command("chat", short_help="Talk with the agent; answers see the conversation so far.")(chat.chat)
app.command("batch", short_help="Run the agent once per line of a file, in parallel.")(batch.batch)
app.add_typer(runs.app, name="runs")
app.add_typer(trace.app, name="trace")
app.add_typer(config.config_app, name="config")
app.add_typer(config.profile_app, name="profile")
app.add_typer(tools.app, name="tool")
app.command("serve", short_help="Serve the HTTP API (REST, SSE, WebSocket); docs at /docs.")(serve.serve)
app.command("worker", short_help="Execute queued runs from the shared store (scale-out).")(worker.worker)
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(store.app, name="store")
app.add_typer(snapshot.app, name="snapshot")
app.command("replay")(replay.replay)


def entry() -> None:
    guard.entry(app)
