"""WebSocket doors: ``/ws/agent/stream`` (runs over one socket) and ``/ws/agent/chat`` (a
conversation over one socket). One JSON text frame per event.

Client frames: ``run`` (a run request), ``cancel`` ({run_id}?), ``resume`` ({run_id, after}),
``ping``; on chat also ``message`` ({input}) and ``reset``. The server sends ``ping`` frames every
``http.ws_heartbeat`` seconds and closes a peer that answers none of two. A slow reader never slows
a run: events wait in a bounded buffer; past it the client gets ``lagged`` with the last seq it
was sent and resumes from there. A frame that is not JSON closes the socket with 1003.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import ValidationError

from agentstage.access.permissions import WEBSOCKET
from agentstage.access.principals import Principal
from agentstage.core import strict_json
from agentstage.core.records import RunRecord
from agentstage.core.tools import validation_details
from agentstage.errors import AgentstageError, ForbiddenError, TooManyRequestsError
from agentstage.interfaces.http.deps import Runtime, owner_tenant, request_id, runtime, tenant_scope
from agentstage.interfaces.http.schemas import MessageBody, RunBody

router = APIRouter()


class NotJson(Exception):
    pass


def _close_reason(message: str) -> str:
    """A close frame's reason holds at most 123 bytes of UTF-8; a longer one would fail the close."""
    encoded = message.encode("utf-8")
    if len(encoded) <= 123:
        return message
    return encoded[:120].decode("utf-8", "ignore") + "..."


class Session:
    """One socket: a receive loop, a heartbeat, and at most one run being forwarded."""

    def __init__(self, socket: WebSocket, rt: Runtime, tenant: str | None = None, owner: str = "default"):
        self.socket = socket
        self.rt = rt
        self.tenant = tenant  # what this socket may read (None: every tenant, for admins who asked)
        self.owner = owner  # the tenant of what it creates
        self.forwarder: asyncio.Task[None] | None = None
        self.run_id: str | None = None
        self.unanswered_pings = 0
        self.send_lock = asyncio.Lock()

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.socket.send_text(json.dumps(frame, ensure_ascii=False, default=str))

    async def receive(self) -> dict[str, Any]:
        message = await self.socket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            raise NotJson("frames must be JSON text, not binary")
        try:
            frame = strict_json.loads(text)
        except strict_json.StrictJSONError as error:  # the problem first: a close reason is short
            raise NotJson(f"{error.msg} (at character {error.pos})") from None
        except json.JSONDecodeError as error:
            raise NotJson(f"frames must be JSON objects: {error.msg} at position {error.pos}") from None
        if not isinstance(frame, dict):
            raise NotJson("frames must be JSON objects")
        self.unanswered_pings = 0
        return frame

    async def admit(self, kind: object) -> bool:
        """Check a frame against the permission table and the caller's rate limits (the same as
        for HTTP requests); a refused frame gets an error frame and is audited, the socket stays."""
        frames = WEBSOCKET.get(self.socket.scope["path"], {})
        if not isinstance(kind, str) or kind not in frames or kind in ("ping", "pong"):
            return True
        principal: Principal = self.socket.scope["state"]["principal"]
        guard = self.rt.guard
        permission = frames[kind] or "authenticated"
        client = (self.socket.scope.get("client") or ("unknown", 0))[0]
        try:
            guard.authorize(principal, permission)
            await guard.admit(principal, 1, client)
        except (ForbiddenError, TooManyRequestsError) as error:
            if isinstance(error, ForbiddenError):
                await self._audit(principal, permission, kind, client, allowed=False, error=error)
            await self.error(error.code, error.message, **error.details)
            return False
        if kind in ("run", "message", "reset", "cancel"):
            await self._audit(principal, permission, kind, client, allowed=True)
        return True

    async def _audit(
        self, principal: Principal, permission: str, kind: str, client: str, *, allowed: bool,
        error: AgentstageError | None = None,
    ) -> None:  # fmt: skip
        headers = dict(self.socket.headers)
        await self.rt.guard.record(
            principal, permission, f"WEBSOCKET {self.socket.scope['path']} frame {kind}", allowed=allowed,
            status=None if allowed else 403, client=client, user_agent=headers.get("user-agent"),
            request_id=request_id(self.socket), error=error,
        )  # fmt: skip

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.rt.settings.http.ws_heartbeat)
            if self.unanswered_pings >= 2:
                await self.socket.close(code=1011, reason="no answer to two heartbeats")
                return
            self.unanswered_pings += 1
            await self.send({"type": "ping"})

    def follow(self, run_id: str, after: int = 0) -> None:
        self.stop_following()
        self.run_id = run_id
        self.forwarder = asyncio.get_running_loop().create_task(self._forward(run_id, after))

    def stop_following(self) -> None:
        if self.forwarder is not None:
            self.forwarder.cancel()
            self.forwarder = None

    async def _forward(self, run_id: str, after: int) -> None:
        buffer: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(self.rt.settings.http.ws_buffer)
        sender = asyncio.get_running_loop().create_task(self._drain(buffer))
        try:
            async for event in self.rt.runs.stream(run_id, after=after, tenant=self.tenant):
                try:
                    buffer.put_nowait(event.to_json_dict())
                except asyncio.QueueFull:
                    await buffer.join()
                    await self.send({"type": "lagged", "run_id": run_id, "last_seq": event.seq - 1,
                                     "message": "the client fell behind; resume with {type: resume, run_id, after}"})  # fmt: skip
                    return
            await buffer.put(None)
            await sender
        except AgentstageError as error:
            await self.error(error.code, error.message, run_id=run_id)
        finally:
            sender.cancel()

    async def _drain(self, buffer: asyncio.Queue[dict[str, Any] | None]) -> None:
        while True:
            frame = await buffer.get()
            try:
                if frame is None:
                    return
                await self.send(frame)
            finally:
                buffer.task_done()

    async def cancel(self, frame: dict[str, Any]) -> None:
        run_id = frame.get("run_id") or self.run_id
        if not isinstance(run_id, str):
            await self.error("invalid_frame", "cancel needs a run_id (or a run started on this socket)")
            return
        try:
            record = await self.rt.runs.cancel(run_id, tenant=self.tenant)
        except AgentstageError as error:
            await self.error(error.code, error.message, run_id=run_id, **(error.details or {}))
            return
        await self.send({"type": "cancel_accepted", "run_id": record.id})

    async def resume(self, frame: dict[str, Any]) -> None:
        run_id, after = frame.get("run_id"), frame.get("after", 0)
        if not isinstance(run_id, str) or not isinstance(after, int) or isinstance(after, bool) or after < 0:
            await self.error("invalid_frame", "resume needs {run_id: string, after: whole number >= 0}")
            return
        try:
            await self.rt.runs.status(run_id, self.tenant)
        except AgentstageError as error:
            await self.error(error.code, error.message, run_id=run_id)
            return
        self.follow(run_id, after)


