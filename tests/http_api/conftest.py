"""A real ``agent serve`` on 127.0.0.1 (random free port) with its own AGENT_HOME and API key."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from conftest import AGENT, create_key, with_store

SCRIPT: dict[str, Any] = {
    "rules": [
        {"match": "slow", "deltas": [f"w{i} " for i in range(40)], "delta_delay": 0.1},
        {"match": "fail", "error": {"code": "model_error", "message": "scripted failure"}},
        {"match": "name is Ada", "text": "Hello Ada."},
        {"match": "my name", "text": "Your name is Ada."},
    ],
    "responses": [{"text": "Hello from the server."}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, home: Path, config: dict[str, Any] | None = None):
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
        self.env["AGENT_HOME"] = str(home)
        self.log_path = home / "server.log"
        self.process: subprocess.Popen[bytes] | None = None
        (home / "script.json").write_text(json.dumps(SCRIPT), encoding="utf-8")
        base = {
            "providers": {"s": {"type": "scripted", "script": str(home / "script.json")}},
            "profiles": {"t": {"chain": [{"provider": "s"}]}},
            "default_profile": "t",
        }
        (home / "config.json").write_text(
            json.dumps(with_store({**base, **(config or {})}, home)), encoding="utf-8"
        )
        self.key = self.create_key("tests", role="admin")
        self.headers = {"Authorization": f"Bearer {self.key}"}

    def create_key(self, name: str, *, role: str = "operator", tenant: str = "default") -> str:
        """What ``agent keys create`` makes, made in this process (see ``conftest.create_key``)."""
        return create_key(self.env, name, role=role, tenant=tenant)

    def agent(self, *args: str) -> str:
        done = subprocess.run(
            [AGENT, *args], env=self.env, capture_output=True, text=True, check=True, timeout=60
        )
        return done.stdout

    def start(self) -> Self:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [AGENT, "serve", "--port", str(self.port)], env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.url}/health/startup", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the server did not start:\n" + self.log_path.read_text())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30, **kwargs)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def wait_for_log(self, text: str, timeout: float = 10) -> str:
        """The server's log once it contains ``text`` (logs are written as requests finish)."""
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            assert time.monotonic() < deadline, f"{text!r} never appeared in the log:\n{log}"
            time.sleep(0.02)
        return log


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("server-home")).start()
    yield running
    running.stop()


@pytest.fixture
def http(server: Server) -> Iterator[httpx.Client]:
    with server.client() as client:
        yield client


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse an SSE stream into {id, event, data} dicts (comments skipped)."""
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value
