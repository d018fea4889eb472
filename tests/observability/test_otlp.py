"""Traces over OTLP to a real receiver: a react run with a tool call arrives as the GenAI span tree,
a client's ``traceparent`` becomes the parent, metrics arrive too, and a dead collector never
fails a run (it is reported once)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from conftest import Cli
from http_api.conftest import sse_events

from .conftest import TOOL_THEN_ANSWER, ObservedServer, Receiver, scripted

pytestmark = pytest.mark.timeout(180)

SERVER, CLIENT = 2, 3  # OTLP span kinds


@pytest.fixture(scope="module")
def served(
    receiver: tuple[Receiver, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ObservedServer]:
    _, port = receiver
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_SERVICE_NAME": "agentstage-under-test",
    }
    config = scripted(TOOL_THEN_ANSWER, metrics={"otlp_interval": 1})
    server = ObservedServer(tmp_path_factory.mktemp("otlp-home"), config, env).start()
    yield server
    server.stop()


def run(server: ObservedServer, text: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    with server.client() as client:
        answer = client.post(
            "/api/v1/agent/run", json={"input": text, "mode": "react"}, headers=headers or {}
        )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def tree_of(collector: Receiver, run_id: str) -> dict[str, list[dict[str, Any]]]:
    root = collector.wait_for(lambda s: s["attributes"].get("agentstage.run_id") == run_id and
                              s["name"].startswith("invoke_agent"))[0]  # fmt: skip
    time.sleep(0.5)  # the root ends last; anything of the run has been exported with it or before
    spans = [s for s in collector.spans if s["trace_id"] == root["trace_id"]]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    return by_name


def test_a_react_run_with_a_tool_arrives_as_the_genai_span_tree(
    served: ObservedServer, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)
    result = run(served, "what is 6*7?", {"traceparent": f"00-{client_trace}-{client_span}-01"})
    assert result["status"] == "completed" and result["output"] == "The answer is 42."
    spans = tree_of(collector, result["run_id"])

    # The caller's trace continues: its span is the parent of our server span.
    (server_span,) = spans["POST /api/v1/agent/run"]
    assert server_span["trace_id"] == client_trace and server_span["parent_span_id"] == client_span
    assert server_span["kind"] == SERVER
    assert server_span["attributes"]["http.response.status_code"] == 200

    (root,) = spans["invoke_agent react"]
    assert root["parent_span_id"] == server_span["span_id"]
    attributes = root["attributes"]
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["agentstage.run_id"] == result["run_id"]
    assert (attributes["agentstage.mode"], attributes["agentstage.profile"]) == ("react", "t")
    assert (attributes["agentstage.door"], attributes["agentstage.status"]) == ("http", "completed")
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (250, 15)
    assert root["resource"]["service.name"] == "agentstage-under-test"

    (select,) = spans["orchestration.select"]
    assert select["parent_span_id"] == root["span_id"] and select["attributes"]["agentstage.mode"] == "react"

    chats = sorted(spans["chat scripted-model"], key=lambda s: s["start"])
    assert len(chats) == 2
    for chat, tokens, finish in zip(chats, ((100, 10), (150, 5)), ("tool_calls", "stop"), strict=True):
        assert chat["parent_span_id"] == root["span_id"] and chat["kind"] == CLIENT
        a = chat["attributes"]
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "scripted"
        assert a["gen_ai.request.model"] == "scripted-model"
        assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == tokens
        assert a["gen_ai.response.finish_reasons"] == [finish]
        assert "gen_ai.input.messages" not in a  # content is off by default
    assert chats[1]["attributes"]["gen_ai.usage.cache_read.input_tokens"] == 50
    for child in ("llm.generate", "llm.parse"):
        assert sorted(s["parent_span_id"] for s in spans[child]) == sorted(c["span_id"] for c in chats)

    (tool,) = spans["execute_tool math.calculate"]
    assert tool["parent_span_id"] == root["span_id"]
    assert tool["attributes"]["gen_ai.operation.name"] == "execute_tool"
    assert tool["attributes"]["gen_ai.tool.name"] == "math.calculate"
    assert tool["attributes"]["gen_ai.tool.call.id"]
    assert "gen_ai.tool.call.arguments" not in tool["attributes"]
    for child in ("tool.validate", "tool.run"):
        (span,) = spans[child]
        assert span["parent_span_id"] == tool["span_id"]
        assert tool["start"] <= span["start"] <= span["end"] <= tool["end"]
    (stream,) = spans["streaming.aggregate"]
    assert (
        stream["parent_span_id"] == root["span_id"] and stream["attributes"]["agentstage.stream.chunks"] >= 1
    )

    # Children lie within their parents, all in one trace.
    by_id = {s["span_id"]: s for group in spans.values() for s in group}
    for span in by_id.values():
        parent = by_id.get(span["parent_span_id"] or "")
        if parent is not None:
            assert parent["start"] <= span["start"] and span["end"] <= parent["end"], span["name"]

    # The request's access log line carries the trace and the server span.
    deadline = time.monotonic() + 10
    access: list[dict[str, Any]] = []
    while not access and time.monotonic() < deadline:
        access = [line for line in served.log_lines()
                  if line.get("message") == "http.request" and line.get("trace_id") == client_trace]  # fmt: skip
        time.sleep(0.1)
    assert (
        access and access[0]["span_id"] == server_span["span_id"] and access[0]["path"] == "/api/v1/agent/run"
    )

    # The run's events (streamed as SSE) carry the caller's trace id too.
    with (
        served.client() as client,
        client.stream("GET", f"/api/v1/agent/runs/{result['run_id']}/events") as sse,
    ):
        events = list(sse_events(sse.iter_lines()))
    assert len(events) > 5 and {e["data"]["trace_id"] for e in events} == {client_trace}


def test_without_a_traceparent_a_run_starts_its_own_trace_under_the_request(
    served: ObservedServer, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    result = run(served, "what is 6*7?", {"traceparent": "00-not-a-valid-header-01"})
    spans = tree_of(collector, result["run_id"])
    (server_span,) = spans["POST /api/v1/agent/run"]
    (root,) = spans["invoke_agent react"]
    assert server_span["parent_span_id"] is None
    assert root["parent_span_id"] == server_span["span_id"] and root["trace_id"] == server_span["trace_id"]


def test_a_failing_tool_and_a_failed_run_are_errors_on_their_spans(
    receiver: tuple[Receiver, int], tmp_path_factory: pytest.TempPathFactory
) -> None:
    collector, port = receiver
    script = {
        "responses": [
            {"tool_calls": [{"name": "math.calculate", "arguments": {"expression": 5}}]},
            {"error": {"code": "model_error", "message": "the model gave up"}},
        ]
    }
    env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_INSECURE": "true"}  # fmt: skip
    server = ObservedServer(tmp_path_factory.mktemp("failing-home"), scripted(script), env).start()
    try:
        result = run(server, "compute something")
    finally:
        server.stop()
    assert result["status"] == "failed"
    spans = tree_of(collector, result["run_id"])
    (tool,) = spans["execute_tool math.calculate"]
    assert tool["status"] == 2 and tool["attributes"]["error.type"] == "invalid_tool_arguments"
    (validate,) = spans["tool.validate"]
    assert validate["status"] == 2 and "tool.run" not in spans  # it never ran
    (root,) = spans["invoke_agent react"]
    assert root["status"] == 2 and root["attributes"]["error.type"] == "model_error"
    assert root["attributes"]["agentstage.status"] == "failed"


def test_metrics_arrive_over_otlp_with_the_genai_names(
    served: ObservedServer, receiver: tuple[Receiver, int]
) -> None:
    collector, _ = receiver
    run(served, "what is 6*7?")
    deadline = time.monotonic() + 30
    wanted = {
        "gen_ai.client.token.usage",
        "gen_ai.client.operation.duration",
        "agent.requests",
        "agent.tool.calls",
    }
    while time.monotonic() < deadline and not wanted <= {m["name"] for m in collector.metrics}:
        time.sleep(0.2)
    assert wanted <= {m["name"] for m in collector.metrics}


def test_an_unreachable_collector_never_fails_a_run_and_is_reported_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    from http_api.conftest import free_port

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_TIMEOUT": "1", "OTEL_BSP_SCHEDULE_DELAY": "200"}  # fmt: skip
    server = ObservedServer(
        tmp_path_factory.mktemp("dead-collector"), scripted(TOOL_THEN_ANSWER), env
    ).start()
    try:
        results = [run(server, f"what is 6*7? ({n})") for n in range(3)]
        assert {r["status"] for r in results} == {"completed"}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "OTLP span export" not in server.log():
            time.sleep(0.2)
        time.sleep(3)  # more batches fail meanwhile; they are not reported again
        reports = [line for line in server.log_lines() if "OTLP span export" in line.get("message", "")]
        assert len(reports) == 1, reports
        assert reports[0]["level"] == "WARN"
        # The store kept the spans all the same.
        shown = server.agent("trace", "show", results[0]["run_id"])
        assert "invoke_agent react" in shown and "execute_tool math.calculate" in shown
    finally:
        server.stop()


def test_agent_run_exports_over_otlp_http_protobuf_by_default(tmp_path: Path) -> None:
    """The default protocol (HTTP/protobuf, the endpoint's /v1/traces), from a command that exits
    right after its run: spans still leave before it does."""
    received: dict[str, list[bytes]] = {}

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.setdefault(self.path, []).append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()
            self.wfile.write(b"")

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        cli = Cli(tmp_path)
        cli.configure(scripted(TOOL_THEN_ANSWER))
        cli.env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{server.server_port}"
        done = cli("run", "what is 6*7?", "--mode", "react")
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert "/v1/metrics" in received  # the metrics went too, to their own path
    names = set()
    for body in received["/v1/traces"]:
        request = ExportTraceServiceRequest.FromString(body)
        names |= {s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert {"invoke_agent react", "execute_tool math.calculate", "tool.run", "llm.parse"} <= names


def test_a_grpc_call_continues_the_callers_trace_into_its_run(
    receiver: tuple[Receiver, int], tmp_path: Path
) -> None:
    import asyncio
    import importlib.util
    import sys

    from agentstage.interfaces.grpc.gen import agent_pb2 as pb

    if "grpc_harness" not in sys.modules:  # the gRPC tests' harness, shared
        spec = importlib.util.spec_from_file_location(
            "grpc_harness", Path(__file__).parents[1] / "grpc" / "grpc_harness.py"
        )
        assert spec is not None and spec.loader is not None
        sys.modules["grpc_harness"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules["grpc_harness"])
    harness = sys.modules["grpc_harness"]

    collector, port = receiver
    server = harness.GrpcServer(tmp_path)
    server.env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    server.start()
    client_trace, client_span = secrets.token_hex(16), secrets.token_hex(8)

    async def call() -> Any:
        async with server.channel() as channel:
            agent, _, _ = harness.stubs(channel)
            metadata = (*server.metadata, ("traceparent", f"00-{client_trace}-{client_span}-01"))
            return await agent.Execute(pb.ExecuteRequest(input="calc 6*7", mode="react"), metadata=metadata)

    try:
        run = asyncio.run(call())
    finally:
        server.stop()
    spans = tree_of(collector, run.run_id)
    (server_span,) = spans["/agentstage.v1.AgentService/Execute"]
    assert server_span["trace_id"] == client_trace and server_span["parent_span_id"] == client_span
    assert server_span["kind"] == SERVER and server_span["attributes"]["rpc.system"] == "grpc"
    assert server_span["attributes"]["rpc.grpc.status_code"] == "OK"
    (root,) = spans["invoke_agent react"]
    assert (
        root["parent_span_id"] == server_span["span_id"] and root["attributes"]["agentstage.door"] == "grpc"
    )


KINDS = {"internal": 1, "server": 2, "client": 3}
STATUS = {"unset": 0, "ok": 1, "error": 2}


@pytest.mark.anyio
async def test_spans_read_back_from_the_store_are_the_spans_exported_as_the_runs_went(
    receiver: tuple[Receiver, int], tmp_path: Path
) -> None:
    """The store keeps no copy of a run's spans; they are derived from its events (and tool
    timings) when read. They must be the very spans the live builder exported: same ids, parents,
    names, times, statuses, attributes (content included) and events — for a tool call, a
    planner, a refused tool call and a failed run with a retry."""
    from agentstage.runtime.requests import RunRequest
    from agentstage.runtime.wiring import build_services
    from conftest import make_settings

    collector, port = receiver
    plan = {"steps": [{"description": "compute", "tool": "math.calculate", "arguments": {"expression": "2+2"}},
                      {"description": "explain"}]}  # fmt: skip
    cases = [
        (TOOL_THEN_ANSWER, RunRequest(input="what is 6*7?", mode="react")),
        ({"responses": [{"json": plan}, {"text": "four"}, {"text": "It is 4."}]}, RunRequest(input="2+2", mode="planner")),
        ({"responses": [{"tool_calls": [{"name": "math.calculate", "arguments": {"expression": 5}}]},
                        {"text": "I could not."}]}, RunRequest(input="compute 5", mode="react")),
        ({"responses": [{"error": {"code": "rate_limited", "message": "slow down", "retryable": True}},
                        {"error": {"code": "model_error", "message": "gave up"}}]}, RunRequest(input="hi", mode="chat")),
    ]  # fmt: skip
    tracing = {"otlp_endpoint": f"http://127.0.0.1:{port}", "otlp_protocol": "grpc", "capture_content": True}
    for number, (script, request) in enumerate(cases):
        settings = make_settings(tmp_path / str(number), scripted(script, tracing=tracing))
        services = build_services(settings)
        async with services.runs as service:
            record = await service.run(request)
        tree_of(collector, record.id)  # waits for the run's root span (and what came before it)
        exported = [s for s in collector.spans if s["attributes"].get("agentstage.run_id") == record.id]
        services = build_services(settings)  # another process reading the trace back
        async with services.runs:
            derived = await services.traces.spans(record.id)
        assert len(derived) >= 3 and sorted(_comparable(s) for s in exported) == sorted(
            _comparable(
                {"trace_id": s.trace_id, "span_id": s.span_id, "parent_span_id": s.parent_span_id, "name": s.name,
                 "kind": KINDS[s.kind], "status": STATUS[s.status], "start": s.start_ns, "end": s.end_ns,
                 "attributes": s.attributes, "events": [e["name"] for e in s.events]}
            )
            for s in derived
        ), request.mode  # fmt: skip


def _comparable(span: dict[str, Any]) -> str:
    import json

    attributes = {key: value for key, value in span["attributes"].items() if value is not None}
    return json.dumps({**span, "attributes": attributes, "resource": None}, sort_keys=True)
