"""Server-Sent Events for a run: ``id: <seq>``, ``event: <type>``, ``data: <json>``.

A pump task reads the run's stream into a queue, so the response can send keep-alive comments
while the run is quiet without ever cancelling the stream itself. When the client goes away the
run carries on, unless the request asked for ``on_disconnect: cancel``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from agentstage.core.events import RunEvent
from agentstage.errors import AgentstageError
from agentstage.interfaces.http.deps import Runtime

_DONE = object()


def format_event(event: RunEvent) -> bytes:
    return f"id: {event.seq}\nevent: {event.type}\ndata: {event.to_json()}\n\n".encode()


async def _events(rt: Runtime, run_id: str, after: int, cancel_on_disconnect: bool) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[object] = asyncio.Queue()

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


def event_stream(
    rt: Runtime, run_id: str, after: int = 0, *, cancel_on_disconnect: bool = False
) -> StreamingResponse:
    return StreamingResponse(
        _events(rt, run_id, after, cancel_on_disconnect),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Run-ID": run_id},
    )
