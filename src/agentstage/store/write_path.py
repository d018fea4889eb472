"""Where a SQLite write runs: on the event loop when it cannot wait, on the write thread when it might.

In write-ahead-log mode with ``synchronous=NORMAL`` a commit does not sync to disk: a run's batch
of rows is written in tens of microseconds. Handing it to a thread and back costs more than that
(~0.1 ms of CPU on a 2-core machine, plus a switch of the GIL each way), twice per run when runs
come one at a time. So a write runs at once, on the caller's thread, when

- nothing is queued on the write thread (writes keep their order), and
- the checkpoint thread keeps up with the log (no commit on the loop ever copies the log), and
- the write lock can be had without waiting: the write asks for it with no busy timeout, and
  when another process or a checkpoint holds it, the write goes to the thread, which waits.

Every write still goes through the one connection of :class:`SqliteWrites`, one at a time: a
write on the loop claims the connection exactly as a queued one does.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from agentstage.store.sqlite_writes import SqliteWrites, WouldWait


class SqliteWritePath:
    """The write connection's one door: :meth:`run` a write, :meth:`close` at the end."""

    def __init__(self, writes: SqliteWrites):
        self.writes = writes
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentstage-store")
        self._claims = threading.Lock()
        self._claimed = 0  # writes running or queued on the connection (the loop's and the thread's)
        self.loop_writes = True  # False: every write on the thread (a benchmark's baseline)
        self.on_loop = 0  # how many ran where: read by tests and diagnostics
        self.on_thread = 0

    async def run(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` on the write connection; its result, or its error."""
        with self._claims:
            now = self.loop_writes and self._claimed == 0 and self.writes.may_write_now()
            self._claimed += 1
        handed = False
        try:
            if now:
                try:
                    result = self.writes.now(function, *args)
                except WouldWait:
                    pass  # the lock is held elsewhere: the thread waits for it, not the loop
                else:
                    self.on_loop += 1
                    return result
            job = self._thread.submit(self.writes.waiting, function, *args)
            job.add_done_callback(self._release)  # after it ran, or when cancelled before it started
            handed = True
            self.on_thread += 1
            return await asyncio.wrap_future(job)
        finally:
            if not handed:
                self._release()

    def _release(self, _: Future[Any] | None = None) -> None:
        with self._claims:
            self._claimed -= 1

    async def close(self) -> None:
        """Close the connection after every queued write, then end the thread. The claim taken
        here is never given back: a write asked for meanwhile queues behind the close on the
        thread, and never runs on the loop against a connection being closed."""
        with self._claims:
            self._claimed += 1
        await asyncio.get_running_loop().run_in_executor(self._thread, self.writes.close)
        self._thread.shutdown(wait=True)
