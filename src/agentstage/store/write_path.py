"""Where a SQLite write runs: on the event loop when it need not wait, on the write thread when it might.

In write-ahead-log mode with ``synchronous=NORMAL`` a commit does not sync to disk: a run's batch
of rows is written in tens of microseconds. Handing it to a thread and back costs more than that
(~0.1 ms of CPU on a 2-core machine, plus a switch of the GIL each way), twice per run when runs
come one at a time. So a write runs at once, on the caller's thread, when

- nothing is queued on the write thread (writes keep their order), and
- the checkpoint thread keeps up with the log (no commit on the loop ever copies the log), and
- the write lock can be had without waiting: the write asks for it with no busy timeout, and
  when another process or a checkpoint holds it, the write goes to the thread, which waits, and
- no write on the loop took long in the last second: a huge batch, or a disk so busy that the
  kernel makes writers wait, stalls every stream of the process while it lasts, so after one
  such write the next second's writes go to the thread, and the loop stalls once at most.

Every write still goes through the one connection of :class:`SqliteWrites`, one at a time: a
write on the loop claims the connection exactly as a queued one does.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from agentstage.store.sqlite_writes import SqliteWrites, WouldWait

log = logging.getLogger("agentstage.store")

# A write on the loop longer than this sends the writes of the next SLOW_WRITE_PAUSE seconds to the
# thread. One run's write takes ~0.2 ms; the group commit of 50 runs in flight can take several ms,
# and there the hand-over is shared by the whole batch, so the thread costs little.
SLOW_WRITE_SECONDS = 0.005
SLOW_WRITE_PAUSE = 1.0


class SqliteWritePath:
    """The write connection's one door: :meth:`run` a write, :meth:`close` at the end."""

    def __init__(self, writes: SqliteWrites):
        self.writes = writes
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentstage-store")
        self._claims = threading.Lock()
        self._claimed = 0  # writes running or queued on the connection (the loop's and the thread's)
        self.loop_writes = True  # False: every write on the thread (a benchmark's baseline)
        self.slow_write = SLOW_WRITE_SECONDS
        self.slow_write_pause = SLOW_WRITE_PAUSE
        self._loop_again_at = 0.0  # (monotonic) writes go to the thread until then, after a slow one
        self.on_loop = 0  # how many ran where, and how many on the loop were slow: for tests and
        self.on_thread = 0  # diagnostics
        self.slow_on_loop = 0

    async def run(self, function: Any, *args: Any) -> Any:
        """``function(*args)`` on the write connection; its result, or its error."""
        with self._claims:
            now = (
                self.loop_writes
                and self._claimed == 0
                and self.writes.may_write_now()
                and time.monotonic() >= self._loop_again_at
            )
            self._claimed += 1
        handed = False
        try:
            if now:
                started = time.monotonic()
                try:
                    result = self.writes.now(function, *args)
                except WouldWait:
                    pass  # the lock is held elsewhere: the thread waits for it, not the loop
                else:
                    self.on_loop += 1
                    self._timed(time.monotonic() - started)
                    return result
            job = self._thread.submit(self.writes.waiting, function, *args)
            job.add_done_callback(self._release)  # after it ran, or when cancelled before it started
            handed = True
            self.on_thread += 1
            return await asyncio.wrap_future(job)
        finally:
            if not handed:
                self._release()

    def _timed(self, seconds: float) -> None:
        if seconds <= self.slow_write:
            return
        self._loop_again_at = time.monotonic() + self.slow_write_pause
        self.slow_on_loop += 1
        log.debug("a store write took %.1f ms on the event loop; writes go to the write thread for %gs",
                  seconds * 1000, self.slow_write_pause)  # fmt: skip

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
