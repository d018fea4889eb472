"""Who executes a run, and the attempt number that fences every write of it.

In the scale-out mode an API process records a run as ``queued`` with no owner; a worker claims it
(``worker_id`` set, in one conditional UPDATE, so exactly one claim wins), heartbeats it, and writes
its events with ``fence = attempt``. Whoever takes a run away from a worker (a requeue after a lost
heartbeat, a ``worker_lost`` ending) first bumps ``attempt``: from that commit on, the store refuses
every write the old worker still makes (``run_fenced``), so a worker that wakes from a pause cannot
append a single event to a run that moved on. Kept apart from the write path so ``sql.py`` stays
about writing; ``SqlRunStore`` inherits these methods.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import String, and_, any_, bindparam, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql import ColumnElement

from agentstage.core.records import RunRecord
from agentstage.errors import StoreError
from agentstage.store.base import Claim
from agentstage.store.claim_batches import ClaimBatcher
from agentstage.store.crypto import Keyring
from agentstage.store.reads import Reads
from agentstage.store.tables import run_admissions, run_events, runs
from agentstage.types import RunStatus

_ACTIVE = [RunStatus.QUEUED.value, RunStatus.RUNNING.value]
# An admission whose run was never stored (its process died, or the store refused the run) stops
# holding its tenant's slot after this long; a stored run is counted through its own row.
ADMISSION_HOLD = timedelta(seconds=60)
# A claimed run as the store reads it (its last seq from its log), returned by the claim itself.
_LAST_SEQ = select(func.max(run_events.c.seq)).where(run_events.c.run_id == runs.c.id).scalar_subquery()
_RUN_RETURNING = [
    *(column for column in runs.columns if column.name != "last_seq"),
    func.coalesce(_LAST_SEQ, runs.c.last_seq).label("last_seq"),
]
# Built once: a statement built per claim costs more CPU (building, cache key) than running it.
_CLAIM = (
    update(runs)
    .where(runs.c.id == bindparam("claimed_run"), runs.c.worker_id.is_(None), runs.c.status.in_(_ACTIVE))
    .values(worker_id=bindparam("claiming_worker"), heartbeat_at=bindparam("claimed_at"))
    .returning(*_RUN_RETURNING)
)

# PostgreSQL: the claims a worker asks for together (store/claim_batches.py), as one statement.
_CLAIM_MANY = (
    update(runs)
    .where(
        runs.c.id == any_(bindparam("claimed_runs", type_=ARRAY(String))),
        runs.c.worker_id.is_(None),
        runs.c.status.in_(_ACTIVE),
    )
    .values(worker_id=bindparam("claiming_worker"), heartbeat_at=bindparam("claimed_at"))
    .returning(*_RUN_RETURNING)
)
# A claim nobody will use, given back untouched (no event of it was written).
_UNCLAIM = (
    update(runs)
    .where(
        runs.c.id == bindparam("claimed_run"),
        runs.c.worker_id == bindparam("claiming_worker"),
        runs.c.status == RunStatus.QUEUED.value,
    )
    .values(worker_id=None, heartbeat_at=None)
)


def fenced_error(run_id: str, fence: int, attempt: int | None) -> StoreError:
    where = "it no longer exists" if attempt is None else f"it is at attempt {attempt} now"
    return StoreError(
        f"run {run_id!r}: a write of attempt {fence} was refused because {where}; this process no "
        "longer executes it",
        code="run_fenced",
        details={"fence": fence, "attempt": attempt},
    )


class LeaseTables(Reads):
    """Mixed into the SQL store; ``engine`` is the store's async engine."""

    is_sqlite: bool
    keys: Keyring

    async def get_run(self, run_id: str) -> RunRecord | None:
        raise NotImplementedError

    async def runs_where(self, condition: ColumnElement[bool]) -> list[RunRecord]:
        raise NotImplementedError

    async def claim_run(self, run_id: str, worker_id: str, at: datetime, tenant_limit: int | None) -> Claim:
        """Make ``worker_id`` the run's executor if nobody is and it has not ended.

        With ``tenant_limit``, the claim also needs the run's tenant to have fewer runs executing
        than that; claims of one tenant are serialised (an advisory lock on PostgreSQL, the
        database lock on SQLite) so two workers cannot both take the last slot."""
        if tenant_limit is None:  # the common claim: one statement, answering with the run
            return await self._claim_at_once(run_id, worker_id, at)
        async with self.engine.begin() as connection:
            row = (
                await connection.execute(
                    select(runs.c.tenant, runs.c.status, runs.c.worker_id).where(runs.c.id == run_id)
                )
            ).first()
            if row is None or row.status not in _ACTIVE or row.worker_id is not None:
                return Claim()
            if tenant_limit is not None:
                if not self.is_sqlite:
                    await connection.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:tenant))"), {"tenant": row.tenant}
                    )
                executing = (
                    await connection.execute(
                        select(func.count())
                        .select_from(runs)
                        .where(
                            runs.c.tenant == row.tenant,
                            runs.c.status.in_(_ACTIVE),
                            runs.c.worker_id.is_not(None),
                        )
                    )
                ).scalar_one()
                if int(executing) >= tenant_limit:
                    return Claim(tenant_busy=True)
            claimed = await connection.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.worker_id.is_(None), runs.c.status.in_(_ACTIVE))
                .values(worker_id=worker_id, heartbeat_at=at)
            )
            if not claimed.rowcount:
                return Claim()
        return Claim(record=await self.get_run(run_id))

    async def _claim_at_once(self, run_id: str, worker_id: str, at: datetime) -> Claim:
        from agentstage.store.sql import _run_from_row  # the one decoder of a runs row

        if self.is_sqlite:
            async with self.engine.begin() as connection:
                values = {"claimed_run": run_id, "claiming_worker": worker_id, "claimed_at": at}
                row = (await connection.execute(_CLAIM, values)).first()
        else:
            row = await self._claims.claim(run_id, worker_id, at)
        return Claim(record=_run_from_row(row, self.keys)) if row is not None else Claim()

    @cached_property
    def _claims(self) -> ClaimBatcher:
        return ClaimBatcher(self._claim_many, self._unclaim)

    async def _claim_many(self, run_ids: Sequence[str], worker_id: str, at: datetime) -> dict[str, Any]:
        values = {"claimed_runs": list(run_ids), "claiming_worker": worker_id, "claimed_at": at}
        async with self.engine.begin() as connection:
            return {row.id: row for row in await connection.execute(_CLAIM_MANY, values)}

    async def _unclaim(self, run_id: str, worker_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(_UNCLAIM, {"claimed_run": run_id, "claiming_worker": worker_id})

    async def requeue_run(self, run_id: str, attempt: int) -> bool:
        """Take the run from whoever holds ``attempt`` and make it claimable as the next attempt."""
        return await self._bump(
            run_id, attempt, worker_id=None, status=RunStatus.QUEUED.value, cancel_requested=False
        )

    async def fence_run(self, run_id: str, attempt: int) -> bool:
        """Bump the run's attempt (if it is still ``attempt``): the old holder's writes are refused."""
        return await self._bump(run_id, attempt)

    async def _bump(self, run_id: str, attempt: int, **values: Any) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(runs)
                .where(runs.c.id == run_id, runs.c.attempt == attempt, runs.c.status.in_(_ACTIVE))
                .values(attempt=runs.c.attempt + 1, **values)
            )
        return bool(result.rowcount)

    async def stalled_runs(self, before: datetime) -> list[RunRecord]:
        """Claimed runs whose executor has not heartbeat since ``before``."""
        return await self.runs_where(
            and_(
                runs.c.status.in_(_ACTIVE),
                runs.c.worker_id.is_not(None),
                runs.c.heartbeat_at < before,
            )
        )

    async def unclaimed_runs(self, before: datetime) -> list[RunRecord]:
        """Queued runs nobody has claimed, created before ``before`` (their job may be missing)."""
        return await self.runs_where(
            and_(
                runs.c.status == RunStatus.QUEUED.value,
                runs.c.worker_id.is_(None),
                runs.c.created_at < before,
            )
        )

    async def admit_run(self, run_id: str, tenant: str, limit: int, at: datetime) -> int | None:
        """Take one of the tenant's ``limit`` slots for ``run_id`` (about to be stored as queued).

        Returns None if admitted, else how many runs the tenant has queued or running. The count
        and the taking are one transaction that admissions of one tenant take in turn (an
        advisory lock on PostgreSQL, the write lock on SQLite), and a run admitted but not yet
        stored is counted through its admission: two processes admitting at once can never both
        take the last slot."""
        async with self.engine.begin() as connection:
            if not self.is_sqlite:
                await connection.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"admission:{tenant}"}
                )
            # A write first: on SQLite it takes the database's write lock before anything is read.
            await connection.execute(
                delete(run_admissions).where(
                    run_admissions.c.tenant == tenant,
                    or_(
                        run_admissions.c.created_at < at - ADMISSION_HOLD,
                        exists().where(runs.c.id == run_admissions.c.run_id),
                    ),
                )
            )
            stored = select(func.count()).select_from(runs)
            stored = stored.where(runs.c.tenant == tenant, runs.c.status.in_(_ACTIVE))
            pending = select(func.count()).select_from(run_admissions)
            pending = pending.where(run_admissions.c.tenant == tenant)
            active = int(
                (
                    await connection.execute(select(stored.scalar_subquery() + pending.scalar_subquery()))
                ).scalar_one()
            )
            if active >= limit:
                return active
            await connection.execute(
                insert(run_admissions).values(run_id=run_id, tenant=tenant, created_at=at)
            )
        return None

    async def active_runs(self, tenant: str) -> int:
        query = (
            select(func.count()).select_from(runs).where(runs.c.tenant == tenant, runs.c.status.in_(_ACTIVE))
        )
        return int(await self._scalar(query))

    async def owned_heartbeat(self, run_ids: Sequence[str], worker_id: str, at: datetime) -> None:
        """Heartbeat only the runs still ours: a run taken away is never kept alive by its old owner."""
        if not run_ids:
            return
        async with self.engine.begin() as connection:
            await connection.execute(
                update(runs)
                .where(runs.c.id.in_(list(run_ids)), runs.c.worker_id == worker_id)
                .values(heartbeat_at=at)
            )
