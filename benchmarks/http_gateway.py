#!/usr/bin/env python3
"""The HTTP gateway under load, with persistence on (SQLite) and the scripted provider (zero latency):

- requests/s of ``POST /api/v1/agent/run`` against a bare Starlette endpoint returning a JSON body
  of the same size on the same uvicorn (aim: ratio >= 0.35);
- time to first SSE event of ``POST /api/v1/agent/run/stream``, p50 and p99 (aim: p99 < 5 ms);
- server memory per open idle SSE stream with many concurrent clients (aim: < 50 KiB).

Both servers stay up and rounds alternate between them (a shared machine's noise hits both
alike); throughput and latency figures are medians over the rounds.

    python benchmarks/http_gateway.py [--requests 2000] [--concurrency 32] [--rounds 3] [--streams 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from _common import machine, temporary_home

HERE = Path(__file__).resolve().parent
AGENT = str(Path(sys.executable).parent / "agent")
SCRIPT = {
    "rules": [{"match": "idle", "text": "late", "delay": 3600}],
    "responses": [{"text": "Hello from the server."}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert process.poll() is None, "server exited"
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_agent_server() -> tuple[subprocess.Popen[bytes], str, dict[str, str]]:
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
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    port = free_port()
    process = subprocess.Popen(
        [AGENT, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(f"{url}/health/live", process)
    return process, url, {"Authorization": f"Bearer {key}"}


def start_bare_server(body: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "_bare_app:app", "--port", str(port), "--log-level", "warning", "--no-access-log"],
        cwd=HERE, env={**os.environ, "BARE_BODY": body}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url, process)
    return process, url


def raw_run_request(host: str, path: str, headers: dict[str, str]) -> bytes:
    """The bytes of one ``POST`` of a chat run, for the minimal raw HTTP/1.1 client below."""
    body = json.dumps({"input": "hi", "mode": "chat"}).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{head}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def throughput(url: str, headers: dict[str, str], total: int, concurrency: int) -> float:
    """Requests/s over ``concurrency`` keep-alive connections, with a minimal raw HTTP/1.1 client
    (httpx itself tops out near 300 req/s on this machine and would measure only the client)."""
    host, port = url.removeprefix("http://").split(":")
    request = raw_run_request(host, "/api/v1/agent/run", headers)
    remaining = total

    async def connection() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while remaining > 0:
                remaining -= 1
                writer.write(request)
                status = await reader.readline()
                assert b" 200 " in status, status
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def first_event_latencies(url: str, headers: dict[str, str], samples: int) -> list[float]:
    """ms from sending ``POST /run/stream`` to reading its first SSE event, one stream at a time
    over one keep-alive connection, with the same minimal raw client as :func:`throughput`
    (httpx adds about 2.5 ms of its own to each stream on this machine: the client's time, not
    the server's)."""
    host, port = url.removeprefix("http://").split(":")
    request = raw_run_request(host, "/api/v1/agent/run/stream", headers)
    latencies = []
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for _ in range(samples):
            started = time.perf_counter()
            writer.write(request)
            status = await reader.readline()
            assert b" 200 " in status, status
            first = True
            while (line := await reader.readline()) != b"0\r\n":  # the chunked body's end
                assert line, "the server closed the connection"
                if first and line.startswith(b"id: "):
                    latencies.append((time.perf_counter() - started) * 1000)
                    first = False
            await reader.readline()
            assert not first, "the stream had no event"
    finally:
        writer.close()
    return latencies


async def idle_stream_memory(url: str, headers: dict[str, str], pid: int, streams: int) -> float:
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=httpx.Limits(max_connections=streams + 10)
    ) as client:
        run_id = (await client.post("/api/v1/agent/batch", json={"inputs": ["idle"], "mode": "chat"})).json()[
            "run_ids"
        ][0]
        await asyncio.sleep(1)
        before = rss_kib(pid)
        opened = asyncio.Event()
        count = 0

        async def follow() -> None:
            nonlocal count
            async with client.stream("GET", f"/api/v1/agent/runs/{run_id}/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("id: 2"):
                        count += 1
                        if count == streams:
                            opened.set()
                        await asyncio.sleep(3600)

        tasks = [asyncio.create_task(follow()) for _ in range(streams)]
        await asyncio.wait_for(opened.wait(), 120)
        await asyncio.sleep(1)
        after = rss_kib(pid)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.delete(f"/api/v1/agent/cancel/{run_id}")
        return (after - before) / streams


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=1000, help="0 leaves the memory figure out")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    agent, url, headers = start_agent_server()
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers) as client:
            body = (await client.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})).text
        bare, bare_url = start_bare_server(body)
        try:
            await throughput(bare_url, {}, args.requests // 10, args.concurrency)  # warm both
            await throughput(url, headers, args.requests // 10, args.concurrency)
            ratios, bare_rates, agent_rates = [], [], []
            for _ in range(args.rounds):
                bare_rates.append(await throughput(bare_url, {}, args.requests, args.concurrency))
                agent_rates.append(await throughput(url, headers, args.requests, args.concurrency))
                ratios.append(agent_rates[-1] / bare_rates[-1])
        finally:
            bare.terminate()
            bare.wait()
        print(
            f"POST /api/v1/agent/run, {args.requests} requests, {args.concurrency} at a time, median of "
            f"{args.rounds} rounds: bare Starlette {statistics.median(bare_rates):,.0f} req/s · agentstage "
            f"{statistics.median(agent_rates):,.0f} req/s · ratio {statistics.median(ratios):.2f} "
            f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
        )
        p50s, p99s = [], []
        for _ in range(args.rounds):
            latencies = await first_event_latencies(url, headers, args.samples)
            p50s.append(statistics.median(latencies))
            p99s.append(percentile(latencies, 0.99))
        print(
            f"time to first SSE event, {args.samples} streams a round, median of {args.rounds} rounds: "
            f"p50 {statistics.median(p50s):.2f} ms · p99 {statistics.median(p99s):.2f} ms "
            f"(p99 by round: {', '.join(f'{p:.2f}' for p in p99s)})"
        )
        if args.streams:
            per_stream = await idle_stream_memory(url, headers, agent.pid, args.streams)
            print(f"server memory per open idle SSE stream ({args.streams} clients): {per_stream:.1f} KiB")
    finally:
        agent.terminate()
        agent.wait()


if __name__ == "__main__":
    asyncio.run(main())
