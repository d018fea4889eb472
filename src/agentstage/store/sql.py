"""The SQLAlchemy (async) store: SQLite by default (WAL), PostgreSQL by URL, same code.

Writes arrive in :class:`~agentstage.store.base.Batch` objects and land in one transaction each,
which lets the run service group many small event writes into few commits under load. On SQLite
they take the hand-written path of :mod:`agentstage.store.sqlite_writes` on one thread; other
databases go through SQLAlchemy with a savepoint per run when a batch has to be split.

With a keyring that has a current key, both paths seal the values that carry content and every
read opens them (:mod:`agentstage.store.crypto`); opening the store checks that the keyring has
every key the store's data was sealed with, so a wrong or missing key is one error at start-up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, create_engine, delete, event, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Row, make_url
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import ColumnElement, Select

from agentstage.core.events import TERMINAL_EVENT_TYPES, RunEvent
from agentstage.core.records import (
    ApiKeyRecord,
    BatchRecord,
    ConversationRecord,
    MessageRecord,
    RunRecord,
    SpanRecord,
    ToolTiming,
)
from agentstage.errors import ConfigError, StoreError
from agentstage.store import migrations
from agentstage.store.base import Batch, RunWrites
from agentstage.store.crypto import Keyring, escape_nul_needle
from agentstage.store.leases import LeaseTables, fenced_error
from agentstage.store.reads import Reads
from agentstage.store.rekey import KeyMaintenance
from agentstage.store.security import SecurityTables
from agentstage.store.spans import SpanTables
from agentstage.store.sqlite_writes import SqliteWrites
from agentstage.store.tables import (
    api_keys,
    batches,
    conversation_messages,
    conversations,
    run_events,
    runs,
    snapshots,
    store_probe,
)
from agentstage.store.write_path import SqliteWritePath
from agentstage.types import RunStatus

_TERMINAL = [s.value for s in RunStatus if s.terminal]
CANCEL_CHANNEL = "agentstage_cancel"  # PostgreSQL NOTIFY channel workers listen on for cancels


def _utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _sqlite_pragmas(busy_timeout: float) -> Any:
    """Connection set-up; a locked store makes a statement wait at most ``busy_timeout`` seconds."""

    def configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={max(int(busy_timeout * 1000), 50)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return configure


# The seq of a run's newest event: runs rows are not updated per event, so readers ask the log.
_LAST_SEQ = select(func.max(run_events.c.seq)).where(run_events.c.run_id == runs.c.id).scalar_subquery()
_RUN_COLUMNS = [c for c in runs.columns if c.name != "last_seq"]
_RUN_SELECT = select(*_RUN_COLUMNS, func.coalesce(_LAST_SEQ, runs.c.last_seq).label("last_seq"))


def _runs_where(query: Select[Any], status: RunStatus | None, tenant: str | None) -> Select[Any]:
    if status is not None:
        query = query.where(runs.c.status == status.value)
    if tenant is not None:
        query = query.where(runs.c.tenant == tenant)
    return query


def _newest_runs(status: RunStatus | None, tenant: str | None, limit: int, offset: int) -> Select[Any]:
    """A page of runs, newest first: what every run listing reads."""
    query = _runs_where(_RUN_SELECT, status, tenant)
    return query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit).offset(offset)


def _run_from_row(row: Row[Any] | Any, keys: Keyring) -> RunRecord:
    data = dict(row._mapping)
    for key in ("created_at", "started_at", "finished_at", "heartbeat_at"):
        data[key] = _utc(data[key])
    data["metrics"] = data.get("metrics") or {}
    for key, label in _SEALED_RUN_TEXT.items():
        data[key] = keys.get_text(data[key], label, data["id"])
    data["options"] = keys.get_json(data["options"], "runs.options", data["id"])
    return RunRecord.model_validate(data)


SEARCH_PAGE = 500  # runs opened per query when searching sealed text

_SEALED_RUN_TEXT = {"input": "runs.input", "output": "runs.output", "error_message": "runs.error_message"}


def _event_from_row(row: Row[Any], keys: Keyring) -> RunEvent:
    data, sealed = row.data, None
    if isinstance(data, str):  # a sealed value (in the clear, event data is an object)
        sealed = keys.get_json_text(data, "run_events.data", f"{row.run_id}:{row.seq}")
    return RunEvent(
        row.run_id,
        row.seq,
        _utc(row.ts) or row.ts,
        type=row.type,
        data=data if sealed is None else None,
        data_json=sealed,
        trace_id=row.trace_id,
        span_id=row.span_id,
    )


class SqlRunStore(KeyMaintenance, SecurityTables, LeaseTables, SpanTables, Reads):
    def __init__(
        self, url: str, *, write_timeout: float = 10.0, keys: Keyring | None = None, pool_size: int = 10
    ):
        self.url = url
        self.pool_size = pool_size
        self.is_sqlite = url.startswith("sqlite")
        self.write_timeout = write_timeout
        self.keys = keys or Keyring()
        self._engine: AsyncEngine | None = None
        # SQLite writes go through one plain connection, on the event loop or one write thread
        # (store/write_path.py): a whole batch costs at most one thread hop, not one per statement
        # (aiosqlite's model).
        self._sqlite: SqliteWrites | None = None
        self._write_path: SqliteWritePath | None = None
        # SQLite reads likewise, on threads of their own (see store/reads.py).
        self._read_engine = None
        self._read_threads = None

    @property
    def location(self) -> str:
        if self.is_sqlite:
            return str(self._sqlite_path())
        return _masked_url(self.url)

    def _sqlite_path(self) -> Path:
        return Path(self.url.split("///", 1)[-1]).expanduser()

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the store is not open; call open() first")
        return self._engine

    async def open(self) -> None:
        if self.is_sqlite:
            self._prepare_sqlite_path()
        try:
            self._engine = create_async_engine(self.url, **self._engine_options())
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise ConfigError(f"cannot use store URL {self.url!r}: {error}") from None
        if self.is_sqlite:
            event.listen(self._engine.sync_engine, "connect", _sqlite_pragmas(self.write_timeout))
            busy = max(min(self.write_timeout / 4, 1.0), 0.05)
            self._sqlite = SqliteWrites(self._sqlite_path(), busy_timeout=busy, keys=self.keys)
            self._write_path = SqliteWritePath(self._sqlite)
            if self._sqlite_path().name not in ("", ":memory:"):
                self._read_engine = create_engine(make_url(self.url).set(drivername="sqlite"))
                event.listen(self._read_engine, "connect", _sqlite_pragmas(self.write_timeout))
                self._read_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="agentstage-read")
        try:
            await self._migrate()
            await self.check_encryption(register=True)
        except (SQLAlchemyError, OSError) as error:
            if self.is_sqlite:
                raise
            await self.close()
            raise self._unreachable(error) from None

    def _unreachable(self, error: Exception) -> StoreError:
        """A database server that cannot be reached or refuses us, named in one line (password masked):
        what an operator needs to fix a wrong URL, a stopped server or a missing role/database."""
        reason = _one_line(getattr(error, "orig", None) or error)
        return StoreError(
            f"cannot open the store at {self.location}: {reason}",
            code="store_unavailable",
            retry_after=1.0,
            details={"store": self.location},
        )

    def _engine_options(self) -> dict[str, Any]:
        """PostgreSQL (psycopg 3): a pool that checks each connection before use, so a server
        restart costs the connections it cut and nothing else; statements cannot hang forever."""
        if self.is_sqlite:
            return {}
        return {
            "pool_size": self.pool_size,
            "max_overflow": 10,  # a burst beyond the pool: each such connection is closed after use
            "pool_pre_ping": True,
            "pool_recycle": 1800,
            "pool_timeout": max(self.write_timeout, 1.0),
            "connect_args": {
                "connect_timeout": max(int(self.write_timeout), 2),
                # A process paused or hung inside a transaction (SIGSTOP, a frozen VM) would hold
                # its run rows locked for ever, and nobody could requeue or fail its runs: the
                # server ends such a session, releasing them, after this long.
                "options": f"-c idle_in_transaction_session_timeout={int(max(self.write_timeout, 5.0) * 1000)}",
            },
        }

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
        if self._write_path is not None:
            await self._write_path.close()
            self._write_path = None
        self._sqlite = None
        read_engine, read_threads = self._read_engine, self._read_threads
        self._read_engine = self._read_threads = None  # a read asked for from now on is refused
        if read_threads is not None:
            read_threads.shutdown(wait=True)  # the reads under way finish first
        if read_engine is not None:
            read_engine.dispose()
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def _on_write_connection(self, function: Any, *args: Any) -> Any:
        if self._write_path is None:
            raise RuntimeError("the store is not open; call open() first")
        return await self._write_path.run(function, *args)

    async def write(self, batch: Batch) -> dict[str, StoreError]:
        if not batch:
            return {}
        if self._sqlite is not None:
            refused: dict[str, StoreError] = await self._on_write_connection(self._sqlite.write, batch)
            return refused
        parts = [writes for writes in batch.runs.values() if writes]
        try:
            async with self.engine.begin() as connection:
                fenced = await _fenced(connection, parts)
                kept = [writes for writes in parts if writes.run_id not in fenced]
                for writes in kept:
                    await _write_run(connection, writes, self.keys, events=False)
                await _insert_events(connection, kept, self.keys)
            return fenced
        except SQLAlchemyError as error:
            failure = _classify(error)
            if failure.code != "store_write_failed":
                raise failure from None
        return await self._write_each(parts)

    async def _write_each(self, parts: list[RunWrites]) -> dict[str, StoreError]:
        """Write again with a savepoint per run, leaving out only the runs whose rows are refused."""
        refused: dict[str, StoreError] = {}
        try:
            async with self.engine.begin() as connection:
                refused.update(await _fenced(connection, parts))
                for writes in parts:
                    if writes.run_id in refused:
                        continue
                    try:
                        async with connection.begin_nested():
                            await _write_run(connection, writes, self.keys)
                    except SQLAlchemyError as error:
                        failure = _classify(error)
                        if failure.code != "store_write_failed":
                            raise failure from None
                        refused[writes.run_id] = failure
                        writes.kept_events = await self._salvage(connection, writes)
        except SQLAlchemyError as error:
            raise _classify(error) from None
        return refused

    async def _salvage(self, connection: AsyncConnection, writes: RunWrites) -> int:
        """As in :meth:`SqliteWrites._salvage`: the run's events up to the refused one (never its
        ending), each in its own savepoint; how many were kept."""
        if writes.new_run is not None:
            return 0
        kept = 0
        for event_ in writes.events:
            if event_.type in TERMINAL_EVENT_TYPES:
                break
            try:
                async with connection.begin_nested():
                    await _insert_events(connection, [RunWrites(writes.run_id, events=[event_])], self.keys)
            except SQLAlchemyError:
                break
            kept += 1
        return kept

    async def probe(self) -> None:
        from agentstage.core.events import utc_now

        if self._sqlite is not None:
            await self._on_write_connection(self._sqlite.probe, utc_now())
            return
        try:
            async with self.engine.begin() as connection:
                await connection.execute(delete(store_probe))
                await connection.execute(insert(store_probe).values(id=1, at=utc_now()))
        except SQLAlchemyError as error:
            raise _classify(error) from None

    async def add_spans(self, records: Sequence[SpanRecord]) -> None:
        """Keep finished spans (observability): on SQLite through the write connection, like runs."""
        if not records:
            return
        if self._sqlite is not None:
            await self._on_write_connection(self._sqlite.add_spans, list(records))
            return
        try:
            await self._insert_spans(records)
        except SQLAlchemyError as error:
            raise _classify(error) from None

    async def add_tool_timings(self, timings: Sequence[ToolTiming]) -> None:
        """Keep tool calls' timings (observability): on SQLite through the write connection, like runs."""
        if not timings:
            return
        if self._sqlite is not None:
            await self._on_write_connection(self._sqlite.add_tool_timings, list(timings))
            return
        try:
            await self._insert_tool_timings(timings)
        except SQLAlchemyError as error:
            raise _classify(error) from None

    def free_bytes(self) -> int | None:
        return self._sqlite.free_bytes() if self._sqlite is not None else None

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._first(_RUN_SELECT.where(runs.c.id == run_id))
        return _run_from_row(row, self.keys) if row else None

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> list[RunRecord]:
        query = _newest_runs(status, tenant, limit, offset)
        return [_run_from_row(row, self.keys) for row in await self._rows(query)]

    async def run_page(
        self, *, status: RunStatus | None = None, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> tuple[list[RunRecord], int]:
        page = _newest_runs(status, tenant, limit, offset)
        count = _runs_where(select(func.count()).select_from(runs), status, tenant)

        def read(connection: Connection) -> tuple[list[Row[Any]], int]:
            return list(connection.execute(page)), int(connection.execute(count).scalar_one())

        rows, total = await self._read(read)
        return [_run_from_row(row, self.keys) for row in rows], total

    async def search_runs(
        self,
        *,
        text: str | None = None,
        id_prefix: str | None = None,
        status: RunStatus | None = None,
        limit: int = 50,
        offset: int = 0,
        tenant: str | None = None,
    ) -> list[RunRecord]:
        query = _newest_runs(status, tenant, limit, offset)
        if id_prefix:
            query = query.where(runs.c.id.startswith(id_prefix.lower(), autoescape=True))
        if text and self.keys.key_ids:  # sealed text can only be matched once it is opened
            return await self._search_sealed(query, text, limit, offset)
        if text:
            needle = escape_nul_needle(text)
            query = query.where(
                or_(
                    runs.c.input.icontains(needle, autoescape=True),
                    runs.c.output.icontains(needle, autoescape=True),
                )
            )
        return [_run_from_row(row, self.keys) for row in await self._rows(query)]

    async def _search_sealed(self, query: Any, text: str, limit: int, offset: int) -> list[RunRecord]:
        """Match ``text`` in opened inputs and outputs, reading the newest runs a page at a time."""
        needle, skipped, start = text.lower(), 0, 0
        found: list[RunRecord] = []
        async with self.engine.connect() as connection:
            while len(found) < limit:
                page = query.limit(SEARCH_PAGE).offset(start)
                rows = (await connection.execute(page)).all()
                for record in (_run_from_row(row, self.keys) for row in rows):
                    if (
                        needle not in (record.input or "").lower()
                        and needle not in (record.output or "").lower()
                    ):
                        continue
                    if skipped < offset:
                        skipped += 1
                    elif len(found) < limit:
                        found.append(record)
                if len(rows) < SEARCH_PAGE:
                    break
                start += SEARCH_PAGE
        return found

    async def count_runs(self, *, status: RunStatus | None = None, tenant: str | None = None) -> int:
        return int(await self._scalar(_runs_where(select(func.count()).select_from(runs), status, tenant)))

    async def unfinished_runs(self) -> list[RunRecord]:
        query = _RUN_SELECT.where(runs.c.status.not_in(_TERMINAL))
        return [_run_from_row(row, self.keys) for row in await self._rows(query)]

    async def events(self, run_id: str, *, after: int = 0, limit: int | None = None) -> list[RunEvent]:
        query = (
            select(run_events)
            .where(run_events.c.run_id == run_id, run_events.c.seq > after)
            .order_by(run_events.c.seq)
        )
        if limit is not None:
            query = query.limit(limit)
        return [_event_from_row(row, self.keys) for row in await self._rows(query)]

    async def last_event(self, run_id: str) -> RunEvent | None:
        query = select(run_events).where(run_events.c.run_id == run_id).order_by(run_events.c.seq.desc())
        row = await self._first(query.limit(1))
        return _event_from_row(row, self.keys) if row else None

    async def snapshot(self, snapshot_hash: str) -> dict[str, Any] | None:
        query = select(snapshots.c.body).where(snapshots.c.hash == snapshot_hash)
        body = await self._scalar(query)
        return dict(self.keys.get_json(body, "snapshots.body", snapshot_hash)) if body is not None else None

    async def heartbeat(self, run_ids: Sequence[str], at: datetime) -> None:
        if not run_ids:
            return
        async with self.engine.begin() as connection:
            await connection.execute(update(runs).where(runs.c.id.in_(list(run_ids))).values(heartbeat_at=at))

    async def cancel_requested(self, run_ids: Sequence[str]) -> set[str]:
        if not run_ids:
            return set()
        query = select(runs.c.id).where(runs.c.id.in_(list(run_ids)), runs.c.cancel_requested.is_(True))
        return {row[0] for row in await self._rows(query)}

    async def request_cancel(self, run_id: str, reason: str = "") -> None:
        """Record the cancel on the run's row (it survives any lost signal); on PostgreSQL, also
        notify listening workers when it commits, so the one executing the run stops at once."""
        async with self.engine.begin() as connection:
            await connection.execute(update(runs).where(runs.c.id == run_id).values(cancel_requested=True))
            if not self.is_sqlite:
                payload = json.dumps({"run_id": run_id, "reason": reason})
                await connection.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": CANCEL_CHANNEL, "payload": payload},
                )

    async def runs_where(self, condition: ColumnElement[bool]) -> list[RunRecord]:
        rows = await self._rows(_RUN_SELECT.where(condition))
        return [_run_from_row(row, self.keys) for row in rows]

    async def create_conversation(self, record: ConversationRecord) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(conversations).values(**_conversation_row(record, self.keys)))

    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        row = await self._first(select(*_CONVERSATION_COLUMNS).where(conversations.c.id == conversation_id))
        return _conversation_from_row(row, self.keys) if row is not None else None

    async def list_conversations(
        self, *, limit: int = 50, offset: int = 0, tenant: str | None = None
    ) -> list[ConversationRecord]:
        query = (
            select(*_CONVERSATION_COLUMNS)
            .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        if tenant is not None:
            query = query.where(conversations.c.tenant == tenant)
        return [_conversation_from_row(row, self.keys) for row in await self._rows(query)]

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
        rows = await self._rows(query)
        return [
            MessageRecord(
                conversation_id=r.conversation_id,
                position=r.position,
                role=r.role,
                content=self.keys.get_text(r.content, _MESSAGE, f"{r.conversation_id}:{r.position}"),
                run_id=r.run_id,
                created_at=_utc(r.created_at) or r.created_at,
            )
            for r in rows
        ]

    async def create_api_key(self, record: ApiKeyRecord) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(insert(api_keys), [record.model_dump()])

    async def api_key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._first(select(api_keys).where(api_keys.c.key_hash == key_hash))
        return _key_from_row(row) if row else None

    async def list_api_keys(self) -> list[ApiKeyRecord]:
        rows = await self._rows(select(api_keys).order_by(api_keys.c.created_at))
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
            row = record.model_dump()
            row["items"] = self.keys.put_json_value(row["items"], "batches.items", record.id)
            await connection.execute(insert(batches), [row])

    async def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = await self._first(select(batches).where(batches.c.id == batch_id))
        if row is None:
            return None
        data = dict(row._mapping)
        data["created_at"] = _utc(data["created_at"])
        data["items"] = self.keys.get_json(data["items"], "batches.items", batch_id)
        return BatchRecord.model_validate(data)


def _key_from_row(row: Row[Any]) -> ApiKeyRecord:
    data = dict(row._mapping)
    for name in ("created_at", "revoked_at", "expires_at", "last_used_at", "rotated_at"):
        data[name] = _utc(data.get(name))
    return ApiKeyRecord.model_validate(data)


_CONVERSATION_COLUMNS = [c for c in conversations.columns if c.name != "message_count"]


def _conversation_from_row(row: Row[Any], keys: Keyring) -> ConversationRecord:
    data = dict(row._mapping)
    data["created_at"], data["updated_at"] = _utc(data["created_at"]), _utc(data["updated_at"])
    data["title"] = keys.get_text(data["title"], "conversations.title", data["id"])
    data["metadata"] = keys.get_json(data["metadata"], "conversations.metadata", data["id"])
    return ConversationRecord.model_validate(data)


def _conversation_row(record: ConversationRecord, keys: Keyring) -> dict[str, Any]:
    row = record.model_dump()
    row["title"] = keys.put_text(row["title"], "conversations.title", record.id)
    row["metadata"] = keys.put_json_value(row["metadata"], "conversations.metadata", record.id)
    return row


_MESSAGE = "conversation_messages.content"


def _run_row(values: dict[str, Any], run_id: str, keys: Keyring) -> dict[str, Any]:
    """Run columns as stored: content sealed when encryption is on."""
    row = dict(values)
    for key, label in _SEALED_RUN_TEXT.items():
        if row.get(key) is not None:
            row[key] = keys.put_text(row[key], label, run_id)
    if row.get("options") is not None:
        row["options"] = keys.put_json_value(row["options"], "runs.options", run_id)
    return row


def _masked_url(url: str) -> str:
    """A database URL without its password, for messages and health answers."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _one_line(error: BaseException) -> str:
    """A driver's message on one line, without SQLAlchemy's pointer to its docs."""
    return " ".join(str(error).split()).split(" (Background on this error", 1)[0]


def classify(error: SQLAlchemyError) -> StoreError:
    """The store error a database error means (for callers outside the store, e.g. readiness)."""
    return _classify(error)


def _classify(error: SQLAlchemyError) -> StoreError:
    """Name a database error the way operators and clients act on it."""
    original = getattr(error, "orig", None)
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    text_ = _one_line(original or error)
    if sqlstate in {"53100"} or "No space left" in text_ or "disk is full" in text_:
        return StoreError(f"the store is out of space: {text_}", code="storage_full", retry_after=5.0)
    if isinstance(error, DisconnectionError | InterfaceError) or (
        isinstance(error, OperationalError | DBAPIError) and getattr(error, "connection_invalidated", False)
    ):
        return StoreError(f"the store cannot be reached: {text_}", code="store_unavailable", retry_after=1.0)
    # No SQLSTATE: the server could not be reached or cut the connection (a restart, a crash).
    if isinstance(error, OperationalError) and (
        sqlstate is None or sqlstate.startswith(("08", "57", "40", "55"))
    ):
        return StoreError(f"the store is busy or gone: {text_}", code="store_unavailable", retry_after=1.0)
    return StoreError(f"the store refused this run's data: {type(error).__name__}: {text_}")


async def _fenced(connection: AsyncConnection, parts: list[RunWrites]) -> dict[str, StoreError]:
    """Lock the rows of the fenced runs in the batch and name those whose attempt moved on."""
    fences = {w.run_id: w.fence for w in parts if w.fence is not None}
    if not fences:
        return {}
    query = select(runs.c.id, runs.c.attempt).where(runs.c.id.in_(list(fences))).with_for_update()
    attempts = {row.id: int(row.attempt) for row in await connection.execute(query)}
    return {
        run_id: fenced_error(run_id, fence, attempts.get(run_id))
        for run_id, fence in fences.items()
        if attempts.get(run_id) != fence
    }


# Every event of a batch in one statement (one array per column), whatever the batch holds: the
# text never changes, so the server plans it once, and an event costs the server an array element
# instead of a statement of its own (a third of PostgreSQL's time per run went to single-row inserts).
_INSERT_EVENTS = (
    f"INSERT INTO {run_events.name} (run_id, seq, type, ts, data, trace_id, span_id) "
    "SELECT * FROM unnest(%s::varchar[], %s::integer[], %s::varchar[], %s::timestamptz[], %s::json[], "
    "%s::varchar[], %s::varchar[])"
)


async def _insert_events(connection: AsyncConnection, parts: list[RunWrites], keys: Keyring) -> None:
    """The events of ``parts`` (PostgreSQL): their data goes as the JSON text recorded with them."""
    events = [event_ for writes in parts for event_ in writes.events]
    if not events:
        return
    if connection.dialect.name != "postgresql":  # other databases: plain rows (SQLAlchemy encodes)
        await connection.execute(insert(run_events), [_event_row(event_, keys) for event_ in events])
        return
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
    run_ids, seqs, types, times, data, trace_ids, span_ids = columns
    for event_ in events:
        run_ids.append(event_.run_id)
        seqs.append(event_.seq)
        types.append(event_.type)
        times.append(event_.ts)
        data.append(keys.put_json(event_.data_json, "run_events.data", f"{event_.run_id}:{event_.seq}"))
        trace_ids.append(event_.trace_id)
        span_ids.append(event_.span_id)
    await connection.exec_driver_sql(_INSERT_EVENTS, columns)


async def _write_run(
    connection: AsyncConnection, writes: RunWrites, keys: Keyring, *, events: bool = True
) -> None:
    """One run's writes through SQLAlchemy (the path for databases other than SQLite); its events
    too unless ``events`` is False (the caller then writes a whole batch's at once)."""
    from agentstage.core.events import utc_now

    if writes.new_run is not None:
        await connection.execute(insert(runs), [_run_row(writes.new_run.model_dump(), writes.run_id, keys)])
    for digest, body in writes.snapshots.items():
        exists = await connection.execute(select(snapshots.c.hash).where(snapshots.c.hash == digest))
        if exists.first() is None:
            await connection.execute(
                insert(snapshots),
                [{"hash": digest, "schema_version": int(body.get("schema_version", 1)),
                  "body": keys.put_json_value(body, "snapshots.body", digest), "created_at": utc_now()}],
            )  # fmt: skip
    if events:
        await _insert_events(connection, [writes], keys)
    if writes.updates:
        await connection.execute(
            update(runs)
            .where(runs.c.id == bindparam("run_id_"))
            .values({k: bindparam(k) for k in writes.updates}),
            [{"run_id_": writes.run_id, **_run_row(writes.updates, writes.run_id, keys)}],
        )
    for turn in writes.turns:
        result = await connection.execute(
            update(conversations)
            .where(conversations.c.id == turn.conversation_id)
            .values(message_count=conversations.c.message_count + len(turn.messages), updated_at=turn.at)
            .returning(conversations.c.message_count)
        )
        row = result.first()
        if row is None:
            continue
        first = int(row[0]) - len(turn.messages)
        await connection.execute(
            insert(conversation_messages),
            [
                {"conversation_id": turn.conversation_id, "position": first + offset, "role": role,
                 "content": keys.put_text(content, _MESSAGE, f"{turn.conversation_id}:{first + offset}"),
                 "run_id": turn.run_id, "created_at": turn.at}
                for offset, (role, content) in enumerate(turn.messages)
            ],
        )  # fmt: skip


def _event_row(event_: RunEvent, keys: Keyring) -> dict[str, Any]:
    data = keys.put_json_value(event_.data, "run_events.data", f"{event_.run_id}:{event_.seq}")
    return {
        "run_id": event_.run_id,
        "seq": event_.seq,
        "type": event_.type,
        "ts": event_.ts,
        "data": data,
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
