"""The FastAPI application: routes over the runtime, middleware around them, problem+json errors.

``create_app()`` reads the configuration like every door (``AGENT_*``, the user config file…);
``agent serve`` runs it on uvicorn."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.gzip import GZipMiddleware

from agentstage import __version__
from agentstage.interfaces.http import errors, ws
from agentstage.interfaces.http.deps import Runtime
from agentstage.interfaces.http.middleware.auth import AuthMiddleware
from agentstage.interfaces.http.middleware.body_limit import BodyLimitMiddleware
from agentstage.interfaces.http.middleware.correlation import CorrelationIdMiddleware
from agentstage.interfaces.http.middleware.rate_limit import RateLimitMiddleware
from agentstage.interfaces.http.middleware.request_log import RequestLogMiddleware
from agentstage.interfaces.http.openapi import build_openapi
from agentstage.interfaces.http.routes import config, conversations, health, runs, tools
from agentstage.runtime.wiring import build_services, configure_logging
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
A frame that is not JSON closes the socket with code 1003; a missing key with 1008 (`?api_key=` works too).
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    configure_logging(settings)
    services = build_services(settings)
    service = services.runs
    rt = Runtime(
        runs=service,
        conversations=services.conversations,
        batches=services.batches,
        keys=services.keys,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.open()
        rt.started = True
        if settings.http.auth == "off":
            log.warning(
                "authentication is OFF (http.auth = off): anyone who can reach this port can run agents"
            )
        try:
            yield
        finally:
            rt.started = False
            await service.close()

    app = FastAPI(
        title="agentstage",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = rt
    for module in (runs, conversations, tools, config, health):
        app.include_router(module.router)
    app.include_router(ws.router)
    errors.install(app)

    def openapi() -> dict[str, Any]:
        return build_openapi(app)

    app.openapi = openapi  # type: ignore[method-assign]
    # Added innermost first: gzip < rate limit < auth < body limit < request log < correlation id.
    app.add_middleware(GZipMiddleware, minimum_size=1024)
    app.add_middleware(RateLimitMiddleware, default_per_minute=settings.http.requests_per_minute)
    app.add_middleware(AuthMiddleware, keys=rt.keys, enabled=settings.http.auth != "off")
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.http.max_body_bytes)
    app.add_middleware(RequestLogMiddleware)
    app.add_middleware(CorrelationIdMiddleware)
    return app
