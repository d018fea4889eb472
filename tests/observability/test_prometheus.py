"""Metrics through Prometheus itself: Debian's ``prometheus`` scrapes a real ``agent serve
--workers 2`` every second with a bearer key, and the counters read back through Prometheus' query
API add up every worker's runs. ``/metrics`` needs ``metrics.read`` unless ``metrics.public``."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from http_api.conftest import free_port

from .conftest import TOOL_THEN_ANSWER, ObservedServer, scripted

pytestmark = pytest.mark.timeout(240)


class Prometheus:
    def __init__(self, workdir: Path, target: str, bearer: str):
        binary = shutil.which("prometheus")
        assert binary, "Debian's prometheus is needed (.ci/run installs it: apt-get install prometheus)"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: agentstage\n"
            f"    authorization: {{type: Bearer, credentials: '{bearer}'}}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n",
            encoding="utf-8",
        )
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not start:\n" + self.log.read_text())

    def query(self, expression: str) -> float | None:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expression}, timeout=5).json()
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, expression: str, expected: float, timeout: float = 45) -> float | None:
        deadline = time.monotonic() + timeout
        seen = None
        while time.monotonic() < deadline:
            seen = self.query(expression)
            if seen == expected:
                return seen
            time.sleep(0.5)
        return seen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObservedServer]:
    home = tmp_path_factory.mktemp("metrics-home")
    server = ObservedServer(home, scripted(TOOL_THEN_ANSWER)).start("--workers", "2")
    yield server
    server.stop()


def one_run(server: ObservedServer, index: int) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=60) as client:  # a new connection
        answer = client.post("/api/v1/agent/run", json={"input": f"what is 6*7? ({index})", "mode": "react"})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def worker_pids(server: ObservedServer) -> set[str]:
    """Which worker processes executed runs, from the run records in the store."""
    with sqlite3.connect(f"file:{server.home / 'agentstage.db'}?mode=ro", uri=True) as db:
        return {row[0].rsplit(":", 1)[-1] for row in db.execute("SELECT worker_id FROM runs")}


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_prometheus_reads_every_workers_runs_back(workers: ObservedServer, tmp_path: Path) -> None:
    monitor = workers.new_key("monitor", "prometheus")
    prometheus = Prometheus(tmp_path, f"127.0.0.1:{workers.port}", monitor)
    try:
        assert prometheus.wait_for('up{job="agentstage"}', 1.0) == 1.0, prometheus.log.read_text()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda n: one_run(workers, n), range(24)))
        assert {r["status"] for r in results} == {"completed"}

        # Both workers served runs (uvicorn spreads connections over its processes)...
        pids = worker_pids(workers)
        assert len(pids) == 2, f"expected runs on both workers, got {pids}"
        # ...and every scrape, whichever worker answers it, counts all of them.
        total = 'sum(agent_requests_total{door="http",status="completed"})'
        assert prometheus.wait_for(total, 24.0) == 24.0
        assert (
            prometheus.wait_for('sum(agent_tool_calls_total{tool="math.calculate:v1",status="ok"})', 24.0)
            == 24.0
        )
        tokens = 'sum(agent_tokens_used_total{provider="s",model="scripted-model",type="input"})'
        assert prometheus.wait_for(tokens, 24.0 * 250) == 24.0 * 250
        assert (
            prometheus.wait_for('sum(gen_ai_client_token_usage_count{gen_ai_token_type="output"})', 48.0)
            == 48.0
        )
        assert prometheus.wait_for('sum(agent_request_duration_seconds_count{door="http"})', 24.0) == 24.0
        assert prometheus.wait_for('agent_cache_hit_ratio{provider="s"}', 50 / 250) == 50 / 250
        assert prometheus.wait_for("sum(agent_active_executions)", 0.0) == 0.0
        door = 'sum(agent_door_requests_total{door="http",method="POST /api/v1/agent/run",status="200"})'
        assert prometheus.wait_for(door, 24.0) == 24.0
    finally:
        prometheus.stop()


def test_metrics_need_a_key_with_metrics_read(workers: ObservedServer) -> None:
    assert httpx.get(f"{workers.url}/metrics", timeout=10).status_code == 401
    viewer = workers.new_key("viewer", "a-viewer")
    refused = httpx.get(f"{workers.url}/metrics", headers={"Authorization": f"Bearer {viewer}"}, timeout=10)
    assert refused.status_code == 403 and refused.json()["permission"] == "metrics.read"
    one_run(workers, 0)  # a run of its own to count: it does not lean on the module's other tests
    answer = httpx.get(f"{workers.url}/metrics", headers=workers.headers, timeout=10)
    assert answer.status_code == 200 and "# TYPE agent_requests_total counter" in answer.text
    assert answer.headers["content-type"].startswith("text/plain")


def test_metrics_public_opens_metrics_and_nothing_else(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    server = ObservedServer(tmp_path / "home", scripted(TOOL_THEN_ANSWER, metrics={"public": True})).start()
    try:
        assert httpx.get(f"{server.url}/metrics", timeout=10).status_code == 200
        assert httpx.get(f"{server.url}/api/v1/agent/runs", timeout=10).status_code == 401
    finally:
        server.stop()
