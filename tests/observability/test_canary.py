"""A canary secret never appears in anything written: it is placed in an environment variable, a
configuration value and run inputs (and the model repeats one), then every log line, span (in the
store and at the OTLP receiver, with message content on spans turned on), event (stored and
streamed), snapshot, record and file that ``agent debug`` saves is searched for it."""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AGENT

from .conftest import ObservedServer, Receiver, scripted

pytestmark = pytest.mark.timeout(180)


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
def test_the_canary_never_reaches_a_log_span_event_or_snapshot(
    receiver: tuple[Receiver, int], tmp_path: Path
) -> None:
    collector, port = receiver
    from_env, from_config = f"cnry-env-{secrets.token_hex(10)}", f"cnry-cfg-{secrets.token_hex(10)}"
    bearer = f"Bearer {secrets.token_hex(16)}"  # a credential by its shape, known to nobody
    script = {
        "responses": [
            {
                "text": "Checking.",
                "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "6*7"}}],
            },
            {"text": f"Done; I will not repeat {from_config}."},
        ]
    }
    config = scripted(script, tracing={"capture_content": True})
    config["providers"]["s"]["api_key"] = from_config  # a literal secret in the config file
    env = {
        "CANARY_API_KEY": from_env,
        "AGENT_LOG_LEVEL": "trace",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
    }
    home = tmp_path / "home"
    home.mkdir()
    server = ObservedServer(home, config, env).start()
    question = f"Use {from_env} and {from_config}; the header was 'Authorization: {bearer}'. What is 6*7?"
    streamed = ""
    try:
        with server.client() as client:
            result = client.post("/api/v1/agent/run", json={"input": question, "mode": "react"}).json()
            with client.stream(
                "POST", "/api/v1/agent/run/stream", json={"input": question, "mode": "react"}
            ) as sse:
                streamed = "".join(sse.iter_text())
            snapshot = client.get(f"/api/v1/agent/status/{result['run_id']}").text
        collector.wait_for(lambda s: s["attributes"].get("agentstage.run_id") == result["run_id"]
                           and s["name"].startswith("invoke_agent"))  # fmt: skip
    finally:
        server.stop()
    assert result["status"] == "completed"

    cli_env = {**server.env, "AGENT_LOG_FORMAT": "json"}
    ran = subprocess.run([AGENT, "run", question, "--mode", "react"], env=cli_env, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    saved = tmp_path / "saved"
    debugged = subprocess.run([AGENT, "debug", question, "--mode", "react", "--trace", "--verbose",
                               "--save-logs", str(saved)], env=cli_env, capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    assert ran.returncode == 0 and debugged.returncode == 0, ran.stderr + debugged.stderr
    time.sleep(0.5)

    written = {
        "server log": server.log(),
        "SSE stream": streamed,
        "status answer": snapshot,
        "agent run output": ran.stdout + ran.stderr,
        "agent debug output": debugged.stdout + debugged.stderr,
        "OTLP export": b"".join(collector.raw).decode("utf-8", "replace"),
        **{f"saved {p.name}": p.read_text(encoding="utf-8") for p in saved.iterdir()},
        **database(home / "agentstage.db"),
    }
    for canary in (from_env, from_config, bearer.split()[1]):
        leaks = [where for where, text in written.items() if canary in text]
        assert leaks == [], f"{canary!r} leaked into {leaks}"

    # The masker really ran (a control against a test that could not fail).
    assert "Use *** and ***" in written["table runs"]
    assert "Authorization: Bearer ***" in written["table run_events"]
    assert "I will not repeat ***" in written["table run_events"]
    # a run's spans are derived from its stored events when read: as agent debug saved them
    assert "gen_ai.input.messages" in written["saved spans.json"] and "***" in written["saved spans.json"]
    assert "gen_ai.input.messages" in written["OTLP export"]
    assert json.loads(written["saved snapshot.json"])["input"].startswith("Use ***")
    lines = [json.loads(line) for line in written["server log"].splitlines() if line.startswith("{")]
    assert any(line.get("level") == "TRACE" for line in lines)  # the most detailed level was on


def database(path: Path) -> dict[str, str]:
    """Every table's rows as text, and the raw bytes of the file and its WAL."""
    found: dict[str, str] = {}
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            found[f"table {table}"] = json.dumps(rows, default=str, ensure_ascii=False)
    for file in path.parent.glob(path.name + "*"):
        found[f"file {file.name}"] = file.read_bytes().decode("utf-8", "replace")
    return found
