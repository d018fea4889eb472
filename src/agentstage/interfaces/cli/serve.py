"""``agent serve``: the HTTP API (REST, Server-Sent Events, WebSocket) on uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstage.interfaces.cli.common import fail, load_settings


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: http.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default: http.port, 8080).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Serve the HTTP API: runs, streams (SSE, WebSocket), conversations, tools, config, health.

    Requests need an API key (create one with `agent keys create --name NAME`) unless the config
    sets http.auth to "off" for local use. The OpenAPI document is at /openapi.json, docs at /docs.
    """
    import uvicorn

    from agentstage.errors import UserError

    try:
        settings = load_settings()
    except UserError as error:
        fail(error.message)
    host = host or settings.http.host
    port = settings.http.port if port is None else port
    auth = "API keys" if settings.http.auth != "off" else "OFF (http.auth = off; local use only)"
    typer.secho(
        f"agentstage serving on http://{host}:{port} · auth: {auth} · store: {settings.store_url()}", err=True
    )
    # The HTTP door is named by its import string, never imported here: doors stay independent.
    uvicorn.run(
        "agentstage.interfaces.http.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
    )
