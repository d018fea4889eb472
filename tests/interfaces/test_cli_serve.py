"""``agent serve`` from the command line: a busy port, where the docs are, and ``--reload``."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

from conftest import AGENT, Cli


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_busy_port_is_one_red_line_and_exit_2(cli: Cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli("serve", "--port", str(port), timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: port {port} on 127.0.0.1 is already in use; stop what uses it or pick another with --port"
    ]


def serve_until_ready(cli: Cli, log: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [AGENT, "serve", "--port", str(port), *args],
            env={**cli.env, "AGENT_HTTP__AUTH": "off"},
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health/startup", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"agent serve did not start: {log.read_text()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_serve_says_where_the_docs_are_and_reloads_for_development(cli: Cli, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    process, url = serve_until_ready(cli, log, "--reload")
    try:
        banner = next(line for line in log.read_text().splitlines() if "serving on" in line)
        assert f"docs {url}/docs" in banner
        docs = httpx.get(f"{url}/docs", timeout=10)
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        assert banner.endswith("reloading when the code changes")
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        assert children, "with --reload the server runs in a child process the reloader restarts"
    finally:
        stop(process)
