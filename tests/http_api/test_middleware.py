"""Authentication, rate limits, correlation ids, compression and request logs on the live server."""

from __future__ import annotations

import gzip
import json
import time

import httpx
import pytest

from .conftest import Server


def test_requests_need_a_valid_key_but_health_stays_open(server: Server) -> None:
    with httpx.Client(base_url=server.url) as anonymous:
        missing = anonymous.post("/api/v1/agent/run", json={"input": "hi"})
        assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = anonymous.get("/api/v1/tools", headers={"Authorization": "Bearer ags_not-a-real-key"})
        assert wrong.status_code == 401 and "not valid" in wrong.json()["detail"]
        assert anonymous.get("/api/v1/tools", headers={"X-API-Key": server.key}).status_code == 200
        for open_path in ("/health/live", "/health/ready", "/health/startup", "/openapi.json"):
            assert anonymous.get(open_path).status_code == 200, open_path


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_keys_are_stored_hashed_and_can_be_revoked(server: Server) -> None:
    key = server.agent("keys", "create", "--name", "temporary").strip()
    assert key.startswith("ags_")
    listed = [json.loads(line) for line in server.agent("keys", "list", "--json").splitlines()]
    assert {"tests", "temporary"} <= {row["name"] for row in listed}
    assert key not in server.agent("keys", "list", "--json")
    store = (server.home / "agentstage.db").read_bytes()
    assert key.encode() not in store
    server.agent("keys", "revoke", "temporary")
    with httpx.Client(base_url=server.url) as client:
        # revocation reaches a running server within its short key cache
        deadline = time.monotonic() + 35
        while client.get("/api/v1/tools", headers={"X-API-Key": key}).status_code != 401:
            assert time.monotonic() < deadline
            time.sleep(0.5)


def test_rate_limit_per_key(server: Server) -> None:
    key = server.agent("keys", "create", "--name", "limited", "--rate", "3").strip()
    with httpx.Client(base_url=server.url, headers={"X-API-Key": key}) as client:
        statuses = [client.get("/api/v1/tools").status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429]
        refused = client.get("/api/v1/tools")
        assert refused.json()["code"] == "rate_limited" and int(refused.headers["retry-after"]) >= 1
        assert client.get("/health/live").status_code == 200
    with server.client() as other:
        assert other.get("/api/v1/tools").status_code == 200  # other keys are not affected


def test_correlation_id_is_echoed_generated_and_carried_into_runs(http: httpx.Client) -> None:
    generated = http.get("/api/v1/tools").headers["x-request-id"]
    assert len(generated) >= 16
    response = http.post(
        "/api/v1/agent/run", json={"input": "hi", "mode": "chat"}, headers={"X-Request-ID": "trace-me-42"}
    )
    assert response.headers["x-request-id"] == "trace-me-42"
    run_id = response.json()["run_id"]
    with http.stream("GET", f"/api/v1/agent/runs/{run_id}/events") as events:
        first = next(line for line in events.iter_lines() if line.startswith("data: "))
    assert json.loads(first[6:])["data"]["correlation_id"] == "trace-me-42"
    bad = http.get("/api/v1/tools", headers={"X-Request-ID": "not ok\tspaces"}).headers["x-request-id"]
    assert bad != "not ok\tspaces"


def test_large_json_is_gzipped_small_json_and_sse_are_not(http: httpx.Client) -> None:
    for _ in range(3):
        http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
    big = http.get("/api/v1/agent/runs", headers={"Accept-Encoding": "gzip"})
    assert len(big.content) > 1024 and big.headers["content-encoding"] == "gzip"
    with http.stream("GET", "/api/v1/agent/runs", headers={"Accept-Encoding": "gzip"}) as raw:
        compressed = b"".join(raw.iter_raw())
    assert json.loads(gzip.decompress(compressed))["total"] >= 3
    small = http.get("/health/live", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers


def test_one_json_log_line_per_request(server: Server, http: httpx.Client) -> None:
    http.get("/api/v1/tools", headers={"X-Request-ID": "log-line-check"})
    log = server.wait_for_log("log-line-check")
    lines = [json.loads(line) for line in log.splitlines() if "log-line-check" in line]
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET" and line["path"] == "/api/v1/tools" and line["status"] == 200
    assert line["key"] == "tests" and line["duration_ms"] >= 0
