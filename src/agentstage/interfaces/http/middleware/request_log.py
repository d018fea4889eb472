"""One JSON line per request: method, path, status, duration, key name, correlation id."""

from __future__ import annotations

import json
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstage.interfaces.http.middleware.asgi import state

log = logging.getLogger("agentstage.http.access")


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            info = state(scope)
            line = {
                "event": "http.request",
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                "key": info.get("api_key_name"),
                "request_id": info.get("request_id"),
            }
            log.info(json.dumps(line, separators=(",", ":")))
