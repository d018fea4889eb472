"""A run in progress in this process: its recorder, its control, its durable events, its followers."""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from agentstage.core.events import RunEvent
from agentstage.core.records import RunRecord
from agentstage.errors import StoreError
from agentstage.runtime.control import RunControl
from agentstage.runtime.recorder import RunRecorder
from agentstage.runtime.requests import RunRequest


@dataclass
class LiveRun:
    recorder: RunRecorder
    request: RunRequest
    control: RunControl = field(default_factory=RunControl)
    gate: asyncio.Semaphore | None = None  # a batch's own parallelism bound, if any
    task: asyncio.Task[None] | None = None
    events: list[RunEvent] = field(default_factory=list)  # durable events, seq 1, 2, 3 …
    failure: StoreError | None = None  # set when the run's ending could not be stored
    partial_output: str = ""  # what the run had streamed when it was stopped
    done: asyncio.Event = field(default_factory=asyncio.Event)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def record(self) -> RunRecord:
        return self.recorder.record

    def publish(self, events: Sequence[RunEvent]) -> None:
        """Called by the writer with this run's events that are now committed, in seq order."""
        self.events.extend(events)
        self.recorder.committed(events[-1].seq)
        self._changed.set()
        self._changed = asyncio.Event()

    def finish(self) -> None:
        self.done.set()
        self._changed.set()

    def durable_after(self, after: int) -> list[RunEvent]:
        """The events after seq ``after`` that are durable now."""
        return self.events[bisect.bisect_right(self.events, after, key=lambda event: event.seq) :]

    async def follow(self, after: int = 0) -> AsyncIterator[RunEvent]:
        """Durable events after seq ``after``, live as they are committed, until the terminal one.
        Ends with the store's error if the run's ending could not be stored."""
        index = bisect.bisect_right(self.events, after, key=lambda event: event.seq)
        while True:
            changed = self._changed
            while index < len(self.events):
                event = self.events[index]
                index += 1
                yield event
                if event.terminal:
                    return
            if self.done.is_set():
                if self.failure is not None:
                    raise self.failure
                return
            await changed.wait()
