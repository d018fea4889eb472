"""The snapshot routes on a real ``agent serve`` with two tenants: read, compare, export, replay
(streamed like any run), the permission of each route, and secrets that never come out."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstage.runtime.snapshot_file import content_hash
from conftest import stored_bytes
from http_api.conftest import Server, sse_events

from .conftest import ANSWER, QUESTION, REACT, sales_db

CANARY_KEY = "sk-canaryKEY0123456789abcdef"
CANARY_PASSWORD = "canaryPASSWORD42"
CANARY_ENV = "sk-canaryENV0123456789abcdef"
CANARIES = (CANARY_KEY, CANARY_PASSWORD, CANARY_ENV, "canaryKEY", "canaryENV")
SCRIPT: dict[str, Any] = {
    **REACT,
    "rules": [{"match": "slowly", "deltas": ["slow "] * 100, "delta_delay": 0.1}],
}


class Tenants:
    def __init__(self, server: Server, keys: dict[str, str]):
        self.server = server
        self.keys = keys

    def client(self, who: str, **headers: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.url, headers={"X-API-Key": self.keys[who], **headers}, timeout=30
        )


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    home = tmp_path_factory.mktemp("snapshot-server")
    config = {
        "security": {"tenants": {"default": {}, "acme": {}, "globex": {}}},
        "providers": {
            "s": {
                "type": "scripted",
                "script": SCRIPT,
                "api_key": CANARY_KEY,
                "base_url": f"https://models:{CANARY_PASSWORD}@models.example.com/v1",
            }
        },
        "tools": {"sql_database": str(sales_db(home / "sales.db", 3))},
    }
    server = Server(home, config)
    keys = {
        "acme": server.create_key("op-acme", tenant="acme"),
        "acme-viewer": server.create_key("v-acme", tenant="acme", role="viewer"),
        "globex": server.create_key("op-globex", tenant="globex"),
        "admin": server.key,
    }
    server.env["OPENAI_API_KEY"] = CANARY_ENV
    server.start()
    yield Tenants(server, keys)
    server.stop()


@pytest.fixture(scope="module")
def runs(tenants: Tenants) -> dict[str, str]:
    """Two finished react runs of acme's."""
    found = {}
    with tenants.client("acme") as acme:
        for name in ("first", "second"):
            answer = acme.post("/api/v1/agent/run", json={"input": QUESTION, "mode": "react"})
            assert answer.status_code == 200 and answer.json()["output"] == ANSWER, answer.text
            found[name] = answer.json()["run_id"]
    return found


