"""``agent run``: one question in, a streamed answer and a complete record out."""

from __future__ import annotations

import asyncio
import signal
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentstage.interfaces.cli.common import (
    Exit,
    fail,
    load_settings,
    open_service,
    read_text_file,
    run_command,
)

if TYPE_CHECKING:
    from agentstage.core.records import RunRecord
    from agentstage.runtime.service import RunService


class OutputFormat(StrEnum):
    TEXT = "text"
    JSON = "json"
    MARKDOWN = "markdown"


EXIT_FOR_STATUS = {"completed": Exit.OK, "failed": Exit.RUN_FAILED, "cancelled": Exit.CANCELLED}

ModeOption = Annotated[
    str | None,
    typer.Option("--mode", "-m", help="Orchestration: auto, chat, react or planner. Default: auto."),
]
ProfileOption = Annotated[
    str | None, typer.Option("--profile", "-p", help="Model profile (see `agent profile list`).")
]


def read_question(question: str | None, input_file: Path | None) -> str:
    """The question from the argument, a file (``-`` for stdin), or both (file appended)."""
    parts = [question] if question is not None else []
    if input_file is not None:
        text = read_text_file(input_file)
        parts.append(text)
    if not parts:
        fail('give a question, e.g. agent run "Summarize the sales data", or --input-file FILE')
    return "\n\n".join(parts)


def run(
    question: Annotated[str | None, typer.Argument(help="What to ask the agent.", show_default=False)] = None,
    mode: ModeOption = None,
    profile: ProfileOption = None,
    input_file: Annotated[
        Path | None, typer.Option("--input-file", "-f", help="Read the question from a file ('-' = stdin).")
    ] = None,
    output: Annotated[
        OutputFormat, typer.Option("--output", help="How to print the result.", case_sensitive=False)
    ] = OutputFormat.TEXT,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print the answer only when it is complete.")
    ] = False,
    output_file: Annotated[
        Path | None, typer.Option("-o", "--output-file", help="Also write the result to this file.")
    ] = None,
) -> None:
    """Run the agent on one question, streaming its answer, tools and plan as they happen.

    Ends with a summary line (run id, tokens, cost, time) on stderr. Ctrl-C cancels the run
    (recorded as cancelled, exit 130). Exit codes: 0 completed, 1 failed, 2 usage error.
    """
    text = read_question(question, input_file)
    record, model = run_command(lambda: _run(text, mode, profile, output, no_stream))
    _deliver(record, output, no_stream, output_file, model)
    raise typer.Exit(EXIT_FOR_STATUS.get(record.status.value, Exit.RUN_FAILED))


async def _run(
    text: str, mode: str | None, profile: str | None, output: OutputFormat, no_stream: bool
) -> tuple[RunRecord, str | None]:
    from agentstage.interfaces.cli.render import RunView
    from agentstage.runtime.requests import RunRequest

    settings = load_settings()
    async with open_service(settings) as service:
        record = await service.start(RunRequest(input=text, mode=mode, profile=profile))
        stop_on_interrupt(service, record.id)
        show_tokens = output is OutputFormat.TEXT and not no_stream
        with RunView(show_tokens=show_tokens, rich_answer=None if show_tokens else False) as view:
            async for event in service.stream(record.id):
                view.handle(event)
        return await service.wait(record.id), view.model


def stop_on_interrupt(service: RunService, run_id: str) -> None:
    """Ctrl-C (or SIGTERM) cancels the run instead of killing the process mid-write."""
    loop = asyncio.get_running_loop()
    pending: list[asyncio.Task[object]] = []

    def interrupt() -> None:
        if not pending:
            pending.append(
                loop.create_task(service.cancel(run_id, reason="interrupted by the user (Ctrl-C)"))
            )

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupt)


def _deliver(
    record: RunRecord, output: OutputFormat, no_stream: bool, output_file: Path | None, model: str | None
) -> None:
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.text import Text

    from agentstage.interfaces.cli.render import format_result, summary_line

    result = format_result(record, output.value)
    if output_file is not None:
        try:
            output_file.write_text(result + "\n", encoding="utf-8")
        except OSError as error:
            fail(f"cannot write {str(output_file)!r}: {error.strerror}", Exit.RUN_FAILED)
    streamed = output is OutputFormat.TEXT and not no_stream
    if output is OutputFormat.TEXT and not streamed and record.output:
        if sys.stdout.isatty():
            Console().print(Markdown(record.output))
        else:
            print(record.output)
    elif output is not OutputFormat.TEXT:
        print(result)
    err = Console(stderr=True, highlight=False)
    if record.error_code and record.status.value == "failed":
        err.print(Text(f"error: {record.error_message}", style="red"))
    style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(record.status.value, "white")
    err.print(summary_line(record, model), style=f"dim {style}")
