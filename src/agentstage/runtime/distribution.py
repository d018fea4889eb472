"""What the run service needs from the scale-out parts: a queue of runs and a live event bus.

The embedded mode has neither: runs execute in the process that accepted them and followers are
fed in memory. With PostgreSQL and Redis (``agent serve`` + ``agent worker``), ``runtime/wiring.py``
hands the service a :class:`RunQueue` (queued runs go to whichever worker claims them), an
:class:`EventBus` (committed events reach whichever API process a client is connected to) and a
:class:`ConfigFeed` (a configuration change made through one process reaches all). They are
implemented in ``agentstage.distributed``; the service sees only these protocols.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from agentstage.core.events import RunEvent
from agentstage.core.records import RunRecord
from agentstage.runtime.sinks import EventSink


class TenantBusy(Exception):
    """The run's tenant already has its limit of runs executing: the queue offers it again later."""


class RunQueue(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, record: RunRecord) -> None:
        """Hand a durably queued run to the workers. Enqueuing a run twice is harmless."""
        ...

    async def withdraw(self, run_id: str) -> None:
        """Take a run that ended before any worker claimed it out of the queue, so no worker
        spends a claim (and a run slot) on it. Harmless if a worker has it or it is gone."""
        ...


class EventBus(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    def publisher(self) -> EventSink:
        """The sink that appends this process's committed events to the bus (after the store)."""
        ...

    async def problem(self) -> str | None:
        """Why the bus cannot be used now (for readiness), or None when it can."""
        ...

    async def tail(self, run_id: str, after: int, wait: float) -> list[RunEvent] | None:
        """Events of the run after seq ``after`` as they arrive, waiting up to ``wait`` seconds for
        the first; [] if none came, None if the bus cannot be reached (read the store instead).
        What the bus holds may have gaps (it is not the source of truth): callers check seqs."""
        ...


class ConfigFeed(Protocol):
    """Configuration changes shared by every process of a deployment."""

    async def open(self) -> None:
        """Apply the changes made so far, and follow those to come."""

    async def close(self) -> None: ...

    async def current(self) -> tuple[int, dict[str, Any]]:
        """The shared changes, merged, and their revision."""
        ...

    async def publish(
        self, changes: dict[str, Any], check: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        """Add ``changes`` for every process; returns all the shared changes, merged. ``check``
        sees the shared changes as they are when this change is added (no other change comes in
        between) and refuses it by raising."""
        ...


class Sweeper(Protocol):
    async def sweep(self, *, at_startup: bool) -> list[str]:
        """Find runs whose executor is gone and end (or requeue) them; return their ids."""
        ...
