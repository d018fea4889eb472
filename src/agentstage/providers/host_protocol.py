"""What the model host and its clients share: where things live and how the state is written.

A host directory (private to the server's user, mode 0700) holds ``host.sock``, the Unix socket
the host listens on, and ``state.json``, written atomically by the supervisor and the host:
``{"state": "starting" | "ready" | "restarting" | "failed", "pid", "restarts", "last_exit",
"error", "next_start_at"}``. The wire format is JSON lines: one request line, then reply lines
(``{"text"}`` pieces, then ``{"done"}`` or ``{"error"}``).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

SOCKET_NAME = "host.sock"
STATE_NAME = "state.json"
MAX_LINE = 64 * 1024 * 1024


def socket_path(directory: Path) -> Path:
    return directory / SOCKET_NAME


def state_path(directory: Path) -> Path:
    return directory / STATE_NAME


def write_state(directory: Path, **state: Any) -> None:
    """Replace the state file in one rename, so a reader never sees half of it."""
    state.setdefault("updated_at", time.time())
    target = state_path(directory)
    temporary = target.with_name(f".{STATE_NAME}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(state), encoding="utf-8")
    temporary.replace(target)


def read_state(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads(state_path(directory).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"state": "unknown"}
    return data if isinstance(data, dict) else {"state": "unknown"}


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_exit(returncode: int) -> str:
    """``SIGSEGV`` for a process killed by a signal, ``exit 3`` otherwise."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


def encode(message: dict[str, Any]) -> bytes:
    return (json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8")
