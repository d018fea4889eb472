"""The model host: one process that holds the embedded model for every worker of ``agent serve``.

Run as ``python -m agentstage.providers.model_host --dir DIR [--preload SPEC]`` by the supervisor
(``host_supervisor.py``), never by hand. It loads models on first use (or at start with
``--preload``), listens on ``DIR/host.sock`` and serves one generation per connection, in the
same code path as ``agent run`` (``llama_engine.generate``). A client that disconnects stops its
generation at the next token. If llama.cpp crashes, only this process dies: the clients see the
connection close and report ``provider_crashed``; the supervisor starts a new host.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentstage.errors import AgentstageError
from agentstage.providers.host_protocol import MAX_LINE, encode, socket_path, write_state
from agentstage.providers.llama_engine import Job, ModelSpec, close_all, generate, load_llama
from agentstage.providers.threaded import ThreadedIterator

PARENT_POLL_SECONDS = 1.0


def _error(error: BaseException) -> dict[str, Any]:
    if isinstance(error, AgentstageError):
        kind = type(error).__name__
        return {
            "error": {"code": error.code, "message": error.message, "kind": kind, "details": error.details}
        }
    return {
        "error": {"code": "model_error", "message": f"{type(error).__name__}: {error}", "kind": "ModelError"}
    }


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        line = await reader.readline()
        request = json.loads(line) if line else {}
        if request.get("op") == "ping":
            writer.write(encode({"ok": True, "pid": os.getpid()}))
        elif request.get("op") == "generate":
            await _generate(request, reader, writer)
        else:
            writer.write(
                encode({"error": {"code": "bad_request", "message": "unknown op", "kind": "ModelError"}})
            )
        await writer.drain()
    except (ConnectionError, ValueError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _generate(
    request: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    spec = ModelSpec.from_dict(request["spec"])
    job = Job.from_dict(request["job"])

    def run(stop: threading.Event) -> Iterator[dict[str, Any]]:
        return generate(spec, job, stop)

    stream = ThreadedIterator(run)
    gone = asyncio.create_task(reader.read(1))  # EOF here means the client went away
    gone.add_done_callback(lambda _: stream.stop.set())  # also frees a request still queued
    try:
        async for item in stream:
            if gone.done():
                break
            writer.write(encode(item))
            await writer.drain()
    except AgentstageError as error:
        writer.write(encode(_error(error)))
    except Exception as error:  # a bug here must reach the client as an error, not a hang
        writer.write(encode(_error(error)))
    finally:
        stream.stop.set()
        gone.cancel()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Exit when the supervising server is gone (even if it was killed with SIGKILL)."""
    while not stop.is_set():
        if os.getppid() != parent:
            stop.set()
            return
        await asyncio.sleep(PARENT_POLL_SECONDS)


async def serve(directory: Path, preload: ModelSpec | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if preload is not None:
        try:
            await asyncio.to_thread(load_llama, preload)
        except AgentstageError as error:
            write_state(directory, state="failed", pid=os.getpid(), error=error.message)
            raise SystemExit(3) from None
    path = socket_path(directory)
    path.unlink(missing_ok=True)
    server = await asyncio.start_unix_server(_serve_one, path=str(path), limit=MAX_LINE)
    os.chmod(path, 0o600)
    write_state(directory, state="ready", pid=os.getpid(), preloaded=preload.as_dict() if preload else None)
    watcher = asyncio.create_task(_watch_parent(os.getppid(), stop))
    async with server:
        await stop.wait()
    watcher.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="agentstage model host (started by agent serve)")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--preload", default=None, help="a model spec as JSON")
    args = parser.parse_args(argv)
    os.umask(0o077)
    preload = ModelSpec.from_dict(json.loads(args.preload)) if args.preload else None
    try:
        asyncio.run(serve(args.dir, preload))
    finally:
        close_all()


if __name__ == "__main__":
    main()
