"""Private PostgreSQL, Redis and nginx instances and agentstage processes, for a person or a test.

Every service runs from the Debian binaries on 127.0.0.1 with a free port and its data in a
temporary directory, and is stopped (and its data removed) by :meth:`Cluster.stop`. PostgreSQL
refuses to run as root, so under root its processes run as the ``postgres`` system user.
``scripts/dev-cluster`` starts the whole topology (2 API processes, 2 workers, nginx); the
scale-out tests and benchmark use the same classes.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal as signals
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process on port {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g}s")


def _binary(name: str, *places: Path) -> str:
    for place in places:
        if (place / name).is_file():
            return str(place / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name!r} is not installed (apt-get install postgresql-15 redis-server nginx)")
    return found


class Postgres:
    """A private PostgreSQL 15 cluster: ``initdb`` + ``pg_ctl`` on a free port. fsync is off (a
    process crash loses nothing; only an OS crash would), synchronous_commit stays on: a commit a
    client was told about must survive ``pg_ctl restart -m immediate``."""

    def __init__(self) -> None:
        # Its own directory right under the temp dir: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="agentstage-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.user = "agentstage"
        self._as_postgres = os.geteuid() == 0

    @property
    def url(self) -> str:
        return self.database_url("agentstage")

    def database_url(self, name: str) -> str:
        return f"postgresql+psycopg://{self.user}@127.0.0.1:{self.port}/{name}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> Postgres:
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chmod(self.root, 0o755)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        initdb = _binary("initdb", PG_BIN)
        self._run(initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = [
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",
            "full_page_writes = off",
            "max_connections = 200",
            "shared_buffers = 32MB",
        ]
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n".join(settings) + "\n")
        self._ctl("start", "-w", "-l", str(self.root / "postgres.log"))
        self.create_database("agentstage")
        return self

    def _ctl(self, *args: str) -> None:
        self._run(_binary("pg_ctl", PG_BIN), "-D", str(self.data), *args)

    def sql(self, statement: str, database: str = "postgres") -> str:
        psql = _binary("psql", PG_BIN)
        done = self._run(
            psql, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", database,
            "-v", "ON_ERROR_STOP=1", "-At", "-c", statement,
        )  # fmt: skip
        return done.stdout.strip()

    def create_database(self, name: str, template: str | None = None) -> str:
        suffix = f" TEMPLATE {template}" if template else ""
        self.sql(f'CREATE DATABASE "{name}"{suffix}')
        return self.database_url(name)

    def restart_immediate(self) -> None:
        """What a crash looks like to clients: every connection cut, no clean shutdown."""
        self._ctl("restart", "-m", "immediate", "-w", "-l", str(self.root / "postgres.log"))

    def stop_server(self) -> None:
        """Stop the server but keep its data (``start_server`` brings it back)."""
        self._ctl("stop", "-m", "fast", "-w")

    def start_server(self) -> None:
        self._ctl("start", "-w", "-l", str(self.root / "postgres.log"))

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(_binary("pg_ctl", PG_BIN), "-D", str(self.data), "stop", "-m", "immediate", check=False)
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    """A private Redis: no persistence, a free port."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Redis:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                [_binary("redis-server"), "--save", "", "--appendonly", "no", "--port", str(self.port),
                 "--bind", "127.0.0.1", "--dir", str(self.root)],
                stdout=log, stderr=log,
            )  # fmt: skip
        wait_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream agentstage {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://agentstage;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_buffering off;
            proxy_cache off;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
            proxy_next_upstream error timeout http_502 http_503;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def nginx_config(root: Path, port: int, upstreams: Sequence[int]) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in upstreams)
    return NGINX_CONF.format(root=root, port=port, servers=servers)


