"""``agent run``: one question in, a streamed answer and a complete record out."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import (
    SETUP_ERROR_CODES,
    Exit,
    fail,
    load_settings,
    note,
    open_services,
    read_stdin,
    read_text_file,
    run_command,
    stdin_is_piped,
)
from agentstage.interfaces.cli.options import (
    MaxStepsOption,
    ModelOption,
    ModelParamsOption,
    ModeOption,
    ProfileOption,
    SystemOption,
    check_mode,
    model_override,
    parse_model_params,
)
from agentstage.interfaces.cli.output import (
    JsonFlag,
    OutputFileOption,
    choose_format,
    console,
    write_output_file,
)
from agentstage.interfaces.cli.suggest import complete_formats

if TYPE_CHECKING:
    from agentstage.core.records import RunRecord
    from agentstage.runtime.conversations import ConversationService
    from agentstage.runtime.service import RunService

FORMATS = ("text", "json", "markdown")
EXIT_FOR_STATUS = {"completed": Exit.OK, "failed": Exit.RUN_FAILED, "cancelled": Exit.CANCELLED}


@dataclass
class Choices:
    """What one ``agent run`` (or one ``agent chat`` turn) asks for, beyond its input."""

    mode: str | None = None
    profile: str | None = None
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    max_steps: int | None = None

    def options(self) -> Any:
        from agentstage.runtime.requests import RunOptions

        return RunOptions(max_steps=self.max_steps, params=self.params)

    def settings(self) -> Any:
        settings = load_settings()
        overrides = model_override(settings, self.profile, self.model)
        return load_settings(**overrides) if overrides else settings


def read_question(question: str | None, input_file: Path | None) -> str:
    """The question from the argument, a file, and stdin when it is piped, joined in that order.

    ``-`` as the question (or as the file) means stdin. Like ``llm``: ``cat notes.txt | agent run
    "summarize"`` asks "summarize" about the notes."""
    parts: list[str] = []
    stdin_taken = question == "-"
    if question is not None:
        parts.append(read_stdin() if stdin_taken else question)
    if input_file is not None and str(input_file) == "-":
        if not stdin_taken:
            parts.append(read_stdin())
            stdin_taken = True
    elif input_file is not None:
        parts.append(read_text_file(input_file))
    if not stdin_taken and stdin_is_piped():
        piped = read_stdin()
        if piped.strip():
            parts.append(piped)
    if not parts:
        fail(
            'give a question, e.g. agent run "Summarize the sales data", pipe one in, or use --input-file FILE'
        )
    return "\n\n".join(part.strip("\n") for part in parts)


def run(
    question: Annotated[
        str | None,
        typer.Argument(
            metavar="QUESTION",
            help="What to ask the agent; '-' reads it from stdin. Piped stdin is always added after it.",
            show_default=False,
        ),
    ] = None,
    mode: ModeOption = None,
    profile: ProfileOption = None,
    model: ModelOption = None,
    system: SystemOption = None,
    model_params: ModelParamsOption = None,
    max_steps: MaxStepsOption = None,
    continue_last: Annotated[
        bool, typer.Option("--continue", "-c", help="Continue the most recent conversation.")
    ] = False,
    conversation: Annotated[
        str | None,
        typer.Option("--conversation", metavar="ID", help="Continue this conversation.", show_default=False),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input-file",
            "-f",
            metavar="FILE",
            help="Add FILE's text to the question ('-' = stdin).",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-F",
            metavar="FORMAT",
            help="text (streamed), json or markdown  [default: text]",
            show_default=False,
            autocompletion=complete_formats(*FORMATS),
        ),
    ] = None,
    as_json: JsonFlag = False,
    old_output: Annotated[str | None, typer.Option("--output", hidden=True)] = None,
    no_stream: Annotated[
        bool, typer.Option("--no-stream", help="Print the answer only when it is complete.")
    ] = False,
    output_file: OutputFileOption = None,
) -> None:
    """Run the agent on one question, streaming its answer, tools and plan as they happen.

    Ends with a summary line (run id, tokens, cost, time) on stderr; the answer alone goes to
    stdout, so `agent run "..." > answer.md` keeps just the answer. Each run starts a conversation
    that `--continue` picks up. Ctrl-C cancels the run (recorded as cancelled, exit 130).

    Exit codes: 0 completed, 1 failed, 2 usage or setup error, 130 cancelled.
    """
    chosen = choose_format(output_format or old_output, as_json, FORMATS, "text")
    if continue_last and conversation is not None:
        fail("--continue and --conversation both pick a conversation; give one of them")
    choices = Choices(
        mode=check_mode(mode),
        profile=profile,
        model=model,
        params=parse_model_params(model_params, system),
        max_steps=max_steps,
    )
    text = read_question(question, input_file)
    streamed = chosen == "text" and not no_stream
    record, model = run_command(lambda: _run(text, choices, streamed, continue_last, conversation))
    _deliver(record, chosen, streamed, output_file, model)
    raise typer.Exit(exit_code(record))


def exit_code(record: RunRecord) -> int:
    if record.status.value == "failed" and record.error_code in SETUP_ERROR_CODES:
        return Exit.USAGE
    return EXIT_FOR_STATUS.get(record.status.value, Exit.RUN_FAILED)


async def _run(
    text: str, choices: Choices, streamed: bool, continue_last: bool, conversation: str | None
) -> tuple[RunRecord, str | None]:
    from agentstage.interfaces.cli.render import RunView
    from agentstage.runtime.requests import RunRequest

    async with open_services(choices.settings()) as services:
        service, conversations = services.runs, services.conversations
        conversation_id = await pick_conversation(conversations, text, continue_last, conversation)
        request = RunRequest(
            input=text,
            mode=choices.mode,
            profile=choices.profile,
            options=choices.options(),
            conversation_id=conversation_id,
        )
        record = await service.start(request)
        stop_on_interrupt(service, record.id)
        notice_unclaimed(service, record.id)
        with RunView(show_tokens=streamed, rich_answer=None if streamed else False) as view:
            async for event in service.stream(record.id):
                view.handle(event)
        return await service.wait(record.id), view.model


async def pick_conversation(
    conversations: ConversationService, text: str, continue_last: bool, conversation: str | None
) -> str:
    """The conversation a run belongs to: the one asked for, the latest (``-c``), or a new one."""
    if conversation is not None:
        return (await conversations.get(conversation)).id
    if continue_last:
        latest = await conversations.list_conversations(limit=1)
        if latest:
            note(f"continuing conversation {latest[0].id} ({latest[0].title or 'untitled'})")
            return latest[0].id
        note("no earlier conversation: starting a new one")
    title = " ".join(text.split())[:80]
    return (await conversations.create(title=title)).id


UNCLAIMED_NOTICE_SECONDS = 5.0


def notice_unclaimed(service: RunService, run_id: str) -> None:
    """Scale-out mode: the run waits for an ``agent worker``; say so if none takes it soon, rather
    than sit silent."""
    if service.queue is None:
        return

    async def watch() -> None:
        await asyncio.sleep(UNCLAIMED_NOTICE_SECONDS)
        record = await service.store.get_run(run_id)
        if record is not None and record.status == "queued" and record.worker_id is None:
            note(
                f"run {run_id} is queued, and no `agent worker` has claimed it after "
                f"{UNCLAIMED_NOTICE_SECONDS:g}s (store.url and redis.url select the scale-out mode, where "
                "workers execute runs); Ctrl-C cancels it"
            )

    task = asyncio.get_running_loop().create_task(watch())
    _NOTICES.add(task)
    task.add_done_callback(_NOTICES.discard)


_NOTICES: set[asyncio.Task[None]] = set()


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
    record: RunRecord, output_format: str, streamed: bool, output_file: Path | None, model: str | None
) -> None:
    from rich.markdown import Markdown
    from rich.text import Text

    from agentstage.interfaces.cli.render import format_result, summary_line

    result = format_result(record, output_format)
    if output_file is not None:
        write_output_file(output_file, result)
    if output_format == "text" and not streamed and record.output:
        if sys.stdout.isatty():
            console().print(Markdown(record.output))
        else:
            print(record.output)
    elif output_format != "text":
        print(result)
    err = console(stderr=True)
    if record.error_code and record.status.value == "failed":
        err.print(Text(f"error: {record.error_message}", style="red"))
    style = {"completed": "green", "failed": "red", "cancelled": "yellow"}.get(record.status.value, "white")
    err.print(Text(summary_line(record, model), style=f"dim {style}"))
