"""Ending queue jobs on a real PostgreSQL: the ends of jobs that finish at the same moment are
written together, in one transaction; an end the database refuses fails alone; a job ended
on its own is written at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from devcluster import Postgres
from procrastinate.jobs import Status

from agentstage.distributed.job_ends import JobEnds
from agentstage.distributed.queue import QUEUE, TASK, ProcrastinateQueue, database_unreachable
from agentstage.store.sql import SqlRunStore

# Its own PostgreSQL whatever --store says: it runs once, in the SQLite pass.
pytestmark = [pytest.mark.anyio, pytest.mark.own_postgres]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    server = Postgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def queue(postgres: Postgres) -> AsyncIterator[ProcrastinateQueue]:
    store = SqlRunStore(postgres.url)  # its migrations put procrastinate's schema in place
    await store.open()
    await store.close()
    queue = ProcrastinateQueue(postgres.url)
    await queue.open()
    try:
        yield queue
    finally:
        await queue.close()


async def claimed_jobs(queue: ProcrastinateQueue, count: int, name: str) -> list[int]:
    """``count`` jobs deferred and claimed ("doing"), as a worker holds them while their runs go on."""
    manager = queue.app.job_manager
    for index in range(count):
        task = queue.app.configure_task(TASK, queueing_lock=f"{name}-{index}")
        await task.defer_async(run_id=f"{name}-{index}")
    worker_id = await manager.register_worker()
    ids = []
    for _ in range(count):
        job = await manager.fetch_job(queues=[QUEUE], worker_id=worker_id)
        assert job is not None and job.id is not None
        ids.append(job.id)
    return ids


def rows(postgres: Postgres, ids: list[int]) -> list[tuple[str, str]]:
    """(status, xmin) of the jobs still in the table, by id."""
    listed = ", ".join(str(job_id) for job_id in ids)
    answer = postgres.sql(
        f"SELECT status, xmin::text FROM procrastinate_jobs WHERE id IN ({listed}) ORDER BY id",
        database="agentstage",
    )
    return [(line.split("|")[0], line.split("|")[1]) for line in answer.splitlines() if line]


async def test_ends_that_arrive_together_are_written_in_one_transaction(
    queue: ProcrastinateQueue, postgres: Postgres
) -> None:
    ids = await claimed_jobs(queue, 6, "together")
    ends = JobEnds(queue.app.connector, database_unreachable)
    await asyncio.gather(*(ends.finish(job_id, "failed", delete=False) for job_id in ids))
    kept = rows(postgres, ids)
    assert [status for status, _ in kept] == ["failed"] * 6
    assert len({xmin for _, xmin in kept}) == 1, f"ended one by one: {kept}"

    # Deleted ends (a run that succeeded) go the same way.
    more = await claimed_jobs(queue, 4, "deleted")
    await asyncio.gather(*(ends.finish(job_id, "succeeded", delete=True) for job_id in more))
    assert rows(postgres, more) == []


async def test_a_refused_end_fails_alone(queue: ProcrastinateQueue, postgres: Postgres) -> None:
    ids = await claimed_jobs(queue, 5, "refused")
    # The third job was ended meanwhile (by a stalled-job sweeper, say): ending it again is refused.
    await queue.app.job_manager.finish_job_by_id_async(ids[2], status=Status.FAILED, delete_job=False)
    ends = JobEnds(queue.app.connector, database_unreachable)
    outcomes = await asyncio.gather(
        *(ends.finish(job_id, "failed", delete=False) for job_id in ids), return_exceptions=True
    )
    refused = [index for index, outcome in enumerate(outcomes) if isinstance(outcome, Exception)]
    assert refused == [2], outcomes
    said = str(outcomes[2].__cause__ or outcomes[2])  # type: ignore[union-attr]
    assert f'Job was not found or not in "doing" or "todo" status (job id: {ids[2]})' in said, said
    assert [status for status, _ in rows(postgres, ids)] == ["failed"] * 5


async def test_an_end_on_its_own_is_written_at_once_and_a_cancelled_caller_loses_nothing(
    queue: ProcrastinateQueue, postgres: Postgres
) -> None:
    ends = JobEnds(queue.app.connector, database_unreachable)
    (alone,) = await claimed_jobs(queue, 1, "alone")
    await asyncio.wait_for(ends.finish(alone, "failed", delete=False), timeout=5)
    assert [status for status, _ in rows(postgres, [alone])] == ["failed"]

    # A caller cancelled while its end is being written: the end is still written.
    (job_id,) = await claimed_jobs(queue, 1, "cancelled-caller")
    caller = asyncio.create_task(ends.finish(job_id, "aborted", delete=False))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    for _ in range(100):
        if [status for status, _ in rows(postgres, [job_id])] == ["aborted"]:
            break
        await asyncio.sleep(0.05)
    assert [status for status, _ in rows(postgres, [job_id])] == ["aborted"]
