"""The store in trouble: locked by another process, out of disk, its server killed under load.
What a client is told always matches what the store keeps, and the server recovers by itself."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import seqs, server_with, stream_run

pytestmark = pytest.mark.anyio

SLOW = {"match": "slow", "deltas": [f"s{i} " for i in range(60)], "delta_delay": 0.05}
STREAM = {"match": "stream", "deltas": [f"t{i} " for i in range(40)], "delta_delay": 0.05}


def hold_lock(database: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process that holds the store's write lock (BEGIN EXCLUSIVE) for ``seconds``."""
    code = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(database)!r}, isolation_level=None, timeout=30)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "c.execute('COMMIT')\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


async def ready(http: httpx.AsyncClient, within: float) -> httpx.Response:
    deadline = time.monotonic() + within
    while True:
        answer = await http.get("/health/ready")
        if answer.status_code == 200 or time.monotonic() > deadline:
            return answer
        await asyncio.sleep(0.1)


async def ended(http: httpx.AsyncClient, run_id: str, within: float) -> dict[str, Any]:
    """The run's stored status once it is terminal (an ending the store could not take at first is
    written as soon as it can)."""
    deadline = time.monotonic() + within
    while True:
        status: dict[str, Any] = (await http.get(f"/api/v1/agent/status/{run_id}")).json()
        if status["status"] in {"completed", "failed", "cancelled"} or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.1)


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
async def test_a_locked_store_refuses_new_runs_quickly_and_recovers(tmp_path: Path) -> None:
    server = server_with(tmp_path, [SLOW], {"store": {"write_timeout": 2}}).start()
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as http:
            in_flight = asyncio.ensure_future(stream_run(http, {"input": "slow", "mode": "chat"}))
            await asyncio.sleep(0.5)
            locker = hold_lock(tmp_path / "agentstage.db", 8)
            try:
                await asyncio.sleep(3)  # longer than write_timeout: the store is known to be locked
                started = time.monotonic()
                refused = await http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
                answered_in = time.monotonic() - started
                not_ready = await http.get("/health/ready")
                run_id, frames = await in_flight
            finally:
                locker.communicate(timeout=30)
            back = await ready(http, within=10)
            after = await http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
            stored = await ended(http, run_id, within=5)
    finally:
        server.stop()
    assert refused.status_code == 503 and refused.json()["code"] == "store_unavailable"
    assert int(refused.headers["retry-after"]) >= 1 and answered_in < 5
    assert not_ready.status_code == 503 and "store" in not_ready.json()["checks"]
    assert not not_ready.json()["checks"]["store"].startswith("ok")
    last = frames[-1]
    told = (
        last["data"]["data"]["error"]["code"] if last.get("event") == "run.failed" else last["data"]["code"]
    )
    assert told == "store_unavailable"
    assert stored["status"] == "failed" and stored["error"]["code"] == "store_unavailable"
    assert seqs(frames) == list(range(1, len(seqs(frames)) + 1))
    assert back.status_code == 200, back.text
    assert after.status_code == 200 and after.json()["status"] == "completed"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: the store's directory on a disk that fills up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    # Unbuffered: a buffered file would still hold the part that did not fit, and closing it would
    # fail with "no space left" (depending on how the free space happened to end).
    with filler.open("wb", buffering=0) as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass
    return filler


@pytest.mark.sqlite_only  # reads, edits or locks the SQLite file itself
async def test_a_full_disk_refuses_runs_with_507_and_recovers_when_space_returns(
    small_disk: Path, tmp_path: Path
) -> None:
    home = small_disk / "home"
    home.mkdir()
    server = server_with(home, [STREAM], {"store": {"write_timeout": 1}})
    server.log_path = tmp_path / "server.log"  # the log must not be on the full disk
    server.start()
    outcomes: list[tuple[int, dict[str, Any]]] = []
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as http:
            assert (
                await http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
            ).status_code == 200
            filler = fill(small_disk)
            for _ in range(100):  # the log may have room for a few more pages before it needs to grow
                answer = await http.post("/api/v1/agent/run", json={"input": "stream", "mode": "chat"})
                outcomes.append((answer.status_code, answer.json()))
                if answer.status_code == 507:
                    break
            full = await http.get("/health/ready")
            filler.unlink()
            back = await ready(http, within=5)
            after = await http.post("/api/v1/agent/run", json={"input": "hi", "mode": "chat"})
            listed = (await http.get("/api/v1/agent/runs", params={"limit": 200})).json()["runs"]
    finally:
        server.stop()
    status, body = outcomes[-1]
    assert status == 507 and body["code"] == "storage_full", outcomes[-1]
    assert str(home) in body["detail"] and "bytes free" in body["detail"]
    for status, body in outcomes[:-1]:  # what a client was told is what the store kept
        assert status == 200
        stored = next(r for r in listed if r["run_id"] == body["run_id"])
        assert (stored["status"], stored.get("error")) == (body["status"], body.get("error"))
    assert full.status_code == 503 and "storage_full" in full.json()["checks"]["store"]
    assert back.status_code == 200, back.text
    assert after.status_code == 200 and after.json()["status"] == "completed"
    with sqlite3.connect(home / "agentstage.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_sigkill_under_load_loses_nothing_committed(tmp_path: Path) -> None:
    server = server_with(tmp_path, [STREAM]).start()
    seen: dict[str, list[int]] = {}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as http:
            busy = asyncio.Event()

            async def follow(index: int) -> None:
                try:
                    async with http.stream(
                        "POST", "/api/v1/agent/run/stream", json={"input": f"stream {index}", "mode": "chat"}
                    ) as response:
                        ids = seen.setdefault(response.headers["x-run-id"], [])
                        async for line in response.aiter_lines():
                            if line.startswith("id: "):
                                ids.append(int(line[4:]))
                                if sum(len(ids) for ids in seen.values()) >= 200:
                                    busy.set()
                except httpx.HTTPError:
                    pass  # the server died under it

            followers = [asyncio.ensure_future(follow(i)) for i in range(20)]
            await busy.wait()
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)
            await asyncio.gather(*followers)
        server.process.wait()
        server.process = None
        server.start()
        async with httpx.AsyncClient(base_url=server.url, headers=server.headers, timeout=30) as http:
            resumed: dict[str, list[int]] = {}
            for run_id, ids in seen.items():
                last = ids[-1] if ids else 0
                async with http.stream(
                    "GET", f"/api/v1/agent/runs/{run_id}/events", headers={"Last-Event-ID": str(last)}
                ) as response:
                    resumed[run_id] = [
                        int(line[4:]) async for line in response.aiter_lines() if line.startswith("id: ")
                    ]
            statuses = {run_id: (await http.get(f"/api/v1/agent/status/{run_id}")).json() for run_id in seen}
    finally:
        server.stop()
    assert len(seen) == 20
    for run_id, ids in seen.items():
        whole = ids + resumed[run_id]
        assert whole == list(range(1, len(whole) + 1)), run_id  # every event once, in order
        status = statuses[run_id]
        assert status["status"] in {"completed", "failed"}
        if status["status"] == "failed":
            assert status["error"]["code"] == "worker_lost"
