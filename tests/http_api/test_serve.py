"""``agent serve`` itself: auth off only by explicit config (and said at start-up), several workers."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from .conftest import Server, sse_events


def test_auth_off_is_explicit_and_announced(tmp_path: Path) -> None:
    server = Server(tmp_path, {"http": {"auth": "off"}}).start()
    try:
        response = httpx.post(
            f"{server.url}/api/v1/agent/run", json={"input": "hi", "mode": "chat"}, timeout=30
        )
        assert response.status_code == 200 and response.json()["status"] == "completed"
        log = server.wait_for_log("authentication is OFF")
        assert "auth: OFF" in log
    finally:
        server.stop()


def test_several_workers_share_one_store(tmp_path: Path) -> None:
    server = Server(tmp_path)
    with (tmp_path / "server.log").open("ab") as log:
        import subprocess

        from conftest import AGENT

        server.process = subprocess.Popen(
            [AGENT, "serve", "--port", str(server.port), "--workers", "2"],
            env=server.env,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{server.url}/health/startup", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.2)
        with server.client() as http:
            run_ids = [
                http.post("/api/v1/agent/run", json={"input": f"hi {i}", "mode": "chat"}).json()["run_id"]
                for i in range(6)
            ]
            for run_id in run_ids:  # any worker answers for any run
                assert http.get(f"/api/v1/agent/status/{run_id}").json()["status"] == "completed"
                with http.stream("GET", f"/api/v1/agent/runs/{run_id}/events") as response:
                    events = list(sse_events(response.iter_lines()))
                assert events[-1]["event"] == "run.completed"
            assert http.get("/api/v1/agent/runs").json()["total"] == 6
    finally:
        server.stop()


def test_quiet_streams_get_keep_alive_comments(tmp_path: Path) -> None:
    import json

    server = Server(tmp_path, {"http": {"sse_keepalive": 0.2}})
    script = json.loads((tmp_path / "script.json").read_text())
    script["rules"].insert(0, {"match": "pause", "text": "done", "delay": 1.0})
    (tmp_path / "script.json").write_text(json.dumps(script))
    server.start()
    try:
        with (
            server.client() as http,
            http.stream(
                "POST", "/api/v1/agent/run/stream", json={"input": "pause first", "mode": "chat"}
            ) as response,
        ):
            lines = list(response.iter_lines())
        assert sum(line == ": keep-alive" for line in lines) >= 2
        assert "event: run.completed" in lines
    finally:
        server.stop()
