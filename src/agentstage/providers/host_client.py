"""The worker side of the model host: stream one generation over the host's Unix socket.

Failure mapping, so the resilience layer (retries, fallback) does the right thing:
- the host is starting or restarting: wait for it (up to ``READY_WAIT`` seconds), then go on;
- the connection closes before the final line: the host died mid-answer → ``provider_crashed``,
  retryable (a retry waits for the restarted host; text already streamed is never repeated);
- the host reports an error: the same error class and code as in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agentstage.errors import ConfigError, LimitExceededError, ModelError
from agentstage.providers.host_protocol import (
    MAX_LINE,
    encode,
    pid_alive,
    read_state,
    socket_path,
)

READY_WAIT = 30.0
POLL_SECONDS = 0.1


def host_problem(directory: Path) -> str | None:
    """None when the host is up, else one line for ``/health/ready`` naming it and why."""
    state = read_state(directory)
    status = state.get("state")
    if status == "ready" and pid_alive(state.get("pid")):
        return None
    if status == "failed":
        return f"the model host could not start: {state.get('error') or 'unknown error'}"
    if status in ("restarting", "ready"):
        exit_text = state.get("last_exit") or "it stopped"
        wait = max(0.0, float(state.get("next_start_at") or 0) - time.time())
        return (
            f"the model host is down (last exit: {exit_text}; restart {state.get('restarts', 0)} "
            f"in {wait:.1f}s)"
        )
    if status == "starting":
        return "the model host is starting (loading the model)"
    return "the model host is not running"


async def _connect(directory: Path, provider: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    deadline = time.monotonic() + READY_WAIT
    while True:
        try:
            return await asyncio.open_unix_connection(str(socket_path(directory)), limit=MAX_LINE)
        except (FileNotFoundError, ConnectionRefusedError):
            state = read_state(directory)
            if state.get("state") == "failed":
                raise ModelError(
                    f"the model host could not start: {state.get('error')}",
                    code="model_unavailable",
                    provider=provider,
                ) from None
            if time.monotonic() > deadline:
                raise ModelError(
                    f"the model host did not come back within {READY_WAIT:g}s "
                    f"({host_problem(directory) or 'no answer'})",
                    code="provider_unavailable",
                    retryable=True,
                    provider=provider,
                ) from None
            await asyncio.sleep(POLL_SECONDS)


def _raise(error: dict[str, Any], provider: str) -> None:
    code = str(error.get("code") or "model_error")
    message = str(error.get("message") or "the model host failed")
    kind = error.get("kind")
    if kind == "LimitExceededError":
        raise LimitExceededError(message, code=code, details=error.get("details") or {})
    if kind == "ConfigError":
        raise ConfigError(message, code=code)
    raise ModelError(message, code=code, provider=provider)


async def stream_from_host(
    directory: Path, spec: Any, job: Any, provider: str
) -> AsyncIterator[dict[str, Any]]:
    reader, writer = await _connect(directory, provider)
    try:
        writer.write(encode({"op": "generate", "spec": spec.as_dict(), "job": job.as_dict()}))
        await writer.drain()
        while True:
            try:
                line = await reader.readline()
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                line = b""
            if not line:
                raise ModelError(
                    "the model host stopped in the middle of this answer (it crashed or was killed); "
                    "it is being restarted",
                    code="provider_crashed",
                    retryable=True,
                    provider=provider,
                )
            item = json.loads(line)
            if "error" in item:
                _raise(item["error"], provider)
            yield item
            if "done" in item:
                return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
