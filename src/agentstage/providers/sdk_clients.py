"""The vendor SDK clients a network model keeps between its calls.

Making an SDK client per call costs a new connection pool, a TLS context and a TLS handshake for
every model turn. A model keeps one client per base URL instead, so a run's successive calls (tool
turns, a retry, failing over to another node and back) reuse open connections.

Connections belong to the event loop that opened them, and each CLI command (and each test) runs
its own loop: the clients are closed when their loop shuts down (``asyncio.run`` and
``asyncio.Runner`` close every live async generator first, and a small one stands guard for each
loop), and a call on another loop makes new ones. Models have no owner that closes them, so a
model that is dropped has its clients closed on their loop while it runs, as the SDKs themselves
do for a client that is dropped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol


class SdkClient(Protocol):
    """What ``openai.AsyncOpenAI`` and ``anthropic.AsyncAnthropic`` have in common here."""

    def is_closed(self) -> bool: ...

    async def close(self) -> None: ...


# Close tasks in flight: the loop holds tasks only weakly, so they are kept here until they end.
_closing: set[asyncio.Future[None] | concurrent.futures.Future[None]] = set()


class ClientCache:
    """The clients of one model, keyed by what they were made with (base URL, key), all on one loop.

    ``owned`` is false when the caller injected the HTTP client: closing an SDK client closes its
    HTTP client, and that one is the caller's to close, so such clients are only forgotten."""

    def __init__(self, owner: object, *, owned: bool):
        self.owned = owned
        self.loop: asyncio.AbstractEventLoop | None = None
        self.clients: dict[tuple[str, ...], SdkClient] = {}
        self._lock = threading.Lock()
        self._guard: AsyncGenerator[None] | None = None
        weakref.finalize(owner, self.release)

    def get(self, key: tuple[str, ...], make: Callable[[], Any]) -> Any:
        """The client for ``key`` on the running loop, made by ``make`` the first time."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self.loop is not loop:
                self._release_locked()
                self.loop = loop
                self._guard = _guard_loop(self)
            client = self.clients.get(key)
            if client is None or client.is_closed():
                client = self.clients[key] = make()
            return client

    async def aclose(self) -> None:
        """Close every client now (on the running loop when they were made on it)."""
        with self._lock:
            clients, loop = list(self.clients.values()), self.loop
            self.clients, self.loop = {}, None
        if not self.owned or not clients:
            return
        running = asyncio.get_running_loop()
        if loop is running:
            await _close_all(clients)
        else:
            _close_on(loop, clients)

    def release(self) -> None:
        """Forget every client and have its own loop close them, if that loop is still running."""
        with self._lock:
            self._release_locked()

    def _release_locked(self) -> None:
        clients, loop = list(self.clients.values()), self.loop
        self.clients, self.loop, self._guard = {}, None, None
        if self.owned and clients:
            _close_on(loop, clients)

    async def _loop_ending(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self.loop is not loop:
                return
            clients = list(self.clients.values())
            self.clients, self.loop, self._guard = {}, None, None
        if self.owned:
            await _close_all(clients)


async def _stand_guard(cache: ClientCache, loop: asyncio.AbstractEventLoop) -> AsyncGenerator[None]:
    try:
        yield
    finally:  # the loop is shutting down its async generators: it is about to end
        await cache._loop_ending(loop)


def _guard_loop(cache: ClientCache) -> AsyncGenerator[None]:
    """An async generator, started (so the running loop tracks it) and parked at its ``yield``."""
    guard = _stand_guard(cache, asyncio.get_running_loop())
    step = guard.__anext__().__await__()
    with contextlib.suppress(StopIteration):
        step.send(None)
    return guard


async def _close_all(clients: list[SdkClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):  # a client that cannot close cleanly is dropped anyway
            await client.close()


def _close_on(loop: asyncio.AbstractEventLoop | None, clients: list[SdkClient]) -> None:
    """Schedule the closing on ``loop``; a loop that has ended took its connections' use with it."""
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        task = loop.create_task(_close_all(clients), name="agentstage-close-sdk-clients")
        _closing.add(task)
        task.add_done_callback(_closing.discard)
    else:
        with contextlib.suppress(RuntimeError):  # the loop closed in between
            future = asyncio.run_coroutine_threadsafe(_close_all(clients), loop)
            _closing.add(future)
            future.add_done_callback(_closing.discard)
