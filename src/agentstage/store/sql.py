"""The SQLAlchemy (async) store: SQLite by default (WAL), PostgreSQL by URL, same code.

Writes arrive in :class:`~agentstage.store.base.Batch` objects and land in one transaction each,
which lets the run service group many small event writes into few commits under load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from agentstage.core.events import RunEvent
from agentstage.core.records import ApiKeyRecord, BatchRecord, ConversationRecord, MessageRecord, RunRecord
from agentstage.errors import ConfigError
from agentstage.store import migrations
from agentstage.store.base import Batch
from agentstage.store.tables import api_keys, batches, conversation_messages, conversations, run_events, runs
from agentstage.types import RunStatus

_TERMINAL = [s.value for s in RunStatus if s.terminal]


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _run_from_row(row: Row[Any]) -> RunRecord:
    data = dict(row._mapping)
    for key in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        data[key] = _utc(data[key])
    return RunRecord.model_validate(data)


def _event_from_row(row: Row[Any]) -> RunEvent:
    data = dict(row._mapping)
    data["ts"] = _utc(data["ts"])
    return RunEvent.model_construct(**data)


class SqlRunStore:
    def __init__(self, url: str):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._engine: AsyncEngine | None = None
        # SQLite writes go through one thread with a plain connection: a whole batch costs one
        # thread hop instead of one per statement (aiosqlite's model).
        self._sync_engine: Engine | None = None
        self._write_thread: ThreadPoolExecutor | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the store is not open; call open() first")
        return self._engine

    async def open(self) -> None:
        if self.is_sqlite:
            self._prepare_sqlite_path()
        try:
            self._engine = create_async_engine(self.url)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise ConfigError(f"cannot use store URL {self.url!r}: {error}") from None
        if self.is_sqlite:
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas)
            self._sync_engine = create_engine(self.url.replace("+aiosqlite", "", 1))
            event.listen(self._sync_engine, "connect", _sqlite_pragmas)
            self._write_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agentstage-store")
        await self._migrate()

    def _prepare_sqlite_path(self) -> None:
        path = self.url.split("///", 1)[-1]
        if path and path != ":memory:":
            try:
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(
                    f"cannot create the store directory for {path!r}: {error.strerror}"
                ) from None

    async def _migrate(self) -> None:
        """Bring the schema to HEAD; cheap when it is already there (one SELECT)."""
        for attempt in range(3):
            try:
                if await self._current_revision() == migrations.HEAD:
                    return
                async with self.engine.begin() as connection:
                    await connection.run_sync(_upgrade)
                return
            except OperationalError:
                if attempt == 2:
                    raise
                await asyncio.sleep(0.2)  # another process was migrating the same file

    async def _current_revision(self) -> str | None:
        async with self.engine.connect() as connection:
            try:
                result = await connection.execute(text("SELECT version_num FROM alembic_version"))
            except SQLAlchemyError:
                return None
            row = result.first()
            return str(row[0]) if row else None

    async def close(self) -> None:
        if self._sync_engine is not None:
            self._sync_engine.dispose()
            self._sync_engine = None
        if self._write_thread is not None:
            self._write_thread.shutdown(wait=True)
            self._write_thread = None
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def write(self, batch: Batch) -> None:
        if not batch:
            return
        statements = _batch_statements(batch)
        if self._sync_engine is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._write_thread, _write_sync, self._sync_engine, statements)
            return
        async with self.engine.begin() as connection:
            for statement, rows in statements:
                await connection.execute(statement, rows)

    async def get_run(self, run_id: str) -> RunRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(runs).where(runs.c.id == run_id))).first()
        return _run_from_row(row) if row else None

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0
    ) -> list[RunRecord]:
        query = select(runs).order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit).offset(offset)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        async with self.engine.connect() as connection:
            return [_run_from_row(row) for row in await connection.execute(query)]

    async def count_runs(self, *, status: RunStatus | None = None) -> int:
        query = select(func.count()).select_from(runs)
        if status is not None:
            query = query.where(runs.c.status == status.value)
        async with self.engine.connect() as connection:
            return int((await connection.execute(query)).scalar_one())

    async def unfinished_runs(self) -> list[RunRecord]:
        query = select(runs).where(runs.c.status.not_in(_TERMINAL))
        async with self.engine.connect() as connection:
            return [_run_from_row(row) for row in await connection.execute(query)]

    async def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[RunEvent]:
        query = (
            select(run_events)
            .where(run_events.c.run_id == run_id, run_events.c.seq > after)
            .order_by(run_events.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        async with self.engine.connect() as connection:
            return [_event_from_row(row) for row in await connection.execute(query)]

    async def heartbeat(self, run_ids: Sequence[str], at: datetime) -> None:
        if not run_ids:
            return
        async with self.engine.begin() as connection:
            await connection.execute(update(runs).where(runs.c.id.in_(list(run_ids))).values(heartbeat_at=at))

    async def cancel_requested(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()
        query = select(runs.c.id).where(runs.c.id.in_(list(run_ids)), runs.c.cancel_requested.is_(True))
        async with self.engine.connect() as connection:
            return {row[0] for row in await connection.execute(query)}

    async def request_cancel(self, run_id: str) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(update(runs).where(runs.c.id == run_id).values(cancel_requested=True))

    async def create_conversation(self, record: ConversationRecord) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(conversations).values(**record.model_dump()))

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        async with self.engine.connect() as connection:
            query = select(conversations).where(conversations.c.id == conversation_id)
            row = (await connection.execute(query)).first()
        if row is None:
            return None
        data = dict(row._mapping)
        data["created_at"], data["updated_at"] = _utc(data["created_at"]), _utc(data["updated_at"])
        return ConversationRecord.model_validate(data)

    async def list_conversations(self, *, limit: int = 50, offset: int = 0) -> list[ConversationRecord]:
        query = (
            select(conversations.c.id).order_by(conversations.c.updated_at.desc()).limit(limit).offset(offset)
        )
        async with self.engine.connect() as connection:
            ids = [row[0] for row in await connection.execute(query)]
        found = [await self.get_conversation(i) for i in ids]
        return [c for c in found if c is not None]

    async def delete_conversation(self, conversation_id: str) -> bool:
        async with self.engine.begin() as connection:
            await connection.execute(
                delete(conversation_messages).where(
                    conversation_messages.c.conversation_id == conversation_id
                )
            )
            result = await connection.execute(
                delete(conversations).where(conversations.c.id == conversation_id)
            )
        return bool(result.rowcount)

    async def messages(self, conversation_id: str) -> list[MessageRecord]:
        query = (
            select(conversation_messages)
            .where(conversation_messages.c.conversation_id == conversation_id)
            .order_by(conversation_messages.c.position)
        )
        async with self.engine.connect() as connection:
            rows = list(await connection.execute(query))
        return [
            MessageRecord(
                conversation_id=r.conversation_id,
                position=r.position,
                role=r.role,
                content=r.content,
                run_id=r.run_id,
                created_at=_utc(r.created_at) or r.created_at,
            )
            for r in rows
        ]

    async def create_api_key(self, record: ApiKeyRecord) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(api_keys), [record.model_dump()])

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(api_keys).where(api_keys.c.key_hash == key_hash))).first()
        return _key_from_row(row) if row else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        async with self.engine.connect() as connection:
            rows = (await connection.execute(select(api_keys).order_by(api_keys.c.created_at))).all()
        return [_key_from_row(row) for row in rows]

    async def revoke_api_key(self, name: str, at: datetime) -> bool:
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return bool(result.rowcount)

    async def create_batch(self, record: BatchRecord) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(batches), [record.model_dump()])

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        async with self.engine.connect() as connection:
            row = (await connection.execute(select(batches).where(batches.c.id == batch_id))).first()
        if row is None:
            return None
        data = dict(row._mapping)
        data["created_at"] = _utc(data["created_at"])
        return BatchRecord.model_validate(data)


def _key_from_row(row: Row[Any]) -> ApiKeyRecord:
    data = dict(row._mapping)
    data["created_at"] = _utc(data["created_at"])
    data["revoked_at"] = _utc(data["revoked_at"])
    return ApiKeyRecord.model_validate(data)


def _batch_statements(batch: Batch) -> list[tuple[Any, Any]]:
    """The statements of one batch, each an executemany where it can be (one round trip each)."""
    statements: list[tuple[Any, Any]] = []
    if batch.new_runs:
        statements.append((insert(runs), [r.model_dump() for r in batch.new_runs]))
    if batch.events:
        statements.append((insert(run_events), [_event_row(e) for e in batch.events]))
    statements.extend(_grouped_updates(batch.updates))
    if batch.messages:
        statements.append((insert(conversation_messages), [m.model_dump() for m in batch.messages]))
        touched = {m.conversation_id for m in batch.messages}
        newest = max(m.created_at for m in batch.messages)
        statements.append(
            (update(conversations).where(conversations.c.id.in_(touched)).values(updated_at=newest), None)
        )
    return statements


def _write_sync(engine: Engine, statements: list[tuple[Any, Any]]) -> None:
    with engine.begin() as connection:
        for statement, rows in statements:
            connection.execute(statement, rows)


def _grouped_updates(updates: dict[str, dict[str, Any]]) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Run updates grouped by the columns they set, so each group is one executemany round trip."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for run_id, fields in updates.items():
        groups.setdefault(tuple(sorted(fields)), []).append({"run_id_": run_id, **fields})
    return [
        (update(runs).where(runs.c.id == bindparam("run_id_")).values({k: bindparam(k) for k in keys}), rows)
        for keys, rows in groups.items()
    ]


def _event_row(event_: RunEvent) -> dict[str, Any]:
    return {
        "run_id": event_.run_id,
        "seq": event_.seq,
        "type": event_.type,
        "ts": event_.ts,
        "data": event_.data,
        "trace_id": event_.trace_id,
        "span_id": event_.span_id,
    }


def _upgrade(connection: Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations.DIRECTORY))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
