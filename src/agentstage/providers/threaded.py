"""Bridge a blocking token iterator (llama.cpp) into an async stream without blocking the loop.

The iterator runs in a worker thread and hands chunks to the event loop through a queue. If the
consumer stops early (a cancel), the thread is told to stop and closes the iterator at the next
token, so the model stops generating instead of finishing in the background.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class ThreadedIterator(Generic[T]):
    def __init__(self, make_iterator: Callable[[], Iterator[T]], lock: threading.Lock):
        self._make_iterator = make_iterator
        self._lock = lock
        self._stop = threading.Event()

    async def __aiter__(self) -> AsyncIterator[T]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        thread = threading.Thread(target=self._produce, args=(loop, queue), daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item  # type: ignore[misc]
        finally:
            self._stop.set()

    def _produce(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self._stop.set()

        with self._lock:
            try:
                iterator = self._make_iterator()
                for item in iterator:
                    if self._stop.is_set():
                        close = getattr(iterator, "close", None)
                        if close is not None:
                            close()
                        break
                    put(item)
            except BaseException as error:
                put(error)
            put(_DONE)
