"""Group commit: every write of every run goes through one task that batches them.

Orchestrators never wait on the database: they hand events to the writer and carry on. The writer
commits whatever has accumulated in one transaction, then tells the run service which events are
now durable, and only durable events are streamed. So a client can never have seen an event that a
crash could take back, and a resumed stream (``after=seq``) never skips or repeats one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from agentstage.core.events import RunEvent
from agentstage.core.records import MessageRecord, RunRecord
from agentstage.store.base import Batch, RunStore

log = logging.getLogger("agentstage.runtime")

WRITE_ATTEMPTS = 5


class EventWriter:
    def __init__(self, store: RunStore, on_durable: Callable[[list[RunEvent]], None]):
        self._store = store
        self._on_durable = on_durable
        self._pending = Batch()
        self._waiters: list[asyncio.Future[None]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="agentstage-writer")

    def add_run(self, record: RunRecord) -> None:
        self._pending.new_runs.append(record)
        self._wake.set()

    def add_event(self, event: RunEvent) -> None:
        self._pending.events.append(event)
        self._wake.set()

    def update(self, run_id: str, **fields: object) -> None:
        self._pending.update(run_id, **fields)
        self._wake.set()

    def add_messages(self, messages: list[MessageRecord]) -> None:
        self._pending.messages.extend(messages)
        self._wake.set()

    async def flush(self) -> None:
        """Return once everything handed over so far is committed (or raise why it could not be)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._wake.set()
        await asyncio.shield(waiter)

    async def close(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(Exception):
            await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # let every run that is ready this tick add its events first
            self._wake.clear()
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = Batch(), []
            error = await self._write(batch)
            if error is None:
                self._on_durable(batch.events)
            for waiter in waiters:
                if waiter.done():
                    continue
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)

    async def _write(self, batch: Batch) -> Exception | None:
        if not batch:
            return None
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                await self._store.write(batch)
                return None
            except Exception as error:  # the database is busy or gone; retry, then report
                if attempt == WRITE_ATTEMPTS:
                    log.error("store write failed after %d attempts: %s", attempt, error)
                    return error
                await asyncio.sleep(0.05 * 2**attempt)
        return None
