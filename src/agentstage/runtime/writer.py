"""Group commit: every write of every run goes through one task that batches them.

Orchestrators never wait on the database: their recorders hand writes to the writer and carry on.
The writer commits whatever has accumulated in one transaction, then hands the committed events to
the sinks (live followers first), so a client never sees an event that a crash could take back and
a resumed stream (``after=seq``) never skips or repeats one. Live followers get them at once; the
runs waiting on the commit are answered next; the other sinks (telemetry, the event bus) are
called after those runs have moved on, in commit order, so observation never sits on a run's path.

A failure belongs to the run that caused it. When the database refuses some rows, the store keeps
every other run of the batch and names the refused runs, keeping of each its events up to the
refused row; those are delivered like any, then the run is told through ``on_lost`` (and its later,
uncommitted writes are dropped so its log stays gap-free). A locked database is
retried with backoff for ``write_timeout`` seconds before the runs concerned are told. While the
store cannot be written, :attr:`health` says so, new runs are refused at once, and a probe every
second notices when it can be written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from agentstage.core.events import RunEvent
from agentstage.core.records import RunRecord
from agentstage.core.tasks import stop_task
from agentstage.errors import StoreError
from agentstage.runtime.sinks import EventSink
from agentstage.store.base import Batch, ConversationTurn, RunStore

log = logging.getLogger("agentstage.runtime")

PROBE_INTERVAL = 1.0
MAX_BACKOFF = 1.0

# (run id, why, the seq its log now ends at when the store kept some of the lost commit's events)
LostHandler = Callable[[str, StoreError, int | None], None]


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


class StoreHealth:
    """Whether the store can be written, as last seen by a write or a probe."""

    def __init__(self) -> None:
        self.error: StoreError | None = None
        self.checked_at = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def seen_ok(self) -> None:
        if self.error is not None:
            log.warning("the store can be written again")
        self.error = None
        self.checked_at = time.monotonic()

    def seen_failing(self, error: StoreError) -> None:
        if self.error is None or self.error.code != error.code:
            log.error("the store cannot be written (%s): %s", error.code, error.message)
        self.error = error
        self.checked_at = time.monotonic()

    def require(self) -> None:
        """Refuse new work while the store is known to be failing (503/507 with Retry-After)."""
        if self.error is not None:
            raise StoreError(
                self.error.message,
                code=self.error.code,
                retry_after=self.error.retry_after,
                details=self.error.details,
            )


class EventWriter:
    def __init__(
        self,
        store: RunStore,
        *,
        sinks: Sequence[EventSink] = (),
        on_lost: LostHandler | None = None,
        write_timeout: float = 10.0,
    ):
        self._store = store
        self._sinks = list(sinks)
        self._on_lost = on_lost or (lambda _run_id, _error, _kept: None)
        self.write_timeout = write_timeout
        self.health = StoreHealth()
        self._pending = Batch()
        self._waiters: dict[str | None, list[asyncio.Future[None]]] = {}
        self._stored_snapshots: set[str] = set()
        self._fences: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._probe_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="agentstage-writer")
        self._probe_task = asyncio.create_task(self._recover(), name="agentstage-store-probe")

    def add_sink(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    # what recorders hand over -------------------------------------------------------------------

    def add_run(self, record: RunRecord) -> None:
        self._pending.of(record.id).new_run = record
        self._wake.set()

    def add_event(self, event: RunEvent) -> None:
        self._pending.of(event.run_id).events.append(event)
        self._wake.set()

    def update(self, run_id: str, **fields: Any) -> None:
        self._pending.update(run_id, **fields)
        self._wake.set()

    def add_turn(self, turn: ConversationTurn) -> None:
        self._pending.of(turn.run_id).turns.append(turn)
        self._wake.set()

    def add_snapshot(self, run_id: str, digest: str, body: dict[str, Any]) -> None:
        """Store a configuration snapshot once: runs that share a configuration share its row."""
        if digest not in self._stored_snapshots:
            self._pending.of(run_id).snapshots[digest] = body
            self._wake.set()

    def fence(self, run_id: str, attempt: int) -> None:
        """Every later write of the run carries ``attempt``; the store refuses it once the run's
        attempt has moved on (``run_fenced``)."""
        self._fences[run_id] = attempt

    def unfence(self, run_id: str) -> None:
        self._fences.pop(run_id, None)

    def discard(self, run_id: str) -> None:
        """Drop a run's writes that are not committed yet (its log must not continue after a gap)."""
        self._pending.runs.pop(run_id, None)

    async def flush(self, run_id: str | None = None) -> None:
        """Return once everything handed over so far (for ``run_id``, or by everyone) is committed;
        raise the :class:`StoreError` that kept it from being committed."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter.add_done_callback(_retrieve)  # its caller may have gone; the error is reported elsewhere
        self._waiters.setdefault(run_id, []).append(waiter)
        self._wake.set()
        await asyncio.shield(waiter)

    async def probe(self, max_age: float = PROBE_INTERVAL) -> None:
        """Prove the store is writable, at most once per ``max_age`` seconds; raise if it is not."""
        if time.monotonic() - self.health.checked_at >= max_age:
            try:
                await self._store.probe()
            except StoreError as error:
                self.health.seen_failing(error)
            else:
                self.health.seen_ok()
        self.health.require()

    async def close(self) -> None:
        if self._task is None:
            return
        with contextlib.suppress(Exception):
            await self.flush()
        for task in (self._task, self._probe_task):
            if task is not None:
                await stop_task(task)
        self._task = self._probe_task = None

    # the loop -------------------------------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(0)  # let every run that is ready this tick add its writes first
            self._wake.clear()
            batch, waiters = self._pending, self._waiters
            self._pending, self._waiters = Batch(), {}
            if self._fences:
                for run_id, writes in batch.runs.items():
                    writes.fence = self._fences.get(run_id)
            refused, failure = await self._commit(batch)
            lost: dict[str, StoreError] = (
                dict.fromkeys(batch.runs, failure) if failure is not None else refused
            )
            events = [e for run_id, w in batch.runs.items() if run_id not in lost for e in w.events]
            kept_through: dict[str, int] = {}
            for run_id in refused:  # what the store kept of a refused run: its log up to the failure
                kept = batch.runs[run_id].events[: batch.runs[run_id].kept_events]
                if kept:
                    events.extend(kept)
                    kept_through[run_id] = kept[-1].seq
            # Live followers at once, then the runs that lost writes are told (they end after what
            # was kept).
            self._deliver(self._sinks[:1], events)
            for run_id, error in lost.items():
                self.discard(run_id)
                self._on_lost(run_id, error, kept_through.get(run_id))
            self._answer(waiters, batch, lost, failure)
            if events and len(self._sinks) > 1:  # the others once the runs waiting here have moved on
                asyncio.get_running_loop().call_soon(self._deliver, self._sinks[1:], events)

    async def _commit(self, batch: Batch) -> tuple[dict[str, StoreError], StoreError | None]:
        """Write a batch, retrying a locked store until ``write_timeout``; say which runs lost what."""
        if not batch:
            return {}, None
        deadline = time.monotonic() + self.write_timeout
        delay = 0.05
        while True:
            try:
                refused = await self._store.write(batch)
            except StoreError as error:
                self.health.seen_failing(error)
                if error.code == "store_unavailable" and time.monotonic() + delay < deadline:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, MAX_BACKOFF)
                    continue
                return {}, error
            except Exception as crash:  # a defect in the write path: keep the loop alive, say so
                log.exception("the store write failed unexpectedly")
                return {}, StoreError(f"the store write failed: {type(crash).__name__}: {crash}")
            self.health.seen_ok()
            for writes in batch.runs.values():
                if writes.run_id not in refused:
                    self._stored_snapshots.update(writes.snapshots)
            for run_id, refusal in refused.items():
                log.error("run %s: the store refused its writes; it fails alone: %s", run_id, refusal.message)
            return refused, None

    @staticmethod
    def _deliver(sinks: Sequence[EventSink], events: list[RunEvent]) -> None:
        if not events:
            return
        for sink in sinks:
            try:
                sink.deliver(events)
            except Exception:  # a sink must not raise; if one does, it loses these events only
                log.exception("an event sink raised; its events were dropped")

    @staticmethod
    def _answer(
        waiters: dict[str | None, list[asyncio.Future[None]]],
        batch: Batch,
        lost: dict[str, StoreError],
        failure: StoreError | None,
    ) -> None:
        for run_id, futures in waiters.items():
            problem = (failure or next(iter(lost.values()), None)) if run_id is None else lost.get(run_id)
            for future in futures:
                if future.done():
                    continue
                if problem is None:
                    future.set_result(None)
                else:
                    future.set_exception(problem)

    async def _recover(self) -> None:
        """While the store is failing, probe it every second so it recovers by itself."""
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            if not self.health.ok:
                with contextlib.suppress(StoreError):
                    await self.probe(max_age=0)
