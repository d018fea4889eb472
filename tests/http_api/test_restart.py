"""Kill the server (SIGKILL) mid-stream, restart it, resume by seq: nothing lost, nothing twice."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx

from .conftest import Server, sse_events


def test_resume_after_the_server_was_killed(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    seen: list[dict[str, object]] = []
    try:
        with (
            server.client() as http,
            http.stream(
                "POST", "/api/v1/agent/run/stream", json={"input": "slow", "mode": "chat"}
            ) as response,
        ):
            run_id = response.headers["x-run-id"]
            try:
                for event in sse_events(response.iter_lines()):
                    seen.append(event)
                    if len(seen) == 8:
                        server.stop(signal.SIGKILL)
            except httpx.HTTPError:
                pass  # the connection died with the server
        assert 8 <= len(seen) < 40
        server.start()
        with server.client() as http:
            with http.stream(
                "GET", f"/api/v1/agent/runs/{run_id}/events", headers={"Last-Event-ID": str(seen[-1]["id"])}
            ) as response:
                rest = list(sse_events(response.iter_lines()))
            with http.stream("GET", f"/api/v1/agent/runs/{run_id}/events") as response:
                everything = list(sse_events(response.iter_lines()))
            status = http.get(f"/api/v1/agent/status/{run_id}").json()
    finally:
        server.stop()
    assert status["status"] == "failed" and status["error"]["code"] == "worker_lost"
    ids = [int(str(e["id"])) for e in seen + rest]
    assert ids == list(range(1, len(ids) + 1)), "every event once, in order"
    assert rest[-1]["event"] == "run.failed" and rest[-1]["data"]["data"]["error"]["code"] == "worker_lost"
    assert [e["id"] for e in everything] == [e["id"] for e in seen + rest]
    assert [e["data"] for e in everything[: len(seen)]] == [e["data"] for e in seen]
