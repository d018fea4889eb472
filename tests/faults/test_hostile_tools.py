"""Hostile tool input and output: a result no store can encode among live runs, CPU and memory
bombs, outputs that are not JSON — each a clear error on its own run, no other run touched, the
server answering throughout."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstage.core.tools import ToolContext
from agentstage.plugins import tool
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.service import RunService

from .conftest import seqs, server_with, stream_run

pytestmark = pytest.mark.anyio

STREAM = {"match": "stream", "deltas": [f"t{i} " for i in range(12)], "delta_delay": 0.03}
POISON = {
    "match": "poison",
    "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "10**5000"}}],
}


async def test_a_result_no_store_can_encode_touches_no_other_run(tmp_path: Path) -> None:
    server = server_with(tmp_path, [STREAM, POISON]).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=60) as http:
            streams = [stream_run(http, {"input": f"stream {i}", "mode": "chat"}) for i in range(30)]
            poisons = [
                http.post("/api/v1/agent/run", json={"input": "poison", "mode": "react"}) for _ in range(3)
            ]
            results = await asyncio.gather(*streams, *poisons)
            live, answers = results[:30], results[30:]
            run_id, frames = live[0]
            resumed = []
            async with http.stream(
                "GET", f"/api/v1/agent/runs/{run_id}/events", headers={"Last-Event-ID": "5"}
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        resumed.append(int(line[4:]))
            statuses = [
                (await http.get(f"/api/v1/agent/status/{r.json()['run_id']}")).json() for r in answers
            ]
            events = (await http.get(f"/api/v1/agent/status/{answers[0].json()['run_id']}")).json()
    finally:
        server.stop()
    expected = len(frames)
    for _, frames in live:
        assert frames[-1]["event"] == "run.completed"
        assert seqs(frames) == list(range(1, expected + 1))
        assert "".join(f["data"]["data"]["text"] for f in frames if f["event"] == "message.delta") == "".join(
            f"t{i} " for i in range(12)
        )
    assert resumed == list(range(6, expected + 1))
    for answer, status in zip(answers, statuses, strict=True):
        assert answer.status_code == 200 and answer.json()["status"] == status["status"]
        assert status["status"] in {"completed", "failed"}
    assert events["last_seq"] > 0


async def test_tool_limits_hold_and_the_server_keeps_answering(tmp_path: Path) -> None:
    # A short SQL budget: the huge printf below must outlast it on any machine (a fast one
    # finishes it in about 4 s, inside the default 5 s, with SQLite's NULL for a value too big).
    server = server_with(tmp_path, [], {"tools": {"sql_timeout": 1.0}}).start()
    bombs = [
        "(10**10000)**1000",
        "pow(2, 10**10000)",
        "9**9**9**9",
        "factorial(1000)*factorial(1000)*factorial(1000)",
    ]
    queries = [
        "SELECT length(printf('%.*c', 900000000, 'x'))",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200) "
        "SELECT i, printf('%.*c', 100000, 'x') FROM n",
    ]
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as http:

            async def probe_while(work: Any) -> tuple[Any, float]:
                task = asyncio.ensure_future(work)
                slowest = 0.0
                while not task.done():
                    started = time.monotonic()
                    assert (await http.get("/health/live")).status_code == 200
                    slowest = max(slowest, time.monotonic() - started)
                    await asyncio.sleep(0.01)
                return task.result(), slowest

            math_answers = []
            for expression in bombs:
                answer, slowest = await probe_while(
                    http.post(
                        "/api/v1/tools/math.calculate/execute", json={"arguments": {"expression": expression}}
                    )
                )
                math_answers.append(answer.json())
                assert slowest < 1.0, f"/health/live took {slowest:.2f}s while {expression!r} ran"
            sql_answers = []
            for query in queries:
                answer, slowest = await probe_while(
                    http.post("/api/v1/tools/sql.query/execute", json={"arguments": {"query": query}})
                )
                sql_answers.append(answer.json())
                assert slowest < 1.0
        stop_started = time.monotonic()
        server.stop(signal.SIGTERM)
        stopped_in = time.monotonic() - stop_started
    finally:
        server.stop()
    for answer in math_answers:
        assert answer["error"]["code"] == "tool_limit" and "digits" in answer["error"]["message"]
    # one SQLite call that cannot be interrupted from inside: its worker process is killed at the deadline
    assert sql_answers[0]["error"] is not None, sql_answers[0]
    assert sql_answers[0]["error"]["code"] == "tool_timeout", sql_answers[0]
    assert sql_answers[1]["output"] is not None, sql_answers[1]
    assert sql_answers[1]["output"]["truncated"] is True
    assert 0 < sql_answers[1]["output"]["row_count"] < 200  # cut by bytes (1 MiB), not by rows
    assert stopped_in < 15


@tool
def hostile(kind: str) -> Any:
    """Return something hard to record."""
    if kind == "deep":
        value: Any = []
        for _ in range(10_000):
            value = [value]
        return value
    if kind == "cycle":
        loop: dict[str, Any] = {}
        loop["self"] = loop
        return loop
    if kind == "huge":
        return "x" * 50_000_000
    if kind == "odd":
        return {"nan": math.nan, "inf": -math.inf, "bytes": b"\x00\xff", "big": 10**5000, "set": {3, 1}}
    raise ValueError(kind)


@tool
async def stubborn(seconds: float, context: ToolContext) -> str:
    """Ignores being cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            continue  # swallowed: the run must end anyway
    return "done"