def wait_for(client: httpx.Client, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body: dict[str, Any] = client.get(f"/api/v1/agent/status/{run_id}").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not end")


def test_a_snapshot_is_read_compared_and_exported_within_its_tenant(
    tenants: Tenants, runs: dict[str, str]
) -> None:
    first, second = runs["first"], runs["second"]
    with tenants.client("acme-viewer") as viewer, tenants.client("globex") as globex:
        snapshot = viewer.get(f"/api/v1/snapshots/{first}")
        assert snapshot.status_code == 200, snapshot.text
        body = snapshot.json()
        assert body["run_id"] == first and body["output"] == ANSWER and body["schema_version"] >= 2
        assert body["profile"]["chain"][0]["options"]["api_key"] == "***"

        diff = viewer.get("/api/v1/snapshots/diff", params={"a": first, "b": second})
        assert diff.status_code == 200, diff.text
        assert diff.json()["config"] == [] and diff.json()["first_divergence"] is None
        assert diff.json()["outcome"]["a"]["output"] == diff.json()["outcome"]["b"]["output"] == ANSWER

        exported = viewer.get(f"/api/v1/snapshots/{first}/export")
        assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
        document = exported.json()
        assert document["hash"] == content_hash(document) and document["snapshot"] == body

        for path in (f"/api/v1/snapshots/{first}", f"/api/v1/snapshots/{first}/export"):
            hidden = globex.get(path)
            assert hidden.status_code == 404 and hidden.json()["code"] == "run_not_found"
        across = globex.get("/api/v1/snapshots/diff", params={"a": first, "b": second})
        assert across.status_code == 404 and across.json()["code"] == "run_not_found"
        incomplete = viewer.get("/api/v1/snapshots/diff", params={"a": first})
        assert incomplete.status_code == 422 and incomplete.json()["code"] == "invalid_request"


def test_a_replay_runs_and_streams_like_any_run(tenants: Tenants, runs: dict[str, str]) -> None:
    first = runs["first"]
    with tenants.client("acme") as acme:
        accepted = acme.post(f"/api/v1/snapshots/{first}/replay", json={})
        assert accepted.status_code == 202, accepted.text
        replay = accepted.json()
        assert replay["replay_of"] == first and replay["live"] is False
        assert replay["events"] == f"/api/v1/agent/runs/{replay['run_id']}/events"
        ended = wait_for(acme, replay["run_id"])
        assert ended["status"] == "completed" and ended["output"] == ANSWER
        shown = acme.get(f"/api/v1/snapshots/{replay['run_id']}")
        assert shown.status_code == 200 and shown.json()["replay_of"] == first, shown.text

        original = [
            e["event"] for e in sse_events(acme.get(f"/api/v1/agent/runs/{first}/events").iter_lines())
        ]
        with acme.stream(
            "POST", f"/api/v1/snapshots/{first}/replay", json={}, headers={"Accept": "text/event-stream"}
        ) as streamed:
            assert streamed.status_code == 200 and streamed.headers["content-type"].startswith(
                "text/event-stream"
            )
            run_id = streamed.headers["x-run-id"]
            events = list(sse_events(streamed.iter_lines()))
        assert [e["event"] for e in events] == original
        assert all(e["data"]["run_id"] == run_id for e in events)
        assert events[-1]["data"]["data"]["output"] == ANSWER

        live = acme.post(
            f"/api/v1/snapshots/{first}/replay", json={"live": True, "overrides": {"model": "m2"}}
        )
        assert live.status_code == 202, live.text
        assert wait_for(acme, live.json()["run_id"])["status"] == "completed"
        shown = acme.get(f"/api/v1/snapshots/{live.json()['run_id']}")
        assert shown.status_code == 200, shown.text
        chain = shown.json()["profile"]["chain"]
        assert chain[0]["model"] == "m2" and chain[0]["provider"] == "s"


def test_replay_refusals(tenants: Tenants, runs: dict[str, str]) -> None:
    first = runs["first"]
    with (
        tenants.client("acme") as acme,
        tenants.client("acme-viewer") as viewer,
        tenants.client("globex") as globex,
    ):
        forbidden = viewer.post(f"/api/v1/snapshots/{first}/replay", json={})
        assert forbidden.status_code == 403 and forbidden.json()["code"] == "forbidden"
        foreign = globex.post(f"/api/v1/snapshots/{first}/replay", json={})
        assert foreign.status_code == 404 and foreign.json()["code"] == "run_not_found"
        not_live = acme.post(f"/api/v1/snapshots/{first}/replay", json={"overrides": {"profile": "t"}})
        assert not_live.status_code == 422 and not_live.json()["code"] == "replay_override_needs_live"
        unknown_field = acme.post(f"/api/v1/snapshots/{first}/replay", json={"liv": True})
        assert unknown_field.status_code == 422 and unknown_field.json()["code"] == "invalid_request"
        unknown_profile = acme.post(
            f"/api/v1/snapshots/{first}/replay", json={"live": True, "overrides": {"profile": "nope"}}
        )
        assert unknown_profile.status_code == 422 and unknown_profile.json()["code"] == "unknown_profile"

        with acme.stream(
            "POST", "/api/v1/agent/run/stream", json={"input": "talk slowly", "mode": "chat"}
        ) as running:
            run_id = running.headers["x-run-id"]
            for event in sse_events(running.iter_lines()):  # committed events only: it has started
                if event["event"] == "run.started":
                    break
            before = acme.get("/api/v1/agent/runs").json()["total"]
            busy = acme.post(f"/api/v1/snapshots/{run_id}/replay", json={})
            assert busy.status_code == 409 and busy.json()["code"] == "run_not_finished", busy.text
            export = acme.get(f"/api/v1/snapshots/{run_id}/export")
            assert export.status_code == 409 and export.json()["code"] == "run_not_finished"
            partial = acme.get(f"/api/v1/snapshots/{run_id}")  # written at start, completed at the end
            assert partial.status_code == 200 and partial.json()["status"] is None
            assert partial.json()["metrics"] is None and partial.json()["output"] is None
            assert acme.get("/api/v1/agent/runs").json()["total"] == before
            assert acme.delete(f"/api/v1/agent/cancel/{run_id}").status_code == 202


def test_no_secret_leaves_through_snapshots_exports_diffs_or_the_store(
    tenants: Tenants, runs: dict[str, str]
) -> None:
    first, second = runs["first"], runs["second"]
    with tenants.client("acme") as acme:
        bodies = [
            acme.get(f"/api/v1/snapshots/{first}").text,
            acme.get(f"/api/v1/snapshots/{first}/export").text,
            acme.get("/api/v1/snapshots/diff", params={"a": first, "b": second}).text,
        ]
    environment = json.loads(bodies[0])["environment"]
    assert environment["OPENAI_API_KEY"] == "***"  # recorded (allow-listed), and masked
    home: Path = tenants.server.home
    stored = stored_bytes(home)
    assert b"models:***@models.example.com" in stored  # the URL is kept, its password is not
    for canary in CANARIES:
        assert all(canary not in body for body in bodies), canary
        assert canary.encode() not in stored, canary
        assert canary not in tenants.server.log(), canary


def test_a_recording_file_cannot_be_set_over_the_network(tenants: Tenants) -> None:
    """The replay provider reads a file: like scripts and model files, only from the host's config."""
    with tenants.client("admin") as admin:
        change = {"providers": {"evil": {"type": "replay", "recording": "/etc/passwd"}}}
        refused = admin.put("/api/v1/config", json=change)
    assert refused.status_code == 403 and refused.json()["code"] == "remote_paths_disabled", refused.text
    config = json.loads((tenants.server.home / "config.json").read_text(encoding="utf-8"))
    assert "evil" not in config["providers"]
