"""Encryption at rest: no plaintext in the database file, one clear error for a wrong or missing
key, key rotation that survives interruption, and values that cannot be moved between rows."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agentstage.access.secrets import loose_permissions, resolve_reference
from agentstage.core.events import RunEvent, utc_now
from agentstage.core.records import ConversationRecord, RunRecord, SpanRecord
from agentstage.errors import ConfigError, StoreError
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service, build_store
from agentstage.store.base import Batch, ConversationTurn
from agentstage.store.crypto import generate_key, key_id, parse_key
from agentstage.types import RunStatus
from conftest import AGENT, make_settings, scripted_config
from http_api.conftest import Server, free_port, sse_events

# Text that must never appear in the database files while encryption is on.
INPUT_CHAT = "CONFIDENTIAL-BANANA-1471"
INPUT_REACT = "CONFIDENTIAL-MANGO-5190"
INPUT_FAIL = "CONFIDENTIAL-CHERRY-7761"
INPUT_STREAM = "CONFIDENTIAL-PAPAYA-3380"
INPUT_MESSAGE = "CONFIDENTIAL-LYCHEE-2054"
INPUT_BATCH = "CONFIDENTIAL-QUINCE-8812"
OUTPUT = "PURPLE-ELEPHANT-8823"
DELTA = "AMBER-TORTOISE-"
TOOL_EXPRESSION = "123456789*987654321"
TOOL_RESULT = "121932631112635269"
ANSWER = "TOOL-ANSWER-ZEBRA-3307"
FAILURE = "MODEL-FAILURE-QUOKKA-4471"
TITLE = "TITLE-WALRUS-5521"
METADATA = "META-OTTER-9931"
NEEDLES = [INPUT_CHAT, INPUT_REACT, INPUT_FAIL, INPUT_STREAM, INPUT_MESSAGE, INPUT_BATCH, OUTPUT,
           DELTA, TOOL_EXPRESSION, TOOL_RESULT, ANSWER, FAILURE, TITLE, METADATA]  # fmt: skip

SCRIPT: dict[str, Any] = {
    "rules": [
        {"match": "fail-", "error": {"code": "model_error", "message": FAILURE}},
        {"match": "chat-", "deltas": [DELTA, f"{OUTPUT} says hello"]},
    ],
    "responses": [
        {"text": "Computing.", "tool_calls": [{"name": "math.calculate", "arguments": {"expression": TOOL_EXPRESSION}}]},
        {"text": f"The product is {TOOL_RESULT}, {ANSWER}."},
    ],
}  # fmt: skip


def database_files(home: Path) -> list[Path]:
    return [home / f"agentstage.db{suffix}" for suffix in ("", "-wal", "-shm")]


def plaintext_found(home: Path, needles: list[str] = NEEDLES) -> list[str]:
    """Needles present anywhere in the database file, its WAL or its -shm, byte by byte."""
    blobs = [path.read_bytes() for path in database_files(home) if path.exists()]
    return [needle for needle in needles if any(needle.encode() in blob for blob in blobs)]


def write_key(path: Path) -> Path:
    path.write_text(generate_key() + "\n", encoding="utf-8")
    path.chmod(0o600)  # as a key file should be (a looser one is used, with a warning)
    return path


def kid_of(path: Path) -> str:
    return key_id(parse_key(path.read_text(encoding="utf-8"), "test"))


# through the real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("sealed-home")
    key = write_key(home / "store.key")
    server = Server(home, {"store": {"encryption_key": f"file:{key}"}})
    (home / "script.json").write_text(json.dumps(SCRIPT), encoding="utf-8")
    server.start()
    yield server
    server.stop()


def wait_done(http: httpx.Client, path: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body: dict[str, Any] = http.get(path).json()
        if body.get("done") or body.get("status") in {"completed", "failed", "cancelled"}:
            return body
        time.sleep(0.05)
    raise AssertionError(f"{path} never finished")


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_no_plaintext_reaches_the_database_file(sealed: Server) -> None:
    with sealed.client() as http:
        chat = http.post("/api/v1/agent/run", json={"input": f"chat- {INPUT_CHAT}", "mode": "chat"}).json()
        assert chat["status"] == "completed" and chat["output"] == f"{DELTA}{OUTPUT} says hello"
        react = http.post("/api/v1/agent/run", json={"input": f"sum {INPUT_REACT}", "mode": "react"}).json()
        assert react["status"] == "completed" and ANSWER in react["output"]
        failed = http.post("/api/v1/agent/run", json={"input": f"fail- {INPUT_FAIL}", "mode": "chat"}).json()
        assert failed["status"] == "failed" and FAILURE in failed["error"]["message"]
        with http.stream(
            "POST", "/api/v1/agent/run/stream", json={"input": f"chat- {INPUT_STREAM}", "mode": "chat"}
        ) as response:
            streamed = list(sse_events(response.iter_lines()))
        assert any(e["event"] == "message.delta" and e["data"]["data"]["text"] == DELTA for e in streamed)

        conversation = http.post(
            "/api/v1/conversations", json={"title": TITLE, "metadata": {"note": METADATA}}
        )
        conversation_id = conversation.json()["id"]
        sent = http.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"input": f"chat- {INPUT_MESSAGE}"}
        )
        assert sent.json()["status"] == "completed"
        batch = http.post("/api/v1/agent/batch", json={"inputs": [f"chat- {INPUT_BATCH}"], "mode": "chat"})
        progress = wait_done(http, f"/api/v1/agent/batch/{batch.json()['batch_id']}")
        assert progress["counts"] == {"completed": 1}

        # Everything reads back as it was written ...
        status = http.get(f"/api/v1/agent/status/{react['run_id']}").json()
        assert status["input"] == f"sum {INPUT_REACT}" and ANSWER in status["output"]
        with http.stream("GET", f"/api/v1/agent/runs/{react['run_id']}/events") as response:
            events = list(sse_events(response.iter_lines()))
        calls = [e["data"]["data"] for e in events if e["event"] == "tool.call"]
        results = [e["data"]["data"] for e in events if e["event"] == "tool.result"]
        assert calls[0]["arguments"] == {"expression": TOOL_EXPRESSION}
        assert results[0]["output"] == {"result": TOOL_RESULT}
        history = http.get(f"/api/v1/conversations/{conversation_id}/history").json()["messages"]
        assert [m["content"] for m in history] == [f"chat- {INPUT_MESSAGE}", f"{DELTA}{OUTPUT} says hello"]
        assert http.get(f"/api/v1/conversations/{conversation_id}").json()["metadata"] == {"note": METADATA}
        assert http.get(f"/api/v1/conversations/{conversation_id}").json()["title"] == TITLE

        # ... lists and filters on metadata keep working ...
        only_failed = http.get("/api/v1/agent/runs", params={"status": "failed"}).json()
        assert only_failed["total"] == 1 and only_failed["runs"][0]["run_id"] == failed["run_id"]
        assert only_failed["runs"][0]["input"] == f"fail- {INPUT_FAIL}"
        completed = http.get("/api/v1/agent/runs", params={"status": "completed"}).json()
        assert {chat["run_id"], react["run_id"]} <= {r["run_id"] for r in completed["runs"]}

        # ... and the key cannot be changed or exported over the network.
        refused = http.put("/api/v1/config", json={"store": {"encryption_key": "env:HOME"}})
        assert refused.status_code == 403

    assert (sealed.home / "agentstage.db-wal").exists()
    assert plaintext_found(sealed.home) == []


def test_a_key_the_server_lacks_is_503_on_readiness_and_on_reads(sealed: Server, tmp_path: Path) -> None:
    """Another process seals with a key this server does not have: readiness and the reads that
    need it say so (503, naming the key); re-encrypting with the server's key heals both."""
    key_a = sealed.home / "store.key"
    key_b = write_key(tmp_path / "other.key")
    env = {**sealed.env, "AGENT_STORE__ENCRYPTION_KEY": f"file:{key_b}",
           "AGENT_STORE__DECRYPTION_KEYS": json.dumps([f"file:{key_a}"])}  # fmt: skip
    made = subprocess.run([AGENT, "run", "chat- sealed with key B", "--mode", "chat", "--output", "json"],
                          env=env, capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    run_id = json.loads(made.stdout)["run_id"]

    ready = httpx.get(f"{sealed.url}/health/ready", timeout=10)
    assert ready.status_code == 503
    assert "encryption_key_unknown" in ready.json()["checks"]["store"]
    assert kid_of(key_b) in ready.json()["checks"]["store"]
    with sealed.client() as http:
        response = http.get(f"/api/v1/agent/status/{run_id}")
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert (
            response.json()["code"] == "encryption_key_unknown" and kid_of(key_b) in response.json()["detail"]
        )

    env = {**sealed.env, "AGENT_STORE__DECRYPTION_KEYS": json.dumps([f"file:{key_b}"])}
    subprocess.run([AGENT, "store", "rotate-key"], env=env, capture_output=True, timeout=60, check=True)
    assert httpx.get(f"{sealed.url}/health/ready", timeout=10).status_code == 200
    with sealed.client() as http:
        assert http.get(f"/api/v1/agent/status/{run_id}").json()["input"] == "chat- sealed with key B"


# start-up errors ------------------------------------------------------------------------------------


def agent(
    home: Path, *args: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    env.update({"AGENT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200", **(extra_env or {})})
    return subprocess.run([AGENT, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def configure(home: Path, store: dict[str, Any], **extra: Any) -> None:
    config = scripted_config(SCRIPT, store=store, **extra)
    (home / "config.json").write_text(json.dumps(config), encoding="utf-8")


def assert_one_red_line(done: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr and INPUT_CHAT not in done.stdout
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_a_wrong_or_missing_key_is_one_clear_error(tmp_path: Path) -> None:
    key_a, key_b = write_key(tmp_path / "a.key"), write_key(tmp_path / "b.key")
    asyncio.run(_make_runs(tmp_path, {"encryption_key": f"file:{key_a}"}, [(f"chat- {INPUT_CHAT}", "chat")]))

    configure(tmp_path, {"encryption_key": f"file:{key_b}"})  # the wrong key
    for args in (["runs", "list"], ["serve", "--port", str(free_port())]):
        assert_one_red_line(agent(tmp_path, *args), kid_of(key_a), "not among the configured keys")

    configure(tmp_path, {})  # no key at all
    assert_one_red_line(agent(tmp_path, "runs", "list"), kid_of(key_a), "encryption is not configured")

    configure(tmp_path, {"encryption_key": "env:AGENTSTAGE_TEST_KEY"})  # a key that is not there
    assert_one_red_line(agent(tmp_path, "serve", "--port", "0"), "AGENTSTAGE_TEST_KEY", "not set")
    short = agent(tmp_path, "runs", "list", extra_env={"AGENTSTAGE_TEST_KEY": "too-short"})
    assert_one_red_line(short, "32 random bytes")
    assert "too-short" not in short.stderr  # never the value, only where it lives


def test_a_key_file_others_may_read_is_named_with_the_fix(tmp_path: Path) -> None:
    key = write_key(tmp_path / "store.key")
    configure(tmp_path, {"encryption_key": f"file:{key}"})
    quiet = agent(tmp_path, "runs", "list")
    assert quiet.returncode == 0 and "chmod" not in quiet.stderr, quiet.stderr
    for mode, who in ((0o640, "group"), (0o604, "others"), (0o644, "group and others")):
        key.chmod(mode)
        warned = agent(tmp_path, "runs", "list")
        assert warned.returncode == 0, warned.stderr  # used, as ssh would not, but said plainly
        lines = [line for line in warned.stderr.splitlines() if "store.encryption_key" in line]
        assert len(lines) == 1, warned.stderr
        assert f"open to {who} (mode {mode:04o})" in lines[0] and f"chmod 600 {key}" in lines[0]
        assert key.read_text(encoding="utf-8").strip() not in warned.stderr


def test_every_secret_file_is_checked_the_same_way(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = tmp_path / "jwt.secret"
    secret.write_text("a-shared-secret-of-at-least-thirty-two-bytes!", encoding="utf-8")
    secret.chmod(0o660)
    with caplog.at_level(logging.WARNING, logger="agentstage.security"):
        for _ in range(3):
            assert resolve_reference(f"file:{secret}", "security.jwt.secret").startswith("a-shared")
    warned = [r.getMessage() for r in caplog.records if "security.jwt.secret" in r.getMessage()]
    assert len(warned) == 1 and "open to group (mode 0660)" in warned[0]  # once per file and process
    secret.chmod(0o600)
    assert loose_permissions(secret) is None


def test_settings_keep_the_key_a_reference_and_private(home: Path) -> None:
    key = generate_key()
    with pytest.raises(ConfigError, match="never hold the key itself"):
        make_settings(home, {"store": {"encryption_key": key}})
    sealed = {"store": {"encryption_key": "env:STORE_KEY"}}
    for exposed in (
        {"secrets": {"allowed_env": ["STORE_KEY"]}},
        {"environment_allowlist": ["LANG", "STORE_KEY"]},
        {"providers": {"leak": {"type": "openai", "api_key": "env:STORE_KEY"}}},
    ):
        with pytest.raises(ConfigError, match="STORE_KEY holds a store encryption key"):
            make_settings(home, {**sealed, **exposed})


# rotation -----------------------------------------------------------------------------------------


async def _make_runs(home: Path, store: dict[str, Any], inputs: list[tuple[str, str]]) -> list[str]:
    """Runs (and one conversation message) made through the real run service."""
    settings = make_settings(home, scripted_config(SCRIPT, store=store))
    async with build_service(settings) as service:
        ids = []
        for text, mode in inputs:
            record = await service.start(RunRequest(input=text, mode=mode))
            ids.append((await service.wait(record.id)).id)
        conversation = ConversationRecord(id="c-1", title=TITLE, metadata={"note": METADATA},
                                          created_at=utc_now(), updated_at=utc_now())  # fmt: skip
        await service.store.create_conversation(conversation)
        record = await service.start(
            RunRequest(input=f"chat- {INPUT_MESSAGE}", mode="chat", conversation_id="c-1")
        )
        await service.wait(record.id)
        return ids


def status_json(home: Path) -> dict[str, Any]:
    done = agent(home, "store", "status", "--json")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def rotate(home: Path, store: dict[str, Any]) -> str:
    configure(home, store)
    done = agent(home, "store", "rotate-key")
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _report_and_run(home: Path, store: dict[str, Any], run_id: str) -> tuple[Any, RunRecord | None]:
    opened = build_store(make_settings(home, scripted_config(SCRIPT, store=store)))
    await opened.open()
    try:
        return await opened.key_report(), await opened.get_run(run_id)
    finally:
        await opened.close()


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_rotate_key_encrypts_rotates_and_decrypts_the_whole_store(tmp_path: Path) -> None:
    home = tmp_path
    inputs = [
        (f"chat- {INPUT_CHAT}", "chat"),
        (f"sum {INPUT_REACT}", "react"),
        (f"fail- {INPUT_FAIL}", "chat"),
    ]
    ids = asyncio.run(_make_runs(home, {}, inputs))
    expected = [INPUT_CHAT, INPUT_REACT, INPUT_FAIL, INPUT_MESSAGE, OUTPUT, TOOL_EXPRESSION, FAILURE, TITLE]
    assert plaintext_found(home, expected) == expected  # the search finds what is there

    key_a, key_b = write_key(tmp_path / "a.key"), write_key(tmp_path / "b.key")
    configure(home, {"encryption_key": f"file:{key_a}"})
    before = status_json(home)
    assert before["encryption"] == "on" and before["current_key"] == kid_of(key_a)
    assert before["rows_to_reencrypt"]["runs"] == 4 and before["rows_to_reencrypt"]["run_events"] > 20
    assert before["rows_to_reencrypt"]["conversation_messages"] == 2
    assert "spans" in before["rows_to_reencrypt"]  # a run's own spans are derived from its sealed events
    assert f"with key {kid_of(key_a)}" in rotate(home, {"encryption_key": f"file:{key_a}"})
    assert plaintext_found(home, expected) == []  # and the replaced values linger nowhere in the files

    rotated = rotate(home, {"encryption_key": f"file:{key_b}", "decryption_keys": [f"file:{key_a}"]})
    assert f"no longer needed: key {kid_of(key_a)}" in rotated
    report, record = asyncio.run(_report_and_run(home, {"encryption_key": f"file:{key_b}"}, ids[1]))
    assert report.listed == [kid_of(key_b)] and not any(report.pending.values())
    assert record is not None and record.input == f"sum {INPUT_REACT}" and ANSWER in (record.output or "")

    assert "the store is now in the clear" in rotate(home, {"decryption_keys": [f"file:{key_b}"]})
    report, _ = asyncio.run(_report_and_run(home, {}, ids[1]))
    assert report.current is None and report.listed == [] and not any(report.pending.values())
    configure(home, {})
    shown = agent(home, "runs", "show", ids[1], "--json")
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["input"] == f"sum {INPUT_REACT}" and ANSWER in body["output"]
    calls = [e["data"]["arguments"] for e in body["events"] if e["type"] == "tool.call"]
    assert calls == [{"expression": TOOL_EXPRESSION}]


SPAN_CANARY = "SPAN-CANARY-NARWHAL-6604"


def run_json(home: Path, text: str, mode: str) -> dict[str, Any]:
    done = agent(home, "run", text, "--mode", mode, "--json")
    assert done.returncode == 0, done.stderr
    body: dict[str, Any] = json.loads(done.stdout)
    return body


def span_columns(home: Path, run_id: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(home / "agentstage.db") as database:
        query = "SELECT attributes, events, status_message FROM spans WHERE run_id = ?"
        return database.execute(query, (run_id,)).fetchall()


async def _keep_span(home: Path, store: dict[str, Any], run_id: str, content: str) -> None:
    """A span kept as a row for the run (as the doors' spans are, and as runs' spans were by
    earlier versions), carrying content."""
    opened = build_store(make_settings(home, scripted_config(SCRIPT, store=store)))
    await opened.open()
    try:
        span = SpanRecord(secrets.token_hex(16), secrets.token_hex(8), "kept.row", 1, 2, run_id=run_id,
                          status="error", status_message=f"failed on {content}",
                          attributes={"gen_ai.input.messages": content},
                          events=[{"name": "note", "time_ns": 2, "attributes": {"text": content}}])  # fmt: skip
        await opened.add_spans([span])
    finally:
        await opened.close()


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_span_content_is_sealed_and_trace_show_still_shows_it(tmp_path: Path) -> None:
    """With content capture on, spans carry the prompt, tool arguments and answers. A run's spans
    are derived from its events (sealed like all of a run's content) when read; spans kept as rows
    are sealed on write, and by rotate-key when written before. `agent trace show` opens both."""
    home, key = tmp_path, write_key(tmp_path / "a.key")
    tracing = {"capture_content": True}
    configure(home, {}, tracing=tracing)
    before = run_json(home, f"sum {SPAN_CANARY}-before", "react")  # written in the clear
    asyncio.run(_keep_span(home, {}, before["run_id"], f"{SPAN_CANARY}-row-before"))
    in_clear = [f"{SPAN_CANARY}-before", f"{SPAN_CANARY}-row-before"]
    assert plaintext_found(home, in_clear) == in_clear

    configure(home, {"encryption_key": f"file:{key}"}, tracing=tracing)
    assert status_json(home)["rows_to_reencrypt"]["spans"] > 0
    after = run_json(home, f"sum {SPAN_CANARY}-after", "react")  # sealed as it is written
    assert ANSWER in after["output"]
    asyncio.run(
        _keep_span(home, {"encryption_key": f"file:{key}"}, after["run_id"], f"{SPAN_CANARY}-row-after")
    )
    assert agent(home, "store", "rotate-key").returncode == 0
    assert not any(status_json(home)["rows_to_reencrypt"].values())

    assert plaintext_found(home, [SPAN_CANARY, TOOL_EXPRESSION, ANSWER]) == []
    for run in (before, after):
        rows = span_columns(home, run["run_id"])
        assert rows and all(str(a).startswith('"\\u0001v1:') and str(e).startswith('"\\u0001v1:')
                            for a, e, _ in rows)  # fmt: skip
        shown = agent(home, "trace", "show", run["run_id"], "--attributes")
        assert shown.returncode == 0, shown.stderr
        assert SPAN_CANARY in shown.stdout and TOOL_EXPRESSION in shown.stdout
        spans = json.loads(agent(home, "trace", "show", run["run_id"], "--json").stdout)
        derived = [span for span in spans if span["name"].startswith("invoke_agent")]
        assert derived and SPAN_CANARY in json.dumps(derived[0]["attributes"])  # from the sealed events
        (row,) = [span for span in spans if span["name"] == "kept.row"]
        assert f"{SPAN_CANARY}-row-" in row["attributes"]["gen_ai.input.messages"]
        assert row["status_message"].startswith("failed on") and row["events"][0]["attributes"]["text"]


class Interrupted(Exception):
    pass


@pytest.mark.anyio
async def test_rotation_is_resumable_after_an_interruption(tmp_path: Path) -> None:
    ids = await _make_runs(tmp_path, {}, [(f"chat- {INPUT_CHAT} {n}", "chat") for n in range(8)])
    key = write_key(tmp_path / "a.key")
    store = build_store(
        make_settings(tmp_path, scripted_config(SCRIPT, store={"encryption_key": f"file:{key}"}))
    )
    await store.open()
    try:
        total = sum((await store.key_report()).pending.values())
        seen: list[tuple[str, int]] = []

        def stop_after_one_page(table: str, rows: int) -> None:
            seen.append((table, rows))
            raise Interrupted

        with pytest.raises(Interrupted):
            await store.reencrypt(stop_after_one_page, page=5)
        left = sum((await store.key_report()).pending.values())
        assert seen == [("runs", 5)] and left == total - 5  # the page that finished is kept

        result = await store.reencrypt(page=5)
        assert result.rows == total - 5
        assert not any((await store.key_report()).pending.values())
        records = {r.id: r for r in await store.list_runs(limit=100)}
        assert all(records[run_id].input == f"chat- {INPUT_CHAT} {n}" for n, run_id in enumerate(ids))
    finally:
        await store.close()
    assert plaintext_found(tmp_path, [INPUT_CHAT, OUTPUT]) == []


# the attacker's tests: values bound to their rows -----------------------------------------------


@pytest.mark.anyio
@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
async def test_a_value_moved_to_another_row_is_refused_not_misread(tmp_path: Path) -> None:
    key = write_key(tmp_path / "a.key")
    store_config = {"encryption_key": f"file:{key}"}
    first, second = await _make_runs(
        tmp_path, store_config, [(f"chat- {INPUT_CHAT}", "chat"), ("chat- other", "chat")]
    )
    with sqlite3.connect(tmp_path / "agentstage.db") as db:
        (stolen,) = db.execute("SELECT input FROM runs WHERE id = ?", (first,)).fetchone()
        db.execute("UPDATE runs SET input = ? WHERE id = ?", (stolen, second))
        one, _ = db.execute(
            "SELECT data FROM run_events WHERE run_id = ? AND seq IN (1, 2) ORDER BY seq", (first,)
        )
        db.execute("UPDATE run_events SET data = ? WHERE run_id = ? AND seq = 2", (one[0], first))

    store = build_store(make_settings(tmp_path, scripted_config(SCRIPT, store=store_config)))
    await store.open()
    try:
        with pytest.raises(StoreError) as moved:
            await store.get_run(second)
        assert moved.value.code == "encrypted_value_invalid"
        assert f"runs.input of {second!r}" in moved.value.message
        with pytest.raises(StoreError, match=r"run_events\.data"):
            await store.events(first)
        assert (await store.get_run(first)) is not None  # the untouched row still opens
    finally:
        await store.close()
    configure(tmp_path, store_config)
    shown = agent(tmp_path, "runs", "show", second)
    assert shown.returncode == 1 and shown.stderr.count("\n") == 1 and "altered or copied" in shown.stderr


@pytest.mark.anyio
async def test_plaintext_that_looks_sealed_is_still_plaintext(tmp_path: Path) -> None:
    lookalike = "\x01v1:deadbeef:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    (run_id,) = await _make_runs(tmp_path, {}, [(lookalike, "chat")])
    store = build_store(make_settings(tmp_path, scripted_config(SCRIPT)))
    await store.open()
    try:
        assert (await store.get_run(run_id)).input == lookalike  # type: ignore[union-attr]
        await store.check_encryption()
    finally:
        await store.close()
    key = write_key(tmp_path / "a.key")
    store = build_store(
        make_settings(tmp_path, scripted_config(SCRIPT, store={"encryption_key": f"file:{key}"}))
    )
    await store.open()
    try:
        await store.reencrypt()
        assert (await store.get_run(run_id)).input == lookalike  # type: ignore[union-attr]
    finally:
        await store.close()


@pytest.mark.anyio
async def test_the_sqlalchemy_write_path_seals_the_same_way(tmp_path: Path) -> None:
    """The path other databases take (SQLAlchemy statements) seals through the same keyring and
    reads back through the same code as the hand-written SQLite path."""
    from agentstage.store.sql import _write_run

    key = write_key(tmp_path / "a.key")
    store = build_store(
        make_settings(tmp_path, scripted_config(SCRIPT, store={"encryption_key": f"file:{key}"}))
    )
    await store.open()
    try:
        now = utc_now()
        await store.create_conversation(
            ConversationRecord(id="c", title=TITLE, created_at=now, updated_at=now)
        )
        writes = Batch().of("r")
        writes.new_run = RunRecord(id="r", status=RunStatus.RUNNING, input=INPUT_CHAT, mode="chat", profile="t",
                                   options={"params": {"stop": [METADATA]}}, created_at=now)  # fmt: skip
        writes.events.append(RunEvent("r", 1, now, type="run.queued", data={"input": INPUT_CHAT, "mode": "chat",
                                                                          "profile": "t"}))  # fmt: skip
        writes.events.append(RunEvent("r", 2, now, type="run.completed", data={"output": OUTPUT, "usage": {},
                                                                             "cost": 0.0}))  # fmt: skip
        writes.updates.update(output=OUTPUT, error_message=FAILURE, status=RunStatus.COMPLETED)
        writes.turns.append(ConversationTurn("c", "r", [("user", INPUT_MESSAGE)], now))
        writes.snapshots["h" * 64] = {"schema_version": 1, "input": INPUT_STREAM}
        async with store.engine.begin() as connection:
            await _write_run(connection, writes, store.keys)
        span = SpanRecord("a" * 32, "b" * 16, "chat t", 1, 2, run_id="r", status="error",
                          status_message=f"failed on {FAILURE}", attributes={"gen_ai.input.messages": INPUT_BATCH},
                          events=[{"name": "gen_ai.choice", "time_ns": 2, "attributes": {"text": ANSWER}}])  # fmt: skip
        await store._insert_spans([span])
        record = await store.get_run("r")
        assert record is not None and (record.input, record.output) == (INPUT_CHAT, OUTPUT)
        assert record.error_message == FAILURE and record.options == {"params": {"stop": [METADATA]}}
        assert (await store.events("r"))[0].data["input"] == INPUT_CHAT
        assert [m.content for m in await store.messages("c")] == [INPUT_MESSAGE]
        assert await store.snapshot("h" * 64) == {"schema_version": 1, "input": INPUT_STREAM}
        assert await store.spans(run_id="r") == [span]
        assert not any((await store.key_report()).pending.values())
    finally:
        await store.close()
    needles = [INPUT_CHAT, OUTPUT, FAILURE, METADATA, INPUT_MESSAGE, INPUT_STREAM, TITLE, INPUT_BATCH, ANSWER]
    assert plaintext_found(tmp_path, needles) == []
