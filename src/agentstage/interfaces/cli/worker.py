"""``agent worker``: execute queued runs (the scale-out mode: PostgreSQL + Redis)."""

from __future__ import annotations

from typing import Annotated

import typer

from agentstage.interfaces.cli.common import Exit, fail, load_settings


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            max=1000,
            help="Runs executed at once (default: runtime.worker_concurrency, 8).",
        ),
    ] = None,
) -> None:
    """Claim queued runs from the PostgreSQL queue and execute them; stream their events through Redis.

    Needs store.url = postgresql+psycopg://… and redis.url = redis://… (AGENT_STORE__URL,
    AGENT_REDIS__URL), the same configuration as the `agent serve` processes. Run as many workers as
    you like, on any machines. SIGTERM (or Ctrl-C) stops claiming, lets running runs finish for
    runtime.drain_timeout seconds, then cancels the rest with reason "shutdown". A worker that dies
    is noticed by heartbeat (runtime.worker_lost_after); its runs fail with worker_lost (or are
    requeued, for idempotent runs, up to runtime.max_attempts). docs/scale-out.md has the topology.
    """
    import asyncio
    import signal

    from agentstage.errors import AgentstageError, UserError
    from agentstage.runtime.wiring import configure_logging, run_worker

    try:
        settings = load_settings()
    except UserError as error:
        fail(error.message)
    if not settings.distributed():
        fail(
            "agent worker needs PostgreSQL and Redis: set AGENT_STORE__URL=postgresql+psycopg://… and "
            "AGENT_REDIS__URL=redis://… (store.url and redis.url); the embedded mode executes runs inside "
            "`agent serve`"
        )
    configure_logging(settings)
    count = concurrency or settings.runtime.worker_concurrency

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(settings, count, stop)

    try:
        asyncio.run(main())
    except UserError as error:
        fail(error.message)
    except AgentstageError as error:  # the store cannot be reached or opened: one line, exit 1
        fail(error.message, Exit.RUN_FAILED)