class Nginx:
    """nginx in front of the API processes: no buffering, long reads, WebSocket upgrades."""

    def __init__(self, root: Path, upstreams: Sequence[int]):
        self.root = root
        self.port = free_port()
        self.upstreams = list(upstreams)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "nginx.conf"
        conf.write_text(nginx_config(self.root, self.port, self.upstreams), encoding="utf-8")
        with (self.root / "nginx.log").open("ab") as log:
            self.process = subprocess.Popen(
                [_binary("nginx", Path("/usr/sbin")), "-c", str(conf), "-p", str(self.root)],
                stdout=log,
                stderr=log,
            )
        wait_port(self.port, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def agent_executable() -> str:
    return str(Path(sys.executable).parent / "agent")


class AgentProcess:
    """``agent serve`` or ``agent worker`` with its own log file."""

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.args = list(args)
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self) -> AgentProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [agent_executable(), *self.args], env=self.env, stdout=log, stderr=log
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, sig: int = signals.SIGTERM, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            with _suppress_lookup():
                self.process.send_signal(signals.SIGCONT)
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is not None and issubclass(kind, ProcessLookupError)


class Cluster:
    """PostgreSQL + Redis + N API processes + M workers + nginx, sharing one configuration."""

    def __init__(self, root: Path | None = None, config: dict[str, Any] | None = None):
        self.root = root or Path(tempfile.mkdtemp(prefix="agentstage-cluster-"))
        self.home = self.root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.postgres = Postgres()
        self.redis = Redis(self.root / "redis")
        self.config = config or {}
        self.apis: list[AgentProcess] = []
        self.workers: list[AgentProcess] = []
        self.nginx: Nginx | None = None
        self._started = {"api": 0, "worker": 0}  # every process ever started: each has its own log

    def _name(self, kind: str) -> str:
        self._started[kind] += 1
        return f"{kind}-{self._started[kind]}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
        env.update(
            AGENT_HOME=str(self.home),
            AGENT_STORE__URL=self.postgres.url,
            AGENT_REDIS__URL=self.redis.url,
        )
        return env

    def start_services(self) -> Cluster:
        self.postgres.start()
        self.redis.start()
        (self.home / "config.json").write_text(json.dumps(self.config), encoding="utf-8")
        return self

    def agent(self, *args: str) -> str:
        done = subprocess.run(
            [agent_executable(), *args], env=self.env(), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"agent {' '.join(args)} failed: {done.stderr}")
        return done.stdout

    def add_api(self, *extra: str) -> AgentProcess:
        port = free_port()
        api = AgentProcess(self._name("api"), ["serve", "--port", str(port), *extra], self.env(), self.root)
        api.port = port
        self.apis.append(api.start())
        return api

    def add_worker(self, *extra: str) -> AgentProcess:
        worker = AgentProcess(self._name("worker"), ["worker", *extra], self.env(), self.root)
        self.workers.append(worker.start())
        return worker

    def wait_ready(self, timeout: float = 60) -> None:
        import httpx

        for api in self.apis:
            assert api.port is not None
            deadline = time.monotonic() + timeout
            while True:
                if api.process is not None and api.process.poll() is not None:
                    raise RuntimeError(f"{api.name} exited:\n{api.log()}")
                try:
                    if httpx.get(f"http://127.0.0.1:{api.port}/health/startup", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{api.name} did not start:\n{api.log()}")
                time.sleep(0.1)
        for worker in self.workers:
            deadline = time.monotonic() + timeout
            while "worker ready" not in worker.log():
                if worker.process is not None and worker.process.poll() is not None:
                    raise RuntimeError(f"{worker.name} exited:\n{worker.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{worker.name} did not start:\n{worker.log()}")
                time.sleep(0.1)

    def start_nginx(self) -> Nginx:
        ports = [api.port for api in self.apis if api.port is not None]
        self.nginx = Nginx(self.root / "nginx", ports).start()
        return self.nginx

    def stop(self, remove: bool = True) -> None:
        for process in [*self.workers, *self.apis]:
            process.stop(timeout=10)
        if self.nginx is not None:
            self.nginx.stop()
        self.redis.stop()
        self.postgres.stop()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)
