"""``agent snapshot``: show, export, import and compare what runs used and produced."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, fail, open_service, run_command

app = typer.Typer(
    help="Run snapshots: the configuration, code version, input, output and metrics of a run. "
    "Show one, export it to a file (with its event log) and import it elsewhere, or compare two runs.",
    no_args_is_help=True,
)

RunArgument = Annotated[
    str,
    typer.Argument(
        metavar="RUN",
        help="The run's id (from `agent runs list`), a unique start of it, or 'last'.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


@app.command("show")
def show(run_id: RunArgument, as_json: JsonOption = False) -> None:
    """Show a run's snapshot: profile chain, parameters, limits, tools, prompt, environment (secrets
    masked), code version, input, output and metrics."""

    async def fetch() -> dict[str, Any]:
        from agentstage.interfaces.cli.runs import resolve_run

        async with open_service() as service:
            return await service.snapshots.show((await resolve_run(service, run_id)).id)

    document = run_command(fetch)
    if as_json:
        print(json.dumps(document, ensure_ascii=False, indent=2))
        return
    from agentstage.interfaces.cli.snapshot_view import render_snapshot

    render_snapshot(document)


@app.command("export")
def export(
    run_id: RunArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="File to write ('-' or none: standard output).", show_default=False
        ),
    ] = None,
) -> None:
    """Export a finished run — its snapshot and its whole event log — to one JSON file that
    carries its own hash. `agent snapshot import` reads it back on any machine, where the run
    can be shown, compared and replayed (no model needed)."""

    async def fetch() -> dict[str, Any]:
        from agentstage.interfaces.cli.runs import resolve_run

        async with open_service() as service:
            return await service.snapshots.export((await resolve_run(service, run_id)).id)

    document = run_command(fetch)
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return
    _write_atomically(output, text)
    typer.secho(
        f"exported run {document['snapshot']['run_id']} to {output} ({len(document['events'])} events, "
        f"snapshot {document['snapshot_hash'][:16]}…)",
        err=True,
    )


def _write_atomically(path: Path, text: str) -> None:
    """All of the file or none of it: a temporary file beside it, renamed into place."""
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        fail(f"cannot write {str(path)!r}: the directory {str(directory)!r} does not exist", Exit.RUN_FAILED)
    if path.is_dir():
        fail(f"cannot write {str(path)!r}: it is a directory", Exit.RUN_FAILED)
    try:
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".export-", suffix=".json")
    except OSError as error:
        fail(f"cannot write {str(path)!r}: {error.strerror}", Exit.RUN_FAILED)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        fail(f"cannot write {str(path)!r}: {error.strerror}", Exit.RUN_FAILED)


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="A file made by `agent snapshot export` ('-' = stdin).")],
) -> None:
    """Import an exported run into this store (refused, with nothing written, if the file is not
    JSON, was edited after export, is of a newer schema, or the run is already here)."""
    data = _read(file)

    async def store() -> Any:
        async with open_service() as service:
            record = await service.snapshots.import_run(data)
            return record, len(await service.events(record.id))

    record, count = run_command(store)
    typer.echo(
        f"imported run {record.id} ({record.status.value}, {count} events); "
        f"replay it with: agent replay {record.id}"
    )


def _read(file: Path) -> bytes:
    try:
        return sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    except FileNotFoundError:
        fail(f"snapshot file {str(file)!r} does not exist")
    except IsADirectoryError:
        fail(f"snapshot file {str(file)!r} is a directory")
    except PermissionError:
        fail(f"snapshot file {str(file)!r} is not readable (permission denied)")


@app.command("diff")
def diff(
    a: Annotated[
        str,
        typer.Argument(metavar="A", help="The first run (id, unique start, or 'last').", show_default=False),
    ],
    b: Annotated[
        str,
        typer.Argument(metavar="B", help="The second run (id, unique start, or 'last').", show_default=False),
    ],
    as_json: JsonOption = False,
) -> None:
    """Compare two runs: configuration differences field by field, then the first event where
    they diverge (the step, and what each did), then output and metrics side by side."""

    async def fetch() -> dict[str, Any]:
        from agentstage.interfaces.cli.runs import resolve_run

        async with open_service() as service:
            first, second = await resolve_run(service, a), await resolve_run(service, b)
            return await service.snapshots.diff(first.id, second.id)

    result = run_command(fetch)
    if as_json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return
    from agentstage.interfaces.cli.snapshot_view import render_diff

    render_diff(result)
