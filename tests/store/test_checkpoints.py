"""The store's checkpoint thread: what is written reaches the database file, and the write-ahead log
is rewound even under commits that never pause (a PASSIVE checkpoint alone never catches up), by
the thread itself when the commits leave it no quiet moment."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from agentstage.store.checkpoints import WalCheckpointer

PAGE = 4096


def writer(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    connection.execute("CREATE TABLE t (v TEXT)")
    return connection


def write_steadily(
    connection: sqlite3.Connection, checkpointer: WalCheckpointer | None, seconds: float, pause: float = 0.0
) -> int:
    """Commit a page-sized row after another for ``seconds``, ``pause`` seconds apart; the log's
    largest size meanwhile."""
    largest = 0
    wal = Path(f"{connection.execute('PRAGMA database_list').fetchone()[2]}-wal")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection.execute("INSERT INTO t VALUES (?)", ("x" * PAGE,))
        if checkpointer is not None:
            checkpointer.wrote()
        largest = max(largest, wal.stat().st_size)
        if pause:
            time.sleep(pause)
    return largest


def test_the_log_is_rewound_under_commits_that_never_pause(tmp_path: Path) -> None:
    without = writer(tmp_path / "without.db")
    grown = write_steadily(without, None, 1.0)
    connection = writer(tmp_path / "with.db")
    checkpointer = WalCheckpointer(
        tmp_path / "with.db", busy_timeout_ms=1000, delay=0.01, restart_frames=20, force_restart_frames=100
    )
    checkpointer.attach(connection)
    try:
        largest = write_steadily(connection, checkpointer, 1.0)
    finally:
        checkpointer.stop()
    rows = connection.execute("SELECT count(*) FROM t").fetchone()[0]
    # With nothing to rewind it the log holds every commit; with the thread, at most about the
    # 100 pages past which the writer's own commit checkpoints, however the thread is scheduled.
    assert grown > 1000 * PAGE, f"the baseline wrote too little to tell ({grown} bytes)"
    assert largest < grown / 3, f"the log grew to {largest} bytes ({rows} rows; {grown} without the thread)"
    assert checkpointer.checkpoints > 0
    without.close()
    connection.close()


def test_the_thread_rewinds_the_log_itself_when_commits_never_leave_a_quiet_moment(tmp_path: Path) -> None:
    """Runs one after another: commits a fraction of a millisecond apart, never a quiet checkpoint.
    The writer here never checkpoints (no ``attach``), so only the thread can bound the log: it
    rewinds it once it holds half the hard bound, instead of waiting for a quiet moment."""
    pause = 0.0003
    without = writer(tmp_path / "without.db")
    grown = write_steadily(without, None, 1.0, pause)
    path = tmp_path / "with.db"
    connection = writer(path)
    checkpointer = WalCheckpointer(
        path, busy_timeout_ms=1000, delay=0.01, restart_frames=20, force_restart_frames=200
    )
    try:
        largest = write_steadily(connection, checkpointer, 1.0, pause)
    finally:
        checkpointer.stop()
    rows = connection.execute("SELECT count(*) FROM t").fetchone()[0]
    assert grown > 1000 * PAGE, f"the baseline wrote too little to tell ({grown} bytes)"
    assert largest < grown / 3, f"the log grew to {largest} bytes ({rows} rows; {grown} without the thread)"
    without.close()
    connection.close()


def test_stop_leaves_everything_in_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    connection = writer(path)
    checkpointer = WalCheckpointer(path, busy_timeout_ms=1000, delay=3600)  # only stop() checkpoints
    connection.execute("INSERT INTO t VALUES ('kept')")
    checkpointer.wrote()
    checkpointer.stop()
    alone = tmp_path / "alone.db"
    alone.write_bytes(path.read_bytes())  # the database file without its log
    with sqlite3.connect(alone) as copy:
        assert copy.execute("SELECT v FROM t").fetchall() == [("kept",)]
    connection.close()


def test_a_rewind_without_a_quiet_moment_waits_for_the_write_lock_only_briefly(tmp_path: Path) -> None:
    """While a RESTART waits for the write lock it holds the log's checkpoint lock, refusing the
    writer's own hard-bound checkpoint: made without a quiet moment, it must give up soon and try
    again later, not wait out its whole busy timeout behind a writer that never pauses."""
    from agentstage.store.checkpoints import FORCED_RESTART_WAIT_MS

    path = tmp_path / "r.db"
    connection = writer(path)
    connection.execute("INSERT INTO t VALUES ('x')")
    checkpointer = WalCheckpointer(path, busy_timeout_ms=2000, delay=3600)
    own = checkpointer._connect()
    connection.execute("BEGIN IMMEDIATE")  # a writer holding the write lock
    try:
        started = time.monotonic()
        row = checkpointer._restart(own, FORCED_RESTART_WAIT_MS)
        waited = time.monotonic() - started
        assert row is not None and row[0] == 1  # busy: not rewound this time
        assert waited < 1.0, f"waited {waited:.2f}s for the write lock"
        assert own.execute("PRAGMA busy_timeout").fetchone() == (2000,)  # its own timeout is back
    finally:
        connection.execute("ROLLBACK")
        own.close()
        checkpointer.stop()
        connection.close()
