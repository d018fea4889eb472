"""The gRPC server itself: API keys and the permission table, rate limits, health, reflection,
internal errors, shutdown, ``--no-http``, and the committed stubs being current.

Most tests here run the real grpc.aio server in the test's own event loop, on a real RunService
with a real SQLite file, so they can create keys, break the store or stop the server at will."""

from __future__ import annotations

import asyncio
import importlib.util
import signal
import socket
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import GrpcServer, details, health_status, health_stub, message, stubs
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentstage.access.permissions import GRPC
from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.interfaces.grpc.server import GrpcGateway, server_options
from agentstage.runtime.wiring import build_services
from conftest import AGENT, make_settings, scripted_config
from http_api.conftest import free_port

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@asynccontextmanager
async def gateway(
    home: Path,
    script: Any = None,
    store: dict[str, Any] | None = None,
    http: dict[str, Any] | None = None,
    security: dict[str, Any] | None = None,
    **grpc_settings: Any,
) -> AsyncIterator[GrpcGateway]:
    settings = make_settings(
        home,
        scripted_config(
            script or {"responses": [{"text": "Hello."}]},
            grpc={"port": 0, "shutdown_grace": 0.5, **grpc_settings},
            store=store or {},
            http=http or {},
            security=security or {},
        ),
    )
    services = build_services(settings)
    async with services.runs:
        services.guard.start()
        server = GrpcGateway(services)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()
            await services.guard.close()


@asynccontextmanager
async def channel(server: GrpcGateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
        yield opened


async def failure(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_api_keys_in_metadata(home: Path) -> None:
    async with gateway(home) as server, channel(server) as opened:
        key, _ = await server.services.keys.create("client")
        _, _, config = stubs(opened)
        request = pb.GetConfigRequest()
        for metadata in ((("authorization", f"Bearer {key}"),), (("x-api-key", key),)):
            assert (await config.GetConfig(request, metadata=metadata)).config_json
        missing = await failure(config.GetConfig(request))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert details(missing)["reason"] == "unauthorized"
        wrong = await failure(config.GetConfig(request, metadata=(("authorization", "Bearer ags_wrong"),)))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED
        agent, _, _ = stubs(opened)
        refused = await failure(agent.Execute(pb.ExecuteRequest(input="hi")))
        assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await server.service.count_runs() == 0  # refused before anything started


async def test_every_method_is_in_the_one_permission_table() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(GRPC) == methods
    assert GRPC["/agentstage.v1.ToolService/RegisterTool"] == "tools.register"


async def test_roles_and_tenants_decide_what_a_key_may_do(home: Path) -> None:
    tenants: dict[str, Any] = {"tenants": {"default": {}, "other": {}}}
    async with gateway(home, security=tenants) as server, channel(server) as opened:
        keys = server.services.keys
        operator, _ = await keys.create("op", role="operator")
        viewer, _ = await keys.create("viewer", role="viewer")
        outsider, _ = await keys.create("outsider", role="admin", tenant="other")
        agent, tools, _ = stubs(opened)
        run = await agent.Execute(
            pb.ExecuteRequest(input="hi", mode="chat"), metadata=(("x-api-key", operator),)
        )
        assert run.status == pb.RUN_STATE_COMPLETED
        seen = await agent.GetStatus(
            pb.GetStatusRequest(run_id=run.run_id), metadata=(("x-api-key", viewer),)
        )
        assert seen.run_id == run.run_id
        denied = await failure(
            agent.Execute(pb.ExecuteRequest(input="hi"), metadata=(("x-api-key", viewer),))
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED and "'runs.start'" in message(denied)
        assert details(denied)["reason"] == "forbidden"
        register = pb.RegisterToolRequest(name="evil", command="/bin/sh")
        not_admin = await failure(tools.RegisterTool(register, metadata=(("x-api-key", operator),)))
        assert not_admin.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'tools.register'" in message(not_admin)
        hidden = await failure(
            agent.GetStatus(pb.GetStatusRequest(run_id=run.run_id), metadata=(("x-api-key", outsider),))
        )
        assert hidden.code() == grpc.StatusCode.NOT_FOUND  # another tenant's run is simply not found
        for _ in range(100):  # the audit writer commits in the background: wait for both rows
            rows = await server.services.guard.audit_entries()
            kinds = {(r["outcome"], r["action"]) for r in rows}
            if {("denied", "tools.register"), ("allowed", "runs.start")} <= kinds:
                break
            await asyncio.sleep(0.05)
        assert {("denied", "tools.register"), ("allowed", "runs.start")} <= kinds


async def test_rate_limit_is_resource_exhausted_with_retry_info(home: Path) -> None:
    async with gateway(home) as server, channel(server) as opened:
        key, _ = await server.services.keys.create("limited", requests_per_minute=2)
        metadata = (("x-api-key", key),)
        _, _, config = stubs(opened)
        for _ in range(2):
            await config.ListProfiles(pb.ListProfilesRequest(), metadata=metadata)
        limited = await failure(config.ListProfiles(pb.ListProfilesRequest(), metadata=metadata))
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 requests per minute" in message(limited)
        found = details(limited)
        assert found["reason"] == "rate_limited" and 1 <= found["retry_seconds"] <= 30
        assert found["retry-after"] == str(found["retry_seconds"])
        other, _ = await server.services.keys.create("other")
        await config.ListProfiles(
            pb.ListProfilesRequest(), metadata=(("x-api-key", other),)
        )  # its own bucket


async def test_health_follows_readiness_and_shutdown(home: Path) -> None:
    async with gateway(home, health_interval=0.2) as server, channel(server) as opened:
        health = health_stub(opened)
        for name in (
            "",
            "agentstage.v1.AgentService",
            "agentstage.v1.ToolService",
            "agentstage.v1.ConfigService",
        ):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=name))  # open: no key
            assert reply.status == SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service="agentstage.v1.AgentService"))
        first = await watch.read()
        assert isinstance(first, health_pb2.HealthCheckResponse) and first.status == SERVING
        stopping = asyncio.get_running_loop().create_task(server.stop())
        second = await watch.read()
        assert isinstance(second, health_pb2.HealthCheckResponse) and second.status == NOT_SERVING
        await stopping


