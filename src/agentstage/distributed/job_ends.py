"""Writing the ends of queue jobs that finish together in one statement.

procrastinate ends each job with a statement (and a transaction) of its own. A worker with many
runs in flight ends them in bursts, and on PostgreSQL the per-statement part of that (a round trip,
parsing, a commit) was a good share of the ~0.13 ms a job's end cost: about a sixth of all the
database's work per run. :class:`JobEnds` gathers the ends that arrive while the previous write is
in flight and writes them with one call of procrastinate's own end function per job, in one
statement. Nothing waits for a batch to fill: a lone end is written at once.

One job's end that the database refuses (a job ended meanwhile by a stalled-job sweeper) must not
take the others with it: the batch is then written again one job at a time, and only that job's
end fails. When the database cannot be reached at all, every end of the batch fails at once with
that error (the worker tries them again once the database is back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, LiteralString, Protocol

FINISH_JOBS: LiteralString = """
SELECT procrastinate_finish_job_v1(ended.id, ended.status::procrastinate_job_status, ended.delete_job)
  FROM unnest(%(ids)s::bigint[], %(statuses)s::varchar[], %(deletes)s::boolean[])
       AS ended(id, status, delete_job)
"""


class Connector(Protocol):
    """The part of procrastinate's connector this uses."""

    async def execute_query_async(self, query: LiteralString, **arguments: Any) -> None: ...


@dataclass
class _End:
    job_id: int
    status: str
    delete: bool
    written: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class JobEnds:
    """Ends jobs (``succeeded``, ``failed`` or ``aborted``, deleted or kept) in batches."""

    def __init__(self, connector: Connector, unreachable: Callable[[BaseException], bool]):
        self._connector = connector
        self._unreachable = unreachable
        self._pending: list[_End] = []
        self._writing: asyncio.Task[None] | None = None

    async def finish(self, job_id: int, status: str, *, delete: bool) -> None:
        """Return once the job's end is committed; raise what the database said if it was refused."""
        end = _End(job_id, status, delete)
        self._pending.append(end)
        if self._writing is None or self._writing.done():
            self._writing = asyncio.create_task(self._write_pending(), name="write job ends")
        try:
            # Shielded: a caller cancelled meanwhile does not cancel the write other jobs wait on.
            await asyncio.shield(end.written)
        except asyncio.CancelledError:
            end.written.add_done_callback(_retrieve)  # nobody is left to read its outcome
            raise

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._write(batch)
            except Exception as error:
                if len(batch) == 1 or self._unreachable(error):
                    for end in batch:
                        _settle(end, error)
                    continue
                for end in batch:  # find which end was refused; the others are written
                    try:
                        await self._write([end])
                    except Exception as single_error:
                        _settle(end, single_error)
                    else:
                        _settle(end, None)
            else:
                for end in batch:
                    _settle(end, None)

    async def _write(self, batch: list[_End]) -> None:
        await self._connector.execute_query_async(
            FINISH_JOBS,
            ids=[end.job_id for end in batch],
            statuses=[end.status for end in batch],
            deletes=[end.delete for end in batch],
        )


def _settle(end: _End, error: BaseException | None) -> None:
    if end.written.done():
        return
    if error is None:
        end.written.set_result(None)
    else:
        end.written.set_exception(error)


def _retrieve(written: asyncio.Future[None]) -> None:
    if not written.cancelled():
        written.exception()
