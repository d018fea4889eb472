"""The FastAPI application: routes over the runtime, middleware around them, problem+json errors.

``create_app()`` reads the configuration like every door (``AGENT_*``, the user config file…);
``agent serve`` runs it on uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import HTTPConnection

from agentstage import __version__
from agentstage.access.permissions import WEBSOCKET, http_permission
from agentstage.errors import ForbiddenError
from agentstage.interfaces.http import errors, ws
from agentstage.interfaces.http.deps import Runtime
from agentstage.interfaces.http.middleware.auth import AuthMiddleware
from agentstage.interfaces.http.middleware.body_limit import BodyLimitMiddleware
from agentstage.interfaces.http.middleware.correlation import CorrelationIdMiddleware
from agentstage.interfaces.http.middleware.headers import SecurityHeadersMiddleware
from agentstage.interfaces.http.middleware.rate_limit import RateLimitMiddleware
from agentstage.interfaces.http.middleware.request_log import RequestLogMiddleware
from agentstage.interfaces.http.middleware.tracing import TracingMiddleware
from agentstage.interfaces.http.openapi import build_openapi
from agentstage.interfaces.http.routes import (
    alias,
    audit,
    config,
    conversations,
    health,
    metrics,
    runs,
    snapshots,
    tools,
)
from agentstage.runtime.wiring import Services, build_services, configure_logging
from agentstage.settings import Settings, load_settings

log = logging.getLogger("agentstage.http")

DESCRIPTION = """Run AI agents, stream their events, cancel them, and keep a complete record of every run.

Authenticate with `Authorization: Bearer <key>` or `X-API-Key: <key>` (keys from `agent keys create`).
Errors are `application/problem+json` with a stable `code`.

**WebSocket** (not listed below, as OpenAPI cannot describe them):
`/ws/agent/stream` — send `{"type": "run", "input": ...}` (a run request), receive one JSON frame per
event; `{"type": "cancel", "run_id"?}`, `{"type": "resume", "run_id", "after"}`, `{"type": "ping"}`.
`/ws/agent/chat` — `{"type": "message", "input": ...}` runs on one conversation; `{"type": "reset"}`
starts a new one. The server sends `{"type": "ping"}` every `http.ws_heartbeat` seconds and closes a
peer that answers none of two; a slow reader gets `{"type": "lagged", "last_seq"}` and resumes from there.
A frame that is not JSON closes the socket with code 1003; a missing or invalid credential with 1008
(`?api_key=` works too); a frame the caller may not send gets an `error` frame with code `forbidden`.
Every route and frame type needs a permission (roles `viewer`, `operator`, `admin`): see docs/security.md.
"""


async def listed_route(connection: HTTPConnection) -> None:
    """Fail closed: a route the permission table does not name is refused for everyone."""
    route = connection.scope.get("route")
    template = str(getattr(route, "path", ""))
    if connection.scope["type"] == "websocket":
        if template not in WEBSOCKET:
            raise ForbiddenError(f"WebSocket {template!r} is not in the permission table", code="forbidden")
        return
    if http_permission(connection.scope["method"], template) is None:
        raise ForbiddenError(
            f"{connection.scope['method']} {template} is not in the permission table; it is refused for everyone",
            code="forbidden",
        )


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """``services``: shared with another door of this process (``agent serve --grpc-port``);
    this app's lifespan still opens and closes them."""
    settings = settings or load_settings()
    configure_logging(settings)
    services = services or build_services(settings)
    service = services.runs
    rt = Runtime(
        runs=service,
        conversations=services.conversations,
        batches=services.batches,
        keys=services.keys,
        guard=services.guard,
        telemetry=services.telemetry,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.open()
        rt.guard.start()
        rt.started = True
        if settings.http.auth == "off":
            log.warning(
                "authentication is OFF (http.auth = off): anyone who can reach this port can run agents"
            )
        try:
            yield
        finally:
            rt.started = False
            await rt.guard.close()
            await service.close()

    app = FastAPI(
        title="agentstage",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        dependencies=[Depends(listed_route)],
    )
    app.state.runtime = rt
    for module in (runs, alias, snapshots, conversations, tools, config, audit, health, metrics):
        app.include_router(module.router)
    app.include_router(ws.router)
    errors.install(app)

    def openapi() -> dict[str, Any]:
        return build_openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
    # Added innermost first: gzip < body limit < rate limit < auth (+ audit) < security headers
    # < request log < correlation id < tracing < CORS (outermost, so preflight requests are answered first).
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.http.max_body_bytes)
    app.add_middleware(RateLimitMiddleware, guard=rt.guard)
    public = frozenset({("GET", "/metrics")}) if settings.metrics.public else frozenset()
    app.add_middleware(AuthMiddleware, guard=rt.guard, public=public)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestLogMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
    app.add_middleware(TracingMiddleware, telemetry=services.telemetry)
    if settings.http.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.http.cors_origins,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Last-Event-ID", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Run-ID", "Retry-After"],
            allow_credentials=False,
        )
    return app