def calls(*arguments: dict[str, Any], name: str = "hostile") -> dict[str, Any]:
    return {
        "responses": [
            *({"tool_calls": [{"name": name, "arguments": a}]} for a in arguments),
            {"text": "survived"},
        ]
    }


async def test_outputs_that_are_not_json_fail_only_their_call(
    make_service: Callable[..., RunService],
) -> None:
    script = calls({"kind": "deep"}, {"kind": "cycle"}, {"kind": "huge"}, {"kind": "odd"})
    script["rules"] = [{"match": "hello", "text": "Hello."}]  # the other run's answer
    async with make_service(script, tools={"max_output_chars": 100_000}) as service:
        service.catalog.register(hostile)
        final = await service.run(RunRequest(input="go", mode="react", options={"max_steps": 10}))
        results = [e for e in await service.events(final.id) if e.type == "tool.result"]
        other = await service.run(RunRequest(input="hello", mode="chat"))
    assert final.status == "completed" and final.output == "survived", final.error_message
    deep, cycle, huge, odd = (r.data for r in results)
    assert deep["error"]["code"] == "tool_output_invalid" and "nested" in deep["error"]["message"]
    assert cycle["error"]["code"] == "tool_output_invalid" and "cycle" in cycle["error"]["message"]
    assert huge["error"] is None and huge["output"].endswith(
        "…[truncated: 100000 of 50000000 characters kept]"
    )
    assert max(len(r.data_json) for r in results) < 200_000
    assert odd["output"]["nan"] == "nan" and odd["output"]["inf"] == "-inf"
    assert odd["output"]["bytes"] == {"base64": "AP8="} and odd["output"]["set"] == [1, 3]
    assert odd["output"]["big"].startswith("≈1.000000000e+5000")
    assert other.status == "completed" and other.output == "Hello.", other.error_message


async def test_a_tool_that_swallows_the_cancel_cannot_keep_its_run_alive(
    make_service: Callable[..., RunService],
) -> None:
    script = calls({"seconds": 5}, name="stubborn")
    async with make_service(script, runtime={"cancel_grace": 0.3}) as service:
        service.catalog.register(stubborn)
        record = await service.start(RunRequest(input="go", mode="react"))
        async for event in service.stream(record.id):
            if event.type == "tool.call":
                break
        started = time.monotonic()
        await service.cancel(record.id, reason="enough")
        final = await service.wait(record.id)
        took = time.monotonic() - started
        events = await service.events(record.id)
        await asyncio.sleep(0.2)
        assert await service.events(record.id) == events or [
            e.seq for e in await service.events(record.id)
        ] == [e.seq for e in events]
    assert final.status == "cancelled" and final.error_message == "enough"
    assert events[-1].type == "run.cancelled"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert took < 3  # the grace, not the tool's five seconds
