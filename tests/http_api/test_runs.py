"""Runs over HTTP: run and wait, SSE streams and their resumption, status, list, cancel, batches."""

from __future__ import annotations

import time
from typing import Any

import httpx

from .conftest import Server, sse_events


def stream_run(http: httpx.Client, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    with http.stream("POST", "/api/v1/agent/run/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in response.headers
        return response.headers["x-run-id"], list(sse_events(response.iter_lines()))


def wait_for(http: httpx.Client, run_id: str, statuses: set[str], timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(f"/api/v1/agent/status/{run_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}")


def test_run_and_wait_returns_the_cli_json_shape(http: httpx.Client) -> None:
    response = http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
    assert response.status_code == 200
    body = response.json()
    assert {"run_id", "status", "output", "usage", "cost", "timings"} <= body.keys()
    assert body["status"] == "completed" and body["output"] == "Hello from the server."
    assert body["usage"]["total_tokens"] > 0 and body["timings"]["duration_ms"] is not None


def test_stream_sends_every_event_in_order(http: httpx.Client) -> None:
    run_id, events = stream_run(http, {"input": "hi", "mode": "chat"})
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert events[0]["event"] == "run.queued" and events[-1]["event"] == "run.completed"
    assert all(e["data"]["run_id"] == run_id and e["data"]["type"] == e["event"] for e in events)
    status = http.get(f"/api/v1/agent/status/{run_id}").json()
    assert status["status"] == "completed" and status["last_seq"] == len(events)


def test_events_resume_exactly_after_a_seq(http: httpx.Client) -> None:
    run_id, everything = stream_run(http, {"input": "hi", "mode": "chat"})
    with http.stream("GET", f"/api/v1/agent/runs/{run_id}/events", params={"after": 3}) as response:
        tail = list(sse_events(response.iter_lines()))
    assert [e["id"] for e in tail] == [e["id"] for e in everything[3:]]
    with http.stream(
        "GET", f"/api/v1/agent/runs/{run_id}/events", headers={"Last-Event-ID": "5"}
    ) as response:
        tail = list(sse_events(response.iter_lines()))
    assert [e["id"] for e in tail] == [e["id"] for e in everything[5:]]


def test_a_live_stream_can_be_followed_from_another_request(http: httpx.Client) -> None:
    run_id = http.post("/api/v1/agent/batch", json={"inputs": ["slow one"], "mode": "chat"}).json()[
        "run_ids"
    ][0]
    with http.stream("GET", f"/api/v1/agent/runs/{run_id}/events") as response:
        events = list(sse_events(response.iter_lines()))
    assert events[-1]["event"] == "run.completed"
    assert sum(e["event"] == "message.delta" for e in events) == 40


def test_cancel_contract(http: httpx.Client) -> None:
    run_id = http.post("/api/v1/agent/batch", json={"inputs": ["slow please"], "mode": "chat"}).json()[
        "run_ids"
    ][0]
    wait_for(http, run_id, {"running"})
    accepted = http.delete(f"/api/v1/agent/cancel/{run_id}")
    assert accepted.status_code == 202 and accepted.json()["run_id"] == run_id
    assert http.delete(f"/api/v1/agent/cancel/{run_id}").status_code in {202, 409}
    final = wait_for(http, run_id, {"cancelled"})
    assert final["error"]["code"] == "cancelled"
    again = http.delete(f"/api/v1/agent/cancel/{run_id}")
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"
    assert again.json()["code"] == "run_finished" and again.json()["status"] == 409
    assert again.json()["run_status"] == "cancelled"
    unknown = http.delete("/api/v1/agent/cancel/no-such-run")
    assert unknown.status_code == 404 and unknown.json()["code"] == "run_not_found"


def test_disconnecting_does_not_cancel_unless_asked(server: Server, http: httpx.Client) -> None:
    outcomes = {}
    for policy in ("continue", "cancel"):
        with (
            server.client() as client,
            client.stream(
                "POST",
                "/api/v1/agent/run/stream",
                json={"input": "slow", "mode": "chat", "on_disconnect": policy},
            ) as response,
        ):
            run_id = response.headers["x-run-id"]
            for line in response.iter_lines():
                if line.startswith("event: message.delta"):
                    break
        outcomes[policy] = wait_for(http, run_id, {"completed", "cancelled", "failed"})["status"]
    assert outcomes == {"continue": "completed", "cancel": "cancelled"}


def test_list_filters_and_pages(http: httpx.Client) -> None:
    for text in ("fail now", "one", "two", "three"):  # this test's own runs: it needs at least four
        http.post("/api/v1/agent/run", json={"input": text, "mode": "chat"})
    failed = http.get("/api/v1/agent/runs", params={"status": "failed"}).json()
    assert failed["total"] >= 1 and all(r["status"] == "failed" for r in failed["runs"])
    page = http.get("/api/v1/agent/runs", params={"limit": 2, "offset": 1}).json()
    assert len(page["runs"]) == 2 and page["limit"] == 2 and page["offset"] == 1
    everything = http.get("/api/v1/agent/runs", params={"limit": 200}).json()
    assert page["runs"][0]["run_id"] == everything["runs"][1]["run_id"]
    assert http.get("/api/v1/agent/runs", params={"status": "sleeping"}).status_code == 422


def test_batch_runs_in_order_with_progress(http: httpx.Client) -> None:
    accepted = http.post(
        "/api/v1/agent/batch",
        json={"inputs": ["first", "fail this", "   ", "last"], "parallel": 2, "mode": "chat"},
    )
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["run_ids"][2] is None and body["items"][2]["error"]["code"] == "empty_input"
    deadline = time.monotonic() + 20
    while True:
        progress = http.get(f"/api/v1/agent/batch/{body['batch_id']}").json()
        if progress["done"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert progress["done"] and progress["total"] == 4
    assert [r["status"] for r in progress["results"]] == ["completed", "failed", "rejected", "completed"]
    assert progress["counts"] == {"completed": 2, "failed": 1, "rejected": 1}
    assert http.get("/api/v1/agent/batch/nope").status_code == 404
