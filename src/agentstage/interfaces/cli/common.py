"""What every command shares: loading settings, opening the run service, exit codes, errors, stdin.

Heavy modules (the runtime, providers, SQLAlchemy) load inside these helpers, never at import
time, so ``agent --help`` and completion stay instant.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from agentstage.runtime.service import RunService
    from agentstage.runtime.wiring import Services
    from agentstage.settings import Settings

T = TypeVar("T")

# Run failures whose cause is the user's setup, not the run: they exit 2 like any usage error.
SETUP_ERROR_CODES = frozenset({"config_invalid", "no_usable_provider", "missing_secret"})


class Exit(IntEnum):
    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    CANCELLED = 130


def fail(message: str, code: int = Exit.USAGE) -> NoReturn:
    """One red line on stderr and a non-zero exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def warn(message: str) -> None:
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def note(message: str) -> None:
    typer.secho(message, dim=True, err=True)


def load_settings(*, read_only: bool = False, **overrides: Any) -> Settings:
    """The effective settings, or one red line (exit 2) saying what is wrong with them.

    ``read_only`` commands (listing and showing things) still work when the user's config file
    is broken: they use the configuration without it and say so in one warning line."""
    from agentstage.errors import UserError
    from agentstage.settings import load_settings as load
    from agentstage.settings import load_settings_or_defaults

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        if not read_only:
            return load(given)
        settings, problem = load_settings_or_defaults(given)
    except UserError as error:
        fail(error.message)
    if problem is not None:
        warn(f"{problem}; using the defaults without it")
    return settings


@asynccontextmanager
async def open_services(settings: Settings | None = None) -> AsyncIterator[Services]:
    """Every runtime service, built once from the configuration, open for one command."""
    from agentstage.runtime.observe import through
    from agentstage.runtime.wiring import build_services, configure_cli_logging

    settings = settings or load_settings()
    configure_cli_logging(settings)
    services = build_services(settings)
    await services.runs.open()
    try:
        with through("cli"):
            yield services
    finally:
        await services.runs.close()


@asynccontextmanager
async def open_service(settings: Settings | None = None) -> AsyncIterator[RunService]:
    async with open_services(settings) as services:
        yield services.runs


def run_command(main: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; user errors become one red line and exit 2, run errors exit 1."""
    import asyncio

    from agentstage.errors import AgentstageError, UserError

    _quiet_logs()
    try:
        return asyncio.run(_guarded(main))
    except UserError as error:
        fail(error.message, Exit.USAGE)
    except AgentstageError as error:
        fail(error.message, Exit.RUN_FAILED)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(Exit.CANCELLED) from None


async def _guarded(main: Callable[[], Awaitable[T]]) -> T:
    return await main()


def _quiet_logs() -> None:
    import logging

    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


def read_text_file(path: Path) -> str:
    """A user-given text file (``-`` = stdin), or one red line saying why it cannot be read."""
    try:
        return read_stdin() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"input file {str(path)!r} does not exist")
    except IsADirectoryError:
        fail(f"input file {str(path)!r} is a directory")
    except PermissionError:
        fail(f"input file {str(path)!r} is not readable (permission denied)")
    except UnicodeDecodeError:
        fail(f"input file {str(path)!r} is not UTF-8 text")


def read_stdin() -> str:
    """All of stdin as text; bytes that are not UTF-8 are a usage error, not a traceback."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        fail("standard input is not UTF-8 text")


def stdin_is_piped() -> bool:
    """True when stdin is a pipe or a file (not a terminal): then it is part of the input."""
    try:
        return not sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or missing stdin
        return False


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}


def command_group(help_text: str) -> typer.Typer:
    """A group of commands; on its own (``agent runs``) it prints its help and exits 0."""
    group = typer.Typer(
        help=help_text, rich_markup_mode=None, context_settings=HELP_OPTIONS, add_completion=False
    )

    @group.callback(invoke_without_command=True)
    def show_help(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            typer.echo(ctx.get_help())
            raise typer.Exit(Exit.OK)

    return group
