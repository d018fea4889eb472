"""Claiming queued runs: exactly one claim of a run wins, whoever asks and however many ask at once;
on PostgreSQL the claims a worker asks for together go as one statement; a claim whose asker is
cancelled on the way leaves the run claimable."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
from sqlalchemy import text

from agentstage.core.events import RunEvent, utc_now
from agentstage.core.records import RunRecord
from agentstage.runtime.wiring import build_store
from agentstage.store.base import Batch
from agentstage.store.sql import SqlRunStore
from agentstage.types import RunStatus
from conftest import make_settings

pytestmark = pytest.mark.anyio

# Two owners that are live processes (the store checks after each test look for dead owners).
ME = f"{socket.gethostname()}:{os.getpid()}"
OTHER = f"{socket.gethostname()}:{os.getppid()}"


async def queued_store(home: Path, count: int) -> tuple[SqlRunStore, list[str]]:
    store = build_store(make_settings(home, {}))
    await store.open()
    batch = Batch()
    ids = [f"claim-{index}" for index in range(count)]
    for run_id in ids:
        writes = batch.of(run_id)
        writes.new_run = RunRecord(
            id=run_id, status=RunStatus.QUEUED, input="x", mode="chat", profile="p", created_at=utc_now()
        )
        writes.events.append(RunEvent(run_id, 1, utc_now(), type="run.queued", data={}))
    assert await store.write(batch) == {}
    return store, ids


async def end_all(store: SqlRunStore, ids: list[str]) -> None:
    batch = Batch()
    for run_id in ids:
        batch.of(run_id).events.append(RunEvent(run_id, 2, utc_now(), type="run.cancelled", data={}))
        batch.of(run_id).updates.update(status=RunStatus.CANCELLED.value, finished_at=utc_now())
    assert await store.write(batch) == {}
    await store.close()


async def owners(store: SqlRunStore, ids: list[str]) -> dict[str, str | None]:
    return {run_id: (record.worker_id if (record := await store.get_run(run_id)) else "?") for run_id in ids}


async def test_one_claim_wins_however_many_ask_at_once(home: Path) -> None:
    store, ids = await queued_store(home, 12)
    try:
        now = utc_now()
        asks = [(run_id, ME) for run_id in ids] + [(run_id, ME) for run_id in ids[:4]]
        asks += [(run_id, OTHER) for run_id in ids[8:]]
        claims = await asyncio.gather(*(store.claim_run(r, w, now, None) for r, w in asks))
        won: dict[str, list[str]] = {}
        for (run_id, worker), claim in zip(asks, claims, strict=True):
            if claim.record is not None:
                assert claim.record.id == run_id and claim.record.worker_id == worker
                assert claim.record.last_seq == 1  # the claim answers with the run as stored
                won.setdefault(run_id, []).append(worker)
        assert sorted(won) == sorted(ids) and all(len(workers) == 1 for workers in won.values()), won
        assert await owners(store, ids) == {run_id: workers[0] for run_id, workers in won.items()}
        # Claimed runs cannot be claimed again, by anyone.
        again = await asyncio.gather(*(store.claim_run(r, OTHER, utc_now(), None) for r in ids))
        assert all(claim.record is None for claim in again)
        if not store.is_sqlite:  # the claims this process asked for together: one transaction
            async with store.engine.connect() as connection:
                mine = [run_id for run_id, workers in won.items() if workers == [ME]]
                transactions = await connection.execute(
                    text("SELECT count(DISTINCT xmin::text) FROM runs WHERE id = ANY(:ids)"), {"ids": mine}
                )
                assert transactions.scalar_one() == 1
    finally:
        await end_all(store, ids)


async def test_a_claim_whose_asker_is_cancelled_leaves_the_run_claimable(home: Path) -> None:
    store, ids = await queued_store(home, 3)
    try:
        asking = [asyncio.ensure_future(store.claim_run(r, ME, utc_now(), None)) for r in ids]
        await asyncio.sleep(0)  # they have asked; the claims are on their way
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
        deadline = asyncio.get_running_loop().time() + 10
        while any((await owners(store, ids)).values()):
            assert asyncio.get_running_loop().time() < deadline, await owners(store, ids)
            await asyncio.sleep(0.02)
        claims = await asyncio.gather(*(store.claim_run(r, OTHER, utc_now(), None) for r in ids))
        assert [claim.record is not None for claim in claims] == [True] * 3
    finally:
        await end_all(store, ids)
