"""Two tenants on one server: every read, list, stream, resume, cancel and delete across them is
404 (or an empty list), admins act across tenants only when they say so, and the local CLI sees all."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from .conftest import SecureServer


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SecureServer, dict[str, str]]]:
    config: dict[str, Any] = {"security": {"tenants": {"default": {}, "acme": {}, "globex": {}}}}
    server = SecureServer(tmp_path_factory.mktemp("tenants"), config)
    keys = {tenant: server.create_key(f"op-{tenant}", tenant=tenant) for tenant in ("acme", "globex")}
    keys["admin-acme"] = server.create_key("admin-acme", tenant="acme", role="admin")
    server.start()
    yield server, keys
    server.stop()


def client(server: SecureServer, key: str, **headers: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key, **headers}, timeout=30)


def test_another_tenants_objects_are_not_found(tenants: tuple[SecureServer, dict[str, str]]) -> None:
    server, keys = tenants
    with client(server, keys["acme"]) as a, client(server, keys["globex"]) as b:
        run = a.post("/api/v1/agent/run", json={"input": "secret plan of acme", "mode": "chat"}).json()
        live = a.post("/api/v1/agent/batch", json={"inputs": ["slow acme"], "mode": "chat"}).json()
        conversation = a.post("/api/v1/conversations", json={"title": "acme talk"}).json()["id"]
        a.post(
            f"/api/v1/conversations/{conversation}/messages", json={"input": "my name is Ada", "mode": "chat"}
        )
        live_run = live["run_ids"][0]
        for method, path in [
            ("GET", f"/api/v1/agent/status/{run['run_id']}"),
            ("GET", f"/api/v1/agent/runs/{run['run_id']}/events"),
            ("GET", f"/api/v1/agent/runs/{run['run_id']}/events?after=1"),
            ("GET", f"/api/v1/agent/batch/{live['batch_id']}"),
            ("DELETE", f"/api/v1/agent/cancel/{live_run}"),
            ("GET", f"/api/v1/conversations/{conversation}"),
            ("GET", f"/api/v1/conversations/{conversation}/history"),
            ("DELETE", f"/api/v1/conversations/{conversation}"),
        ]:
            response = b.request(method, path)
            assert response.status_code == 404, (path, response.text)
            assert "acme" not in response.text
        posted = b.post(
            f"/api/v1/conversations/{conversation}/messages", json={"input": "hi", "mode": "chat"}
        )
        assert posted.status_code == 404
        smuggled = b.post(
            "/api/v1/agent/run", json={"input": "x", "mode": "chat", "conversation_id": conversation}
        )
        assert smuggled.status_code == 404
        listed = b.get("/api/v1/agent/runs").json()
        assert listed["total"] == 0 and listed["runs"] == []
        # acme still has everything, untouched
        assert a.get(f"/api/v1/agent/status/{live_run}").json()["status"] in (
            "queued",
            "running",
            "completed",
        )
        history = a.get(f"/api/v1/conversations/{conversation}/history").json()["messages"]
        assert [m["role"] for m in history] == ["user", "assistant"]
        assert a.get("/api/v1/agent/runs").json()["total"] == 3
        assert b.get("/api/v1/agent/runs", headers={"X-Agentstage-Tenant": "acme"}).status_code == 403


def test_websocket_resume_and_cancel_across_tenants(tenants: tuple[SecureServer, dict[str, str]]) -> None:
    server, keys = tenants
    with client(server, keys["acme"]) as a:
        run_id = a.post("/api/v1/agent/run", json={"input": "hello", "mode": "chat"}).json()["run_id"]
    url = server.url.replace("http://", "ws://") + "/ws/agent/stream"
    with connect(url, additional_headers={"X-API-Key": keys["globex"]}) as socket:
        socket.send(json.dumps({"type": "resume", "run_id": run_id, "after": 0}))
        assert json.loads(socket.recv(timeout=10))["code"] == "run_not_found"
        socket.send(json.dumps({"type": "cancel", "run_id": run_id}))
        assert json.loads(socket.recv(timeout=10))["code"] == "run_not_found"
    with connect(url, additional_headers={"X-API-Key": keys["acme"]}) as socket:
        socket.send(json.dumps({"type": "resume", "run_id": run_id, "after": 0}))
        frames: list[dict[str, Any]] = []
        while not frames or frames[-1].get("type") != "run.completed":
            frames.append(json.loads(socket.recv(timeout=10)))
        assert frames[0]["type"] == "run.queued"


def test_admins_act_across_tenants_only_explicitly(tenants: tuple[SecureServer, dict[str, str]]) -> None:
    server, keys = tenants
    with client(server, keys["globex"]) as b:
        run_id = b.post("/api/v1/agent/run", json={"input": "globex only", "mode": "chat"}).json()["run_id"]
    with client(server, keys["admin-acme"]) as admin:
        assert admin.get(f"/api/v1/agent/status/{run_id}").status_code == 404  # own tenant by default
        found = admin.get(f"/api/v1/agent/status/{run_id}", headers={"X-Agentstage-Tenant": "globex"})
        assert found.status_code == 200 and found.json()["input"] == "globex only"
        everything = admin.get("/api/v1/agent/runs", headers={"X-Agentstage-Tenant": "*"}).json()
        assert run_id in {r["run_id"] for r in everything["runs"]}
        made = admin.post("/api/v1/agent/run", json={"input": "made for globex", "mode": "chat"},
                          headers={"X-Agentstage-Tenant": "globex"}).json()  # fmt: skip
        unknown = admin.post(
            "/api/v1/agent/run", json={"input": "x"}, headers={"X-Agentstage-Tenant": "nowhere"}
        )
        assert unknown.status_code == 403 and unknown.json()["code"] == "unknown_tenant"
    with client(server, keys["globex"]) as b:
        assert b.get(f"/api/v1/agent/status/{made['run_id']}").status_code == 200
    listed = server.agent("runs", "list", "--json")  # the local CLI acts as admin over every tenant
    assert run_id in listed and made["run_id"] in listed
