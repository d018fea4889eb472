#!/usr/bin/env python3
"""The gRPC gateway against the HTTP one, in the same run, on the same ``agent serve --grpc-port``
process (persistence on, SQLite; the scripted provider, zero latency):

- ``ExecuteStream`` events/s against ``POST /api/v1/agent/run/stream`` (SSE) events/s, each run
  streaming ~60 events (50 message deltas);
- ``Execute`` calls/s against ``POST /api/v1/agent/run`` (JSON) requests/s.

Both doors share the server's run scheduling, writer and store, so the ratios show what each
transport adds. The HTTP JSON figure uses the same raw HTTP/1.1 client as benchmarks/http_gateway.py
(httpx alone would measure the client); SSE is read with httpx, gRPC with grpc.aio.

    python benchmarks/grpc_gateway.py [--calls 1000] [--streams 100] [--concurrency 16] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import httpx
from _common import machine, temporary_home
from http_gateway import free_port, throughput, wait_until_up

from agentstage.interfaces.grpc.gen import agent_pb2 as pb
from agentstage.interfaces.grpc.gen import agent_pb2_grpc as rpc

AGENT = str(Path(sys.executable).parent / "agent")
DELTAS = 50
SCRIPT = {
    "rules": [{"match": "stream", "deltas": [f"w{i} " for i in range(DELTAS)]}],
    "responses": [{"text": "Hello from the server."}],
}


def start_server() -> tuple[subprocess.Popen[bytes], str, str, str]:
    home = temporary_home()
    (home / "config.json").write_text(
        json.dumps(
            {
                "providers": {"s": {"type": "scripted", "script": SCRIPT}},
                "profiles": {"t": {"chain": [{"provider": "s"}]}},
                "default_profile": "t",
                "runtime": {"max_concurrent_runs": 64},
                "logging": {"level": "warning"},
            }
        )
    )
    env = {**os.environ, "AGENT_HOME": str(home)}
    key = subprocess.run(
        [AGENT, "keys", "create", "--name", "bench", "--rate", "100000000"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    port, grpc_port = free_port(), free_port()
    process = subprocess.Popen(
        [AGENT, "serve", "--port", str(port), "--grpc-port", str(grpc_port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/health/live", process)
    return process, url, f"127.0.0.1:{grpc_port}", key


async def pooled(total: int, concurrency: int, one: Any) -> tuple[float, int]:
    """Run ``one()`` ``total`` times over ``concurrency`` workers; (seconds, sum of what it returned)."""
    remaining, counted = total, 0

    async def worker() -> None:
        nonlocal remaining, counted
        while remaining > 0:
            remaining -= 1
            done = await one()  # not `counted += await one()`: that would read counted before awaiting
            counted += done

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, counted


async def grpc_stream_events(target: str, key: str, total: int, concurrency: int) -> float:
    metadata = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        agent = rpc.AgentServiceStub(channel)
        request = pb.ExecuteRequest(input="stream please", mode="chat")

        async def one() -> int:
            return len([chunk async for chunk in agent.ExecuteStream(request, metadata=metadata)])

        await pooled(concurrency, concurrency, one)  # warm-up
        seconds, events = await pooled(total, concurrency, one)
    return events / seconds


async def sse_stream_events(url: str, key: str, total: int, concurrency: int) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as http:
        body = {"input": "stream please", "mode": "chat"}

        async def one() -> int:
            async with http.stream("POST", "/api/v1/agent/run/stream", json=body) as response:
                return sum([1 async for line in response.aiter_lines() if line.startswith("data: ")])

        await pooled(concurrency, concurrency, one)
        seconds, events = await pooled(total, concurrency, one)
    return events / seconds


async def grpc_calls(target: str, key: str, total: int, concurrency: int) -> float:
    metadata = (("authorization", f"Bearer {key}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        agent = rpc.AgentServiceStub(channel)
        request = pb.ExecuteRequest(input="hi", mode="chat")

        async def one() -> int:
            run = await agent.Execute(request, metadata=metadata)
            assert run.status == pb.RUN_STATE_COMPLETED
            return 1

        await pooled(concurrency, concurrency, one)
        seconds, calls = await pooled(total, concurrency, one)
    return calls / seconds


async def http_calls(url: str, headers: dict[str, str], total: int, concurrency: int) -> float:
    await throughput(url, headers, concurrency, concurrency)  # warm-up
    return await throughput(url, headers, total, concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=1000, help="Execute calls / JSON requests per door")
    parser.add_argument("--streams", type=int, default=100, help="streamed runs per door")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each is shown")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    process, url, target, key = start_server()
    headers = {"Authorization": f"Bearer {key}"}
    best: dict[str, float] = {}
    try:
        for _ in range(args.rounds):  # interleaved rounds, best of each: less noise from a shared machine
            measured = {
                "grpc_events": asyncio.run(grpc_stream_events(target, key, args.streams, args.concurrency)),
                "sse_events": asyncio.run(sse_stream_events(url, key, args.streams, args.concurrency)),
                "grpc_calls": asyncio.run(grpc_calls(target, key, args.calls, args.concurrency)),
                "http_calls": asyncio.run(http_calls(url, headers, args.calls, args.concurrency)),
            }
            best = {name: max(value, best.get(name, 0.0)) for name, value in measured.items()}
    finally:
        process.terminate()
        process.wait(timeout=30)
    grpc_events, sse_events, grpc_rate, http_rate = (
        best["grpc_events"], best["sse_events"], best["grpc_calls"], best["http_calls"]
    )  # fmt: skip
    print(f"streams: {args.streams} runs of ~{DELTAS + 10} events each, {args.concurrency} at a time")
    print(f"  gRPC ExecuteStream   {grpc_events:10.0f} events/s")
    print(f"  HTTP SSE /run/stream {sse_events:10.0f} events/s")
    print(f"  ratio gRPC / SSE     {grpc_events / sse_events:10.2f}")
    print(f"calls: {args.calls} runs each, {args.concurrency} at a time")
    print(f"  gRPC Execute         {grpc_rate:10.0f} calls/s")
    print(f"  HTTP JSON /run       {http_rate:10.0f} requests/s")
    print(f"  ratio gRPC / JSON    {grpc_rate / http_rate:10.2f}")


if __name__ == "__main__":
    main()
