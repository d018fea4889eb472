"""The run queue on PostgreSQL: procrastinate jobs, one per run, claimed by ``agent worker``.

procrastinate gives what a queue of runs needs and we would not want to write again: claims with
``FOR UPDATE SKIP LOCKED`` (two workers never take one job), LISTEN/NOTIFY so an idle worker starts
a new run at once, worker heartbeats, and locks that run jobs sharing a lock one after the other
in the order they were deferred. Its schema is applied by our Alembic chain (``p17a``).

Its worker claims one job per round trip, one after the other, and can miss a wake-up (a job
deferred while it is fetching): on a busy database a worker with many free slots then starts
queued runs one at a time, a poll interval apart. :class:`BatchClaimWorker` claims as many jobs as
it has free slots in one statement (procrastinate's own claim function, once per slot) and never
loses a wake-up.

procrastinate's worker also stops at the first failed heartbeat, claim or listen, and leaves a job
"doing" when its end cannot be written: a database restart or failover would stop every worker
(cancelling their runs with reason ``shutdown``) and hold conversations' locks. Our worker rides an
outage out instead: what failed is tried again, the outage is logged once, and the worker carries
on when the database is back.

- Deferring is idempotent: the queueing lock is the run id, so a run is in the queue at most once.
- Per-conversation ordering: the job's lock is the conversation, so two messages to one
  conversation run one after the other, in order, on any workers.
- A run whose tenant has no free slot raises :class:`TenantBusy` in its job; procrastinate offers
  the job again a moment later (the job keeps its place before later jobs of its conversation).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, LiteralString

from procrastinate import job_context, jobs, retry, utils
from procrastinate import worker as procrastinate_worker

from agentstage.core.records import RunRecord
from agentstage.distributed.job_ends import JobEnds
from agentstage.runtime.distribution import TenantBusy

log = logging.getLogger("agentstage.distributed")

TASK = "agentstage.execute_run"
QUEUE = "runs"
TENANT_BUSY_RETRY_SECONDS = 1  # procrastinate waits whole seconds
POLL_SECONDS = 0.5  # retried jobs (a busy tenant) wake no listener: they are found by polling
OUTAGE_RETRY_SECONDS = (0.1, 2.0)  # first and longest wait before trying the database again

# procrastinate's claim function, called once per free slot within one statement: each call sees
# the jobs the earlier ones took (a volatile function's statements see the transaction's own
# changes), so they take different jobs and respect locks exactly as one-at-a-time claims do.
# OFFSET 0 keeps the function evaluated once per row (not once per selected column).
FETCH_JOBS: LiteralString = """
SELECT (job).id, (job).status, (job).task_name, (job).priority, (job).lock, (job).queueing_lock,
       (job).args, (job).scheduled_at, (job).queue_name, (job).attempts, (job).worker_id
  FROM (SELECT procrastinate_fetch_job_v2(%(queues)s::varchar[], %(worker_id)s) AS job
          FROM generate_series(1, %(count)s) OFFSET 0) AS claimed
 WHERE (job).id IS NOT NULL
