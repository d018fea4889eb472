"""What the observability tests share: a real OTLP receiver (gRPC, opentelemetry-proto's trace and
metrics services) on 127.0.0.1, and a real ``agent serve`` with extra arguments and environment."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, Self

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from conftest import AGENT
from http_api.conftest import Server

# A react run that calls a tool once, then answers.
TOOL_THEN_ANSWER: dict[str, Any] = {
    "responses": [
        {
            "text": "Let me compute.",
            "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "6*7"}}],
            "usage": {"input_tokens": 100, "output_tokens": 10},
        },
        {
            "text": "The answer is 42.",
            "usage": {"input_tokens": 150, "output_tokens": 5, "cached_input_tokens": 50},
        },
    ]
}


def scripted(script: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "providers": {"s": {"type": "scripted", "script": script}},
        "profiles": {"t": {"chain": [{"provider": "s"}]}},
        "default_profile": "t",
        **extra,
    }


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, kind) if kind else None


class Receiver(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """Collects what an OTLP exporter sends; spans flattened to dicts with hex ids."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.lock = threading.Lock()

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            self.raw.append(request.SerializeToString())
            if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
                self._spans(request)
                return trace_service_pb2.ExportTraceServiceResponse()
            self._metrics(request)
            return metrics_service_pb2.ExportMetricsServiceResponse()

    def _spans(self, request: Any) -> None:
        for resource_spans in request.resource_spans:
            resource = {kv.key: value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        {
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex() or None,
                            "name": span.name,
                            "kind": span.kind,
                            "status": span.status.code,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": {kv.key: value(kv.value) for kv in span.attributes},
                            "events": [e.name for e in span.events],
                            "resource": resource,
                        }
                    )

    def _metrics(self, request: Any) -> None:
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self.metrics.append({"name": metric.name, "unit": metric.unit})

    def wait_for(self, predicate: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [span for span in self.spans if predicate(span)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"no matching span arrived; got {[s['name'] for s in self.spans]}")


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, int]]:
    collector = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # opentelemetry-proto's generated gRPC modules carry no type hints.
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(collector, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(grace=None)


class ObservedServer(Server):
    """``agent serve`` with extra arguments (``--workers``) and environment (OTEL_…)."""

    def __init__(self, home: Path, config: dict[str, Any] | None = None, env: dict[str, str] | None = None):
        super().__init__(home, config)
        self.env.update(env or {})

    def start(self, *args: str) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [AGENT, "serve", "--port", str(self.port), *args], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/health/startup", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not start:\n" + self.log_path.read_text())

    def new_key(self, role: str, name: str) -> str:
        return self.create_key(name, role=role)

    def log_lines(self) -> list[dict[str, Any]]:
        """The server's JSON log lines (anything else on stderr is skipped)."""
        lines = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines


def grpc_harness() -> Any:
    """The gRPC tests' harness (tests/grpc/grpc_harness.py), loaded by path: a ``grpc`` package of
    tests would shadow grpcio."""
    import importlib.util
    import sys

    if "grpc_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "grpc_harness", Path(__file__).parents[1] / "grpc" / "grpc_harness.py"
        )
        assert spec is not None and spec.loader is not None
        sys.modules["grpc_harness"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["grpc_harness"])
    return sys.modules["grpc_harness"]
