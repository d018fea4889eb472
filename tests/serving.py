"""Starting ``agent serve`` for a test on a machine that may be busy."""

from __future__ import annotations

import subprocess
import time

import httpx

from conftest import AGENT
from http_api.conftest import Server


def start_patiently(server: Server, timeout: float = 120) -> Server:
    """Start the server, allowing for a busy machine; stop it if it never comes up."""
    with server.log_path.open("ab") as log:
        server.process = subprocess.Popen(
            [AGENT, "serve", "--port", str(server.port)], env=server.env, stdout=log, stderr=log
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            if httpx.get(f"{server.url}/health/startup", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise AssertionError("the server did not start:\n" + server.log())
