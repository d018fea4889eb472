"""``agent chat``: an interactive conversation with history, kept in the store."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import TYPE_CHECKING, Any

import typer

from agentstage.interfaces.cli.common import load_settings, open_services, run_command
from agentstage.interfaces.cli.run import ModeOption, ProfileOption

if TYPE_CHECKING:
    from agentstage.core.records import ConversationRecord
    from agentstage.runtime.conversations import ConversationService
    from agentstage.runtime.service import RunService

HELP = "commands: /exit (or Ctrl-D) · /reset (new conversation) · /mode [auto|chat|react|planner] · /help"
MODES = ("auto", "chat", "react", "planner")


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


def chat(mode: ModeOption = "chat", profile: ProfileOption = None) -> None:
    """Talk with the agent; each answer sees the conversation so far.

    Ctrl-C stops the current answer (the run is recorded as cancelled); /exit or Ctrl-D leaves.
    """
    run_command(lambda: _chat(mode or "chat", profile))


async def _chat(mode: str, profile: str | None) -> None:
    from agentstage.errors import UserError

    settings = load_settings()
    settings.profile(profile)
    settings.home.mkdir(parents=True, exist_ok=True)
    reader = LineReader(str(settings.home / "chat_history"))
    async with open_services(settings) as services:
        conversations = services.conversations
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
                await _answer(services.runs, conversations, conversation.id, text, mode, profile)
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
    mode: str,
    profile: str | None,
) -> None:
    from agentstage.interfaces.cli.render import RunView, summary_line

    record = await conversations.send(conversation_id, text, mode=mode, profile=profile)
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
