"""Shared fixtures: a private AGENT_HOME, settings with scripted profiles, a real RunService,
and a helper that runs the real ``agent`` executable as a subprocess."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agentstage.runtime.service import RunService
from agentstage.runtime.wiring import build_service
from agentstage.settings import Settings, load_settings

AGENT = str(Path(sys.executable).parent / "agent")

# ``--store postgresql``: the store-facing tests run against a private PostgreSQL
# (scripts/devcluster.py starts it). Each AGENT_HOME a test (or a module's shared server) uses gets
# its own fresh database, cloned from a migrated template: two homes are two stores, as two SQLite
# files would be.
POSTGRES: Any = None
_DATABASES: dict[str, str] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--store",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="Run the store-facing tests against SQLite (default) or a private PostgreSQL 15.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On PostgreSQL, tests about the SQLite file itself are deselected (not skipped), and so are
    those that start a PostgreSQL of their own: they ran as they are in the SQLite pass."""
    if config.getoption("--store") != "postgresql":
        return

    def once(item: pytest.Item) -> bool:
        return any(item.get_closest_marker(name) for name in ("sqlite_only", "own_postgres"))

    keep = [item for item in items if not once(item)]
    dropped = [item for item in items if once(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session", autouse=True)
def postgres_template(request: pytest.FixtureRequest) -> Iterator[Any]:
    global POSTGRES
    if request.config.getoption("--store") != "postgresql":
        yield None
        return
    import asyncio

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from devcluster import Postgres

    from agentstage.store.sql import SqlRunStore

    server = Postgres().start()
    server.create_database("template_agentstage")

    async def migrate() -> None:
        store = SqlRunStore(server.database_url("template_agentstage"))
        await store.open()
        await store.close()

    asyncio.run(migrate())
    POSTGRES = server
    try:
        yield server
    finally:
        POSTGRES = None
        server.stop()


def with_store(config: dict[str, Any], home: Path) -> dict[str, Any]:
    """``config`` with the store URL of ``home``'s own database, if the tests run against PostgreSQL."""
    if POSTGRES is None:
        return config
    key = str(Path(home).resolve())
    url = _DATABASES.get(key)
    if url is None:
        name = f"t_{os.getpid()}_{time.monotonic_ns()}"
        url = _DATABASES[key] = str(POSTGRES.create_database(name, template="template_agentstage"))
    return {**config, "store": {**config.get("store", {}), "url": url}}


def stored_bytes(home: Path) -> bytes:
    """Everything the store of ``home`` holds, as bytes to search: the SQLite file with its WAL, or
    a dump of the home's PostgreSQL database."""
    if POSTGRES is None:
        return b"".join(path.read_bytes() for path in sorted(home.glob("agentstage.db*")))
    url = _DATABASES.get(str(Path(home).resolve()))
    if url is None:
        return b""
    from devcluster import PG_BIN

    name = url.rsplit("/", 1)[1]
    dump = POSTGRES._run(str(PG_BIN / "pg_dump"), "-h", "127.0.0.1", "-p", str(POSTGRES.port),
                         "-U", POSTGRES.user, "-d", name)  # fmt: skip
    return str(dump.stdout).encode()


def create_key(env: Mapping[str, str], name: str, *, role: str = "operator", tenant: str = "default") -> str:
    """A new API key in the store of the home ``env`` names, made in this process by the code
    behind ``agent keys create`` (tests/security runs the command itself). Fixtures make hundreds
    of keys, and each ``agent`` process costs about a second of CPU."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from agentstage.interfaces.cli.keys import create_key as create_and_audit
    from agentstage.runtime.keys import KeyService
    from agentstage.runtime.security import AuditTrail
    from agentstage.runtime.wiring import build_store

    async def make() -> str:
        settings = load_settings(environ=dict(env))
        store = build_store(settings, executes_runs=False)
        await store.open()
        try:
            key, _ = await create_and_audit(
                KeyService(store, settings), AuditTrail(store), name, role=role, tenant=tenant
            )
        finally:
            await store.close()
        return key

    with ThreadPoolExecutor(1) as thread:  # callers may be inside an event loop
        return thread.submit(asyncio.run, make()).result()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def scripted_config(script: dict[str, Any] | str, **extra: Any) -> dict[str, Any]:
    """Settings overrides with a ``scripted`` provider and a default profile ``t`` that uses it."""
    config: dict[str, Any] = {
        "providers": {"s": {"type": "scripted", "script": script}},
        "profiles": {"t": {"chain": [{"provider": "s"}]}},
        "default_profile": "t",
        "retry": {"base_delay": 0.01, "max_delay": 0.05},
    }
    for key, value in extra.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def make_settings(home: Path, config: dict[str, Any]) -> Settings:
    return load_settings(with_store(config, home), environ={"AGENT_HOME": str(home)})


@pytest.fixture
def make_service(home: Path) -> Callable[..., Any]:
    """``async with make_service(script, **config) as service`` — a real service on a real SQLite file."""

    def factory(script: dict[str, Any] | str, **extra: Any) -> RunService:
        return build_service(make_settings(home, scripted_config(script, **extra)))

    return factory


@pytest.fixture
async def chat_service(make_service: Callable[..., RunService]) -> AsyncIterator[RunService]:
    async with make_service({"responses": [{"text": "Hello there."}]}) as service:
        yield service


class Cli:
    """Runs ``agent`` for real, with AGENT_HOME pointing at the test's home."""

    def __init__(self, home: Path):
        self.home = home
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith("AGENT_") and not k.endswith("_API_KEY")
        }
        self.env.update({"AGENT_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"})

    def configure(self, config: dict[str, Any]) -> None:
        (self.home / "config.json").write_text(json.dumps(with_store(config, self.home)), encoding="utf-8")

    def script(self, script: dict[str, Any], **extra: Any) -> None:
        path = self.home / "script.json"
        path.write_text(json.dumps(script), encoding="utf-8")
        self.configure(scripted_config(str(path), **extra))

    def __call__(
        self, *args: str, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [AGENT, *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,  # piped stdin is part of the input
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [AGENT, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


@pytest.fixture
def cli(home: Path) -> Cli:
    return Cli(home)


TERMINAL = {"completed", "failed", "cancelled"}
ENDINGS = {"run.completed", "run.failed", "run.cancelled"}


def _process_alive(worker_id: str | None) -> bool:
    host, _, pid = (worker_id or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def store_problems(path: Path) -> list[str]:
    """What is wrong with a store: a run that is neither terminal nor owned by a live process, a log
    with a gap, a terminal run whose log does not end with its terminal event."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return []
    try:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'run_events'").fetchone():
            return []
        rows = connection.execute(
            "SELECT r.id, r.status, r.worker_id, count(e.seq), coalesce(max(e.seq), 0), min(e.seq), "
            "(SELECT type FROM run_events WHERE run_id = r.id ORDER BY seq DESC LIMIT 1) "
            "FROM runs r LEFT JOIN run_events e ON e.run_id = r.id GROUP BY r.id"
        ).fetchall()
    except sqlite3.Error as error:
        return [f"{path}: cannot be read: {error}"]
    finally:
        connection.close()
    problems = []
    for run_id, status, worker, count, last, first, last_type in rows:
        if count != last or (count and first != 1):
            problems.append(f"{path}: run {run_id} has a gap in its log ({count} events, last seq {last})")
        if status in TERMINAL and last_type not in ENDINGS:
            problems.append(f"{path}: run {run_id} is {status} but its log ends with {last_type!r}")
        if status not in TERMINAL and not _process_alive(worker):
            problems.append(f"{path}: run {run_id} is {status} but its process ({worker}) is gone")
    return problems


@pytest.fixture(autouse=True)
def stores_stay_consistent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After every test, every store it touched holds runs that are terminal or live, with logs
    that have no gap: whatever a test did (kill a server, fill its disk, poison a write)."""
    started = time.time()
    yield
    problems: list[str] = []
    for path in tmp_path_factory.getbasetemp().rglob("*.db"):
        try:
            touched = max(path.stat().st_mtime, _mtime(path.with_name(path.name + "-wal")))
        except OSError:
            continue
        if touched >= started - 1:
            problems += store_problems(path)
    assert not problems, "\n".join(problems)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
