"""Who is asking and may they: every request and WebSocket is authenticated, its route looked up in
the one permission table, refused with 401/403 problem+json when it must be, and audited.

Credentials: ``Authorization: Bearer <API key or JWT>``, ``X-API-Key: <key>``, a verified client
certificate (mTLS), or — for WebSocket clients that cannot set headers — ``?api_key=``. Public
routes (health, the API description; /metrics with metrics.public) need none. A request that matches no table entry
is only let through to be answered 404/405 — and a route the table forgot is refused for everyone
by the app's ``listed_route`` dependency. Denied requests and every change (a request that is not a read and
succeeded) are written to the audit log; a WebSocket without valid credentials is accepted and
closed with 1008 so browsers see the reason.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstage.access.guard import Guard
from agentstage.access.permissions import PUBLIC, match_http
from agentstage.access.principals import Credentials, Principal
from agentstage.errors import AgentstageError, ForbiddenError, TooManyRequestsError, UnauthorizedError
from agentstage.interfaces.http.middleware.asgi import header, state
from agentstage.interfaces.http.problems import problem_for

log = logging.getLogger("agentstage.http")
READS = ("GET", "HEAD", "OPTIONS")


def credentials(scope: Scope) -> Credentials:
    found = Credentials(
        client=(scope.get("client") or ("unknown", 0))[0], user_agent=header(scope, b"user-agent")
    )
    authorization = header(scope, b"authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        found.bearer = authorization[7:].strip() or None
    found.api_key = (header(scope, b"x-api-key") or "").strip() or None
    if scope["type"] == "websocket" and not (found.bearer or found.api_key):
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
        found.api_key = values[0] if values else None
    tls = scope.get("extensions", {}).get("tls") or {}
    found.client_cert = tls.get("client_cert_name") or None
    return found


class AuthMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard, public: frozenset[tuple[str, str]] = frozenset()):
        self.app = app
        self.guard = guard
        self.public = public  # (method, template) opened by configuration (metrics.public)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET") if scope["type"] == "http" else "WEBSOCKET"
        listed = match_http(method, scope["path"]) if scope["type"] == "http" else None
        permission = listed[1] if listed else None
        opened = listed is not None and ("GET" if method == "HEAD" else method, listed[0]) in self.public
        if permission == PUBLIC or opened or (scope["type"] == "http" and method == "OPTIONS"):
            await self.app(scope, receive, send)
            return
        found = credentials(scope)
        info = state(scope)
        principal: Principal | None = None
        try:
            principal = await self.guard.authenticate(found)
            info["principal"] = principal
            info["api_key_name"] = principal.name
            if permission is not None:
                self.guard.authorize(principal, permission)
        except (UnauthorizedError, ForbiddenError, TooManyRequestsError) as error:
            await self._refuse(scope, receive, send, error, principal, permission or method, found)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, self._auditing(scope, send, principal, permission or "unknown", found))

    def _auditing(
        self, scope: Scope, send: Send, principal: Principal, action: str, found: Credentials
    ) -> Send:
        """Audit denials and changes when the response starts (a sensitive change: before it starts)."""
        method = scope["method"]

        async def audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                if status in (401, 403) or (method not in READS and status < 400):
                    await self._record(scope, principal, action, found, allowed=status < 400, status=status)
            await send(message)

        return audited

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        error: AgentstageError,
        principal: Principal | None,
        action: str,
        found: Credentials,
    ) -> None:
        status = (
            429
            if isinstance(error, TooManyRequestsError)
            else 401
            if isinstance(error, UnauthorizedError)
            else 403
        )
        if status != 429 or error.code == "too_many_failed_authentications":
            await self._record(scope, principal, action, found, allowed=False, status=status, error=error)
        if scope["type"] == "websocket":
            message = await receive()
            if message["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
                await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})
            return
        response = problem_for(error, instance=scope["path"], request_id=state(scope).get("request_id"))
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)

    async def _record(
        self,
        scope: Scope,
        principal: Principal | None,
        action: str,
        found: Credentials,
        *,
        allowed: bool,
        status: int,
        error: AgentstageError | None = None,
    ) -> None:
        target = f"{scope.get('method', 'WEBSOCKET')} {scope['path']}"
        try:
            await self.guard.record(
                principal, action, target, allowed=allowed, status=status, client=found.client,
                user_agent=found.user_agent, request_id=state(scope).get("request_id"), error=error,
                details=_details(error),
            )  # fmt: skip
        except Exception:  # the audit store failing must not hide the answer; the log says so
            log.exception("could not write the audit row for %s", target)


def _details(error: AgentstageError | None) -> dict[str, Any] | None:
    if error is not None and error.details.get("permission"):
        return {"permission": error.details["permission"]}
    return None
