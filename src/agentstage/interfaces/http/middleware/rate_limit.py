"""Rate limits: each request counts against its principal's and its tenant's limits — shared by every
worker through the store — and is refused with 429 and ``Retry-After`` past them. WebSocket frames
and batch items count against the same limits (see ws.py and the batch route)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from agentstage.access.guard import Guard
from agentstage.errors import TooManyRequestsError
from agentstage.interfaces.http.middleware.asgi import state
from agentstage.interfaces.http.problems import problem_for


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard):
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        info = state(scope)
        principal = info.get("principal")
        if scope["type"] != "http" or principal is None:
            await self.app(scope, receive, send)
            return
        try:
            await self.guard.admit(principal, 1, (scope.get("client") or ("unknown", 0))[0])
        except TooManyRequestsError as error:
            response = problem_for(error, instance=scope["path"], request_id=info.get("request_id"))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
