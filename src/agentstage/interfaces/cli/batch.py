"""``agent batch``: one run per input line, in parallel, results in input order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import (
    Exit,
    fail,
    open_service,
    read_stdin,
    read_text_file,
    run_command,
    stdin_is_piped,
)
from agentstage.interfaces.cli.options import (
    MaxStepsOption,
    ModelOption,
    ModeOption,
    ProfileOption,
    SystemOption,
    check_mode,
    parse_model_params,
)
from agentstage.interfaces.cli.output import JsonFlag, choose_format, write_output_file
from agentstage.interfaces.cli.run import Choices
from agentstage.interfaces.cli.suggest import complete_formats

if TYPE_CHECKING:
    from agentstage.runtime.service import BatchItem

FORMATS = ("json", "jsonl")


def read_lines(path: Path | None) -> list[tuple[int, str]]:
    """(line number, text) for every non-blank line of the file, or of stdin when it is piped."""
    if path is None and not stdin_is_piped():
        fail("give the questions with --input FILE (one per line) or pipe them in")
    text = read_stdin() if path is None else read_text_file(path)
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        where = "standard input" if path is None or str(path) == "-" else f"input file {str(path)!r}"
        fail(f"{where} has no questions (one per line)")
    return lines


def batch(
    input_path: Annotated[
        Path | None,
        typer.Option(
            "--input",
            "-i",
            metavar="FILE",
            help="One question per line ('-' or piped stdin when omitted).",
            show_default=False,
        ),
    ] = None,
    output_file: Annotated[
        Path | None,
        typer.Option(
            "--output-file",
            metavar="FILE",
            help="Write the results to FILE instead of stdout.",
            show_default=False,
        ),
    ] = None,
    old_output: Annotated[Path | None, typer.Option("--output", "-o", hidden=True)] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="FORMAT",
            help="json (one document with counts) or jsonl (one result per line)  [default: json]",
            show_default=False,
            autocompletion=complete_formats(*FORMATS),
        ),
    ] = None,
    as_json: JsonFlag = False,
    parallel: Annotated[int, typer.Option(min=1, max=256, metavar="N", help="Runs at the same time.")] = 4,
    mode: ModeOption = None,
    profile: ProfileOption = None,
    model: ModelOption = None,
    system: SystemOption = None,
    max_steps: MaxStepsOption = None,
) -> None:
    """Run the agent once per line of a file, with a progress bar on a terminal.

    A failing line is reported in its result and never stops the batch. The exit code is 0 when
    every run completed, 1 otherwise.
    """
    chosen = choose_format(output_format, as_json, FORMATS, "json")
    if output_file is not None and old_output is not None:
        fail("--output is the old spelling of --output-file; give one of them")
    output_file = output_file or old_output
    choices = Choices(
        mode=check_mode(mode), profile=profile, model=model, params=parse_model_params(None, system),
        max_steps=max_steps,
    )  # fmt: skip
    lines = read_lines(input_path)
    items = run_command(lambda: _batch(lines, parallel, choices))
    results = [{"line": number, **item.result()} for (number, _), item in zip(lines, items, strict=True)]
    counts: dict[str, int] = {}
    for result in results:
        counts[str(result["status"])] = counts.get(str(result["status"]), 0) + 1
    if chosen == "jsonl":
        document = "\n".join(json.dumps(result, ensure_ascii=False) for result in results)
    else:
        body = {"total": len(results), "counts": counts, "results": results}
        document = json.dumps(body, indent=2, ensure_ascii=False)
    if output_file is None:
        print(document)
    else:
        write_output_file(output_file, document)
    _report(results, counts)
    raise typer.Exit(Exit.OK if counts.get("completed", 0) == len(results) else Exit.RUN_FAILED)


def _report(results: list[dict[str, Any]], counts: dict[str, int]) -> None:
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


async def _batch(lines: list[tuple[int, str]], parallel: int, choices: Choices) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from agentstage.interfaces.cli.output import console
    from agentstage.runtime.requests import RunRequest

    settings = choices.settings()
    requests = [
        RunRequest(input=text, mode=choices.mode, profile=choices.profile, options=choices.options())
        for _, text in lines
    ]
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    err = console(stderr=True)
    async with open_service(settings) as service:
        with Progress(*columns, transient=True, console=err, disable=not err.is_terminal) as progress:
            task = progress.add_task("running", total=len(requests))

            def advance(_: BatchItem) -> None:
                progress.advance(task)

            return await service.batch(requests, parallel=parallel, on_result=advance)
