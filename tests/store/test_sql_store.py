"""The SQL store: migrations applied on open, HEAD kept in step, events append-only."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
from pathlib import Path

import pytest

from agentstage.core.events import RunEvent, utc_now
from agentstage.core.records import RunRecord
from agentstage.store import migrations
from agentstage.store.base import Batch
from agentstage.store.checkpoints import FORCE_RESTART_FRAMES
from agentstage.store.sql import SqlRunStore
from agentstage.types import RunStatus

pytestmark = pytest.mark.anyio


def test_head_names_the_newest_migration() -> None:
    """HEAD is the one revision no other revision builds on (ids are prefixes, not an order)."""
    revisions: dict[str, str | None] = {}
    for path in (migrations.DIRECTORY / "versions").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if "revision = " in text:
            revision = text.split('\nrevision = "', 1)[1].split('"', 1)[0]
            down = text.split("\ndown_revision = ", 1)[1].split("\n", 1)[0].strip().strip('"')
            revisions[revision] = None if down == "None" else down
    heads = set(revisions) - {down for down in revisions.values() if down is not None}
    assert heads == {migrations.HEAD}


async def test_open_migrates_a_new_file_and_reopening_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "store.db"
    store = SqlRunStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    await store.close()
    with sqlite3.connect(path) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "run_events", "conversations", "conversation_messages", "alembic_version"} <= tables
        assert connection.execute("SELECT version_num FROM alembic_version").fetchone() == (migrations.HEAD,)
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    again = SqlRunStore(f"sqlite+aiosqlite:///{path}")
    await again.open()
    await again.ping()
    await again.close()


async def test_a_seq_can_never_be_written_twice(tmp_path: Path) -> None:
    store = SqlRunStore(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await store.open()
    now = utc_now()
    owner = f"{socket.gethostname()}:{os.getpid()}"  # a live process owns it
    run = RunRecord(
        id="r1",
        status=RunStatus.RUNNING,
        input="x",
        mode="chat",
        profile="p",
        created_at=now,
        worker_id=owner,
    )
    event = RunEvent("r1", 1, now, type="run.queued", data={})
    first = Batch()
    first.of("r1").new_run = run
    first.of("r1").events.append(event)
    assert await store.write(first) == {}
    again = Batch()
    again.of("r1").events.append(RunEvent("r1", 1, now, type="run.queued", data={"other": True}))
    refused = await store.write(again)
    assert list(refused) == ["r1"] and refused["r1"].code == "store_write_failed"
    assert "UNIQUE" in refused["r1"].message
    assert [e.data for e in await store.events("r1")] == [{}]
    await store.close()


def _rows_in_database_file(path: Path, tmp_path: Path) -> int:
    """Runs in the database file alone, as if its write-ahead log were lost: what was checkpointed."""
    alone = tmp_path / "alone.db"
    alone.write_bytes(path.read_bytes())
    with sqlite3.connect(alone) as connection:
        try:
            return int(connection.execute("SELECT count(*) FROM runs").fetchone()[0])
        except sqlite3.OperationalError:  # not even the schema has reached the file yet
            return 0


async def test_writes_reach_the_database_file_soon_after_commit_without_a_commit_doing_it(
    tmp_path: Path,
) -> None:
    """The write connection does not checkpoint in its commits (only past a hard limit); the
    store's checkpoint thread copies what was written into the database file shortly after."""
    path = tmp_path / "s.db"
    store = SqlRunStore(f"sqlite+aiosqlite:///{path}")
    await store.open()
    try:
        batch = Batch()
        batch.of("r1").new_run = RunRecord(
            id="r1",
            status=RunStatus.RUNNING,
            input="x",
            mode="chat",
            profile="p",
            created_at=utc_now(),
            worker_id=f"{socket.gethostname()}:{os.getpid()}",  # a live process owns it
        )
        batch.of("r1").events.append(RunEvent("r1", 1, utc_now(), type="run.queued", data={}))
        assert await store.write(batch) == {}
        writes = store._sqlite
        assert writes is not None and writes._connection is not None
        limit = writes._connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        assert limit == FORCE_RESTART_FRAMES  # no checkpoint in a commit below that many pages
        # One small run is far below any commit's checkpoint threshold: only our thread moves it.
        deadline = asyncio.get_running_loop().time() + 10
        while _rows_in_database_file(path, tmp_path) == 0:
            assert asyncio.get_running_loop().time() < deadline, "the write never reached the database file"
            await asyncio.sleep(0.05)
    finally:
        await store.close()
