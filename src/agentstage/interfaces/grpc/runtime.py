"""What the gRPC services share: the runtime's services, and the runs a call owns.

A call that starts a run owns it: when the call ends before the run does (its deadline expired,
the client cancelled it or went away), the run is cancelled (the cancellation contract), unless
the request asked to ``detach``. The check hangs off the call's done-callback, so it holds however
the call ended, even while the method was suspended between two messages.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import grpc

from agentstage.errors import AgentstageError
from agentstage.runtime.conversations import ConversationService
from agentstage.runtime.service import RunService
from agentstage.settings import Settings

log = logging.getLogger("agentstage.grpc")
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


@dataclass
class Runtime:
    runs: RunService
    conversations: ConversationService
    stopping: bool = False
    background: set[asyncio.Task[Any]] = field(default_factory=set)

    @property
    def settings(self) -> Settings:
        """The service's current settings (they change when the config is updated)."""
        return self.runs.settings

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        """Work that outlives a call (cancelling an abandoned run), with a reference kept."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def owner(self, context: Context) -> RunOwner:
        return RunOwner(self, context)


class RunOwner:
    """The run a call is driving right now, cancelled if the call is abandoned."""

    def __init__(self, rt: Runtime, context: Context):
        self.rt = rt
        self.run_id: str | None = None
        self.detach = False
        context.add_done_callback(self._call_done)  # type: ignore[arg-type]  # the stub wants its own class

    def own(self, run_id: str, detach: bool) -> None:
        self.run_id, self.detach = run_id, detach

    def release(self) -> None:
        """The run reached its end while the call watched."""
        self.run_id = None

    def _call_done(self, context: Context) -> None:
        """The call ended while its run had not: the client cancelled, its deadline expired, the
        connection dropped, or the stream failed. (grpc.aio's ``context.cancelled()`` does not tell
        these apart reliably; an unreleased run does.)"""
        if self.run_id is None or self.detach or self.rt.stopping:
            return
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        reason = "the call's deadline expired" if expired else "the call ended before the run did"
        self.rt.spawn(_cancel(self.rt.runs, self.run_id, reason))
        self.run_id = None


async def _cancel(runs: RunService, run_id: str, reason: str) -> None:
    try:
        await runs.cancel(run_id, reason=reason)
    except AgentstageError as error:  # it ended meanwhile: nothing to do
        log.debug("abandoned run %s not cancelled: %s", run_id, error.message)
