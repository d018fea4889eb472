"""MCP servers registered over HTTP: a real server (mcp-server-time, over stdio) whose tools join the
catalog, validate their arguments, run inside agent runs, and come back after a restart."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .conftest import SCRIPT, Server

TIME_SERVER = {
    "name": "time",
    "command": sys.executable,
    "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
}


def test_register_use_and_remove_an_mcp_server(tmp_path: Path) -> None:
    script = {
        "rules": [
            {
                "match": "what time",
                "tool_calls": [{"name": "time.get_current_time", "arguments": {"timezone": "Europe/Paris"}}],
            },
            *SCRIPT["rules"],
        ],
        "responses": [{"text": "It is time."}],
    }
    policy = {"security": {"mcp": {"allow_commands": True, "executables": [sys.executable], "timeout": 30}}}
    server = Server(tmp_path, policy)
    (tmp_path / "script.json").write_text(json.dumps(script))
    server.start()
    try:
        with server.client() as http:
            registered = http.post("/api/v1/tools/register", json=TIME_SERVER)
            assert registered.status_code == 201, registered.text
            ids = {t["id"] for t in registered.json()}
            assert {"time.get_current_time:mcp", "time.convert_time:mcp"} <= ids
            listed = http.get("/api/v1/tools", params={"category": "mcp:time"}).json()
            assert {t["id"] for t in listed} == ids
            assert http.post("/api/v1/tools/register", json=TIME_SERVER).status_code == 409

            result = http.post(
                "/api/v1/tools/time.get_current_time/execute", json={"arguments": {"timezone": "Asia/Tokyo"}}
            )
            assert result.json()["output"]["timezone"] == "Asia/Tokyo"
            bad = http.post(
                "/api/v1/tools/time.get_current_time/execute", json={"arguments": {"timezone": 3}}
            )
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "timezone"
            failing = http.post(
                "/api/v1/tools/time.get_current_time/execute", json={"arguments": {"timezone": "Mars/Base"}}
            )
            assert (
                failing.json()["error"]["code"] == "tool_error"
                and "Mars/Base" in failing.json()["error"]["message"]
            )

            run = http.post(
                "/api/v1/agent/run",
                json={"input": "what time is it in Paris?", "mode": "react", "options": {"max_steps": 2}},
            ).json()
            with http.stream("GET", f"/api/v1/agent/runs/{run['run_id']}/events") as response:
                lines = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
            tool_result = next(e for e in lines if e["type"] == "tool.result")
            assert tool_result["data"]["tool"] == "time.get_current_time:mcp"
            assert tool_result["data"]["output"]["timezone"] == "Europe/Paris"

        server.stop()
        server.start()
        with server.client() as http:
            assert "time.get_current_time:mcp" in {t["id"] for t in http.get("/api/v1/tools").json()}
            assert http.delete("/api/v1/tools/time").status_code == 204
            assert not [t for t in http.get("/api/v1/tools").json() if t["category"] == "mcp:time"]
            assert json.loads((tmp_path / "config.json").read_text())["tools"]["mcp_servers"] == []
    finally:
        server.stop()


def test_bad_registrations_are_refused_clearly(server: Server) -> None:
    with server.client() as http:
        neither = http.post("/api/v1/tools/register", json={"name": "x"})
        assert neither.status_code == 422 and "exactly one" in neither.text
        broken = http.post("/api/v1/tools/register", json={"name": "ghost", "command": "/no/such/binary"})
        assert broken.status_code == 403 and broken.json()["code"] == "mcp_commands_disabled"
        bad_name = http.post("/api/v1/tools/register", json={"name": "Bad Name!", "command": "x"})
        assert bad_name.status_code == 422
        assert "ghost" not in json.dumps(http.get("/api/v1/tools").json())
