"""SQLite write-ahead-log checkpoints, off the write path.

By default SQLite checkpoints inside the commit that pushes the log past 1,000 pages: that commit
copies the log into the database file and syncs it to disk, which took a run's write several
milliseconds longer once every hundred runs or so, and was most of the slow tail of the time to a
stream's first event. The store's write connection keeps automatic checkpoints only as a hard
bound, past 10,000 pages, and this thread, with its own connection, checkpoints soon after writes
instead. A ``PASSIVE`` checkpoint never waits for a writer or a reader and never makes them wait,
and SQLite lets go of the GIL while it works, so no write on the event loop or the write thread
waits for the disk.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("agentstage.store")

# How long written pages may wait in the log: writes in this window share one checkpoint.
CHECKPOINT_DELAY = 0.25
# Past this many pages in the log (SQLite's own automatic threshold), it is rewound to its start
# when no commit came in during the checkpoint.
RESTART_FRAMES = 1000
# Past this many pages (~40 MB) the writer's own commit checkpoints (see ``attach``).
FORCE_RESTART_FRAMES = 10_000
# PASSIVE checkpoints tried, each copying what came in during the one before, for a quiet moment.
QUIET_TRIES = 3
# How long a RESTART made without a quiet moment waits for the write lock before trying later.
FORCED_RESTART_WAIT_MS = 20


class WalCheckpointer:
    """One daemon thread per write connection; :meth:`wrote` after each commit, :meth:`stop` at close."""

    def __init__(
        self,
        path: Path,
        busy_timeout_ms: int,
        delay: float = CHECKPOINT_DELAY,
        restart_frames: int = RESTART_FRAMES,
        force_restart_frames: int = FORCE_RESTART_FRAMES,
    ):
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self.delay = delay
        self.restart_frames = restart_frames
        self.force_restart_frames = force_restart_frames
        self.checkpoints = 0  # how many ran (read by tests and diagnostics)
        # The log held less than half the hard bound's pages at the last checkpoint: no commit
        # comes near the bound, where the commit itself checkpoints and syncs (see ``attach``),
        # before this thread looks again (it would take ~20 MB of new log in a quarter second).
        self.keeping_up = True
        self._pending = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agentstage-checkpoint", daemon=True)
        self._thread.start()

    def attach(self, writer: sqlite3.Connection) -> None:
        """Set up the write connection: no checkpoint in its commits, except past the hard limit.

        Past ``force_restart_frames`` pages SQLite's own checkpoint runs in the commit again. It is
        the bound this thread cannot give: under commits that never pause, the write lock is not
        handed out fairly, and the thread can wait for it for as long as the writer keeps it busy.
        The writer's checkpoint then only copies what came in since this thread's last one, and
        the writer's next transaction rewinds the log."""
        writer.execute(f"PRAGMA wal_autocheckpoint={self.force_restart_frames}")

    def wrote(self) -> None:
        """The write connection committed: pages wait in the log until the next checkpoint."""
        if not self._pending.is_set():  # once per commit: skip the event's lock when already set
            self._pending.set()

    def stop(self) -> None:
        """Checkpoint what is left and end the thread."""
        self._stopping.set()
        self._pending.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                self._pending.wait()
                if not self._stopping.is_set():
                    self._stopping.wait(self.delay)  # let a burst of commits finish first
                self._pending.clear()
                connection = connection or self._connect()
                self._checkpoint(connection)
                if self._stopping.is_set():
                    return
        finally:
            if connection is not None:
                connection.close()

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        return connection

    def _checkpoint(self, connection: sqlite3.Connection) -> None:
        try:
            frames = self._passive(connection)
            if frames < self.restart_frames:
                return
            # The log is only rewound when a checkpoint has copied all of it, which a PASSIVE one
            # racing a steady stream of commits never quite does: under load it grew past 300 MB.
            # RESTART holds the write lock while it copies what is left and syncs the database
            # file, so it is run when a PASSIVE one saw no commit come in (nothing left: no commit
            # waits at all); each try copies only what came in during the one before.
            quiet = False
            for _ in range(QUIET_TRIES):
                if not self._pending.is_set():
                    quiet = True
                    break
                self._pending.clear()
                frames = self._passive(connection)
            wait_ms = self.busy_timeout_ms
            if not quiet:
                if frames < self.force_restart_frames // 2:
                    self._pending.set()  # no quiet moment yet: look again after the delay
                    return
                # Runs that never pause (one after another, each a few commits) leave no quiet
                # moment. Waiting for the hard bound would send every write past half of it to
                # the write thread (see ``keeping_up``), a third to half of them; rewinding now
                # makes only the commits that come in during the RESTART wait, on that thread.
                # It waits for the write lock only briefly: while it waits it holds the log's
                # checkpoint lock, so a writer that never pauses would keep it waiting with the
                # writer's own hard-bound checkpoint (see ``attach``) refused all along.
                wait_ms = FORCED_RESTART_WAIT_MS
            row = self._restart(connection, wait_ms)
            if row is not None and not row[0]:  # not busy: the log starts over
                self.keeping_up = True
        except sqlite3.Error as error:  # the next write tries again; the log only grows meanwhile
            log.warning("checkpoint of %s failed (retried after the next write): %s", self.path, error)

    def _restart(self, connection: sqlite3.Connection, wait_ms: int) -> tuple[int, ...] | None:
        """A RESTART checkpoint that waits at most ``wait_ms`` for the write lock; SQLite's row."""
        if wait_ms != self.busy_timeout_ms:
            connection.execute(f"PRAGMA busy_timeout={wait_ms}")
        try:
            row = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        finally:
            if wait_ms != self.busy_timeout_ms:
                connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        return None if row is None else tuple(int(value) for value in row)

    def _passive(self, connection: sqlite3.Connection) -> int:
        """Copy what the log holds without waiting for anyone; the log's size in pages."""
        row = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        pages = int(row[1]) if row is not None else 0
        self.keeping_up = pages < self.force_restart_frames // 2
        return pages
