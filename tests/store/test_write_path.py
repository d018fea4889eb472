"""Where SQLite writes run: on the event loop when the write lock is free, on the write thread when
another process holds it, in the order they were asked for, and never two on the connection at once."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import pytest

from agentstage.store.sql import SqlRunStore
from agentstage.store.write_path import SqliteWritePath

pytestmark = pytest.mark.anyio

HOLD_LOCK = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("COMMIT")
"""


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlRunStore]:
    store = SqlRunStore(f"sqlite+aiosqlite:///{tmp_path / 'agentstage.db'}")
    await store.open()
    path_of(store).slow_write = float("inf")  # on a loaded machine any write may be slow (tested below)
    yield store
    await store.close()


def path_of(store: SqlRunStore) -> SqliteWritePath:
    assert store._write_path is not None
    return store._write_path


@contextmanager
def write_lock_held_by_another_process(store: SqlRunStore) -> Iterator[None]:
    """Another process (an ``agent`` command on the same file, say) in a write transaction."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, store.location],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "locked"
            yield
        finally:
            holder.stdin.write("\n")
            holder.stdin.close()
            assert holder.wait(timeout=10) == 0


def probe_time(store: SqlRunStore) -> datetime:
    with sqlite3.connect(store.location) as connection:
        return datetime.fromisoformat(connection.execute("SELECT at FROM store_probe").fetchone()[0])


async def test_a_write_runs_on_the_event_loop_when_the_lock_is_free(store: SqlRunStore) -> None:
    await store.probe()
    before = path_of(store).on_loop, path_of(store).on_thread
    for _ in range(5):
        await store.probe()
    assert (path_of(store).on_loop, path_of(store).on_thread) == (before[0] + 5, before[1])


async def test_a_write_that_must_wait_waits_on_the_write_thread_while_the_loop_serves(
    store: SqlRunStore,
) -> None:
    await store.probe()
    gaps: list[float] = []

    async def ticker() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            gaps.append(time.monotonic() - before)

    beat = asyncio.create_task(ticker())
    with write_lock_held_by_another_process(store):
        on_thread = path_of(store).on_thread
        write = asyncio.create_task(store.probe())
        await asyncio.sleep(0.05)
        another = asyncio.create_task(store.probe())  # while the first one waits on the connection
        await asyncio.sleep(0.3)
        assert not write.done(), "the write went ahead while another process held the write lock"
        assert path_of(store).on_thread == on_thread + 2
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(write, another), timeout=5)
    beat.cancel()
    assert max(gaps) < 0.2, (
        f"the event loop stood still for {max(gaps):.2f} s while a write waited for the lock"
    )
    assert time.monotonic() - started < 2
    # the lock is free again: the next write is back on the loop
    on_loop = path_of(store).on_loop
    await store.probe()
    assert path_of(store).on_loop == on_loop + 1


async def test_a_later_write_never_overtakes_one_queued_on_the_thread(store: SqlRunStore) -> None:
    await store.probe()
    with write_lock_held_by_another_process(store):
        first = asyncio.create_task(store.probe())
        await asyncio.sleep(0.05)
        second = asyncio.create_task(store.probe())  # asked for later: must also queue behind
        await asyncio.sleep(0.05)
        assert not first.done() and not second.done()
    await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    later = probe_time(store)
    await store.probe()
    assert probe_time(store) > later
    with write_lock_held_by_another_process(store):
        first = asyncio.create_task(store.probe())
        await asyncio.sleep(0.05)
        marked = time.time()
        second = asyncio.create_task(store.probe())
    await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    assert probe_time(store).timestamp() >= marked - 1e-3, "the earlier write landed last"


async def test_a_write_cancelled_in_the_queue_gives_the_connection_back(store: SqlRunStore) -> None:
    await store.probe()
    with write_lock_held_by_another_process(store):
        waiting = asyncio.create_task(store.probe())  # on the thread, waiting for the lock
        await asyncio.sleep(0.05)
        queued = asyncio.create_task(store.probe())  # behind it, not started
        await asyncio.sleep(0.05)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
    await asyncio.wait_for(waiting, timeout=5)
    on_loop = path_of(store).on_loop
    await store.probe()
    assert path_of(store).on_loop == on_loop + 1, "a cancelled write kept its claim on the connection"


async def test_after_a_slow_write_on_the_loop_the_next_second_of_writes_goes_to_the_thread(
    store: SqlRunStore,
) -> None:
    """A huge batch or a disk under pressure stalls the loop once, not write after write."""
    path = path_of(store)
    await store.probe()
    path.slow_write, path.slow_write_pause = 0.0, 0.5  # every write counts as slow here
    on_loop, on_thread = path.on_loop, path.on_thread
    await store.probe()  # on the loop, and slow
    await store.probe()
    await store.probe()
    assert (path.on_loop, path.on_thread, path.slow_on_loop) == (on_loop + 1, on_thread + 2, 1)
    await asyncio.sleep(0.6)
    await store.probe()  # the pause is over
    assert path.on_loop == on_loop + 2
