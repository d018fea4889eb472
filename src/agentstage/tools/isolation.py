"""Running a tool's work in a child process whose time and memory are bounded by the kernel.

Some work cannot be interrupted from inside: a single SQLite function call (``printf`` with a huge
width) runs for many seconds without reaching a point where a progress handler or
``sqlite3_interrupt`` is looked at. Such work runs in a :class:`IsolatedPool` worker: a small,
long-lived child process (started with ``spawn``, so it inherits no threads, locks or open files
of the server) with an address-space limit. When a call passes its deadline or its run is
cancelled, the worker is killed and a fresh one takes its place; the server never waits for it.

A worker calls one function named ``module:function`` with the arguments it is sent, and sends
back ``("ok", result)`` or ``("error", code, message)`` — exceptions are not pickled, so a tool's
error code survives the trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing
import resource
import threading
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from agentstage.errors import AgentstageError, ToolError

log = logging.getLogger("agentstage.tools")


def _serve(target: str, memory_bytes: int, connection: Connection) -> None:  # runs in the child
    if memory_bytes > 0:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    module, _, name = target.partition(":")
    function = getattr(importlib.import_module(module), name)
    while True:
        try:
            arguments = connection.recv()
        except EOFError:
            return
        try:
            reply: tuple[Any, ...] = ("ok", function(*arguments))
        except AgentstageError as error:
            reply = ("error", error.code, error.message)
        except MemoryError:
            reply = ("error", "tool_limit", "the work needed more memory than its limit")
        except Exception as error:  # a bug in the work: say what it was
            reply = ("error", "tool_error", f"{type(error).__name__}: {error}")
        connection.send(reply)


class _Worker:
    def __init__(self, target: str, memory_bytes: int):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(target, memory_bytes, child), daemon=True, name="agentstage-tool-worker"
        )
        self.process.start()
        child.close()

    def call(
        self, arguments: tuple[Any, ...], timeout: float, stop: threading.Event
    ) -> tuple[Any, ...] | None:
        """Send one call and wait for its reply; None if the deadline passed or ``stop`` was set."""
        self.connection.send(arguments)
        waited = 0.0
        while waited < timeout and not stop.is_set():
            step = min(0.05, timeout - waited)
            if self.connection.poll(step):
                reply: tuple[Any, ...] = self.connection.recv()
                return reply
            waited += step
        return None

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.join(5)
        self.connection.close()


class IsolatedPool:
    """At most ``size`` calls at once, each in its own worker process; a worker that overruns is
    killed and replaced."""

    def __init__(self, target: str, *, size: int = 2, memory_bytes: int = 1 << 30):
        self.target = target
        self.memory_bytes = memory_bytes
        self._idle: list[_Worker] = []
        self._slots = asyncio.Semaphore(size)
        self._lock = threading.Lock()

    async def call(self, *arguments: Any, seconds: float, cancelled: asyncio.Event | None = None) -> Any:
        """The function's result; raises :class:`ToolError` (``tool_timeout``, ``cancelled``, or
        the function's own code) otherwise."""
        async with self._slots:
            worker = self._take()
            stop = threading.Event()
            relay = asyncio.ensure_future(cancelled.wait()) if cancelled is not None else None
            if relay is not None:
                relay.add_done_callback(lambda _: stop.set())
            try:
                reply = await asyncio.to_thread(self._run, worker, arguments, seconds, stop)
            except asyncio.CancelledError:
                stop.set()
                raise
            finally:
                if relay is not None:
                    relay.cancel()
        if reply is None:
            if cancelled is not None and cancelled.is_set():
                raise ToolError("the work was cancelled", code="cancelled")
            raise ToolError(
                f"the work did not finish within {seconds:.1f}s and was stopped", code="tool_timeout"
            )
        if reply[0] == "ok":
            return reply[1]
        raise ToolError(reply[2], code=reply[1])

    def _run(
        self, worker: _Worker, arguments: tuple[Any, ...], timeout: float, stop: threading.Event
    ) -> tuple[Any, ...] | None:
        try:
            reply = worker.call(arguments, timeout, stop)
        except (EOFError, OSError, BrokenPipeError):
            reply = ("error", "tool_limit", "the work stopped abnormally (it may have run out of memory)")
            worker.kill()
            return reply
        if reply is None:
            worker.kill()  # it overran: never reused
            return None
        with self._lock:
            self._idle.append(worker)
        return reply

    def _take(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.process.is_alive():
                    return worker
                worker.kill()
        return _Worker(self.target, self.memory_bytes)

    def close(self) -> None:
        with self._lock:
            workers, self._idle = self._idle, []
        for worker in workers:
            worker.kill()
