"""``agent batch``: one run per input line, in parallel, results in input order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import (
    Exit,
    fail,
    load_settings,
    open_service,
    read_text_file,
    run_command,
)
from agentstage.interfaces.cli.run import ModeOption, ProfileOption

if TYPE_CHECKING:
    from agentstage.runtime.service import BatchItem


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) for every non-blank line."""
    text = read_text_file(path)
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        fail(f"input file {str(path)!r} has no questions (one per line)")
    return lines


def batch(
    input_path: Annotated[
        Path, typer.Option("--input", "-i", help="A text file with one question per line.")
    ],
    output_path: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the results here as JSON (default: stdout).")
    ] = None,
    parallel: Annotated[int, typer.Option(min=1, max=256, help="Runs at the same time.")] = 4,
    mode: ModeOption = None,
    profile: ProfileOption = None,
) -> None:
    """Run the agent once per line of a file, with a progress bar.

    A failing line is reported in its result and never stops the batch. The exit code is 0 when
    every run completed, 1 otherwise.
    """
    lines = read_lines(input_path)
    items = run_command(lambda: _batch(lines, parallel, mode, profile))
    results = [{"line": number, **item.result()} for (number, _), item in zip(lines, items, strict=True)]
    counts: dict[str, int] = {}
    for result in results:
        counts[str(result["status"])] = counts.get(str(result["status"]), 0) + 1
    document = json.dumps(
        {"total": len(results), "counts": counts, "results": results}, indent=2, ensure_ascii=False
    )
    if output_path is None:
        print(document)
    else:
        try:
            output_path.write_text(document + "\n", encoding="utf-8")
        except OSError as error:
            fail(f"cannot write {str(output_path)!r}: {error.strerror}", Exit.RUN_FAILED)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    typer.secho(f"{len(results)} runs: {summary}", err=True, dim=True)
    for result in results:
        if result["status"] != "completed":
            problem = result.get("error") or {}
            typer.secho(
                f"line {result['line']}: {result['status']} ({problem.get('code')}): {problem.get('message')}",
                err=True,
                fg=typer.colors.RED,
            )
    raise typer.Exit(Exit.OK if counts.get("completed", 0) == len(results) else Exit.RUN_FAILED)


async def _batch(
    lines: list[tuple[int, str]], parallel: int, mode: str | None, profile: str | None
) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentstage.runtime.requests import RunRequest

    settings = load_settings()
    requests = [RunRequest(input=text, mode=mode, profile=profile) for _, text in lines]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    async with open_service(settings) as service:
        with Progress(*columns, transient=True) as progress:
            task = progress.add_task("running", total=len(requests))

            def advance(_: BatchItem) -> None:
                progress.advance(task)

            return await service.batch(requests, parallel=parallel, on_result=advance)
