"""Finding runs whose process died and failing them with ``worker_lost``, events kept.

A run belongs to the worker that queued it (``host:pid``). On the same host we ask the operating
system whether that process still exists; across hosts we trust the heartbeat. At start-up, a run
recorded under our own pid can only be a dead predecessor's (containers reuse pid 1).
"""

from __future__ import annotations

import logging
import os
import socket

from agentstage.core.events import ErrorInfo, RunEvent, RunFailed, utc_now
from agentstage.core.records import RunRecord
from agentstage.errors import StoreError
from agentstage.store.base import Batch, RunStore
from agentstage.types import RunStatus

log = logging.getLogger("agentstage.runtime")


class LostRunSweeper:
    def __init__(self, store: RunStore, worker_id: str, lost_after: float):
        self.store = store
        self.worker_id = worker_id
        self.lost_after = lost_after

    async def sweep(self, *, at_startup: bool) -> list[str]:
        """Fail every unfinished run whose worker is gone; return their ids."""
        failed = []
        for record in await self.store.unfinished_runs():
            if self._worker_alive(record, at_startup):
                continue
            if await self._fail(record):
                failed.append(record.id)
        return failed

    def _worker_alive(self, record: RunRecord, at_startup: bool) -> bool:
        if record.worker_id == self.worker_id:
            return not at_startup
        host, _, pid_text = (record.worker_id or "").rpartition(":")
        if host == socket.gethostname() and pid_text.isdigit():
            return _process_exists(int(pid_text))
        last_sign = record.heartbeat_at or record.created_at
        return (utc_now() - last_sign).total_seconds() < self.lost_after

    async def _fail(self, record: RunRecord) -> bool:
        message = f"the process running this run ({record.worker_id}) stopped before it finished"
        return await fail_lost_run(self.store, record, message)


async def fail_lost_run(
    store: RunStore, record: RunRecord, message: str, *, fence: int | None = None
) -> bool:
    """End a run whose process is gone: ``failed`` with ``worker_lost`` after its last stored event,
    in one write (fenced by ``fence``, the attempt, when runs are claimed). False when it already
    ended or another process recovered it first."""
    last = await store.last_event(record.id)
    if last is not None and last.terminal:
        return False
    now = utc_now()
    payload = RunFailed(
        error=ErrorInfo(code="worker_lost", message=message), usage=record.usage, cost=record.cost
    )
    event = RunEvent(record.id, (last.seq if last else 0) + 1, now, payload, trace_id=record.trace_id)
    batch = Batch()
    writes = batch.of(record.id)
    writes.fence = fence
    writes.events.append(event)
    writes.updates.update(
        status=RunStatus.FAILED,
        error_code="worker_lost",
        error_message=message,
        finished_at=now,
        last_seq=event.seq,
    )
    try:
        refused = await store.write(batch)
    except StoreError as error:
        log.warning("run %s could not be marked worker_lost yet: %s", record.id, error.message)
        return False
    if record.id in refused:  # another process recovered it first (the seq is taken), or it was fenced
        log.info("run %s was already recovered elsewhere", record.id)
        return False
    log.warning("run %s: %s; marked failed (worker_lost)", record.id, message)
    return True


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
