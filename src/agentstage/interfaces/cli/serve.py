"""``agent serve``: the HTTP API (REST, Server-Sent Events, WebSocket) on uvicorn, and gRPC beside it."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
from pathlib import Path
from typing import Annotated, Any

import typer

from agentstage.access.secrets import loose_permissions
from agentstage.interfaces.cli.common import fail, load_settings, run_command

# Doors are named by their import strings, never imported here: doors stay independent.
HTTP_APP = "agentstage.interfaces.http.app:create_app"
HTTP_AND_GRPC_APP = "agentstage.interfaces.cli.hosting:create_app"
GRPC_ALONE = "agentstage.interfaces.cli.hosting:serve_grpc"


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
    exposed = loose_permissions(key)
    if exposed:  # used, as a key file is by ssh's peers, but said plainly: it is this server's identity
        mode = stat.S_IMODE(key.stat().st_mode)
        typer.secho(f"warning: --tls-key {str(key)!r} is open to {exposed} (mode {mode:04o}); anyone who can "
                    f"read it can pose as this server. Run: chmod 600 {key}", err=True, fg="yellow")  # fmt: skip
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
    grpc_port: Annotated[
        int | None,
        typer.Option(
            "--grpc-port",
            min=0,
            max=65535,
            help="Also serve gRPC on this port (default: grpc.port; unset: none).",
        ),
    ] = None,
    no_http: Annotated[
        bool, typer.Option("--no-http", help="Serve gRPC only (needs --grpc-port or grpc.port).")
    ] = False,
    execute: Annotated[
        bool,
        typer.Option(
            "--execute",
            help="With PostgreSQL and Redis (scale-out), also execute queued runs in this process; "
            "without it, runs go to `agent worker` processes. The embedded mode always executes.",
        ),
    ] = False,
    reload: Annotated[
        bool, typer.Option("--reload", help="Restart when the code changes (for development; one worker).")
    ] = False,
) -> None:
    """Serve the HTTP API: runs, streams (SSE, WebSocket), conversations, tools, config, health.
    With --grpc-port, serve the gRPC API (protos/agent.proto) in the same process, on the same runs.

    Requests need a credential — an API key (`agent keys create --name NAME --role operator`), a JWT
    (security.jwt) or a client certificate (--tls-client-ca) — unless the config sets http.auth to
    "off" for local use, which only binds a loopback address unless --insecure is given. The
    OpenAPI document is at /openapi.json, docs at /docs; docs/security.md describes every control.
    """
    import uvicorn

    from agentstage.runtime.wiring import check_store, start_model_host

    if reload and (workers > 1 or no_http):
        fail("--reload restarts one HTTP worker; leave out --workers and --no-http")
    settings = load_settings()
    if execute:
        os.environ["AGENT_RUNTIME__EXECUTE_IN_API"] = "true"  # reaches every server process
    grpc_port = settings.grpc.port if grpc_port is None else grpc_port
    if no_http and grpc_port is None:
        fail("--no-http serves gRPC only: give --grpc-port PORT (or set grpc.port)")
    if no_http and workers > 1:
        fail(
            "--workers applies to the HTTP server; run several `agent serve --no-http` for more gRPC processes"
        )
    if grpc_port is not None:
        _grpc_environment(host, grpc_port, workers)
    grpc_host = host or settings.grpc.host
    if grpc_port is not None and settings.http.auth == "off" and not _loopback(grpc_host) and not insecure:
        fail(f"authentication is off (http.auth = off) and {grpc_host!r} is not a loopback address: anyone "
             "who can reach it could run agents; bind 127.0.0.1, turn auth on, or pass --insecure")  # fmt: skip
    host = host or settings.http.host
    port = settings.http.port if port is None else port
    auth_off = settings.http.auth == "off"
    if auth_off and not _loopback(host) and not insecure:
        fail(
            f"authentication is off (http.auth = off) and {host!r} is not a loopback address: anyone who "
            "can reach it could run agents; bind 127.0.0.1, turn auth on, or pass --insecure"
        )
    tls = _tls_options(tls_cert, tls_key, tls_client_ca)
    run_command(lambda: check_store(settings))  # a bad store URL or encryption key: one line, exit 2
    scheme = "https" if tls else "http"
    auth = "API keys" if not auth_off else "OFF (http.auth = off; local use only)"
    if tls_client_ca is not None:
        auth += " + client certificates"
    store = _masked(settings.store_url())
    if settings.distributed():
        store += " · runs: " + (
            "queued, executed here and by workers" if execute else "queued for `agent worker`"
        )
    if not no_http:
        check_port(host, port)
        url = f"{scheme}://{host}:{port}"
        reloading = " · reloading when the code changes" if reload else ""
        typer.secho(
            f"agentstage serving on {url} · docs {url}/docs · auth: {auth} · store: {store}{reloading}",
            err=True,
        )
    if grpc_port is not None:
        typer.secho(
            f"agentstage serving gRPC on {grpc_host}:{grpc_port} · auth: {_grpc_auth(settings)} · store: {store}",
            err=True,
        )
    from agentstage.runtime.wiring import prepare_metrics

    prepare_metrics()  # before the workers start: one /metrics sees them all
    # One model host for every worker: started before the servers so their workers inherit where it is.
    model_host = start_model_host(settings)
    try:
        if no_http:
            _call(GRPC_ALONE)
            return
        uvicorn.run(
            HTTP_APP if grpc_port is None else HTTP_AND_GRPC_APP,
            factory=True,
            host=host,
            port=port,
            workers=None if reload else workers,
            reload=reload,
            reload_dirs=[str(Path(__file__).parents[2])] if reload else None,
            log_level="warning",
            access_log=False,
            **tls,
        )
    finally:
        if model_host is not None:
            model_host.stop()


def _masked(url: str) -> str:
    """A store URL without its password (it is printed)."""
    scheme, sep, rest = url.partition("://")
    credentials, at, place = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{place}"


def _grpc_environment(host: str | None, grpc_port: int, workers: int) -> None:
    """Flags reach the server (and each worker process) as settings, like every AGENT_* variable."""
    os.environ["AGENT_GRPC__PORT"] = str(grpc_port)
    os.environ["AGENT_GRPC__REUSE_PORT"] = "true" if workers > 1 else "false"
    if host:
        os.environ["AGENT_GRPC__HOST"] = host


def _grpc_auth(settings: Any) -> str:
    return "API keys / JWT" if settings.http.auth != "off" else "OFF (http.auth = off; local use only)"


def _call(target: str) -> None:
    import importlib

    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)()


def check_port(host: str, port: int) -> None:
    """Refuse a busy or unusable address before anything starts, in one line (uvicorn would log
    a traceback after the start-up banner and exit 3)."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror}")
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                fail(
                    f"port {port} on {host} is already in use; stop what uses it or pick another with --port"
                )
            fail(f"cannot listen on {host}:{port}: {error.strerror}")