async def test_health_is_not_serving_when_the_model_cannot_be_used(home: Path) -> None:
    async with gateway(home, str(home / "missing-script.json")) as server:
        target = f"127.0.0.1:{server.port}"
        assert await health_status(target) == NOT_SERVING
        assert await health_status(target, "agentstage.v1.AgentService") == NOT_SERVING
        (home / "missing-script.json").write_text('{"responses": [{"text": "ok"}]}')
        assert await server.check_health()
        assert await health_status(target) == SERVING


async def test_reflection_lists_and_describes_the_services(home: Path) -> None:
    async with gateway(home) as server, channel(server) as opened:
        # grpcio-reflection's published stubs type the stub for sync channels only, its call not at all.
        stub = reflection_pb2_grpc.ServerReflectionStub(opened)  # type: ignore[arg-type]
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="agentstage.v1.AgentService"),
        ]
        replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests))]  # type: ignore[operator]
        names = {s.name for s in replies[0].list_services_response.service}
        assert {
            "agentstage.v1.AgentService",
            "agentstage.v1.ToolService",
            "agentstage.v1.ConfigService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
        } <= names
        files = replies[1].file_descriptor_response.file_descriptor_proto
        assert files and b"ExecuteStream" in files[0] and b"agentstage.v1" in files[0]


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
async def test_internal_errors_say_nothing_of_the_internals(home: Path) -> None:
    async with gateway(home, http={"auth": "off"}) as server, channel(server) as opened:
        database = sqlite3.connect(home / "agentstage.db", isolation_level=None)
        try:  # break the store under the server, then mend it (the store must end consistent)
            database.execute("ALTER TABLE runs RENAME TO runs_hidden")
            agent, _, _ = stubs(opened)
            broken = await failure(agent.GetStatus(pb.GetStatusRequest(run_id="anything")))
        finally:
            database.execute("ALTER TABLE runs_hidden RENAME TO runs")
            database.close()
        assert broken.code() == grpc.StatusCode.INTERNAL
        assert message(broken).startswith(
            "an internal error occurred; the server log has the details (error "
        )
        leaked = message(broken).lower() + str(broken.trailing_metadata()).lower()
        assert not any(word in leaked for word in ("sqlite", "runs", "traceback", "table", ".py"))
        assert details(broken)["reason"] == "internal_error"


