"""One runtime, many doors: the same question through the CLI, HTTP, WebSocket, gRPC, the Python
SDK and the eval harness is one trace of the same shape, and one snapshot of the same configuration
— only the door's name and the caller's server span differ."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from agentstage.settings import load_settings
from conftest import AGENT

from .conftest import TOOL_THEN_ANSWER, grpc_harness, scripted

GrpcServer = grpc_harness().GrpcServer

pytestmark = pytest.mark.timeout(300)

QUESTION = "what is 6*7?"
# `agent run` keeps each run in a conversation (for `agent run -c`), the other doors only when asked;
# HTTP hands on its request id as the correlation id
GIVEN_BY_THE_DOOR = {"gen_ai.conversation.id", "agentstage.correlation_id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("doors-home")
    running = GrpcServer(home, scripted(TOOL_THEN_ANSWER)).start()
    yield running
    running.stop()


def agent(server: Any, *args: str) -> str:
    done = subprocess.run(
        [AGENT, *args], env=server.env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def through_websocket(server: Any) -> str:
    url = f"ws://127.0.0.1:{server.port}/ws/agent/stream"
    async with connect(url, additional_headers=server.headers) as socket:
        await socket.send(json.dumps({"type": "run", "input": QUESTION, "mode": "react"}))
        while True:
            frame = json.loads(await socket.recv())
            if frame.get("type") == "run.completed":
                return str(frame["run_id"])


async def through_grpc(server: Any) -> str:
    async with server.channel() as channel:
        service, _, _ = grpc_harness().stubs(channel)
        run = await service.Execute(pb.ExecuteRequest(input=QUESTION, mode="react"), metadata=server.metadata)
    return str(run.run_id)


async def through_sdk(server: Any) -> str:
    settings = load_settings(environ={"AGENT_HOME": str(server.home)})
    async with build_service(settings) as service:
        record = await service.run(RunRequest(input=QUESTION, mode="react"))
    return record.id


def through_eval(server: Any, tmp_path: Path) -> str:
    case = {
        "id": "product",
        "input": {"query": QUESTION, "mode": "react"},
        "expected": {"type": "contains", "content": "42"},
    }
    dataset = tmp_path / "cases.jsonl"
    dataset.write_text(json.dumps(case) + "\n", encoding="utf-8")
    agent(server, "eval", "run", str(dataset), "--results", str(tmp_path / "results"), "--parallel", "1")
    result = json.loads((tmp_path / "results" / "product.run.json").read_text(encoding="utf-8"))
    found = [value for key, value in _walk(result) if key == "run_id"]
    assert found, result
    return str(found[0])


def _walk(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key, item
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


def shape(spans: list[dict[str, Any]]) -> list[tuple[str, str | None, tuple[str, ...]]]:
    """The run's span tree under ``invoke_agent`` (a door's server span above it left out): each
    span as (name, its parent's name, its attribute names), ids and timings left out."""
    root = _root(spans)
    kept = {root["span_id"]: root}
    grown = True
    while grown:
        found = {s["span_id"]: s for s in spans if s["parent_span_id"] in kept and s["span_id"] not in kept}
        kept.update(found)
        grown = bool(found)
    names = {span_id: span["name"] for span_id, span in kept.items()}
    return sorted(
        (
            span["name"],
            None if span is root else names[span["parent_span_id"]],
            tuple(sorted(set(span["attributes"]) - GIVEN_BY_THE_DOOR)),
        )
        for span in kept.values()
    )


def test_every_door_makes_the_same_trace_and_the_same_snapshot(server: Any, tmp_path: Path) -> None:
    with server.client() as client:
        answered = client.post("/api/v1/agent/run", json={"input": QUESTION, "mode": "react"})
    assert answered.status_code == 200, answered.text
    runs = {
        "http": answered.json()["run_id"],
        "websocket": asyncio.run(through_websocket(server)),
        "grpc": asyncio.run(through_grpc(server)),
        "cli": json.loads(agent(server, "run", QUESTION, "--mode", "react", "--json"))["run_id"],
        "sdk": asyncio.run(through_sdk(server)),
        "eval": through_eval(server, tmp_path),
    }
    traces = {
        door: json.loads(agent(server, "trace", "show", run_id, "--json")) for door, run_id in runs.items()
    }
    first = shape(traces["cli"])
    assert [name for name, parent, _ in first if parent is None] == ["invoke_agent react"]
    assert {name for name, _, _ in first} >= {
        "orchestration.select", "chat scripted-model", "llm.generate", "llm.parse",
        "execute_tool math.calculate", "tool.validate", "tool.run", "streaming.aggregate",
    }  # fmt: skip
    for door, spans in traces.items():
        assert shape(spans) == first, json.dumps([door, sorted(set(shape(spans)) ^ set(first))])
        (root,) = [span for span in spans if span["name"] == "invoke_agent react"]
        assert root["attributes"]["agentstage.run_id"] == runs[door]
        assert root["attributes"]["agentstage.status"] == "completed"
        assert len({span["trace_id"] for span in spans}) == 1
    doors = {door: _root(spans)["attributes"]["agentstage.door"] for door, spans in traces.items()}
    assert doors["http"] == "http" and doors["grpc"] == "grpc" and doors["cli"] == "cli"
    assert doors["websocket"] == "websocket" and doors["sdk"] == "sdk" and doors["eval"] == "eval"

    with server.client() as client:
        scraped = client.get("/metrics").text
    rate = 'agent_llm_output_tokens_per_second_count{model="scripted-model",provider="s"} '
    (line,) = [line for line in scraped.splitlines() if line.startswith(rate)]
    assert float(line.split()[-1]) >= 6  # two model calls each of the runs this server executed

    snapshots = {
        door: json.loads(agent(server, "snapshot", "show", run_id, "--json")) for door, run_id in runs.items()
    }
    for door, run_id in runs.items():
        assert snapshots[door]["output"] == "The answer is 42.", door
        compared = json.loads(agent(server, "snapshot", "diff", runs["http"], run_id, "--json"))
        changed = [change["field"] for change in compared["config"] if change["field"] != "conversation_id"]
        assert changed == [] and compared["first_divergence"] is None, (door, compared)


def _root(spans: list[dict[str, Any]]) -> dict[str, Any]:
    (root,) = [span for span in spans if span["name"].startswith("invoke_agent")]
    return root
