"""``POST /api/agent/run``: the unversioned alias of the v1 run route, negotiating both ways — the
input as text or JSON, the answer as JSON or an SSE stream."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from .conftest import Server, sse_events

ROOT = Path(__file__).resolve().parents[2]


def test_text_in_json_out(http: httpx.Client) -> None:
    response = http.post(
        "/api/agent/run",
        content="What is my name?",
        headers={"Content-Type": "text/plain; charset=utf-8"},
        params={"mode": "chat"},
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["status"] == "completed" and body["output"] == "Your name is Ada." and body["mode"] == "chat"
    assert "Accept" in response.headers["vary"]
    status = http.get(f"/api/v1/agent/status/{body['run_id']}").json()
    assert status["input"] == "What is my name?"  # the body itself was the input


def test_json_in_sse_out(http: httpx.Client) -> None:
    with http.stream(
        "POST",
        "/api/agent/run",
        json={"input": "hello", "mode": "chat"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(response.iter_lines()))
    assert events[0]["event"] == "run.queued" and events[-1]["event"] == "run.completed"
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["data"]["data"]["output"] == "Hello from the server."
    assert response.headers["x-run-id"] == events[0]["data"]["run_id"]


def test_text_in_sse_out_and_json_in_json_out(http: httpx.Client) -> None:
    with http.stream(
        "POST",
        "/api/agent/run",
        content="name is Ada",
        headers={"Content-Type": "text/plain", "Accept": "text/event-stream, application/json;q=0.5"},
        params={"mode": "chat"},
    ) as response:
        events = list(sse_events(response.iter_lines()))
    assert events[-1]["data"]["data"]["output"] == "Hello Ada."
    answer = http.post(
        "/api/agent/run", json={"input": "hello", "mode": "chat"}, headers={"Accept": "application/json"}
    )
    v1 = http.post("/api/v1/agent/run", json={"input": "hello", "mode": "chat"}).json()
    assert set(answer.json()) == set(v1) and answer.json()["output"] == v1["output"]
    no_type = http.post("/api/agent/run", content="hello", params={"mode": "chat"})
    assert no_type.status_code == 200 and no_type.json()["status"] == "completed"


def test_negotiation_failures_are_clear(http: httpx.Client) -> None:
    form = http.post("/api/agent/run", data={"input": "hello"})
    assert form.status_code == 415 and form.json()["code"] == "unsupported_media_type"
    assert "text/plain" in form.json()["detail"]
    xml = http.post("/api/agent/run", content="hi", headers={"Accept": "application/xml"})
    assert xml.status_code == 406 and xml.json()["code"] == "not_acceptable"
    mixed = http.post("/api/agent/run", json={"input": "hi"}, params={"mode": "chat"})
    assert mixed.status_code == 422 and mixed.json()["errors"][0]["field"] == "mode"
    broken = http.post("/api/agent/run", content="{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["code"] == "malformed_json"
    listed = http.post("/api/agent/run", json=["hi"])
    assert listed.status_code == 422
    unknown = http.post("/api/agent/run", json={"input": "hi", "colour": "red"})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "colour"
    empty = http.post("/api/agent/run", content="   ", headers={"Content-Type": "text/plain"})
    assert empty.status_code == 422 and empty.json()["code"] == "empty_input"
    latin = http.post("/api/agent/run", content=b"\xff\xfe", headers={"Content-Type": "text/plain"})
    assert latin.status_code == 422 and "utf-8" in latin.json()["detail"]


def test_the_alias_needs_a_key_like_every_route(server: Server) -> None:
    anonymous = httpx.post(f"{server.url}/api/agent/run", content="hello", timeout=10)
    assert anonymous.status_code == 401


def test_the_alias_is_described_with_both_media_types() -> None:
    document = json.loads((ROOT / "docs" / "openapi.json").read_text(encoding="utf-8"))
    operation = document["paths"]["/api/agent/run"]["post"]
    assert set(operation["requestBody"]["content"]) == {"application/json", "text/plain"}
    assert set(operation["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert {p["name"] for p in operation["parameters"]} == {"mode", "profile", "on_disconnect"}
