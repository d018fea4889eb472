"""A private scale-out cluster for the module: PostgreSQL, Redis, 2 API processes, 2 workers and
nginx, all real processes on 127.0.0.1 (scripts/devcluster.py), stopped after the module."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from devcluster import AgentProcess, Cluster

SCRIPT: dict[str, Any] = {
    "rules": [
        {"match": "long", "deltas": [f"w{i} " for i in range(300)], "delta_delay": 0.05},
        {"match": "slow", "deltas": [f"s{i} " for i in range(30)], "delta_delay": 0.05},
        {"match": "brief", "deltas": ["a ", "b ", "c "], "delta_delay": 0.1},
        {
            "match": "what time",
            "tool_calls": [{"name": "time.get_current_time", "arguments": {"timezone": "UTC"}}],
        },
    ],
    "responses": [{"text": "Hello from the cluster."}],
}
CONFIG: dict[str, Any] = {
    "providers": {"s": {"type": "scripted", "script": SCRIPT}},
    "profiles": {"t": {"chain": [{"provider": "s"}]}},
    "default_profile": "t",
    "runtime": {
        "heartbeat_interval": 0.4,
        "worker_lost_after": 3.0,
        "max_attempts": 2,
        "cancel_grace": 1.0,
        "drain_timeout": 1.0,
        "tenant_limits": {"limited": 2},
    },
    "security": {
        "tenants": {"default": {}, "limited": {}},
        # MCP servers registered over HTTP may run this Python (mcp-server-time), nothing else.
        "mcp": {"allow_commands": True, "executables": [sys.executable], "timeout": 30},
    },
    "logging": {"level": "warning"},
}
API = "/api/v1/agent"


class Client:
    """Talks to one address (an API process or nginx) with an API key."""

    def __init__(self, url: str, key: str):
        self.url = url
        self.headers = {"Authorization": f"Bearer {key}"}

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30)

    def start(self, text: str, **extra: Any) -> str:
        """Start a run and return its id at once (the stream is closed; the run continues)."""
        with (
            self.http() as client,
            client.stream("POST", f"{API}/run/stream", json={"input": text, **extra}) as answer,
        ):
            answer.read() if answer.status_code != 200 else None
            assert answer.status_code == 200, answer.text
            return answer.headers["x-run-id"]

    def status(self, run_id: str) -> dict[str, Any]:
        with self.http() as client:
            answer = client.get(f"{API}/status/{run_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = self.status(run_id)
            if body["status"] in {"completed", "failed", "cancelled"}:
                return body
            assert time.monotonic() < deadline, f"run {run_id} did not end: {body}"
            time.sleep(0.05)

    def events(
        self,
        run_id: str,
        *,
        after: int | None = None,
        last_event_id: int | None = None,
        until: int | None = None,
        opened: threading.Event | None = None,
    ) -> list[dict[str, Any]]:
        """SSE events (``{id, event, data}``) until the terminal one, or until seq ``until``;
        ``opened`` is set once the stream is open (the server answered 200)."""
        headers = dict(self.headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        params = {"after": after} if after is not None else {}
        got = []
        with httpx.Client(base_url=self.url, headers=headers, timeout=60) as client:
            with client.stream("GET", f"{API}/runs/{run_id}/events", params=params) as answer:
                assert answer.status_code == 200, answer.read()
                if opened is not None:
                    opened.set()
                for event in sse(answer.iter_lines()):
                    got.append(event)
                    if event.get("event", "").startswith("run.") and event["event"] in ENDINGS:
                        break
                    if until is not None and int(event["id"]) >= until:
                        break
        return got


ENDINGS = {"run.completed", "run.failed", "run.cancelled"}


def sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


class Running:
    def __init__(self, cluster: Cluster, key: str, limited_key: str):
        self.cluster = cluster
        self.key = key
        self.limited_key = limited_key

    def api(self, index: int) -> Client:
        return Client(f"http://127.0.0.1:{self.cluster.apis[index].port}", self.key)

    @property
    def nginx(self) -> Client:
        assert self.cluster.nginx is not None
        return Client(self.cluster.nginx.url, self.key)

    def sql(self, statement: str) -> str:
        return self.cluster.postgres.sql(statement, database="agentstage")

    def log_of(self, run_id: str) -> list[tuple[int, str]]:
        rows = self.sql(f"SELECT seq, type FROM run_events WHERE run_id = '{run_id}' ORDER BY seq")
        return [(int(seq), kind) for seq, kind in (line.split("|") for line in rows.splitlines())]

    def worker_of(self, run_id: str, timeout: float = 30) -> AgentProcess:
        """The worker process executing the run (once one has claimed it and started it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.sql(f"SELECT worker_id, status FROM runs WHERE id = '{run_id}'")
            owner, _, status = row.partition("|")
            pid = owner.rpartition(":")[2]
            for worker in self.cluster.workers:
                if status == "running" and worker.process is not None and pid == str(worker.pid):
                    return worker
            time.sleep(0.05)
        raise AssertionError(f"no worker started run {run_id}")

    def replace(self, worker: AgentProcess) -> AgentProcess:
        """Stop ``worker`` (if it still runs) and start a fresh one in its place."""
        worker.stop(timeout=10)
        self.cluster.workers.remove(worker)
        fresh = self.cluster.add_worker()
        deadline = time.monotonic() + 60
        while "worker ready" not in fresh.log():
            assert time.monotonic() < deadline, fresh.log()
            time.sleep(0.1)
        return fresh


@pytest.fixture(scope="package")
def cluster() -> Iterator[Running]:
    cluster = Cluster(config=CONFIG)
    try:
        cluster.start_services()
        key = cluster.agent("keys", "create", "--name", "tests", "--role", "admin").strip()
        limited = cluster.agent(
            "keys", "create", "--name", "limited", "--role", "operator", "--tenant", "limited"
        )
        apis = [cluster.add_api() for _ in range(2)]
        for _ in range(2):
            cluster.add_worker("--concurrency", "8")
        cluster.wait_ready()
        cluster.start_nginx()
        assert len(apis) == 2
        yield Running(cluster, key, limited.strip())
    finally:
        cluster.stop()


def in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(target(*args)), daemon=True)
    thread.start()
    return thread, result
