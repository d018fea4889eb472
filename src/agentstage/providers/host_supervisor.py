"""Keep one model host running for ``agent serve``: start it, restart it with backoff, stop it.

The supervisor is a thread of the server's main process. Workers never start a host: they find
this one through ``AGENTSTAGE_MODEL_HOST`` (set before uvicorn starts them), so a server holds
one copy of the model however many ``--workers`` it has. Backoff doubles from ``first_delay`` up
to ``max_delay`` while the host keeps dying young, and starts over once it has stayed up for
``stable_after`` seconds. The child gets only an allow-listed environment: no API keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentstage.providers.host_protocol import describe_exit, read_state, write_state

ENV_ALLOWLIST = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "VIRTUAL_ENV", "PYTHONPATH",
    "LD_LIBRARY_PATH", "OMP_NUM_THREADS", "GGML_NO_BACKTRACE", "SYSTEMROOT",
)  # fmt: skip
STOP_GRACE_SECONDS = 10.0


class ModelHostSupervisor:
    def __init__(
        self,
        preload: dict[str, Any] | None = None,
        *,
        first_delay: float = 0.5,
        max_delay: float = 30.0,
        stable_after: float = 60.0,
        on_restart: Callable[[], None] | None = None,
    ):
        self.preload = preload
        self.on_restart = on_restart  # e.g. to count restarts in the metrics
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.stable_after = stable_after
        self.directory = Path(tempfile.mkdtemp(prefix="agentstage-model-host-"))
        os.chmod(self.directory, 0o700)
        self.restarts = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="agentstage-model-host", daemon=True)

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> Path:
        write_state(self.directory, state="starting", restarts=0)
        self._thread.start()
        return self.directory

    def stop(self) -> None:
        self._stopping.set()
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._thread.is_alive():
            self._thread.join(STOP_GRACE_SECONDS)
        shutil.rmtree(self.directory, ignore_errors=True)

    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "agentstage.providers.model_host", "--dir", str(self.directory)]
        if self.preload is not None:
            command += ["--preload", json.dumps(self.preload)]
        return command

    def _environment(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if k in ENV_ALLOWLIST or k.startswith("LC_")}

    def _loop(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self._process = subprocess.Popen(
                    self._command(),
                    env=self._environment(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                )
            except OSError as error:
                write_state(self.directory, state="failed", error=f"cannot start the model host: {error}")
                return
            returncode = self._process.wait()
            if self._stopping.is_set():
                return
            failures = 0 if time.monotonic() - started >= self.stable_after else failures + 1
            delay = min(self.max_delay, self.first_delay * 2 ** max(failures - 1, 0))
            self.restarts += 1
            if self.on_restart is not None:
                with contextlib.suppress(Exception):
                    self.on_restart()
            previous = read_state(self.directory)
            state = "failed" if previous.get("state") == "failed" else "restarting"
            write_state(
                self.directory,
                state=state,
                error=previous.get("error") if state == "failed" else None,
                restarts=self.restarts,
                last_exit=describe_exit(returncode),
                next_start_at=time.time() + delay,
            )
            with contextlib.suppress(Exception):
                sys.stderr.write(
                    f"agentstage: the model host exited ({describe_exit(returncode)}); "
                    f"restarting in {delay:.1f}s\n"
                )
            self._stopping.wait(delay)
