"""A real ``agent serve`` with a key per role, and helpers the security tests share."""

from __future__ import annotations

import json
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from http_api.conftest import Server

ROLES = ("viewer", "operator", "admin")


class SecureServer(Server):
    """A server with one key per built-in role (``self.keys[role]``) next to the admin ``tests`` key."""

    def __init__(self, home: Path, config: dict[str, Any] | None = None):
        super().__init__(home, config)
        self.keys = {role: self.create_key(f"k-{role}", role=role) for role in ROLES}

    def as_role(self, role: str | None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def audit_rows(self) -> list[dict[str, Any]]:
        lines = self.agent("audit", "list", "--json").splitlines()
        return [json.loads(line) for line in lines]

    def user_config(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.home / "config.json").read_text())
        return data

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.home / "agentstage.db")


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    running = SecureServer(tmp_path_factory.mktemp("secure-home")).start()
    yield running
    running.stop()


class Listener:
    """A TCP listener on 127.0.0.1 that records whether anything ever connected to it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    found = Listener()
    yield found
    found.close()
