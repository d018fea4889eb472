"""The ``agent`` command: wiring of command groups only; each group lives in its own module."""

from __future__ import annotations

import typer

from agentstage import __version__
from agentstage.interfaces.cli import (
    audit,
    batch,
    chat,
    config,
    keys,
    replay,
    run,
    runs,
    serve,
    snapshot,
    store,
    tools,
)
from agentstage.interfaces.cli import eval as eval_cli

app = typer.Typer(
    name="agent",
    help="agentstage: run AI agents, watch them stream, and keep a complete record of every run.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"agentstage {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version."
    ),
) -> None:
    """Run `agent run "question"` to start; `agent COMMAND --help` for each command."""


app.command("run")(run.run)
app.command("chat")(chat.chat)
app.command("batch")(batch.batch)
app.add_typer(runs.app, name="runs")
app.add_typer(config.config_app, name="config")
app.add_typer(config.profile_app, name="profile")
app.add_typer(tools.app, name="tool")
app.command("serve")(serve.serve)
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(eval_cli.app, name="eval")
app.add_typer(store.app, name="store")
app.add_typer(snapshot.app, name="snapshot")
app.command("replay")(replay.replay)


def entry() -> None:
    app()
