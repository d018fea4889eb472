"""``agent serve`` keeps the embedded model in one supervised host process: a crash of that host
fails the model call in flight, never the server, and the host comes back."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from http_api.conftest import Server, sse_events
from serving import start_patiently

pytestmark = pytest.mark.model

LONG = {
    "input": "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "mode": "chat",
    "options": {"params": {"max_tokens": 400}},
}


def host_pids(server: Server) -> list[int]:
    """The model host processes whose parent is the server."""
    assert server.process is not None
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if b"agentstage.providers.model_host" in command and parent == server.process.pid:
            found.append(int(entry.name))
    return found


def wait_ready(server: Server, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        ready = httpx.get(f"{server.url}/health/ready", timeout=10)
        if ready.status_code == 200:
            return dict(ready.json())
        assert time.monotonic() < deadline, ready.text
        time.sleep(0.1)


@pytest.fixture
def local_server(tmp_path: Path) -> Any:
    config = {
        "providers": {
            "s": {"type": "scripted", "script": str(tmp_path / "script.json")},
            "local": {"type": "local"},
        },
        "default_profile": "local",
    }
    server = Server(tmp_path, config)
    try:
        yield start_patiently(server)
    finally:
        server.stop()


def test_one_host_serves_the_server_and_its_crash_fails_only_the_call_in_flight(local_server: Server) -> None:
    server = local_server
    wait_ready(server)
    hosts = host_pids(server)
    assert len(hosts) == 1, "one model host per server"
    down_seen: list[str] = []
    with server.client() as http, http.stream("POST", "/api/v1/agent/run/stream", json=LONG) as response:
        assert response.status_code == 200
        run_id = response.headers["X-Run-ID"]
        events = []
        for event in sse_events(response.iter_lines()):
            events.append(event)
            if event["event"] == "message.delta" and sum(e["event"] == "message.delta" for e in events) == 3:
                os.kill(hosts[0], signal.SIGSEGV)
                deadline = time.monotonic() + 10
                while not down_seen and time.monotonic() < deadline:
                    assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200
                    ready = httpx.get(f"{server.url}/health/ready", timeout=5)
                    if ready.status_code == 503:
                        down_seen.append(ready.json()["checks"]["provider:local"])
                    time.sleep(0.02)
            if event["event"].startswith("run.") and event["event"] not in ("run.queued", "run.started"):
                break
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1)), "the events are gap-free"
    last = events[-1]
    assert last["event"] == "run.failed", events[-3:]
    assert last["data"]["data"]["error"]["code"] == "provider_crashed", last
    assert down_seen and "model host" in down_seen[0] and "SIGSEGV" in down_seen[0], down_seen
    assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200
    wait_ready(server)
    restarted = host_pids(server)
    assert len(restarted) == 1 and restarted != hosts
    with server.client() as http:
        stored = http.get(f"/api/v1/agent/status/{run_id}").json()
        assert stored["status"] == "failed" and stored["error"]["code"] == "provider_crashed"
        after = http.post("/api/v1/agent/run", json={"input": "Say hello.", "mode": "chat"}).json()
        assert after["status"] == "completed" and after["output"], after
        scraped = http.get("/metrics").text.splitlines()
    assert "the model host exited (SIGSEGV)" in server.log()
    assert "agent_model_host_restarts_total 1.0" in scraped
    speed = [line for line in scraped if line.startswith("agent_llm_output_tokens_per_second_count{")]
    assert any('provider="local"' in line and float(line.split()[-1]) >= 1 for line in speed), speed


def test_a_run_started_while_the_host_restarts_waits_for_it(local_server: Server) -> None:
    server = local_server
    wait_ready(server)
    (host,) = host_pids(server)
    os.kill(host, signal.SIGKILL)
    with server.client() as http:
        done = http.post("/api/v1/agent/run", json={"input": "What is 6 times 7?"}, timeout=120).json()
    assert done["status"] == "completed", done
    assert "42" in done["output"]
