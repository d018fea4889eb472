"""Scale-out figures: runs/s for 1, 2 and 4 workers, fan-out latency (event created on a worker →
received by a client of another API process) and cancel latency across processes, next to the same
figures for the embedded mode (one `agent serve`, SQLite, runs in-process), measured in this run.

    .venv/bin/python benchmarks/scale_out.py [--runs 200] [--cancels 30]

Uses the scripted provider (no model cost), private PostgreSQL/Redis (scripts/devcluster.py).
Scaling efficiency = rate(2n workers) / (2 x rate(n workers)); this machine's cores are shared by
PostgreSQL, the API process and the workers, so it says where the cores run out, not a cluster's
ceiling."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from devcluster import AgentProcess, Cluster, free_port

API = "/api/v1/agent"
SCRIPT = {
    "rules": [
        {"match": "stream", "deltas": [f"t{i} " for i in range(200)], "delta_delay": 0.01},
        {"match": "long", "deltas": [f"w{i} " for i in range(400)], "delta_delay": 0.05},
    ],
    "responses": [{"text": "Done."}],
}
CONFIG: dict[str, Any] = {
    "providers": {"s": {"type": "scripted", "script": SCRIPT}},
    "profiles": {"t": {"chain": [{"provider": "s"}]}},
    "default_profile": "t",
    "runtime": {"max_concurrent_runs": 64},
    "http": {"max_batch_inputs": 1000, "requests_per_minute": 100000},
    "logging": {"level": "warning"},
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


class Target:
    def __init__(self, urls: list[str], key: str):
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {key}"}

    def client(self, index: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.urls[index % len(self.urls)], headers=self.headers, timeout=120)

    def throughput(self, runs: int) -> float:
        with self.client() as client:
            started = time.perf_counter()
            answer = client.post(f"{API}/batch", json={"inputs": ["quick"] * runs, "parallel": 32})
            answer.raise_for_status()
            batch = answer.json()["batch_id"]
            while True:
                progress = client.get(f"{API}/batch/{batch}").json()
                if progress.get("done") or progress.get("finished", 0) >= runs or _all_done(progress):
                    return runs / (time.perf_counter() - started)
                time.sleep(0.02)

    def start(self, text: str, index: int = 0) -> str:
        with (
            self.client(index) as client,
            client.stream("POST", f"{API}/run/stream", json={"input": text}) as answer,
        ):
            return answer.headers["x-run-id"]

    def fan_out(self, runs: int) -> list[float]:
        """ms from an event's creation (its ts, on the worker) to its arrival at a client of
        another API process."""
        latencies: list[float] = []
        for index in range(runs):
            run_id = self.start("stream", index)
            with (
                self.client(index + 1) as client,
                client.stream("GET", f"{API}/runs/{run_id}/events") as answer,
            ):
                for line in answer.iter_lines():
                    if line.startswith("data: "):
                        event = json.loads(line[6:])
                        arrived = time.time()
                        if event["type"] == "message.delta":
                            created = datetime.fromisoformat(event["ts"]).timestamp()
                            latencies.append((arrived - created) * 1000)
                        if event["type"] in {"run.completed", "run.failed", "run.cancelled"}:
                            break
        return latencies

    def cancels(self, tries: int) -> list[float]:
        latencies = []
        for index in range(tries):
            run_id = self.start("long", index)
            done = threading.Event()
            seen: list[float] = []

            def follow(
                rid: str = run_id, i: int = index, done: threading.Event = done, seen: list[float] = seen
            ) -> None:
                with self.client(i + 1) as client, client.stream("GET", f"{API}/runs/{rid}/events") as answer:
                    for line in answer.iter_lines():
                        if line.startswith("event: message.delta") and not done.is_set():
                            done.set()
                        if line.startswith("event: run.cancelled"):
                            seen.append(time.perf_counter())
                            return

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            done.wait(30)
            with self.client(index) as client:
                sent = time.perf_counter()
                client.delete(f"{API}/cancel/{run_id}").raise_for_status()
            thread.join(30)
            latencies.append((seen[0] - sent) * 1000)
        return latencies


def _all_done(progress: dict[str, Any]) -> bool:
    items = progress.get("items") or []
    return bool(items) and all(i.get("status") in {"completed", "failed", "cancelled"} for i in items)


def embedded(runs: int, cancels: int) -> dict[str, Any]:
    cluster = Cluster(config=CONFIG)
    env = {k: v for k, v in cluster.env().items() if k not in {"AGENT_STORE__URL", "AGENT_REDIS__URL"}}
    (cluster.home / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    port = free_port()
    serve = AgentProcess("embedded", ["serve", "--port", str(port)], env, cluster.root)
    try:
        import subprocess

        from devcluster import agent_executable

        key = subprocess.run([agent_executable(), "keys", "create", "--name", "b", "--role", "admin"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        serve.port = port
        serve.start()
        cluster.apis.append(serve)
        cluster.wait_ready(timeout=300)  # a busy machine starts processes slowly
        target = Target([f"http://127.0.0.1:{port}"], key)
        return {
            "runs_per_s": target.throughput(runs),
            "fan_out": target.fan_out(3),
            "cancel": target.cancels(cancels),
        }
    finally:
        serve.stop()
        import shutil

        shutil.rmtree(cluster.root, ignore_errors=True)


def scale_out(workers: int, runs: int, cancels: int, latency: bool) -> dict[str, Any]:
    cluster = Cluster(config=CONFIG)
    try:
        cluster.start_services()
        key = cluster.agent("keys", "create", "--name", "b", "--role", "admin").strip()
        for _ in range(2):
            cluster.add_api()
        for _ in range(workers):
            cluster.add_worker("--concurrency", "16")
        cluster.wait_ready(timeout=300)  # a busy machine starts processes slowly
        target = Target([f"http://127.0.0.1:{api.port}" for api in cluster.apis], key)
        target.throughput(20)  # warm up
        figures: dict[str, Any] = {"runs_per_s": target.throughput(runs)}
        if latency:
            figures["fan_out"] = target.fan_out(3)
            figures["cancel"] = target.cancels(cancels)
        return figures
    finally:
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--cancels", type=int, default=30)
    args = parser.parse_args()
    base = embedded(args.runs, args.cancels)
    print(f"embedded (1 agent serve, SQLite): {base['runs_per_s']:.1f} runs/s")
    rates = {}
    for workers in (1, 2, 4):
        figures = scale_out(workers, args.runs, args.cancels, latency=workers == 2)
        rates[workers] = figures["runs_per_s"]
        line = f"scale-out, {workers} worker(s): {rates[workers]:.1f} runs/s ({rates[workers] / base['runs_per_s']:.2f}x embedded)"
        if workers > 1:
            line += f", scaling efficiency {rates[workers] / (2 * rates[workers // 2]):.2f}"
        print(line, flush=True)
        if "fan_out" in figures:
            latency = figures
    for name, figures in (("embedded", base), ("scale-out", latency)):
        fan, cancel = figures["fan_out"], figures["cancel"]
        print(
            f"{name}: fan-out event→client p50 {statistics.median(fan):.1f} ms, p99 {percentile(fan, 0.99):.1f} ms;"
            f" cancel→run.cancelled p50 {statistics.median(cancel):.1f} ms, p99 {percentile(cancel, 0.99):.1f} ms"
        )


if __name__ == "__main__":
    main()
