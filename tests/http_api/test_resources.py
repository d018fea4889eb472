"""Conversations, tools, configuration and health over HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from .conftest import Server, sse_events


def test_conversations_keep_history_and_survive_restarts(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        with server.client() as http:
            created = http.post("/api/v1/conversations", json={"title": "intro"})
            assert created.status_code == 201
            conversation = created.json()["id"]
            first = http.post(
                f"/api/v1/conversations/{conversation}/messages",
                json={"input": "My name is Ada.", "mode": "chat"},
            )
            assert first.json()["output"] == "Hello Ada."
            with http.stream(
                "POST", f"/api/v1/conversations/{conversation}/messages", params={"stream": "true"},
                json={"input": "What is my name?", "mode": "chat"},
            ) as response:  # fmt: skip
                events = list(sse_events(response.iter_lines()))
            request = next(e for e in events if e["event"] == "model.request")
            assert "Hello Ada." in [m["content"] for m in request["data"]["data"]["messages"]]
            assert events[-1]["event"] == "run.completed"
        server.stop()
        server.start()
        with server.client() as http:
            history = http.get(f"/api/v1/conversations/{conversation}/history").json()["messages"]
            assert [(m["role"], m["content"]) for m in history] == [
                ("user", "My name is Ada."),
                ("assistant", "Hello Ada."),
                ("user", "What is my name?"),
                ("assistant", "Your name is Ada."),
            ]
            assert http.get(f"/api/v1/conversations/{conversation}").json()["title"] == "intro"
            assert http.delete(f"/api/v1/conversations/{conversation}").status_code == 204
            assert http.get(f"/api/v1/conversations/{conversation}").status_code == 404
            assert http.delete(f"/api/v1/conversations/{conversation}").status_code == 404
            assert http.post("/api/v1/conversations/nope/messages", json={"input": "hi"}).status_code == 404
    finally:
        server.stop()


def test_tools_catalog_and_direct_execution(http: httpx.Client) -> None:
    tools = http.get("/api/v1/tools").json()
    assert {t["id"] for t in tools} >= {"math.calculate:v1", "sql.query:v1"}
    assert [t["id"] for t in http.get("/api/v1/tools", params={"category": "data"}).json()] == [
        "sql.query:v1"
    ]
    tool = http.get("/api/v1/tools/math.calculate:v1").json()
    assert tool["version"] == "v1" and tool["parameters"]["required"] == ["expression"]
    result = http.post(
        "/api/v1/tools/math.calculate/execute", json={"arguments": {"expression": "6*7"}}
    ).json()
    assert result["output"] == {"result": 42} and result["error"] is None
    bad = http.post("/api/v1/tools/math.calculate/execute", json={"arguments": {"expression": 5}})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "expression"
    refused = http.post(
        "/api/v1/tools/sql.query/execute", json={"arguments": {"query": "DELETE FROM orders"}}
    ).json()
    assert refused["error"]["code"] == "sql_not_read_only"
    assert http.get("/api/v1/tools/nope").status_code == 404


def test_removing_a_tool(tmp_path: Path) -> None:
    server = Server(tmp_path).start()
    try:
        with server.client() as http:
            assert http.delete("/api/v1/tools/sql.query").status_code == 204
            assert "sql.query:v1" not in {t["id"] for t in http.get("/api/v1/tools").json()}
            assert http.delete("/api/v1/tools/sql.query").status_code == 404
    finally:
        server.stop()


def test_config_is_masked_and_changed_whole_or_not_at_all(tmp_path: Path) -> None:
    server = Server(tmp_path, {"providers": {"s": {"type": "scripted", "script": str(tmp_path / "script.json")},
                                             "remote": {"type": "openai", "api_key": "env:SOME_KEY", "base_url": "http://u:secretpw@h/v1"}}})  # fmt: skip
    server.start()
    try:
        with server.client() as http:
            config = http.get("/api/v1/config").json()
            assert config["providers"]["remote"]["base_url"] == "http://u:***@h/v1"
            before = (tmp_path / "config.json").read_text()
            invalid = http.put(
                "/api/v1/config", json={"limits": {"max_steps": 5}, "runtime": {"max_concurrent_runs": -1}}
            )
            assert invalid.status_code == 422 and "runtime.max_concurrent_runs" in invalid.json()["detail"]
            literal = http.put(
                "/api/v1/config", json={"providers": {"remote": {"api_key": "sk-literal-secret"}}}
            )
            assert literal.status_code == 422 and "env:" in literal.json()["detail"]
            assert (tmp_path / "config.json").read_text() == before
            assert http.get("/api/v1/config").json()["limits"]["max_steps"] != 5
            applied = http.put(
                "/api/v1/config", json={"limits": {"max_steps": 5}, "runtime": {"max_concurrent_runs": 3}}
            )
            assert applied.status_code == 200 and applied.json()["restart_required"] == ["runtime"]
            assert http.get("/api/v1/config").json()["limits"]["max_steps"] == 5
            assert json.loads((tmp_path / "config.json").read_text())["limits"]["max_steps"] == 5
            profile = {"name": "echo", "chain": [{"provider": "s"}], "params": {"temperature": 0}}
            assert http.post("/api/v1/config/profiles", json=profile).status_code == 201
            assert http.post("/api/v1/config/profiles", json=profile).status_code == 409
            names = [p["name"] for p in http.get("/api/v1/config/profiles").json()]
            assert "echo" in names
            run = http.post(
                "/api/v1/agent/run", json={"input": "hi", "profile": "echo", "mode": "chat"}
            ).json()
            assert run["status"] == "completed" and run["profile"] == "echo"
            broken = {"name": "broken", "chain": [{"provider": "ghost"}]}
            assert http.post("/api/v1/config/profiles", json=broken).status_code == 422
    finally:
        server.stop()


def test_health_probes(server: Server, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.url) as http:
        assert http.get("/health/live").json() == {"status": "ok", "checks": {}}
        ready = http.get("/health/ready").json()
        assert ready["status"] == "ok" and ready["checks"]["store"] == "ok"
        assert http.get("/health/startup").status_code == 200
    unready = Server(
        tmp_path, {"providers": {"s": {"type": "scripted", "script": str(tmp_path / "missing.yaml")}}}
    )
    unready.start()
    try:
        response = httpx.get(f"{unready.url}/health/ready")
        assert response.status_code == 503
        assert "missing.yaml" in response.json()["checks"]["provider:s"]
    finally:
        unready.stop()
