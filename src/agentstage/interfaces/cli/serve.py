"""``agent serve``: the HTTP API (REST, Server-Sent Events, WebSocket) on uvicorn."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any

import typer

from agentstage.interfaces.cli.common import fail, load_settings


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tls_options(cert: Path | None, key: Path | None, client_ca: Path | None) -> dict[str, Any]:
    if cert is None and key is None and client_ca is None:
        return {}
    if cert is None or key is None:
        fail("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", client_ca)):
        if path is not None and not path.is_file():
            fail(f"{flag} {str(path)!r} is not a readable file")
    options: dict[str, Any] = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    if client_ca is not None:
        import ssl

        options |= {
            "ssl_ca_certs": str(client_ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            # Named by import string like the app: these protocols expose the client certificate.
            "http": "agentstage.interfaces.http.tls:H11WithClientCert",
            "ws": "agentstage.interfaces.http.tls:WebSocketsWithClientCert",
        }
    return options


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default: http.host, 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=0, max=65535, help="Port (default: http.port, 8080).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="Serve HTTPS with this PEM certificate.")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option("--tls-key", help="The certificate's PEM private key.")
    ] = None,
    tls_client_ca: Annotated[
        Path | None,
        typer.Option(
            "--tls-client-ca",
            help="Require client certificates signed by this CA (mTLS); subjects map to principals "
            "through security.client_certs.",
        ),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option("--insecure", help="Allow auth off on a non-loopback address (anyone can run agents)."),
    ] = False,
) -> None:
    """Serve the HTTP API: runs, streams (SSE, WebSocket), conversations, tools, config, health.

    Requests need a credential — an API key (`agent keys create --name NAME --role operator`), a JWT
    (security.jwt) or a client certificate (--tls-client-ca) — unless the config sets http.auth to
    "off" for local use, which only binds a loopback address unless --insecure is given. The
    OpenAPI document is at /openapi.json, docs at /docs; docs/security.md describes every control.
    """
    import uvicorn

    from agentstage.errors import UserError

    try:
        settings = load_settings()
    except UserError as error:
        fail(error.message)
    host = host or settings.http.host
    port = settings.http.port if port is None else port
    auth_off = settings.http.auth == "off"
    if auth_off and not _loopback(host) and not insecure:
        fail(
            f"authentication is off (http.auth = off) and {host!r} is not a loopback address: anyone who "
            "can reach it could run agents; bind 127.0.0.1, turn auth on, or pass --insecure"
        )
    tls = _tls_options(tls_cert, tls_key, tls_client_ca)
    scheme = "https" if tls else "http"
    auth = "API keys" if not auth_off else "OFF (http.auth = off; local use only)"
    if tls_client_ca is not None:
        auth += " + client certificates"
    typer.secho(
        f"agentstage serving on {scheme}://{host}:{port} · auth: {auth} · store: {settings.store_url()}",
        err=True,
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
        **tls,
    )
