"""A run in progress in this process: its record, its durable events and its followers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from agentstage.core.events import RunEvent
from agentstage.core.orchestrators import AgentContext
from agentstage.core.records import RunRecord
from agentstage.runtime.requests import RunRequest


@dataclass
class LiveRun:
    record: RunRecord
    request: RunRequest
    events: list[RunEvent] = field(default_factory=list)
    next_seq: int = 1
    task: asyncio.Task[None] | None = None
    context: AgentContext | None = None
    cancel_reason: str | None = None
    scheduled: bool = False
    gate: asyncio.Semaphore | None = None  # a batch's own parallelism bound, if any
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def publish(self, events: list[RunEvent]) -> None:
        """Called by the writer with events that are now committed."""
        self.events.extend(events)
        self._changed.set()
        self._changed = asyncio.Event()

    def finish(self) -> None:
        self.done.set()
        self._changed.set()

    async def follow(self, after: int = 0) -> AsyncIterator[RunEvent]:
        """Durable events after ``after``, live as they are committed, until the terminal one."""
        index = max(after, 0)
        while True:
            changed = self._changed
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if event.terminal:
                    return
            if self.done.is_set():
                return
            await changed.wait()