async def test_auth_off_is_explicit_and_limits_by_address(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        gateway(home, http={"auth": "off", "requests_per_minute": 1}) as server,
        channel(server) as opened,
    ):
        assert "gRPC authentication is OFF" in caplog.text
        _, _, config = stubs(opened)
        await config.GetConfig(pb.GetConfigRequest())
        limited = await failure(config.GetConfig(pb.GetConfigRequest()))
        assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_transport_settings_reach_the_server() -> None:
    settings = make_settings(
        Path("/nonexistent"),
        {"grpc": {"max_receive_message_bytes": 2048, "keepalive_time": 30, "min_client_ping_interval": 5}},
    )
    options = dict(server_options(settings))
    assert options["grpc.max_receive_message_length"] == 2048
    assert options["grpc.max_send_message_length"] == 16 * 1024 * 1024
    assert options["grpc.keepalive_time_ms"] == 30_000 and options["grpc.keepalive_timeout_ms"] == 20_000
    assert options["grpc.http2.min_recv_ping_interval_without_data_ms"] == 5_000
    assert options["grpc.so_reuseport"] == 0


def test_committed_stubs_are_current() -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts" / "gen_proto.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.stale() == [], "the gRPC stubs are stale: run scripts/gen-proto and commit the result"
    assert set(module.committed()) >= {
        "agent_pb2.py",
        "agent_pb2.pyi",
        "agent_pb2_grpc.py",
        "agent_pb2_grpc.pyi",
    }


def test_grpc_alone_with_no_http(tmp_path: Path) -> None:
    server = GrpcServer(tmp_path, http=False).start()
    try:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{server.url}/health/live", timeout=2)

        async def run_one() -> pb.Run:
            async with server.channel() as opened:
                agent, _, _ = stubs(opened)
                run: pb.Run = await agent.Execute(
                    pb.ExecuteRequest(input="hi", mode="chat"), metadata=server.metadata
                )
                return run

        assert asyncio.run(run_one()).output == "Hello from the server."
        assert server.process is not None
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=20) == 0
    finally:
        server.stop()


def test_serve_refuses_unusable_grpc_flags(tmp_path: Path) -> None:
    env = {"AGENT_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    alone = subprocess.run([AGENT, "serve", "--no-http"], env=env, capture_output=True, text=True, timeout=60)
    assert alone.returncode == 2 and "--grpc-port" in alone.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [AGENT, "serve", "--no-http", "--grpc-port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert busy.returncode == 1 and f"cannot listen for gRPC on '127.0.0.1:{port}'" in busy.stderr
    assert free_port() != port


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
async def test_a_locked_store_answers_a_status_without_internals(home: Path) -> None:
    async with (
        gateway(home, store={"write_timeout": 0.5}, http={"auth": "off"}) as server,
        channel(server) as opened,
    ):
        agent, _, _ = stubs(opened)
        locker = sqlite3.connect(home / "agentstage.db", isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            refused = await failure(agent.Execute(pb.ExecuteRequest(input="hi"), timeout=30))
        finally:
            locker.close()
        # The rate limiter (in the store) or the run's first write meets the lock: either way the
        # caller hears a status, and nothing of the database's own words.
        assert refused.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL), refused.details()
        found = details(refused)
        assert found["reason"] in ("store_unavailable", "internal_error")
        assert "sqlite" not in message(refused).lower() and "locked" not in message(refused).lower()
