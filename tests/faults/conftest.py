"""Helpers for the fault suite: a real server whose script the test chooses, and SSE streams read
concurrently with a real async client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from http_api.conftest import Server


def server_with(home: Path, rules: list[dict[str, Any]], config: dict[str, Any] | None = None) -> Server:
    """A server (not started) whose scripted model follows ``rules`` before the usual ones."""
    server = Server(home, config)
    script = json.loads((home / "script.json").read_text())
    script["rules"] = rules + script["rules"]
    (home / "script.json").write_text(json.dumps(script))
    return server


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    event: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if line == "":
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value


async def stream_run(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """Start a run over SSE and read it to its end: its id and every frame."""
    async with http.stream("POST", "/api/v1/agent/run/stream", json=body) as response:
        assert response.status_code == 200, await response.aread()
        return response.headers["x-run-id"], [frame async for frame in sse(response)]


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [int(frame["id"]) for frame in frames if "id" in frame]
