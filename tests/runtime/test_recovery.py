"""Processes that die or are interrupted mid-run: nothing recorded is lost."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import time
from typing import Any

import pytest

from conftest import Cli

SLOW = {"responses": [{"deltas": [f"word{i} " for i in range(600)], "delta_delay": 0.05}]}


def wait_for_progress(
    cli: Cli, process: subprocess.Popen[str], min_seq: int = 6, timeout: float = 60
) -> dict[str, Any]:
    """Watch the store file (read-only, from this process) until the run has written some events,
    then read the run through the CLI, from another process."""
    deadline = time.monotonic() + timeout
    database = cli.home / "agentstage.db"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        row = None
        if database.exists():
            with (
                contextlib.suppress(sqlite3.OperationalError),
                sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection,
            ):  # the schema may not be there yet
                row = connection.execute(
                    "SELECT run_id, max(seq) FROM run_events GROUP BY run_id ORDER BY run_id DESC LIMIT 1"
                ).fetchone()
        if row and row[1] >= min_seq:
            return dict(json.loads(cli("runs", "show", row[0], "--json").stdout))
        time.sleep(0.05)
    raise AssertionError("the run made no progress")


@pytest.mark.sqlite_only  # reads or poisons the SQLite file itself
def test_a_killed_process_leaves_a_worker_lost_run_with_its_events(cli: Cli) -> None:
    cli.script(SLOW)
    process = cli.popen("run", "count slowly", "--mode", "chat")
    try:
        before = wait_for_progress(cli, process)
        assert before["status"] == "running"  # a live owner is never declared lost
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    after = json.loads(cli("runs", "show", before["run_id"], "--json").stdout)
    assert after["status"] == "failed"
    assert after["error"]["code"] == "worker_lost"
    events = after["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[: len(before["events"])] == before["events"]
    assert events[-1]["type"] == "run.failed" and events[-1]["data"]["error"]["code"] == "worker_lost"
    assert sum(e["type"] == "run.failed" for e in events) == 1
    again = json.loads(cli("runs", "show", before["run_id"], "--json").stdout)
    assert again["events"] == events  # recovery happens once


@pytest.mark.sqlite_only  # reads or poisons the SQLite file itself
def test_ctrl_c_cancels_the_run_and_exits_130(cli: Cli) -> None:
    cli.script(SLOW)
    process = cli.popen("run", "count slowly", "--mode", "chat")
    try:
        before = wait_for_progress(cli, process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "cancelled · run" in stderr
    after = json.loads(cli("runs", "show", before["run_id"], "--json").stdout)
    assert after["status"] == "cancelled"
    last = after["events"][-1]
    assert last["type"] == "run.cancelled" and "Ctrl-C" in last["data"]["reason"]
    assert last["data"]["partial_output"].startswith("word0 word1")
    assert stdout.startswith("word0 word1")
