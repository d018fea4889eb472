"""Replaying recorded HTTP exchanges through a provider SDK's own transport.

A recording is a JSON file: the request our provider must send (method, path, the headers that
matter and the exact JSON body) and the response the API sent back (status, headers and the body
lines exactly as they travel, Server-Sent Events included). The SDK is handed an
``httpx2.AsyncClient`` whose transport answers from the recordings, so everything above the socket,
the SDK's request building, SSE parsing, error classes and our provider, runs for real.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2

RECORDINGS = Path(__file__).parent / "recordings"


class Replay:
    """Answers requests from recorded exchanges, in order; a request that differs from its
    recording is noted in ``mismatches`` (and answered 400) rather than raised inside the SDK."""

    def __init__(self, *names: str):
        self.exchanges: list[dict[str, Any]] = [
            json.loads((RECORDINGS / f"{name}.json").read_text(encoding="utf-8")) for name in names
        ]
        self.sent: list[dict[str, Any]] = []
        self.mismatches: list[str] = []

    def client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self._answer))

    def _answer(self, request: httpx2.Request) -> httpx2.Response:
        if not self.exchanges:
            self.mismatches.append(f"unexpected request {request.method} {request.url.path}")
            return httpx2.Response(400, json={"error": "no recording left"})
        exchange = self.exchanges.pop(0)
        expected, recorded = exchange["request"], exchange["response"]
        body = json.loads(request.content) if request.content else None
        self.sent.append(body or {})
        if (request.method, request.url.path) != (expected["method"], expected["path"]):
            self.mismatches.append(f"sent {request.method} {request.url.path}, recorded {expected['path']}")
        for name, value in expected.get("headers", {}).items():
            if request.headers.get(name) != value:
                self.mismatches.append(
                    f"header {name}: sent {request.headers.get(name)!r}, recorded {value!r}"
                )
        if body != expected["json"]:
            self.mismatches.append(
                f"body differs:\nsent     {json.dumps(body)}\nrecorded {json.dumps(expected['json'])}"
            )
        content = ("\n".join(recorded["body"]) + "\n").encode("utf-8")  # each line ends with a newline
        return httpx2.Response(recorded["status"], headers=recorded["headers"], content=content)
