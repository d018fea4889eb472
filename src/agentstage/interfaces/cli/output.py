"""How commands print: one vocabulary for formats and files, and no hard wrapping off a terminal.

Every command that prints data takes ``--format/-F`` (``--json`` is short for ``--format json``);
every command that writes a file takes ``--output-file``. Text meant for a terminal may be wrapped
and coloured there; piped, it is written as it is, one logical line per line, so ``grep``, ``cut``
and ``jq`` see whole lines.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import Exit, fail

if TYPE_CHECKING:
    from rich.console import Console

MIN_SHRUNK = 20  # characters of a shortened column worth showing at all

JsonFlag = Annotated[bool, typer.Option("--json", help="Short for --format json.")]
OutputFileOption = Annotated[
    Path | None,
    typer.Option("--output-file", metavar="FILE", help="Also write the result to FILE.", show_default=False),
]


def choose_format(given: str | None, as_json: bool, choices: Sequence[str], default: str) -> str:
    """The one format a command prints in; an unknown name is a usage error that lists the choices."""
    if given is not None and as_json and given.lower() != "json":
        fail(f"--json and --format {given} contradict each other; give one of them")
    chosen = "json" if as_json else (given or default).lower()
    if chosen not in choices:
        fail(f"unknown format {given!r} (choose one of: {', '.join(choices)})")
    return chosen


def console(*, stderr: bool = False) -> Console:
    """A Rich console that wraps only on a terminal: piped text keeps its lines whole."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    terminal = _isatty(stream)
    return Console(file=stream, highlight=False, soft_wrap=not terminal)


def _isatty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def print_json_lines(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        print(json.dumps(row, ensure_ascii=False, default=str))


def print_columns(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    shrink: str | None = None,
    optional: Sequence[str] = (),
) -> None:
    """Aligned columns. Piped, every cell is printed whole. On a terminal too narrow for the
    table, ``optional`` columns are left out (in that order) and then the ``shrink`` column is
    shortened; ids, statuses and names are never cut."""
    keep = list(range(len(headers)))
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    terminal = sys.stdout.isatty()
    squeeze = headers.index(shrink) if terminal and shrink in headers else None
    if squeeze is not None:
        columns = shutil.get_terminal_size().columns
        least = min(widths[squeeze], MIN_SHRUNK)
        for name in optional:
            if sum(widths[i] + 2 for i in keep if i != squeeze) + least <= columns:
                break
            keep.remove(headers.index(name))
        room = columns - sum(widths[i] + 2 for i in keep if i != squeeze)
        widths[squeeze] = max(len(headers[squeeze]), min(widths[squeeze], room))
    out = console()
    pick = [headers[i] for i in keep]
    out.print(_line(pick, [widths[i] for i in keep], None), style="bold" if terminal else None, markup=False)
    position = keep.index(squeeze) if squeeze is not None else None
    for row in rows:
        out.print(_line([row[i] for i in keep], [widths[i] for i in keep], position), markup=False)


def _line(cells: Sequence[str], widths: list[int], squeeze: int | None) -> str:
    parts = []
    for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
        text = " ".join(cell.split("\n"))
        if index == squeeze and len(text) > width:
            text = text[: max(width - 1, 0)] + "…"
        parts.append(text if index == len(cells) - 1 else text.ljust(width))
    return "  ".join(parts).rstrip()


def write_output_file(path: Path, text: str) -> None:
    try:
        path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {str(path)!r}: {error.strerror}", Exit.RUN_FAILED)
