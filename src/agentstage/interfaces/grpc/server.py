"""The gRPC server on ``grpc.aio``: the three agentstage services, health, reflection.

:class:`GrpcGateway` serves a RunService someone else opened (``agent serve`` shares one between
HTTP and gRPC); :func:`serve` runs it alone (``agent serve --no-http``). Message sizes, keepalive
and concurrent streams come from the ``grpc`` settings. Health follows readiness (the store answers,
the default profile's provider is usable) and turns NOT_SERVING as soon as shutdown begins, so load
balancers drain the server while calls in flight get ``grpc.shutdown_grace`` seconds to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentstage.core.tasks import stop_task
from agentstage.errors import ConfigError
from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.interfaces.grpc.gen import agent_pb2_grpc as rpc
from agentstage.interfaces.grpc.interceptor import GatewayInterceptor
from agentstage.interfaces.grpc.runtime import Runtime
from agentstage.interfaces.grpc.services import AgentService, ConfigService, ToolService
from agentstage.runtime.wiring import Services, build_services, configure_logging, readiness
from agentstage.settings import Settings, load_settings

log = logging.getLogger("agentstage.grpc")
SERVICES = tuple(service.full_name for service in pb.DESCRIPTOR.services_by_name.values())
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(settings: Settings) -> list[tuple[str, Any]]:
    config = settings.grpc
    return [
        ("grpc.max_receive_message_length", config.max_receive_message_bytes),
        ("grpc.max_send_message_length", config.max_send_message_bytes),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.keepalive_time_ms", int(config.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", int(config.min_client_ping_interval * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.so_reuseport", 1 if config.reuse_port else 0),
    ]


def listen_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcGateway:
    """The gRPC door over the runtime's services (opened by whoever owns them): ``await start()``,
    later ``await stop()``."""

    def __init__(self, services: Services):
        self.services = services
        self.service = services.runs
        self.rt = Runtime(runs=services.runs, conversations=services.conversations)
        self.health = health.aio.HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None
        self._watcher: asyncio.Task[None] | None = None

    @property
    def settings(self) -> Settings:
        """The service's current settings (a configuration change replaces them)."""
        return self.service.settings

    def _build(self) -> grpc.aio.Server:
        interceptor = GatewayInterceptor(self.services.guard, self.services.telemetry)
        server = grpc.aio.server(interceptors=[interceptor], options=server_options(self.settings))
        rpc.add_AgentServiceServicer_to_server(AgentService(self.rt), server)
        rpc.add_ToolServiceServicer_to_server(ToolService(self.rt), server)
        rpc.add_ConfigServiceServicer_to_server(ConfigService(self.rt), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        names = (
            *SERVICES,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
        return server

    async def start(self) -> int:
        """Listen and serve; returns the port (useful when the configured port is 0)."""
        config = self.settings.grpc
        address = listen_address(config.host, config.port or 0)
        server = self._build()
        try:
            port = server.add_insecure_port(address)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ConfigError(
                f"cannot listen for gRPC on {address!r}: the address is in use or not available"
            )
        await server.start()
        self.server, self.port = server, port
        await self.check_health()
        self._watcher = asyncio.get_running_loop().create_task(self._watch_health(), name="grpc-health")
        if not self.services.guard.auth_enabled:
            log.warning(
                "gRPC authentication is OFF (http.auth = off): anyone who can reach this port can run agents"
            )
        log.info("gRPC listening on %s", listen_address(config.host, port))
        return port

    async def check_health(self) -> bool:
        """Set every service SERVING or NOT_SERVING from the readiness checks; return whether ready."""
        checks = await readiness(self.settings, self.service)
        ready = all(value == "ok" for value in checks.values())
        for name in ("", *SERVICES):
            await self.health.set(name, SERVING if ready else NOT_SERVING)
        if not ready:
            log.warning("gRPC health NOT_SERVING: %s", "; ".join(f"{k}: {v}" for k, v in checks.items()))
        return ready

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(self.settings.grpc.health_interval)
            try:
                await self.check_health()
            except Exception as error:  # a failing check is NOT_SERVING, never a dead watcher
                log.warning("gRPC health check failed: %s", error)
                for name in ("", *SERVICES):
                    await self.health.set(name, NOT_SERVING)

    async def stop(self) -> None:
        """Report NOT_SERVING, give calls in flight the grace period, then close every call."""
        if self.server is None:
            return
        self.rt.stopping = True
        await self.health.enter_graceful_shutdown()
        if self._watcher is not None:
            await stop_task(self._watcher)
        await self.server.stop(self.settings.grpc.shutdown_grace)
        self.server = None


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Serve gRPC alone until SIGINT or SIGTERM (``agent serve --no-http``)."""
    configure_logging(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    services = build_services(settings)
    async with services.runs:
        services.guard.start()  # the audit log's writer (the HTTP app's lifespan does this otherwise)
        gateway = GrpcGateway(services)
        try:
            await gateway.start()
            if ready is not None:
                ready.set()
            await stop.wait()
        finally:
            await gateway.stop()
            await services.guard.close()


def main(settings: Settings | None = None) -> None:
    asyncio.run(serve(settings or load_settings()))