"""

Handler = Callable[[str], Awaitable[None]]


def libpq_url(url: str) -> str:
    """The store's SQLAlchemy URL as libpq takes it (``postgresql+psycopg://`` → ``postgresql://``)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def database_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the database could not be reached (a connection refused or cut, no
    pooled connection in time), as opposed to a statement the database refused."""
    import psycopg

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, psycopg.OperationalError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Outage:
    """Says once that the database is unreachable (and what for), and once that it is back."""

    def __init__(self) -> None:
        self.since: float | None = None

    def seen(self, what: str, error: BaseException) -> None:
        if self.since is None:
            self.since = time.monotonic()
            cause = error.__cause__ or error
            reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
            log.warning(
                "the database is unreachable (%s: %s); the worker retries until it is back", what, reason
            )

    def over(self) -> None:
        if self.since is not None:
            log.warning(
                "the database is back after %.1f s; the worker carries on", time.monotonic() - self.since
            )
            self.since = None


class BatchClaimWorker(procrastinate_worker.Worker):
    """procrastinate's worker, claiming all the jobs its free slots can take at once, and riding
    out a database outage (see the module docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._outage = _Outage()
        self._ends = JobEnds(self.app.connector, database_unreachable)

    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:
        # procrastinate's own, less the periodic deferrer (no periodic tasks here), with a heartbeat
        # and a listener that survive the database going away.
        return [
            asyncio.create_task(self._update_heartbeat(), name="update_heartbeats"),
            asyncio.create_task(
                self._poll_jobs_to_abort(),  # type: ignore[no-untyped-call]  # procrastinate's, unannotated
                name="poll_jobs_to_abort",
            ),
            asyncio.create_task(self._listen(), name="listener"),
        ]

    async def _update_heartbeat(self) -> None:
        assert self.worker_id is not None
        while True:
            await asyncio.sleep(self.update_heartbeat_interval)
            try:
                await self.app.job_manager.update_heartbeat(self.worker_id)
            except Exception as error:
                if not database_unreachable(error):
                    raise
                self._outage.seen("heartbeat", error)
            else:
                self._outage.over()

    async def _listen(self) -> None:
        delay = OUTAGE_RETRY_SECONDS[0]
        while True:
            listening = time.monotonic()
            try:
                await self.app.job_manager.listen_for_jobs(
                    on_notification=self._handle_notification, queues=self.queues
                )
            except Exception as error:
                if not database_unreachable(error):
                    raise
                self._outage.seen("listening for new runs", error)
            self._new_job_event.set()  # runs deferred while it was not listening: look for them
            if time.monotonic() - listening > 10 * OUTAGE_RETRY_SECONDS[1]:
                delay = OUTAGE_RETRY_SECONDS[0]  # a new outage, not the same one going on
            await asyncio.sleep(delay)
            delay = min(delay * 2, OUTAGE_RETRY_SECONDS[1])

    async def _persist_job_status(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        context: job_context.JobContext,
        job_result: job_context.JobResult | None,
    ) -> None:
        """Write the job's end (with the ends of the jobs that finish at the same moment, see
        :mod:`.job_ends`), trying again while the database is unreachable: a job left "doing"
        would hold its conversation's lock for as long as this worker lives."""
        delay = OUTAGE_RETRY_SECONDS[0]
        while True:
            try:
                if retry_decision is not None:
                    await super()._persist_job_status(job, status, retry_decision, context, job_result)
                    return
                assert job.id is not None
                await self._ends.finish(job.id, status.value, delete=self._deletes(status))
                self._job_ids_to_abort.pop(job.id, None)
                return
            except Exception as error:
                if not database_unreachable(error):
                    raise
                self._outage.seen("ending a job", error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, OUTAGE_RETRY_SECONDS[1])

    def _deletes(self, status: jobs.Status) -> bool:
        """Whether a job that ended with ``status`` is deleted (procrastinate's ``delete_jobs``)."""
        condition = self.delete_jobs
        if condition == jobs.DeleteJobCondition.SUCCESSFUL:
            return status == jobs.Status.SUCCEEDED
        return condition == jobs.DeleteJobCondition.ALWAYS

    async def _fetch_and_process_jobs(self) -> None:
        """Claim jobs until the queue has none ready or we are asked to stop."""
        while not self._stop_event.is_set():
            first = asyncio.create_task(self._job_semaphore.acquire())
            await utils.wait_any(first, self._stop_event.wait())
            if self._stop_event.is_set():
                if first.done():
                    self._job_semaphore.release()
                else:
                    first.cancel()
                return
            free = 1
            while not self._job_semaphore.locked():
                await self._job_semaphore.acquire()  # a free slot: returns at once
                free += 1
            # Cleared before the claim, not after: a job deferred while we claim sets it again,
            # so the worker looks once more instead of sleeping on a job it did not see.
            self._new_job_event.clear()
            try:
                claimed = await self._claim(free)
            except BaseException as error:
                for _ in range(free):
                    self._job_semaphore.release()
                if not isinstance(error, Exception) or not database_unreachable(error):
                    raise
                self._outage.seen("claiming runs", error)
                self._new_job_event.set()  # look again once the database is back
                await asyncio.sleep(OUTAGE_RETRY_SECONDS[0])
                return
            for _ in range(free - len(claimed)):
                self._job_semaphore.release()
            for job in claimed:
                self._start(job)
            if len(claimed) < free:
                return  # the queue has nothing more ready: wait for a notification (or a poll)

    async def _claim(self, count: int) -> list[jobs.Job]:
        assert self.worker_id is not None
        queues = list(self.queues) if self.queues is not None else None
        rows = await self.app.connector.execute_query_all_async(
            FETCH_JOBS, queues=queues, worker_id=self.worker_id, count=count
        )
        return [jobs.Job.from_row(row) for row in rows]

    def _start(self, job: jobs.Job) -> None:
        job_id = job.id
        context = job_context.JobContext(
            app=self.app,
            worker_name=self.worker_name,
            worker_queues=self.queues,
            additional_context=dict(self.additional_context or {}),
            job=job,
            abort_reason=lambda: self._job_ids_to_abort.get(job_id) if job_id else None,
            start_timestamp=time.time(),
        )
        task = asyncio.create_task(self._process_job(context), name=f"process job {job.task_name}[{job_id}]")
        self._running_jobs[task] = context

        def done(finished: asyncio.Task[Any]) -> None:
            del self._running_jobs[finished]
            self._job_semaphore.release()

        task.add_done_callback(done)


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

    async def withdraw(self, run_id: str) -> None:
        from procrastinate.jobs import Status

        manager = self.app.job_manager
        for job in await manager.list_jobs_async(queueing_lock=run_id, status=Status.TODO.value):
            if job.id is not None:  # a job a worker claims meanwhile is not cancelled: it finds the run ended
                await manager.cancel_job_by_id_async(job.id, delete_job=True)

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
        worker = BatchClaimWorker(
            app=self.app,
            queues=[QUEUE],
            concurrency=concurrency,
            install_signal_handlers=False,
            update_heartbeat_interval=heartbeat,
            stalled_worker_timeout=stalled_after,
            delete_jobs="successful",
            fetch_job_polling_interval=POLL_SECONDS,
            **options,
        )
        await worker.run()  # type: ignore[no-untyped-call]  # procrastinate leaves it unannotated
