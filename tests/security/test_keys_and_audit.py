"""API keys as principals (role, tenant, scopes, expiry, rotation, revocation on every worker
within a second, a bounded cache) and the hash-chained audit log (list, verify, tampering)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstage.access.apikeys import KNOWN_SECONDS, KeyVerifier
from agentstage.core.records import ApiKeyRecord
from agentstage.errors import UnauthorizedError
from agentstage.runtime.keys import KeyService
from agentstage.store.sql import SqlRunStore
from conftest import AGENT, Cli

from .conftest import SecureServer


def test_keys_carry_role_tenant_scopes_and_expiry(cli: Cli) -> None:
    cli.configure({"security": {"tenants": {"default": {}, "acme": {}}}})
    made = cli("keys", "create", "--name", "ci", "--role", "viewer", "--tenant", "acme", "--expires", "90d",
               "--rate", "7", "--scope", "runs.read")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("ags_") and "role viewer, tenant acme" in made.stderr
    row = json.loads(cli("keys", "list", "--json").stdout)
    assert (row["role"], row["tenant"], row["scopes"], row["requests_per_minute"]) == (
        "viewer",
        "acme",
        ["runs.read"],
        7,
    )
    assert row["expires_at"] > row["created_at"] and row["last_used_at"] is None
    for args, message in [
        (("--role", "root"), "role 'root' does not exist"),
        (("--tenant", "nowhere"), "tenant 'nowhere' does not exist"),
        (("--expires", "soon"), "--expires 'soon' is neither a duration"),
        (("--expires", "2001-01-01"), "is not in the future"),
        (("--scope", "everything"), "unknown scope(s) 'everything'"),
    ]:
        refused = cli("keys", "create", "--name", "bad", *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert "bad" not in cli("keys", "list", "--json").stdout
    audit = [
        json.loads(line)
        for line in cli("audit", "list", "--json", "--action", "keys.manage").stdout.splitlines()
    ]
    assert audit and audit[0]["principal"].startswith("local:") and audit[0]["target"] == "create key ci"


def wait_for(condition: object, seconds: float) -> float:
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < seconds
        time.sleep(0.05)
    return time.monotonic() - started


def test_revocation_and_rotation_reach_every_worker_within_a_second(tmp_path: Path) -> None:
    server = SecureServer(tmp_path)
    with server.log_path.open("ab") as log:
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
        key = server.keys["operator"]

        def status(secret: str) -> int:  # a fresh connection each time, so either worker may answer
            return httpx.get(f"{server.url}/api/v1/tools", headers={"X-API-Key": secret}).status_code

        assert all(status(key) == 200 for _ in range(6))
        new_key = server.agent("keys", "rotate", "k-operator").strip()
        took = wait_for(lambda: all(status(key) == 401 for _ in range(4)), 5)
        assert took < 1.5 and status(new_key) == 200
        server.agent("keys", "revoke", "k-operator")
        took = wait_for(lambda: all(status(new_key) == 401 for _ in range(4)), 5)
        assert took < 1.5
        answer = httpx.get(f"{server.url}/api/v1/tools", headers={"X-API-Key": new_key}).json()
        assert answer["code"] == "key_revoked"
        rows = [json.loads(line) for line in server.agent("keys", "list", "--json").splitlines()]
        operator = next(r for r in rows if r["name"] == "k-operator")
        assert operator["revoked"] and operator["rotated_at"] and operator["last_used_at"]
    finally:
        server.stop()


def test_an_expired_key_and_a_scoped_key(secure: SecureServer) -> None:
    expiring = secure.agent("keys", "create", "--name", "brief", "--expires", "8s").strip()
    scoped = secure.agent(
        "keys", "create", "--name", "reader", "--role", "admin", "--scope", "runs.read"
    ).strip()
    with httpx.Client(base_url=secure.url) as client:
        assert client.get("/api/v1/tools", headers={"X-API-Key": expiring}).status_code == 200
        wait_for(lambda: client.get("/api/v1/tools", headers={"X-API-Key": expiring}).status_code == 401, 15)
        expired = client.get("/api/v1/tools", headers={"X-API-Key": expiring})
        assert expired.json()["code"] == "key_expired"
        narrowed = client.get("/api/v1/config", headers={"X-API-Key": scoped})
        assert narrowed.status_code == 403 and narrowed.json()["permission"] == "config.read"
        assert client.get("/api/v1/agent/runs", headers={"X-API-Key": scoped}).status_code == 200


@pytest.mark.anyio
async def test_the_verification_cache_is_bounded(tmp_path: Path) -> None:
    store = SqlRunStore(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await store.open()
    try:
        verifier = KeyVerifier(store, max_entries=100)
        for i in range(2000):
            with pytest.raises(UnauthorizedError):
                await verifier.verify(f"ags_forged-{i}")
        assert len(verifier) == 100
    finally:
        await store.close()


class CountingStore(SqlRunStore):
    """The real store, counting key reads (each one slow enough that requests pile up behind it)."""

    reads = 0

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        self.reads += 1
        await asyncio.sleep(0.05)
        return await super().api_key_by_hash(key_hash)


@pytest.mark.anyio
async def test_requests_in_flight_share_one_read_of_a_stale_key(tmp_path: Path) -> None:
    store = CountingStore(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    await store.open()
    try:
        keys = KeyService(store)
        key, _ = await keys.create("busy")
        verifier = KeyVerifier(store)
        first = asyncio.get_running_loop().create_task(verifier.verify(key))
        await asyncio.sleep(0)
        first.cancel()  # the request that started the read goes away: the others still get it
        found = await asyncio.gather(*(verifier.verify(key) for _ in range(32)))
        assert {record.name for record in found} == {"busy"} and store.reads == 1
        await asyncio.sleep(KNOWN_SECONDS)
        await asyncio.gather(*(verifier.verify(key) for _ in range(32)))
        assert store.reads == 2  # stale: read again, once
        await keys.revoke("busy")
        await asyncio.sleep(KNOWN_SECONDS)
        refused = await asyncio.gather(*(verifier.verify(key) for _ in range(8)), return_exceptions=True)
        assert all(isinstance(e, UnauthorizedError) and e.code == "key_revoked" for e in refused)
        assert store.reads == 3
    finally:
        await store.close()


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_audit_verify_names_a_row_edited_in_the_database(secure: SecureServer) -> None:
    with httpx.Client(base_url=secure.url) as anonymous:
        anonymous.get("/api/v1/config")  # denied: audited
    with secure.as_role("viewer") as viewer:
        viewer.put("/api/v1/config", json={"description": "x"})  # denied: audited
    with secure.as_role("admin") as admin:
        admin.put("/api/v1/config", json={"description": "audited change"})  # a change: audited
    ok = subprocess.run(
        [AGENT, "audit", "verify"], env=secure.env, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "hash chain verified" in ok.stderr, ok.stderr
    rows = secure.audit_rows()
    change = next(r for r in rows if r["action"] == "config.write" and r["outcome"] == "allowed")
    assert (
        change["principal"] == "api_key:k-admin"
        and change["status"] == 200
        and change["target"] == "PUT /api/v1/config"
    )
    listed = secure.agent(
        "audit", "list", "--json", "--principal", "api_key:k-viewer", "--action", "config.write"
    )
    assert [json.loads(line)["outcome"] for line in listed.splitlines()] == ["denied"]
    assert secure.agent("audit", "list", "--since", "2999-01-01") == ""
    with secure.db() as db:
        db.execute("UPDATE audit_log SET target = target || ' (edited)' WHERE id = ?", (rows[1]["id"],))
    broken = subprocess.run(
        [AGENT, "audit", "verify"], env=secure.env, capture_output=True, text=True, timeout=60
    )
    assert broken.returncode == 1
    assert f"row {rows[1]['id']} was changed after it was written" in broken.stderr
    with secure.db() as db:
        db.execute("UPDATE audit_log SET target = ? WHERE id = ?", (rows[1]["target"], rows[1]["id"]))
        db.execute("DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)")
    truncated = subprocess.run(
        [AGENT, "audit", "verify"], env=secure.env, capture_output=True, text=True, timeout=60
    )
    assert truncated.returncode == 1 and "rows were removed" in truncated.stderr


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_a_sensitive_change_is_durable_before_its_answer_and_a_lost_row_is_logged_and_counted(
    secure: SecureServer,
) -> None:
    def head() -> int:
        with closing(secure.db()) as db:
            return int(db.execute("SELECT seq FROM audit_head").fetchone()[0])

    def row_of(answer: httpx.Response) -> tuple[Any, ...] | None:
        with closing(secure.db()) as db:  # read from another connection
            found: tuple[Any, ...] | None = db.execute(
                "SELECT id, action, outcome, status FROM audit_log WHERE request_id = ?",
                (answer.headers["x-request-id"],),
            ).fetchone()
        return found

    def soon(answer: httpx.Response) -> tuple[Any, ...] | None:
        """A run start's row: written at once, but its answer does not wait for it."""
        deadline = time.monotonic() + 10
        while (found := row_of(answer)) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        return found

    with secure.as_role("operator") as operator, secure.as_role("admin") as admin:
        limits = admin.get("/api/v1/config").json()["limits"]
        for _ in range(5):  # the same limits written again: a change all the same, nothing altered
            changed = admin.put("/api/v1/config", json={"limits": {"max_steps": limits["max_steps"]}})
            assert changed.status_code == 200, changed.text
            assert row_of(changed) == (head(), "config.write", "allowed", 200)  # read at once: durable
            started = operator.post("/api/v1/agent/run", json={"input": "hi"})
            assert started.status_code == 200
            found = soon(started)
            assert found is not None and found[1:] == ("runs.start", "allowed", 200)
        with closing(secure.db()) as db:
            db.execute(
                "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log "
                "BEGIN SELECT RAISE(ABORT, 'audit rows refused'); END"
            )
            db.commit()
        before = head()
        try:
            answer = operator.post("/api/v1/agent/run", json={"input": "hi"})
            assert answer.status_code == 200  # the run happened; the answer says so
            log = secure.wait_for_log("audit rows could not be written")
            assert "audit rows refused" in log
            lost = re.search(r"^agent_audit_rows_lost_total ([0-9.]+)$", admin.get("/metrics").text, re.M)
            assert lost is not None and float(lost[1]) >= 1
        finally:
            with closing(secure.db()) as db:
                db.execute("DROP TRIGGER refuse_audit")
                db.commit()
        assert row_of(answer) is None and head() == before  # nothing half-written: the chain goes on
        answer = operator.post("/api/v1/agent/run", json={"input": "hi"})
        assert soon(answer) == (before + 1, "runs.start", "allowed", 200)
