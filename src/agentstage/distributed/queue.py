"""The run queue on PostgreSQL: procrastinate jobs, one per run, claimed by ``agent worker``.

procrastinate gives what a queue of runs needs and we would not want to write again: claims with
``FOR UPDATE SKIP LOCKED`` (two workers never take one job), LISTEN/NOTIFY so an idle worker starts
a new run at once, worker heartbeats, and locks that run jobs sharing a lock one after the other
in the order they were deferred. Its schema is applied by our Alembic chain (``p17a``).

- Deferring is idempotent: the queueing lock is the run id, so a run is in the queue at most once.
- Per-conversation ordering: the job's lock is the conversation, so two messages to one
  conversation run one after the other, in order, on any workers.
- A run whose tenant has no free slot raises :class:`TenantBusy` in its job; procrastinate offers
  the job again a moment later (the job keeps its place before later jobs of its conversation).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agentstage.core.records import RunRecord
from agentstage.runtime.distribution import TenantBusy

log = logging.getLogger("agentstage.distributed")

TASK = "agentstage.execute_run"
QUEUE = "runs"
TENANT_BUSY_RETRY_SECONDS = 1  # procrastinate waits whole seconds

Handler = Callable[[str], Awaitable[None]]


def libpq_url(url: str) -> str:
    """The store's SQLAlchemy URL as libpq takes it (``postgresql+psycopg://`` → ``postgresql://``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class ProcrastinateQueue:
    def __init__(self, store_url: str, *, pool_size: int = 4):
        import procrastinate

        self.conninfo = libpq_url(store_url)
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=self.conninfo, min_size=1, max_size=pool_size, kwargs={"connect_timeout": 5}
            )
        )
        self.handler: Handler | None = None
        retry = procrastinate.RetryStrategy(
            max_attempts=None, wait=TENANT_BUSY_RETRY_SECONDS, retry_exceptions={TenantBusy}
        )
        self.app.task(name=TASK, queue=QUEUE, retry=retry, pass_context=False)(self._execute)
        self._open = False

    async def _execute(self, run_id: str) -> None:
        if self.handler is None:
            raise RuntimeError("this process executes no runs (no handler)")
        await self.handler(run_id)

    async def open(self) -> None:
        if not self._open:
            await self.app.open_async()
            self._open = True

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self.app.close_async()

    async def enqueue(self, record: RunRecord) -> None:
        from procrastinate.exceptions import AlreadyEnqueued

        lock = f"conversation:{record.conversation_id}" if record.conversation_id else None
        task = self.app.configure_task(TASK, queueing_lock=record.id, lock=lock)
        try:
            await task.defer_async(run_id=record.id)
        except AlreadyEnqueued:
            log.debug("run %s is already in the queue", record.id)

    async def settle_stalled_jobs(self, stalled_after: float) -> int:
        """Fail the jobs of workers that stopped heartbeating (their runs are handled through the
        runs table): a dead worker's job must not hold its conversation's lock forever."""
        from procrastinate.jobs import Status

        manager = self.app.job_manager
        count = 0
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
            if job.id is None:
                continue
            try:
                await manager.finish_job_by_id_async(job.id, status=Status.FAILED, delete_job=False)
                count += 1
            except Exception as error:  # finished by its worker or another sweeper meanwhile
                log.debug("stalled job %s not settled: %s", job.id, error)
        return count

    async def work(self, concurrency: int, heartbeat: float, stalled_after: float, **options: Any) -> None:
        """Claim and execute runs until cancelled (then stop claiming and let running ones end)."""
        await self.app.run_worker_async(
            queues=[QUEUE],
            concurrency=concurrency,
            install_signal_handlers=False,
            update_heartbeat_interval=heartbeat,
            stalled_worker_timeout=stalled_after,
            delete_jobs="successful",
            fetch_job_polling_interval=0.5,  # retried jobs (a busy tenant) wake no listener
            **options,
        )
