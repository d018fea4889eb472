"""``agent chat``: an interactive conversation with history, kept in the store."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentstage.interfaces.cli.common import open_services, run_command
from agentstage.interfaces.cli.options import (
    MODES,
    MaxStepsOption,
    ModelOption,
    ModelParamsOption,
    ProfileOption,
    SystemOption,
    check_mode,
    parse_model_params,
)
from agentstage.interfaces.cli.run import Choices, pick_conversation
from agentstage.interfaces.cli.suggest import complete_modes

if TYPE_CHECKING:
    from agentstage.core.records import ConversationRecord
    from agentstage.runtime.conversations import ConversationService
    from agentstage.runtime.service import RunService

HELP = "commands: /exit (or Ctrl-D) · /reset (new conversation) · /mode [auto|chat|react|planner] · /help"


class LineReader:
    """prompt_toolkit on a terminal (editing, history file); plain lines when stdin is piped."""

    def __init__(self, history_file: str):
        self.session: Any = None
        if sys.stdin.isatty() and sys.stdout.isatty():
            from prompt_toolkit import PromptSession
            from prompt_toolkit.history import FileHistory

            self.session = PromptSession(history=FileHistory(history_file))

    async def read(self) -> str | None:
        if self.session is not None:
            try:
                return str(await self.session.prompt_async("you> "))
            except EOFError:
                return None
            except KeyboardInterrupt:
                return ""
        line = await asyncio.to_thread(sys.stdin.readline)
        return None if line == "" else line.rstrip("\n")


def chat(
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            "-m",
            metavar="MODE",
            help="Orchestration mode: auto, chat, react or planner "
            "(change it later with /mode). Not the model: that is --model.",
            autocompletion=complete_modes,
        ),
    ] = "chat",
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
) -> None:
    """Talk with the agent; each answer sees the conversation so far.

    Ctrl-C stops the current answer (the run is recorded as cancelled); /exit or Ctrl-D leaves.
    Piped stdin is read one message per line.
    """
    from agentstage.interfaces.cli.common import fail

    if continue_last and conversation is not None:
        fail("--continue and --conversation both pick a conversation; give one of them")
    choices = Choices(
        mode=check_mode(mode) or "chat",
        profile=profile,
        model=model,
        params=parse_model_params(model_params, system),
        max_steps=max_steps,
    )
    run_command(lambda: _chat(choices, continue_last, conversation))


async def _chat(choices: Choices, continue_last: bool, picked: str | None) -> None:
    from agentstage.errors import UserError

    settings = choices.settings()
    settings.profile(choices.profile)
    settings.home.mkdir(parents=True, exist_ok=True)
    reader = LineReader(str(settings.home / "chat_history"))
    mode = choices.mode or "chat"
    async with open_services(settings) as services:
        conversations = services.conversations
        if continue_last or picked is not None:
            conversation = await conversations.get(
                await pick_conversation(conversations, "agent chat", continue_last, picked)
            )
        else:
            conversation = await conversations.create(title="agent chat")
        typer.secho(f"conversation {conversation.id} · mode {mode} · {HELP}", dim=True, err=True)
        while True:
            line = await reader.read()
            if line is None or line.strip() in ("/exit", "/quit"):
                return
            text = line.strip()
            if not text:
                continue
            if text.startswith("/"):
                new_mode, conversation = await _command(text, mode, conversations, conversation)
                mode = new_mode
                continue
            try:
                choices.mode = mode
                await _answer(services.runs, conversations, conversation.id, text, choices)
            except UserError as error:
                typer.secho(f"error: {error.message}", fg=typer.colors.RED, err=True)


async def _command(
    text: str, mode: str, conversations: ConversationService, conversation: ConversationRecord
) -> tuple[str, ConversationRecord]:
    command, _, argument = text.partition(" ")
    if command == "/reset":
        conversation = await conversations.create(title="agent chat")
        typer.secho(f"new conversation {conversation.id}", dim=True, err=True)
    elif command == "/mode":
        if not argument:
            typer.secho(f"mode: {mode}", dim=True, err=True)
        elif argument.strip() in MODES:
            mode = argument.strip()
            typer.secho(f"mode set to {mode}", dim=True, err=True)
        else:
            typer.secho(
                f"error: unknown mode {argument.strip()!r} (choose one of: {', '.join(MODES)})",
                fg="red",
                err=True,
            )
    elif command == "/help":
        typer.secho(HELP, dim=True, err=True)
    else:
        typer.secho(f"error: unknown command {command!r}; {HELP}", fg="red", err=True)
    return mode, conversation


async def _answer(
    service: RunService,
    conversations: ConversationService,
    conversation_id: str,
    text: str,
    choices: Choices,
) -> None:
    from agentstage.interfaces.cli.render import RunView, summary_line

    record = await conversations.send(
        conversation_id, text, mode=choices.mode, profile=choices.profile, options=choices.options()
    )
    loop = asyncio.get_running_loop()

    pending: list[asyncio.Task[object]] = []

    def interrupt() -> None:
        if not pending:
            pending.append(
                loop.create_task(service.cancel(record.id, reason="interrupted by the user (Ctrl-C)"))
            )

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        with RunView() as view:
            async for event in service.stream(record.id):
                view.handle(event)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    final = await service.wait(record.id)
    if final.status.value == "failed":
        typer.secho(f"error: {final.error_message}", fg=typer.colors.RED, err=True)
    typer.secho(summary_line(final, view.model), dim=True, err=True)
