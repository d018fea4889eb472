"""Scale-out figures: runs/s for 1, 2 and 4 workers, fan-out latency (an event created on a worker
→ received by a client of another API process) and cancel latency across processes, next to the
same figures for the embedded mode (one `agent serve`, SQLite, runs in-process), measured in this run.

    .venv/bin/python benchmarks/scale_out.py [--runs 400] [--repeats 3] [--cancels 30] [--fan-out-runs 5]

Uses the scripted provider (no model cost) and a private PostgreSQL and Redis (scripts/devcluster.py).

- runs/s, scale-out: the runs are queued while the workers are paused (SIGSTOP), then the workers
  are let go (SIGCONT) and the rate is runs / time until the last one ended (its ``finished_at``, so
  the polling interval does not count). That is what the workers execute; how fast API processes
  accept runs is a separate matter (printed as "accepted/s"). While waiting, the benchmark asks
  PostgreSQL only whether the queue is empty, so its own queries cost next to nothing.
- runs/s, embedded: a batch through `agent serve`, from the request to the last run's end.
- Every worker count runs on one cluster of the largest count (the workers a count does not use
  stay paused), in rounds that go through the counts in turn, --repeats rounds; the median rate of
  each count is kept, and a doubling's efficiency is the median of its within-round ratios. A
  single measurement of a few hundred runs lasts about a second, and a shared machine's speed
  drifts by a third between minutes: counts measured one after the other, each on a cluster of
  its own, gave efficiencies from 0.71 to 1.35 for the same code.
- CPU ms per run: the CPU time each kind of process spent during the measured runs (from /proc),
  divided by the runs. On a shared machine this, not the wall clock, says where the time goes.
- Scaling efficiency = rate(2n workers) / (2 x rate(n workers)). PostgreSQL, Redis, the API
  processes and the workers share this machine's cores, so once the processes need more CPU than
  the machine has, adding workers adds nothing: the figures say where that happens, not what a
  cluster with a core per worker would do.
- Work efficiency = CPU per run with n workers / CPU per run with 2n: whether more workers make
  each run cost more (contention on the queue, the database, Redis). At 1.0 twice the workers do
  twice the runs wherever the CPU for them is there; it is the figure that carries over to a
  bigger machine, where the scaling efficiency above is bounded by this one's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from _common import cpu_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from devcluster import AgentProcess, Cluster, agent_executable, free_port

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
    "http": {"max_batch_inputs": 1000, "requests_per_minute": 1000000},
    "logging": {"level": "warning"},
}
CONCURRENCY = 16
ENDED = {"completed", "failed", "cancelled"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return found


class Meter:
    """CPU seconds spent by groups of processes between two readings."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups
        self.start = {name: sum(cpu_seconds(p) for p in pids) for name, pids in groups.items()}

    def spent(self) -> dict[str, float]:
        return {
            name: sum(cpu_seconds(p) for p in pids) - self.start[name] for name, pids in self.groups.items()
        }


