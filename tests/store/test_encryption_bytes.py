"""Encryption at rest, byte by byte, on whichever store the tests run against: with ``--store
postgresql`` the database's dump and the server's own files (this database's directory and the
write-ahead log written meanwhile) hold none of the sealed text, while a value that is not sealed
(the request id in the audit log) is found there — so the search itself can find what is stored."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import pytest

import conftest
from conftest import stored_bytes
from http_api.conftest import Server

SEALED = {
    "input": "SEALED-INPUT-HERON-4410",
    "output": "SEALED-OUTPUT-MARMOT-2207",
    "message": "SEALED-MESSAGE-BADGER-9954",
    "title": "SEALED-TITLE-OSPREY-6032",
}


@pytest.fixture
def sealed(tmp_path: Path) -> Server:
    from agentstage.store.crypto import generate_key

    key = tmp_path / "store.key"
    key.write_text(generate_key() + "\n", encoding="utf-8")
    key.chmod(0o600)
    server = Server(tmp_path, {"store": {"encryption_key": f"file:{key}"}})
    script = {"responses": [{"text": f"{SEALED['output']} says hello"}]}
    (tmp_path / "script.json").write_text(json.dumps(script), encoding="utf-8")
    return server


def postgres_files(home: Path, since: float) -> bytes:
    """The home's database directory and the WAL segments written since ``since``, raw."""
    from devcluster import PG_BIN

    server = conftest.POSTGRES
    name = conftest._DATABASES[str(home.resolve())].rsplit("/", 1)[1]
    found = server._run(str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(server.port), "-U", server.user,
                        "-d", name, "-Atc", "SELECT oid FROM pg_database WHERE datname = current_database()")  # fmt: skip
    paths = list((server.data / "base" / found.stdout.strip()).iterdir())
    paths += [p for p in (server.data / "pg_wal").iterdir() if p.is_file() and p.stat().st_mtime >= since]
    return b"".join(path.read_bytes() for path in paths if path.is_file())


def test_no_sealed_text_in_the_stored_bytes(sealed: Server) -> None:
    started = time.time() - 1
    control = f"CLEAR-CONTROL-{secrets.token_hex(6)}"
    sealed.start()
    try:
        with sealed.client() as http:
            run = http.post(
                "/api/v1/agent/run",
                json={"input": SEALED["input"], "mode": "chat"},
                headers={"X-Request-ID": control},
            ).json()
            assert run["status"] == "completed" and SEALED["output"] in run["output"]
            conversation = http.post("/api/v1/conversations", json={"title": SEALED["title"]}).json()
            sent = http.post(
                f"/api/v1/conversations/{conversation['id']}/messages", json={"input": SEALED["message"]}
            ).json()
            assert sent["status"] == "completed"
            status = http.get(f"/api/v1/agent/status/{run['run_id']}").json()
            assert status["input"] == SEALED["input"]  # it reads back
    finally:
        sealed.stop()
    dumped = stored_bytes(sealed.home)
    assert control.encode() in dumped  # the audit row's request id is stored in clear: found
    assert [name for name, text in SEALED.items() if text.encode() in dumped] == []
    if conftest.POSTGRES is not None:
        raw = postgres_files(sealed.home, started)
        assert control.encode() in raw
        assert [name for name, text in SEALED.items() if text.encode() in raw] == []
