"""A server span for every HTTP request and WebSocket, continuing the caller's W3C ``traceparent``.

The span is current while the request is served, so a run it starts joins the caller's trace
(its ``invoke_agent`` span is a child of this one) and every log line written meanwhile carries
the trace and span ids. Each request is counted per door and route. Health probes and metric
scrapes are left out: they would bury the requests that matter.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentstage.interfaces.http.middleware.asgi import header
from agentstage.runtime import observe

UNTRACED = ("/health/", "/metrics")


class TracingMiddleware:
    def __init__(self, app: ASGIApp, telemetry: observe.Telemetry):
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(UNTRACED):
            await self.app(scope, receive, send)
            return
        door = "http" if scope["type"] == "http" else "websocket"
        method = scope.get("method", "GET") if door == "http" else "WEBSOCKET"
        client = scope.get("client") or ("", 0)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.path": scope["path"],
            "url.scheme": scope.get("scheme", "http"),
            "network.protocol.version": scope.get("http_version", "1.1"),
            "client.address": client[0] or "",
            "user_agent.original": header(scope, b"user-agent") or "",
        }
        headers = {"traceparent": header(scope, b"traceparent") or ""}
        status = "500" if door == "http" else "closed"

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = str(message["status"])
            elif message["type"] == "websocket.accept":
                status = "101"
            await send(message)

        with (
            observe.through(door),
            self.telemetry.doors.request(door, method, headers, attributes) as request,
        ):
            try:
                await self.app(scope, receive, capture)
            finally:
                route = getattr(scope.get("route"), "path", None)
                request.rename(f"{method} {route}" if route else method)
                failed = status.isdigit() and int(status) >= 500
                request.finish(status, error=status if failed else None)
