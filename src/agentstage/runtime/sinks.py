"""Event sinks: where committed events go after the writer has made them durable.

The writer calls :meth:`EventSink.deliver` on the event loop with each commit's events, in seq order
per run. Live followers are the first sink; traces, metrics and logs subscribe the same way. A sink
must return at once: one that does real work sits behind a :class:`QueuedSink`, whose bounded queue
drops (and counts) what a slow or broken consumer cannot keep up with, so no sink ever slows or
fails a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from agentstage.core.events import RunEvent
from agentstage.core.tasks import stop_task

log = logging.getLogger("agentstage.runtime")


class EventSink(Protocol):
    def deliver(self, events: Sequence[RunEvent]) -> None:
        """Take committed events. Called on the event loop; must not block or raise."""
        ...


Consumer = Callable[[Sequence[RunEvent]], Awaitable[None]]


class QueuedSink:
    """Hands events to an async consumer through a bounded queue, in order, never blocking."""

    def __init__(self, name: str, consume: Consumer, *, max_pending: int = 10_000):
        self.name = name
        self._consume = consume
        self._queue: asyncio.Queue[Sequence[RunEvent]] = asyncio.Queue(max_pending)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0  # events that never reached the consumer (queue full)
        self.failures = 0  # batches the consumer raised on

    def deliver(self, events: Sequence[RunEvent]) -> None:
        try:
            self._queue.put_nowait(events)
        except asyncio.QueueFull:
            if self.dropped == 0:
                log.warning("event sink %s cannot keep up; dropping its events (counted)", self.name)
            self.dropped += len(events)
            return
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._drain(), name=f"sink-{self.name}")

    async def _drain(self) -> None:
        while True:
            events = await self._queue.get()
            try:
                await self._consume(events)
            except Exception:
                self.failures += 1
                if self.failures == 1:
                    log.exception("event sink %s failed; its failures are counted, runs go on", self.name)
            finally:
                self._queue.task_done()

    async def aclose(self, drain_seconds: float = 5.0) -> None:
        """Let the consumer finish what is queued (for up to ``drain_seconds``), then stop it."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_seconds):
                await self._queue.join()
        await stop_task(self._task)
        self._task = None