class Target:
    def __init__(self, urls: list[str], key: str):
        self.urls = urls
        self.headers = {"Authorization": f"Bearer {key}"}

    def client(self, index: int = 0) -> httpx.Client:
        return httpx.Client(base_url=self.urls[index % len(self.urls)], headers=self.headers, timeout=120)

    def submit(self, runs: int, text: str = "quick") -> list[str]:
        """Queue ``runs`` runs: one batch per API process, sent at once; their run ids."""
        shares = [runs // len(self.urls) + (i < runs % len(self.urls)) for i in range(len(self.urls))]

        def send(index: int) -> list[str]:
            with self.client(index) as client:
                answer = client.post(f"{API}/batch", json={"inputs": [text] * shares[index], "parallel": 32})
                answer.raise_for_status()
                return list(answer.json()["run_ids"])

        with ThreadPoolExecutor(len(self.urls)) as pool:
            return [run_id for ids in pool.map(send, range(len(self.urls))) for run_id in ids]

    def wait_all(self, run_ids: list[str], count_ended: Any) -> None:
        deadline = time.monotonic() + 600
        while count_ended(run_ids) < len(run_ids):
            if time.monotonic() > deadline:
                raise RuntimeError(f"runs did not end: {count_ended(run_ids)} of {len(run_ids)}")
            time.sleep(0.02)

    def start(self, text: str, index: int = 0) -> str:
        with (
            self.client(index) as client,
            client.stream("POST", f"{API}/run/stream", json={"input": text}) as answer,
        ):
            return answer.headers["x-run-id"]

    def fan_out(self, runs: int) -> list[float]:
        """ms from an event's creation (its ts, on the executing process) to its arrival at a
        client of another API process (of the same one, embedded).

        Only events created after the follower's stream was open count: the ones before it are
        read back from the store when it attaches (catch-up, not fan-out), and their age says
        how long attaching took, not how fast a live event travels."""
        latencies: list[float] = []
        for index in range(runs):
            run_id = self.start("stream", index)
            with (
                self.client(index + 1) as client,
                client.stream("GET", f"{API}/runs/{run_id}/events") as answer,
            ):
                attached = time.time()
                for line in answer.iter_lines():
                    if line.startswith("data: "):
                        arrived = time.time()
                        event = json.loads(line[6:])
                        if event["type"] == "message.delta":
                            created = datetime.fromisoformat(event["ts"]).timestamp()
                            if created >= attached:
                                latencies.append((arrived - created) * 1000)
                        if event["type"] in {"run.completed", "run.failed", "run.cancelled"}:
                            break
        return latencies

    def cancels(self, tries: int) -> list[float]:
        """ms from sending a cancel to one API process until a client streaming the run through
        the other one receives ``run.cancelled``."""
        latencies = []
        for index in range(tries):
            run_id = self.start("long", index)
            streaming = threading.Event()
            seen: list[float] = []

            def follow(rid: str = run_id, i: int = index, on: threading.Event = streaming,
                       got: list[float] = seen) -> None:  # fmt: skip
                with self.client(i + 1) as client, client.stream("GET", f"{API}/runs/{rid}/events") as answer:
                    for line in answer.iter_lines():
                        if line.startswith("event: message.delta"):
                            on.set()
                        if line.startswith("event: run.cancelled"):
                            got.append(time.perf_counter())
                            return

            thread = threading.Thread(target=follow, daemon=True)
            thread.start()
            if not streaming.wait(60):
                raise RuntimeError(f"run {run_id} never streamed")
            with self.client(index) as client:
                sent = time.perf_counter()
                client.delete(f"{API}/cancel/{run_id}").raise_for_status()
            thread.join(60)
            if not seen:
                raise RuntimeError(f"run {run_id}: no run.cancelled within 60 s")
            latencies.append((seen[0] - sent) * 1000)
        return latencies


def embedded(runs: int, cancels: int, fan_out_runs: int, repeats: int) -> dict[str, Any]:
    cluster = Cluster(config=CONFIG)
    env = {k: v for k, v in cluster.env().items() if k not in {"AGENT_STORE__URL", "AGENT_REDIS__URL"}}
    (cluster.home / "config.json").write_text(json.dumps(CONFIG), encoding="utf-8")
    port = free_port()
    serve = AgentProcess("embedded", ["serve", "--port", str(port)], env, cluster.root)
    try:
        key = subprocess.run([agent_executable(), "keys", "create", "--name", "b", "--role", "admin"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        serve.port = port
        serve.start()
        cluster.apis.append(serve)
        cluster.wait_ready(timeout=300)  # a busy machine starts processes slowly
        target = Target([f"http://127.0.0.1:{port}"], key)

        def ended(run_ids: list[str]) -> int:
            with target.client() as client:
                return int(client.get(f"{API}/batch/{batches[-1]}").json()["finished"])

        batches: list[str] = []
        rates, spent = [], []
        for count in (20, *[runs] * repeats):  # a warm-up, then the measured batches
            meter = Meter({"agent serve": [serve.pid]})
            started = time.perf_counter()
            with target.client() as client:
                answer = client.post(f"{API}/batch", json={"inputs": ["quick"] * count, "parallel": 32})
                answer.raise_for_status()
                batches.append(answer.json()["batch_id"])
            target.wait_all(answer.json()["run_ids"], ended)
            if count == runs:
                rates.append(runs / (time.perf_counter() - started))
                spent.append(meter.spent()["agent serve"])
        return {
            "runs_per_s": statistics.median(rates),
            "rates": rates,
            "cpu": {"agent serve": sum(spent) / (runs * repeats) * 1000},
            "fan_out": target.fan_out(fan_out_runs),
            "cancel": target.cancels(cancels),
        }
    finally:
        serve.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def scale_out(
    counts: list[int], runs: int, cancels: int, fan_out_runs: int, repeats: int
) -> tuple[dict[int, dict[str, Any]], dict[str, Any]]:
    """The figures of each worker count, and the latencies (with 2 workers). Every count is
    measured on one cluster of ``max(counts)`` workers, in rounds that go through the counts in
    turn (the workers a count does not use stay paused, SIGSTOP): a slow spell of a shared machine
    then hits each count alike instead of the one measured during it, and each doubling's
    efficiency is taken within a round."""
    cluster = Cluster(config=CONFIG)
    try:
        cluster.start_services()
        key = cluster.agent("keys", "create", "--name", "b", "--role", "admin").strip()
        for _ in range(2):
            cluster.add_api()
        for _ in range(max(counts)):
            cluster.add_worker("--concurrency", str(CONCURRENCY))
        cluster.wait_ready(timeout=300)  # a busy machine starts processes slowly
        target = Target([f"http://127.0.0.1:{api.port}" for api in cluster.apis], key)

        import psycopg

        # One connection for the polling (a psql process per poll would cost more CPU than a run).
        watcher = psycopg.connect(
            f"postgresql://{cluster.postgres.user}@127.0.0.1:{cluster.postgres.port}/agentstage",
            autocommit=True,
        )

        def ended(run_ids: list[str]) -> int:
            row = watcher.execute(
                "SELECT count(*) FROM runs WHERE status = ANY(%s) AND id = ANY(%s)", (sorted(ENDED), run_ids)
            ).fetchone()
            return int(row[0]) if row else 0

        def drained(run_ids: list[str]) -> int:
            """Like ``ended``, but while the queue still holds jobs it asks only that (a tiny table):
            counting 400 runs by id every 20 ms cost PostgreSQL ~0.4 ms per run, as much as a run's
            event inserts, and that CPU was counted as the runs' own."""
            busy = watcher.execute(
                "SELECT EXISTS (SELECT 1 FROM procrastinate_jobs WHERE status IN ('todo', 'doing'))"
            ).fetchone()
            return 0 if busy and busy[0] else ended(run_ids)

        def last_end(run_ids: list[str]) -> float:
            """When the last of the runs ended, by the clock of the process that ended it."""
            row = watcher.execute(
                "SELECT extract(epoch FROM max(finished_at)) FROM runs WHERE id = ANY(%s)", (run_ids,)
            ).fetchone()
            assert row is not None and row[0] is not None
            return float(row[0])

        def only(active: int) -> None:
            """Let the first ``active`` workers go; pause the others."""
            for index, worker in enumerate(cluster.workers):
                worker.signal(signal.SIGCONT if index < active else signal.SIGSTOP)

        # Warm up every process, and wait for the queue to settle too: a job whose end is still being
        # written when its worker is paused below would hold the queue "doing" for the whole round.
        target.wait_all(target.submit(20), drained)
        postmaster = int((cluster.postgres.data / "postmaster.pid").read_text().split()[0])
        figures: dict[int, dict[str, Any]] = {
            count: {"rates": [], "accepted": [], "spent": []} for count in counts
        }
        for _ in range(repeats):
            for count in counts:
                only(0)
                try:
                    submitted = time.perf_counter()
                    run_ids = target.submit(runs)
                    figures[count]["accepted"].append(runs / (time.perf_counter() - submitted))
                finally:
                    groups = {
                        "workers": [w.pid for w in cluster.workers],
                        "API processes": [a.pid for a in cluster.apis],
                        "PostgreSQL": children_of(postmaster),
                        "Redis": [cluster.redis.process.pid] if cluster.redis.process else [],
                    }
                    meter = Meter(groups)
                    started = time.time()
                    only(count)
                target.wait_all(run_ids, drained)
                figures[count]["spent"].append(meter.spent())
                figures[count]["rates"].append(runs / (last_end(run_ids) - started))
        result: dict[int, dict[str, Any]] = {}
        for count, measured in figures.items():
            spent = measured["spent"]
            result[count] = {
                "runs_per_s": statistics.median(measured["rates"]),
                "rates": measured["rates"],
                "accepted_per_s": statistics.median(measured["accepted"]),
                "cpu": {name: sum(s[name] for s in spent) / (runs * repeats) * 1000 for name in spent[0]},
            }
        only(min(2, max(counts)))
        latency = {
            "workers": min(2, max(counts)),
            "fan_out": target.fan_out(fan_out_runs),
            "cancel": target.cancels(cancels),
        }
        only(max(counts))
        watcher.close()
        return result, latency
    finally:
        cluster.stop()


def cpu_line(cpu: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {ms:.1f}" for name, ms in cpu.items())
    return f"CPU ms per run: {parts} (total {sum(cpu.values()):.1f})"


def latency_line(figures: dict[str, Any]) -> str:
    fan, cancel = figures["fan_out"], figures["cancel"]
    if not fan or not cancel:
        return "not measured (--fan-out-runs 0 or --cancels 0)"
    return (
        f"fan-out event→client p50 {statistics.median(fan):.1f} ms, p99 {percentile(fan, 0.99):.1f} ms "
        f"({len(fan)} events); cancel→run.cancelled p50 {statistics.median(cancel):.1f} ms, "
        f"p99 {percentile(cancel, 0.99):.1f} ms ({len(cancel)} cancels)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=400, help="runs per throughput measurement")
    parser.add_argument(
        "--repeats", type=int, default=3, help="throughput measurements per worker count (the median is kept)"
    )
    parser.add_argument("--cancels", type=int, default=30, help="cancels timed per mode")
    parser.add_argument(
        "--fan-out-runs", type=int, default=5, help="streamed runs (200 events each) per mode"
    )
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    base = embedded(args.runs, args.cancels, args.fan_out_runs, args.repeats)
    print(
        f"embedded (1 agent serve, SQLite): {base['runs_per_s']:.1f} runs/s, median of "
        f"{', '.join(f'{r:.0f}' for r in base['rates'])}; {cpu_line(base['cpu'])}",
        flush=True,
    )
    counts = sorted({int(n) for n in args.workers.split(",")})
    figures, latency = scale_out(counts, args.runs, args.cancels, args.fan_out_runs, args.repeats)
    for count in counts:
        measured = figures[count]
        line = (
            f"scale-out, {count} worker(s) x concurrency {CONCURRENCY}: {measured['runs_per_s']:.1f} runs/s, "
            f"median of {', '.join(f'{r:.0f}' for r in measured['rates'])} "
            f"({measured['runs_per_s'] / base['runs_per_s']:.2f}x embedded; accepted "
            f"{measured['accepted_per_s']:.1f}/s by 2 API processes)"
        )
        half = count // 2
        doubling = count % 2 == 0 and half in figures
        if doubling:
            # Within each round: the two counts ran minutes apart at most, on the same processes.
            paired = [
                more / (2 * fewer)
                for more, fewer in zip(measured["rates"], figures[half]["rates"], strict=True)
            ]
            line += (
                f", scaling efficiency {statistics.median(paired):.2f} "
                f"(rounds: {', '.join(f'{p:.2f}' for p in paired)})"
            )
        print(line, flush=True)
        print(f"  {cpu_line(measured['cpu'])}", flush=True)
        if doubling:
            fewer_cpu, more_cpu = sum(figures[half]["cpu"].values()), sum(measured["cpu"].values())
            # What the doubling would give if the cores did not run out: the same work per run means
            # twice the workers do twice the runs, given the CPU.
            print(
                f"  CPU per run {fewer_cpu:.1f} ms with {half} worker(s), {more_cpu:.1f} ms with {count}: "
                f"work efficiency {fewer_cpu / more_cpu:.2f} (the scaling a cluster with a core for each "
                "worker and enough for PostgreSQL would see)",
                flush=True,
            )
    print(f"embedded: {latency_line(base)}")
    print(f"scale-out (2 API, {latency['workers']} workers): {latency_line(latency)}")
    print(f"load average {os.getloadavg()[0]:.2f} at the end", flush=True)


if __name__ == "__main__":
    main()
