"""Claims of queued runs asked for in one turn of the event loop, sent as one statement.

A worker takes as many jobs from the queue as it has free slots in one statement, then starts
them all at once; each then claims its run. Claimed one by one, that is a transaction per run,
the largest share of PostgreSQL's work per run after the event inserts. Batched, the runs a
worker starts together are claimed together: one ``UPDATE … WHERE id = ANY(…) RETURNING``.
Exactly one claim of a run still wins, whichever batches or processes ask for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

log = logging.getLogger("agentstage.store")

# Sends one batch: the run ids to claim for ``worker_id`` at ``at``; returns the rows it claimed by id.
SendClaims = Callable[[Sequence[str], str, datetime], Awaitable[dict[str, Any]]]
# Gives a claimed run back (its claimer went away before it could start it).
ReleaseClaim = Callable[[str, str], Awaitable[None]]


class _Batch:
    def __init__(self, at: datetime):
        self.at = at
        self.waiting: dict[str, asyncio.Future[Any]] = {}


class ClaimBatcher:
    """One per store; :meth:`claim` returns the claimed row, or None if another claim won."""

    def __init__(self, send: SendClaims, release: ReleaseClaim):
        self._send = send
        self._release = release
        self._open: dict[str, _Batch] = {}  # by worker: the batch the current loop turn fills
        self._tasks: set[asyncio.Task[None]] = set()

    async def claim(self, run_id: str, worker_id: str, at: datetime) -> Any | None:
        loop = asyncio.get_running_loop()
        batch = self._open.get(worker_id)
        if batch is None:
            batch = self._open[worker_id] = _Batch(at)
            # After every task already ready this turn has asked (they were started together).
            loop.call_soon(self._flush, worker_id, batch)
        if run_id in batch.waiting:  # asked twice at once: one claim wins, the other loses
            return None
        future: asyncio.Future[Any] = loop.create_future()
        batch.waiting[run_id] = future
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: self._give_back(done, run_id, worker_id))
            raise

    def _flush(self, worker_id: str, batch: _Batch) -> None:
        if self._open.get(worker_id) is batch:
            del self._open[worker_id]
        self._keep(asyncio.ensure_future(self._send_batch(worker_id, batch)))

    async def _send_batch(self, worker_id: str, batch: _Batch) -> None:
        try:
            rows = await self._send(list(batch.waiting), worker_id, batch.at)
        except asyncio.CancelledError:
            for future in batch.waiting.values():
                future.cancel()
            raise
        except Exception as error:
            for future in batch.waiting.values():
                if not future.done():
                    future.set_exception(error)
            return
        for run_id, future in batch.waiting.items():
            if not future.done():
                future.set_result(rows.get(run_id))

    def _give_back(self, done: asyncio.Future[Any], run_id: str, worker_id: str) -> None:
        """A claim whose caller was cancelled while it was on its way: if it won, give it back."""
        if done.cancelled() or done.exception() is not None or done.result() is None:
            return
        self._keep(asyncio.ensure_future(self._release_quietly(run_id, worker_id)))

    async def _release_quietly(self, run_id: str, worker_id: str) -> None:
        try:
            await self._release(run_id, worker_id)
        except Exception as error:  # its heartbeat stops: the stall sweep settles it
            log.warning("run %s: could not give back a claim nobody will use: %s", run_id, error)

    def _keep(self, task: asyncio.Task[None]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
