"""A real ``agent serve --grpc-port`` (HTTP and gRPC in one process) on 127.0.0.1, and helpers to
call it through real grpc.aio channels and read the statuses' details."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.interfaces.grpc.gen import agent_pb2_grpc as rpc
from conftest import AGENT
from http_api.conftest import SCRIPT, Server, free_port

GRPC_SCRIPT: dict[str, Any] = {
    "rules": [
        {"match": "ticks", "deltas": [f"t{i} " for i in range(30)], "delta_delay": 0.05},
        {"match": "calc", "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "6*7"}}]},
        *SCRIPT["rules"],
    ],
    "responses": [{"text": "Hello from the server."}],
}


class GrpcServer(Server):
    """``agent serve --port P --grpc-port G`` (or ``--no-http``) with its own home and API key."""

    def __init__(self, home: Path, config: dict[str, Any] | None = None, *, http: bool = True):
        super().__init__(home, config)
        (home / "script.json").write_text(json.dumps(GRPC_SCRIPT), encoding="utf-8")
        self.grpc_port = free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.http = http
        self.metadata = (("authorization", f"Bearer {self.key}"),)

    def start(self) -> GrpcServer:
        command = [AGENT, "serve", "--grpc-port", str(self.grpc_port)]
        command += ["--port", str(self.port)] if self.http else ["--no-http"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            if asyncio.run(health_status(self.target)) == health_pb2.HealthCheckResponse.SERVING:
                return self
            time.sleep(0.1)
        raise AssertionError("the gRPC server did not start:\n" + self.log())

    @asynccontextmanager
    async def channel(self, **options: Any) -> AsyncIterator[grpc.aio.Channel]:
        async with grpc.aio.insecure_channel(self.target, options=list(options.items())) as channel:
            yield channel


class HealthCalls(Protocol):
    """The Health service's calls on an aio channel, which the published grpc_health stubs leave out."""

    def Check(
        self, request: health_pb2.HealthCheckRequest, *, timeout: float | None = None
    ) -> grpc.aio.UnaryUnaryCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]: ...

    def Watch(
        self, request: health_pb2.HealthCheckRequest, *, timeout: float | None = None
    ) -> grpc.aio.UnaryStreamCall[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]: ...


def health_stub(channel: grpc.aio.Channel) -> HealthCalls:
    return cast(HealthCalls, health_pb2_grpc.HealthStub(channel))


async def health_status(target: str, service: str = "") -> int | None:
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            reply = await health_stub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1
            )
            return reply.status
    except grpc.aio.AioRpcError:
        return None


def message(error: grpc.aio.AioRpcError) -> str:
    """The status message of a failed call: every status the server sends carries one."""
    text = error.details()
    assert text is not None, f"{error.code()} came without a message"
    return text


def details(error: grpc.aio.AioRpcError) -> dict[str, Any]:
    """The google.rpc.Status details of a failed call: reason, field violations, retry delay."""
    found: dict[str, Any] = {"fields": {}}
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes), value
            status = status_pb2.Status.FromString(value)
            for item in status.details:  # Unpack answers whether the item is of that type
                info, bad, retry = (
                    error_details_pb2.ErrorInfo(),
                    error_details_pb2.BadRequest(),
                    error_details_pb2.RetryInfo(),
                )
                if item.Unpack(info):
                    found["reason"], found["domain"] = info.reason, info.domain
                elif item.Unpack(bad):
                    found["fields"] = {v.field: v.description for v in bad.field_violations}
                elif item.Unpack(retry):
                    found["retry_seconds"] = retry.retry_delay.seconds
        elif isinstance(value, str):
            found[key] = value
    return found


def stubs(channel: grpc.aio.Channel) -> tuple[Any, Any, Any]:
    return rpc.AgentServiceStub(channel), rpc.ToolServiceStub(channel), rpc.ConfigServiceStub(channel)


async def wait_for_status(agent: Any, run_id: str, metadata: Any, within: float = 15) -> pb.Run:
    """Poll GetStatus until the run has ended."""
    deadline = time.monotonic() + within
    while True:
        run: pb.Run = await agent.GetStatus(pb.GetStatusRequest(run_id=run_id), metadata=metadata)
        if run.status in (pb.RUN_STATE_COMPLETED, pb.RUN_STATE_FAILED, pb.RUN_STATE_CANCELLED):
            return run
        assert time.monotonic() < deadline, f"run {run_id} did not end: {run}"
        await asyncio.sleep(0.05)
