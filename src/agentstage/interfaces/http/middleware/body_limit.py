"""Refuse request bodies over the configured size with 413, before any route sees them.

Bodies are small by design (a run request, a batch of inputs), so the middleware reads the body
up to the limit and hands the route the same bytes; a chunked body that grows past the limit is
refused just the same as one that declares its size."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstage.interfaces.http.middleware.asgi import header, state
from agentstage.interfaces.http.problems import problem


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413,
            "body_too_large",
            f"the request body is larger than the limit of {self.max_bytes} bytes",
            instance=scope["path"],
            request_id=state(scope).get("request_id"),
        )
        await response(scope, receive, send)
