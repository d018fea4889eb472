"""What every command shares: loading settings, opening the run service, exit codes, errors.

Heavy modules (the runtime, providers, SQLAlchemy) load inside these helpers, never at import
time, so ``agent --help`` and completion stay instant.
"""

from __future__ import annotations

import asyncio
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


class Exit(IntEnum):
    OK = 0
    RUN_FAILED = 1
    USAGE = 2
    CANCELLED = 130


def fail(message: str, code: int = Exit.USAGE) -> NoReturn:
    """One red line on stderr and a non-zero exit."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def load_settings(**overrides: Any) -> Settings:
    from agentstage.settings import load_settings as load

    return load({k: v for k, v in overrides.items() if v is not None})


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
        return sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        fail(f"input file {str(path)!r} does not exist")
    except IsADirectoryError:
        fail(f"input file {str(path)!r} is a directory")
    except PermissionError:
        fail(f"input file {str(path)!r} is not readable (permission denied)")
    except UnicodeDecodeError:
        fail(f"input file {str(path)!r} is not UTF-8 text")


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
