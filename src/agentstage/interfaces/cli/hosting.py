"""One process, two doors on one RunService: the HTTP app, whose lifespan also starts and stops the
gRPC server (``agent serve --grpc-port``), or gRPC alone (``--no-http``).

Sharing the services matters: a run started over gRPC is live for an HTTP stream in the same
process, cancels reach it at once, a configuration change made through one door applies to both,
and a key revoked through one is refused by both at once. Doors never import each other, so both are loaded here by their import strings.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agentstage.interfaces.cli.common import fail

HTTP_APP = "agentstage.interfaces.http.app:create_app"
GRPC_GATEWAY = "agentstage.interfaces.grpc.server:GrpcGateway"
GRPC_SERVE = "agentstage.interfaces.grpc.server:serve"


def load(target: str) -> Any:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def create_app() -> Any:
    """The uvicorn factory: the HTTP app with the gRPC server started once the service is open
    (and stopped, after its grace period, before the service closes)."""
    from agentstage.runtime.wiring import build_services, configure_logging
    from agentstage.settings import load_settings

    settings = load_settings()
    configure_logging(settings)
    services = build_services(settings)
    app = load(HTTP_APP)(settings, services=services)
    gateway = load(GRPC_GATEWAY)(services)
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(instance: Any) -> AsyncIterator[Any]:
        async with inner(instance) as state:
            await gateway.start()
            try:
                yield state
            finally:
                await gateway.stop()

    app.router.lifespan_context = lifespan
    return app


def serve_grpc() -> None:
    """gRPC alone, until SIGINT or SIGTERM; a configuration or port problem is one red line."""
    from agentstage.errors import UserError
    from agentstage.settings import load_settings

    try:
        asyncio.run(load(GRPC_SERVE)(load_settings()))
    except UserError as error:
        fail(error.message, code=1)
