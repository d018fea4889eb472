"""Configuration changes made through one node, applied by every node and worker without a restart.

In a scale-out deployment each process reads its own configuration layers (defaults, instance,
config file, ``AGENT_*`` variables), possibly on another machine. A change made over the network
(``PUT /api/v1/config``, a profile added, an MCP server registered or removed) is therefore also
merged into one document in the store (the ``shared_config`` row, its ``revision`` growing with each
change) and announced with a PostgreSQL notification. Every process applies that document on top
of its own layers: when it starts, when the notification arrives, and whenever its listening
connection comes back (a notification missed during a database restart is not lost: the revision
is read again).

The document holds only what network changes may write, already checked by the node that
accepted the change; secrets are never in it (configuration refuses literal secrets).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from agentstage.core.events import utc_now
from agentstage.core.tasks import stop_task
from agentstage.errors import StoreError
from agentstage.settings import deep_merge
from agentstage.store.sql import SqlRunStore, classify
from agentstage.store.tables import shared_config

log = logging.getLogger("agentstage.distributed")

CHANNEL = "agentstage_config"
ROW = 1
LISTEN_RETRY_SECONDS = 0.5

Adopt = Callable[[dict[str, Any]], Awaitable[None]]
Check = Callable[[dict[str, Any]], None]


class SharedConfig:
    """The shared document: published by the node that accepts a change, followed by all."""

    def __init__(self, store: SqlRunStore, conninfo: str):
        self.store = store
        self.conninfo = conninfo
        self.adopt: Adopt | None = None  # set by whoever builds the service (it applies a document)
        self.revision = 0  # the newest revision this process has applied
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None

    async def open(self) -> None:
        """Apply the current document (a process started after changes were made gets them) and
        follow the ones to come."""
        await self.refresh()
        self._listener = asyncio.create_task(self._listen(), name="agentstage-shared-config")

    async def close(self) -> None:
        if self._listener is not None:
            await stop_task(self._listener)
            self._listener = None

    async def publish(self, changes: dict[str, Any], check: Check | None = None) -> dict[str, Any]:
        """Merge ``changes`` into the shared document and announce it; returns the whole document.
        Two nodes changing the configuration at once are serialised by the row's lock; a store
        that cannot take it refuses the change (a StoreError), so no process applies it.

        ``check(document)`` runs under that lock with the document as stored, before the change
        is written; whatever it raises refuses the change. So a change is checked against the
        changes other nodes made a moment before, not against a copy read earlier, and two
        changes each valid alone cannot be merged into a document no process can use."""
        try:
            revision, document = await self._merge(changes, check)
        except SQLAlchemyError as error:
            cause = classify(error)
            raise StoreError(
                "the configuration change was not applied: the store could not share it with the "
                f"other nodes ({cause.message})",
                code=cause.code,
                retry_after=cause.retry_after,
            ) from None
        async with self._lock:
            self.revision = max(self.revision, revision)
        return document

    async def _merge(self, changes: dict[str, Any], check: Check | None) -> tuple[int, dict[str, Any]]:
        async with self.store.engine.begin() as connection:
            await connection.execute(
                insert(shared_config)
                .values(id=ROW, revision=0, document="{}", updated_at=utc_now())
                .on_conflict_do_nothing(index_elements=["id"])
            )
            row = (
                await connection.execute(
                    select(shared_config.c.revision, shared_config.c.document)
                    .where(shared_config.c.id == ROW)
                    .with_for_update()
                )
            ).one()
            stored = json.loads(row.document)
            if check is not None:
                check(stored)  # raises: the transaction is rolled back, the row stays as it was
            document = deep_merge(stored, changes)
            revision = int(row.revision) + 1
            await connection.execute(
                update(shared_config)
                .where(shared_config.c.id == ROW)
                .values(revision=revision, document=json.dumps(document), updated_at=utc_now())
            )
            await connection.execute(
                text("SELECT pg_notify(:channel, :payload)"), {"channel": CHANNEL, "payload": str(revision)}
            )
        return revision, document

    async def current(self) -> tuple[int, dict[str, Any]]:
        """The shared document and its revision (0 and nothing before the first change)."""
        query = select(shared_config.c.revision, shared_config.c.document).where(shared_config.c.id == ROW)
        try:
            async with self.store.engine.connect() as connection:
                row = (await connection.execute(query)).first()
        except SQLAlchemyError as error:
            raise classify(error) from None
        return (0, {}) if row is None else (int(row.revision), json.loads(row.document))

    async def refresh(self) -> None:
        """Apply the shared document if it is newer than what this process applied."""
        async with self._lock:
            revision, document = await self.current()
            if revision <= self.revision or self.adopt is None:
                return
            try:
                await self.adopt(document)
            except Exception as error:  # a document this process cannot use: keep what it has
                log.error("shared configuration revision %d not applied here: %s", revision, error)
            self.revision = revision

    async def _listen(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True
                ) as connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    await self.refresh()  # whatever changed while nobody listened
                    async for _ in connection.notifies():
                        await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the store restarted or is unreachable: listen again soon
                log.warning(
                    "configuration listener lost its connection (%s); reconnecting", type(error).__name__
                )
                await asyncio.sleep(LISTEN_RETRY_SECONDS)
