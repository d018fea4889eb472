"""``agent worker``: claims queued runs and executes them; finds and settles runs of lost workers.

A worker is a :class:`~agentstage.runtime.service.RunService` that executes what the queue hands
it (``execute_queued``) plus three background duties:

- cancels: it LISTENs on the store's cancel channel, so a cancel accepted by any API process
  reaches the run here within milliseconds; the durable ``cancel_requested`` flag, read at every
  heartbeat, covers a lost notification;
- lost workers (:class:`StallSweeper`, also run by API processes): a claimed run whose heartbeat
  is older than ``runtime.worker_lost_after`` is requeued (idempotent runs with attempts left) or
  ended ``failed``/``worker_lost``; either way its attempt is bumped first, so its old worker's
  late writes are refused;
- graceful stop: SIGTERM stops claiming, lets running runs finish for ``runtime.drain_timeout``,
  then cancels the rest with reason ``shutdown``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta

from agentstage.core.events import utc_now
from agentstage.core.records import RunRecord
from agentstage.core.tasks import stop_task, wait_stopped
from agentstage.distributed.queue import ProcrastinateQueue
from agentstage.errors import AgentstageError
from agentstage.runtime.recovery import fail_lost_run
from agentstage.runtime.service import RunService
from agentstage.settings import Settings
from agentstage.store.base import RunStore
from agentstage.store.sql import CANCEL_CHANNEL

log = logging.getLogger("agentstage.distributed")

REQUEUE_UNCLAIMED_AFTER = 10.0  # seconds a queued run may wait before its job is deferred again
LISTEN_RETRY_SECONDS = 0.5


class StallSweeper:
    """Settles runs whose worker stopped heartbeating, and re-defers runs whose job went missing."""

    def __init__(self, store: RunStore, queue: ProcrastinateQueue, settings: Settings):
        self.store = store
        self.queue = queue
        self.settings = settings

    async def sweep(self, *, at_startup: bool) -> list[str]:
        lost_after = self.settings.runtime.worker_lost_after
        now = utc_now()
        settled = []
        for record in await self.store.stalled_runs(now - timedelta(seconds=lost_after)):
            if await self._settle(record):
                settled.append(record.id)
        for record in await self.store.unclaimed_runs(now - timedelta(seconds=REQUEUE_UNCLAIMED_AFTER)):
            await self.queue.enqueue(record)  # harmless if it is queued already
        with contextlib.suppress(Exception):
            await self.queue.settle_stalled_jobs(lost_after)
        return settled

    def _attempts_left(self, record: RunRecord) -> bool:
        idempotent = bool(record.options.get("idempotent"))
        return idempotent and record.attempt < self.settings.runtime.max_attempts

    async def _settle(self, record: RunRecord) -> bool:
        if self._attempts_left(record):
            if not await self.store.requeue_run(record.id, record.attempt):
                return False
            log.warning(
                "run %s: its worker %s stopped heartbeating; requeued as attempt %d",
                record.id,
                record.worker_id,
                record.attempt + 1,
            )
            await self.queue.enqueue(record)
            return True
        if not await self.store.fence_run(record.id, record.attempt):
            return False  # someone else settled it first
        return await self._fail_lost(record, record.attempt + 1)

    async def _fail_lost(self, record: RunRecord, attempt: int) -> bool:
        message = f"the worker running this run ({record.worker_id}) stopped heartbeating before it finished"
        return await fail_lost_run(self.store, record, message, fence=attempt)


async def listen_for_cancels(conninfo: str, service: RunService) -> None:
    """Forward every cancel notification for a run executing here to the run's control."""
    import psycopg

    while True:
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as connection:
                await connection.execute(f"LISTEN {CANCEL_CHANNEL}")
                async for note in connection.notifies():
                    await _cancel_from(note.payload, service)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the store restarted or is unreachable: listen again soon
            log.warning("cancel listener lost its connection (%s); reconnecting", type(error).__name__)
            await asyncio.sleep(LISTEN_RETRY_SECONDS)


async def _cancel_from(payload: str, service: RunService) -> None:
    try:
        note = json.loads(payload)
        run_id, reason = str(note["run_id"]), str(note.get("reason") or "cancelled by the user")
    except (ValueError, KeyError, TypeError):
        return
    if service.executes(run_id):
        with contextlib.suppress(AgentstageError):
            await service.cancel(run_id, reason=reason)


async def run_worker(
    service: RunService, queue: ProcrastinateQueue, concurrency: int, stop: asyncio.Event
) -> None:
    """Execute queued runs until ``stop`` is set, then stop gracefully (see the module docstring)."""
    runtime = service.settings.runtime
    queue.handler = service.execute_queued
    await service.open()
    listener = asyncio.create_task(listen_for_cancels(queue.conninfo, service), name="agentstage-cancels")
    working = asyncio.create_task(
        queue.work(
            concurrency,
            heartbeat=max(runtime.worker_lost_after / 4, 0.5),
            stalled_after=runtime.worker_lost_after,
            shutdown_graceful_timeout=runtime.drain_timeout + runtime.cancel_grace + 10,
        ),
        name="agentstage-queue-worker",
    )
    log.warning("worker ready: %s executes up to %d runs at once", service.worker_id, concurrency)
    print(f"worker ready: {service.worker_id} (concurrency {concurrency})", flush=True)
    try:
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({working, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if working.done():
            working.result()  # the queue worker died: say why
            return
        log.warning("worker stopping: no new runs; draining for up to %gs", runtime.drain_timeout)
        working.cancel()  # procrastinate stops fetching and waits for its running jobs
        await service.drain(runtime.drain_timeout)
        await wait_stopped(working)
    finally:
        await stop_task(listener)
        await service.close()


class InProcessWorker:
    """The queue of an ``agent serve --execute``: it enqueues like any API process and also claims
    and executes runs in this process, next to the HTTP API."""

    def __init__(self, queue: ProcrastinateQueue, concurrency: int):
        self.queue = queue
        self.concurrency = concurrency
        self.service: RunService | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        await self.queue.open()
        service = self.service
        if service is None:
            return
        runtime = service.settings.runtime
        self.queue.handler = service.execute_queued
        self._tasks = [
            asyncio.create_task(listen_for_cancels(self.queue.conninfo, service), name="agentstage-cancels"),
            asyncio.create_task(
                self.queue.work(
                    self.concurrency,
                    heartbeat=max(runtime.worker_lost_after / 4, 0.5),
                    stalled_after=runtime.worker_lost_after,
                    shutdown_graceful_timeout=runtime.cancel_grace + 5,
                ),
                name="agentstage-queue-worker",
            ),
        ]

    async def enqueue(self, record: RunRecord) -> None:
        await self.queue.enqueue(record)

    async def withdraw(self, run_id: str) -> None:
        await self.queue.withdraw(run_id)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await wait_stopped(task)
            except Exception:
                log.exception("%s ended with an error", task.get_name())
        self._tasks = []
        await self.queue.close()
