#!/usr/bin/env python3
"""What authentication and encryption at rest cost: ``POST /api/v1/agent/run`` requests/s (scripted
provider, zero latency, SQLite) with auth off, an API key, a JWT HS256, a JWT RS256, and auth off
with encryption at rest on (``store.encryption_key``), each as a ratio to auth off measured in the
same run (aim >= 0.95 for each credential, >= 0.9 with encryption). Rate limits are raised out of
the way; the audit log (every request's row durable before its answer), the shared rate-limit
buckets and the key cache run as in production.

Next to requests/s it prints the server's CPU time per request (user + system, from /proc), and
the ratio of that too: on a machine shared with other work, throughput moves with the neighbours'
load, CPU per request much less. Every server is started once and measured in every round; the
rounds rotate the order, and each ratio is taken between measurements of the same round (a few
seconds apart, so a neighbour's load hits both sides alike), then the median over the rounds.

    python benchmarks/auth_overhead.py [--requests 1500] [--concurrency 16] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
from _common import cpu_seconds, machine, temporary_home
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

AGENT = str(Path(sys.executable).parent / "agent")
SECRET = "benchmark-shared-secret-of-32-bytes!!"
STORE_KEY = base64.b64encode(os.urandom(32)).decode()
WARM_UP = 50  # requests one at a time before the timed ones (counted in CPU/request)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def configure(home: Path, extra: dict[str, Any]) -> dict[str, str]:
    (home / "script.json").write_text(json.dumps({"responses": [{"text": "Hello from the server."}]}))
    config = {
        "providers": {"s": {"type": "scripted", "script": str(home / "script.json")}},
        "profiles": {"t": {"chain": [{"provider": "s"}]}},
        "default_profile": "t",
        "http": {"requests_per_minute": 10_000_000},
        **extra,
    }
    (home / "config.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    return {**env, "AGENT_HOME": str(home), "BENCH_JWT_SECRET": SECRET, "BENCH_STORE_KEY": STORE_KEY}


def serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([AGENT, "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/health/startup", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server did not start")


async def load(url: str, headers: dict[str, str], requests: int, concurrency: int, warm_up: int) -> float:
    body = {"input": "hi", "mode": "chat"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        for _ in range(warm_up):
            assert (await client.post("/api/v1/agent/run", json=body)).status_code == 200
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                response = await client.post("/api/v1/agent/run", json=body)
                assert response.status_code == 200, response.text

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


class Scenario:
    """One server, started once and measured in every round (its first round warms it up)."""

    def __init__(self, name: str, extra: dict[str, Any], credential: Any):
        self.name = name
        self.env = configure(temporary_home(), extra)
        self.headers = credential(self.env) if callable(credential) else (credential or {})
        self.process, self.url = serve(self.env)
        self.warm_up = WARM_UP

    def measure(self, args: argparse.Namespace) -> tuple[float, float]:
        """(requests/s, server CPU milliseconds per request) of one round."""
        before = cpu_seconds(self.process.pid)
        rate = asyncio.run(load(self.url, self.headers, args.requests, args.concurrency, self.warm_up))
        cpu = (cpu_seconds(self.process.pid) - before) * 1000 / (args.requests + self.warm_up)
        self.warm_up = 0
        print(f"  {self.name:<14} {rate:8.1f} req/s  {cpu:6.2f} ms CPU/request", flush=True)
        return rate, cpu

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def api_key(env: dict[str, str]) -> dict[str, str]:
    key = subprocess.run([AGENT, "keys", "create", "--name", "bench"], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    return {"Authorization": f"Bearer {key}"}


def claims() -> dict[str, Any]:
    return {"sub": "bench", "roles": ["operator"], "exp": int(time.time()) + 3600}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="Measure every scenario this many times, in rotating order; ratios are medians over rounds.",
    )
    args = parser.parse_args()
    print(f"auth overhead · {machine()} · {args.requests} requests, {args.concurrency} connections")

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem_dir = temporary_home()
    (pem_dir / "public.pem").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    hs = {"security": {"jwt": {"algorithms": ["HS256"], "secret": "env:BENCH_JWT_SECRET"}}}
    rs = {"security": {"jwt": {"algorithms": ["RS256"], "public_key": f"file:{pem_dir / 'public.pem'}"}}}
    auth_off = {"http": {"auth": "off", "requests_per_minute": 10_000_000}}
    encrypted = {**auth_off, "store": {"encryption_key": "env:BENCH_STORE_KEY"}}
    settings: list[tuple[str, dict[str, Any], Any]] = [
        ("auth off", auth_off, None),
        ("API key", {}, api_key),
        ("JWT HS256", hs, {"Authorization": "Bearer " + jwt.encode(claims(), SECRET, algorithm="HS256")}),
        ("JWT RS256", rs, {"Authorization": "Bearer " + jwt.encode(claims(), private, algorithm="RS256")}),
        ("encryption on", encrypted, None),
    ]
    scenarios = [Scenario(*setting) for setting in settings]
    ratios: dict[str, list[tuple[float, float]]] = {s.name: [] for s in scenarios}
    try:
        for round_ in range(args.rounds):
            print(f"round {round_ + 1} of {args.rounds}")
            shift = round_ % len(scenarios)  # each round starts elsewhere: none is always measured last
            measured = {s.name: s.measure(args) for s in scenarios[shift:] + scenarios[:shift]}
            off_rate, off_cpu = measured["auth off"]
            for name, (rate, cpu) in measured.items():
                ratios[name].append((rate / off_rate, off_cpu / cpu if cpu else float("nan")))
    finally:
        for scenario in scenarios:
            scenario.stop()
    print("ratios to auth off in the same round, median over the rounds [lowest, highest]")
    print("(aim >= 0.95 for credentials, >= 0.9 with encryption at rest):")
    print(f"  {'':<14} {'req/s':>18} {'CPU/request':>18}")
    for name, pairs in ratios.items():
        rate_ratios, cpu_ratios = [p[0] for p in pairs], [p[1] for p in pairs]
        print(f"  {name:<14} {_spread(rate_ratios):>18} {_spread(cpu_ratios):>18}")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}, {max(values):.2f}]"


if __name__ == "__main__":
    main()
