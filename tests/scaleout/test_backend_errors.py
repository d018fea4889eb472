"""A wrong or unreachable PostgreSQL or Redis is one clear line, never a traceback; a worker whose
Redis is down still works (live events then go through the store) and says so."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from devcluster import agent_executable, free_port

from .conftest import Running

# Its own PostgreSQL whatever --store says: it runs once, in the SQLite pass.
pytestmark = pytest.mark.own_postgres


def agent(home: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    environ.update(AGENT_HOME=str(home), NO_COLOR="1", COLUMNS="200", **env)
    return subprocess.run(
        [agent_executable(), *args], env=environ, capture_output=True, text=True, timeout=120, check=False
    )


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_an_unreachable_postgresql_is_one_line_for_serve_worker_and_commands(tmp_path: Path) -> None:
    dead = f"postgresql+psycopg://agentstage:s3cret@127.0.0.1:{free_port()}/agentstage"
    redis = f"redis://127.0.0.1:{free_port()}/0"
    for args in (["runs", "list"], ["serve", "--port", str(free_port())], ["worker"]):
        done = agent(tmp_path, {"AGENT_STORE__URL": dead, "AGENT_REDIS__URL": redis}, *args)
        assert done.returncode == 1, (args, done.stderr)
        line = one_line(done.stderr)
        assert line.startswith(
            "error: cannot open the store at postgresql+psycopg://agentstage:***@127.0.0.1:"
        )
        assert "Connection refused" in line and "s3cret" not in done.stderr, line


def test_a_missing_database_or_role_is_named(cluster: Running, tmp_path: Path) -> None:
    port = cluster.cluster.postgres.port
    for url, named in (
        (f"postgresql+psycopg://agentstage@127.0.0.1:{port}/nosuchdb", 'database "nosuchdb" does not exist'),
        (f"postgresql+psycopg://nobody@127.0.0.1:{port}/agentstage", 'role "nobody" does not exist'),
    ):
        done = agent(tmp_path, {"AGENT_STORE__URL": url}, "runs", "list")
        assert done.returncode == 1 and named in one_line(done.stderr), done.stderr


def test_a_redis_url_that_is_not_one_is_a_usage_error(cluster: Running, tmp_path: Path) -> None:
    env = {"AGENT_STORE__URL": cluster.cluster.postgres.url, "AGENT_REDIS__URL": "http://127.0.0.1:6379"}
    for args in (["worker"], ["serve", "--port", str(free_port())]):
        done = agent(tmp_path, env, *args)
        assert done.returncode == 2, done.stderr
        assert "'http://127.0.0.1:6379' is not a Redis URL" in one_line(done.stderr)


def test_a_worker_without_redis_still_executes_runs_and_says_why_streams_are_polled(
    cluster: Running, tmp_path: Path
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    environ = {k: v for k, v in cluster.cluster.env().items()}
    environ["AGENT_REDIS__URL"] = dead
    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen([agent_executable(), "worker"], env=environ, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        said = f"Redis at {dead} cannot be used"
        # Log lines leave through the log writer thread (a batch every ~20 ms), so the warning,
        # logged before the ready line is printed, may reach the file just after it.
        while "worker ready" not in (text := log.read_text(errors="replace")) or said not in text:
            assert worker.poll() is None and time.monotonic() < deadline, text
            time.sleep(0.1)
        assert "polled" in text, text
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, log.read_text()


def test_agent_run_says_when_no_worker_claims_its_run(cluster: Running, tmp_path: Path) -> None:
    lonely = cluster.cluster.postgres.create_database("no_workers")  # a store no worker serves
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    environ.update(
        AGENT_HOME=str(tmp_path),
        NO_COLOR="1",
        AGENT_STORE__URL=lonely,
        AGENT_REDIS__URL=cluster.cluster.redis.url,
    )
    run = subprocess.Popen(
        [agent_executable(), "run", "hello"], env=environ, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert run.stderr is not None
        line = run.stderr.readline()
        assert "is queued, and no `agent worker` has claimed it after 5s" in line, line
    finally:
        run.send_signal(signal.SIGINT)
        _, rest = run.communicate(timeout=60)
    assert run.returncode != 0 and "Traceback" not in rest, rest
