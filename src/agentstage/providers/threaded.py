"""Bridge a blocking token iterator (llama.cpp) into an async stream without blocking the loop.

The iterator runs in a worker thread and hands chunks to the event loop through a queue. The
factory receives a stop event; when the consumer stops early (a cancel, a closed connection) the
event is set and the producer stops at its next token, so the model does not keep generating in
the background.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
_DONE = object()


class ThreadedIterator(Generic[T]):
    def __init__(self, make_iterator: Callable[[threading.Event], Iterator[T]]):
        self._make_iterator = make_iterator
        self.stop = threading.Event()

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
            self.stop.set()

    def _produce(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[object]) -> None:
        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self.stop.set()

        iterator: Iterator[T] | None = None
        try:
            iterator = self._make_iterator(self.stop)
            for item in iterator:
                if self.stop.is_set():
                    break
                put(item)
        except BaseException as error:
            put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        put(_DONE)