async def serve(socket: WebSocket, handle: Any) -> None:
    """Accept, run the heartbeat and the frame loop, and map bad frames to close codes."""
    await socket.accept()
    try:
        tenant, owner = tenant_scope(socket), owner_tenant(socket)
    except AgentstageError as error:
        await socket.close(code=1008, reason=error.message[:120])
        return
    session = Session(socket, runtime(socket), tenant, owner)
    beat = asyncio.get_running_loop().create_task(session.heartbeat())
    try:
        while True:
            frame = await session.receive()
            kind = frame.get("type")
            if not await session.admit(kind):
                continue
            if kind == "ping":
                await session.send({"type": "pong"})
            elif kind == "pong":
                continue
            elif kind == "cancel":
                await session.cancel(frame)
            elif kind == "resume":
                await session.resume(frame)
            elif not await handle(session, kind, frame):
                await session.error("invalid_frame", f"unknown frame type {kind!r}")
    except NotJson as error:
        with contextlib.suppress(RuntimeError):
            await socket.close(code=1003, reason=_close_reason(str(error)))
    except WebSocketDisconnect:
        pass
    finally:
        beat.cancel()
        session.stop_following()


async def start_from_frame(
    session: Session,
    model: type[RunBody] | type[MessageBody],
    frame: dict[str, Any],
    start: Callable[[Any], Awaitable[RunRecord]],
) -> None:
    """Validate a frame as ``model``, start its run with ``start`` and follow it; errors go back as
    error frames and the socket stays open."""
    try:
        body = model.model_validate({k: v for k, v in frame.items() if k != "type"})
    except ValidationError as error:
        await session.error(
            "invalid_request", f"invalid {frame.get('type')} frame", errors=validation_details(error)
        )
        return
    try:
        record = await start(body)
    except AgentstageError as error:
        await session.error(error.code, error.message)
        return
    session.follow(record.id)


@router.websocket("/ws/agent/stream")
async def stream_socket(socket: WebSocket) -> None:
    async def handle(session: Session, kind: Any, frame: dict[str, Any]) -> bool:
        if kind != "run":
            return False
        await start_from_frame(
            session,
            RunBody,
            frame,
            lambda body: session.rt.runs.start(
                body.to_request(request_id(socket)).model_copy(update={"tenant": session.owner})
            ),
        )
        return True

    await serve(socket, handle)


@router.websocket("/ws/agent/chat")
async def chat_socket(socket: WebSocket) -> None:
    conversation: dict[str, str] = {}

    async def handle(session: Session, kind: Any, frame: dict[str, Any]) -> bool:
        if kind == "reset" or (kind == "message" and "id" not in conversation):
            created = await session.rt.conversations.create(title="websocket chat", tenant=session.owner)
            conversation["id"] = created.id
            await session.send({"type": "conversation", "conversation_id": created.id})
            if kind == "reset":
                return True
        if kind != "message":
            return False
        await start_from_frame(
            session,
            MessageBody,
            frame,
            lambda body: session.rt.conversations.send(
                conversation["id"],
                body.input,
                mode=body.mode,
                profile=body.profile,
                options=body.options,
                tenant=session.owner,
            ),
        )
        return True

    await serve(socket, handle)
