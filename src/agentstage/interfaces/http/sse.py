"""Server-Sent Events for a run: ``id: <seq>``, ``event: <type>``, ``data: <json>``.

A pump task reads the run's stream into an inbox, so the response can send keep-alive comments
while the run is quiet without ever cancelling the stream itself. When the client goes away the
run carries on, unless the request asked for ``on_disconnect: cancel``.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from agentstage.core.events import RunEvent
from agentstage.errors import AgentstageError
from agentstage.interfaces.http.deps import Runtime

_DONE = object()


def format_event(event: RunEvent) -> bytes:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.to_json()}\n\n".encode()


class _Inbox:
    """What the pump has read and the response has not sent yet: a deque and at most one waiter.
    An idle stream holds one for its whole life, and an ``asyncio.Queue`` (four deques and an
    Event) costs ~3 KiB of it."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: deque[object] = deque()
        self.waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: object) -> None:
        self.items.append(item)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def get(self) -> object:
        while not self.items:  # a timeout cancels only this wait; what arrives later is kept
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.popleft()


async def _events(rt: Runtime, run_id: str, after: int, cancel_on_disconnect: bool) -> AsyncIterator[bytes]:
    queue = _Inbox()

    async def pump() -> None:
        try:
            async for event in rt.runs.stream(run_id, after=after):
                queue.put_nowait(event)
        except AgentstageError as error:
            queue.put_nowait(error)
        finally:
            queue.put_nowait(_DONE)

    task = asyncio.get_running_loop().create_task(pump())
    finished = False
    try:
        while True:
            try:
                async with asyncio.timeout(rt.settings.http.sse_keepalive):  # no task per event
                    item = await queue.get()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if item is _DONE:
                finished = True
                return
            if isinstance(item, AgentstageError):
                yield f"event: error\ndata: {json.dumps(item.to_dict())}\n\n".encode()
                finished = True
                return
            assert isinstance(item, RunEvent)
            yield format_event(item)
            if item.terminal:
                finished = True
                return
    finally:
        task.cancel()
        if not finished and cancel_on_disconnect:
            rt.spawn(_cancel_quietly(rt, run_id))


async def _cancel_quietly(rt: Runtime, run_id: str) -> None:
    try:
        await rt.runs.cancel(run_id, reason="the client disconnected (on_disconnect: cancel)")
    except AgentstageError:
        pass


class _EventStream(StreamingResponse):
    """Sends its headers and the frames it already holds at once, inside the request's own task.
    Starlette starts a streaming body in a task of its own, which the event loop runs only after
    every task already waiting, among them the run just started: its first frame would leave
    only after the run's first steps had executed."""

    def __init__(self, head: bytes, content: AsyncIterator[bytes], headers: dict[str, str]):
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.head = head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.head:
            await super().__call__(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        head, self.head = self.head, b""  # not kept for the stream's life (idle streams are many)
        await send({"type": "http.response.body", "body": head, "more_body": True})
        del head

        async def rest(message: Message) -> None:
            if message["type"] != "http.response.start":  # already sent
                await send(message)

        await super().__call__(scope, receive, rest)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # an async generator with no items


def event_stream(
    rt: Runtime, run_id: str, after: int = 0, *, cancel_on_disconnect: bool = False
) -> StreamingResponse:
    ready = rt.runs.durable_events(run_id, after)
    head = b"".join(format_event(event) for event in ready)
    ended = bool(ready) and ready[-1].terminal
    return _EventStream(
        head,
        _nothing() if ended else _events(rt, run_id, ready[-1].seq if ready else after, cancel_on_disconnect),
        {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-ID": run_id},
    )
