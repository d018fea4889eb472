"""API-key authentication: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.

Health, metrics and the API description stay open. WebSocket clients that cannot set headers
(browsers) may pass ``?api_key=``. Auth is off only when the config says so (``http.auth: off``).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from agentstage.interfaces.http.middleware.asgi import header, is_open, state
from agentstage.interfaces.http.problems import problem
from agentstage.runtime.keys import KeyService


def presented_key(scope: Scope) -> str | None:
    authorization = header(scope, b"authorization")
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    key = header(scope, b"x-api-key")
    if key:
        return key.strip()
    if scope["type"] == "websocket":
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
        return values[0] if values else None
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyService | None, enabled: bool):
        self.app = app
        self.keys = keys
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or not self.enabled or is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        record = await self.keys.verify(key) if key and self.keys is not None else None
        if record is None:
            reason = "this request needs an API key (Authorization: Bearer <key> or X-API-Key)"
            if key:
                reason = "the API key is not valid (unknown or revoked)"
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": reason})
                return
            response = problem(
                401,
                "unauthorized",
                reason,
                instance=scope["path"],
                request_id=state(scope).get("request_id"),
                headers={"WWW-Authenticate": "Bearer"},
            )
            await response(scope, receive, send)
            return
        state(scope)["api_key_name"] = record.name
        state(scope)["api_key_rpm"] = record.requests_per_minute
        await self.app(scope, receive, send)
