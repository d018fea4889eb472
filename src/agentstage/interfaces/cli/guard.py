"""Running the command tree: every usage error is one red line and exit 2, whichever command.

Typer would draw usage errors in boxes with a usage block above them; a terminal user wants the
one line that says what was wrong, and a script wants exit code 2. Help stays one ``--help`` away
and the line says so.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from agentstage.core.strict_json import unpaired_surrogate_in

# Typer cannot declare a repeatable option that takes two values (``-o NAME VALUE``); such options
# are declared as lists and widened to two values per use once the command tree is built.
PAIR_OPTIONS = frozenset({"model_params"})


def run(app: typer.Typer, args: list[str] | None = None) -> int:
    for position, argument in enumerate(sys.argv[1:] if args is None else args, start=1):
        if unpaired_surrogate_in(argument):  # no store, model or terminal can take such text
            shown = argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            typer.secho(
                f"error: argument {position} ('{shown}') is not UTF-8 text; convert it first "
                "(for example with iconv -t UTF-8)", fg=typer.colors.RED, err=True,
            )  # fmt: skip
            return 2
    command = typer.main.get_command(app)
    _prepare(command)
    try:
        result = command.main(args=args, prog_name="agent", standalone_mode=False)
    except typer.TyperException as error:  # click's usage errors and file errors
        ctx = getattr(error, "ctx", None)
        if type(error).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help())  # a group given no command: its help is the answer
            return 0
        _one_line(error)
        return int(getattr(error, "exit_code", 2) or 2)
    except typer.Abort:
        typer.secho("aborted", fg=typer.colors.YELLOW, err=True)
        return 130
    return result if isinstance(result, int) else 0


def _prepare(command: Any) -> None:
    """Widen two-value options, and keep help to names and sentences: Typer would show types such
    as ``<str>`` or ``<int range>`` where a metavar (``PORT``) and the help say it better."""
    for param in getattr(command, "params", []):
        if param.name in PAIR_OPTIONS:
            param.nargs = 2
        kind = getattr(param, "param_type_name", "")
        if kind == "argument":
            param.display_type_rich = _no_type
        elif kind == "option" and not getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = str(param.name).upper()
    for child in getattr(command, "commands", {}).values():
        _prepare(child)


def _no_type(ctx: Any) -> None:
    return None


def _one_line(error: typer.TyperException) -> None:
    message = " ".join(error.format_message().split())
    message = message.removeprefix("Value error, ")
    if "Value error, " in message:
        message = message.replace("Value error, ", "")
    ctx = getattr(error, "ctx", None)
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    typer.secho(f"error: {message}{hint}", fg=typer.colors.RED, err=True)


def entry(app: typer.Typer) -> None:
    sys.exit(run(app))
