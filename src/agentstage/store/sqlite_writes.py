"""The SQLite write path: one plain ``sqlite3`` connection, prepared ``executemany`` per table.

Every write of every run goes through here, on one thread, so it is the store's hot path. Rows are
encoded by hand from pre-serialised event JSON (no SQLAlchemy statement compilation, no JSON
encoding of event data a second time). A batch normally lands in one transaction; when the
database refuses a row, the batch is written again with one savepoint per run, so only the runs
whose rows are bad are left out. With encryption at rest on, values that carry content are sealed
here, from the same pre-serialised text (see :mod:`agentstage.store.crypto`).
"""

from __future__ import annotations

import errno
import json
import shutil
import sqlite3
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Table

from agentstage.core.events import TERMINAL_EVENT_TYPES
from agentstage.core.records import SpanRecord, ToolTiming
from agentstage.errors import StoreError
from agentstage.store.base import Batch, RunWrites
from agentstage.store.checkpoints import WalCheckpointer
from agentstage.store.crypto import Keyring
from agentstage.store.leases import fenced_error
from agentstage.store.spans import sqlite_insert_spans, sqlite_insert_tool_timings
from agentstage.store.tables import conversation_messages, run_events, runs, snapshots, store_probe

_FULL = {sqlite3.SQLITE_FULL}
_UNAVAILABLE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PROTOCOL}
LOW_SPACE_BYTES = 1 << 20
WAL_SIZE_LIMIT = 64 << 20


def sqlite_timestamp(value: datetime) -> str:
    """The text form SQLAlchemy's SQLite DateTime reads back (UTC, naive, microseconds).
    ``isoformat`` is several times cheaper than ``strftime``; every event row has a time."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _encoder(table: Table) -> Callable[[str, Any], Any]:
    json_columns = {c.name for c in table.columns if isinstance(c.type, JSON)}
    time_columns = {c.name for c in table.columns if isinstance(c.type, DateTime)}
    bool_columns = {c.name for c in table.columns if isinstance(c.type, Boolean)}

    def encode(column: str, value: Any) -> Any:
        if value is None:
            return None
        if column in json_columns:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        if column in time_columns:
            return sqlite_timestamp(value)
        if column in bool_columns:
            return int(bool(value))
        if isinstance(value, Enum):
            return value.value
        return value

    return encode


_encode_run = _encoder(runs)
_RUN_COLUMNS = [c.name for c in runs.columns]
# Run columns that carry content, sealed when encryption is on: text as is, JSON after encoding.
_SEALED_TEXT = {name: f"runs.{name}" for name in ("input", "output", "error_message")}
_SEALED_JSON = {"options": "runs.options"}


def _run_value(keys: Keyring, run_id: str, column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _SEALED_TEXT:
        return keys.put_text(value, _SEALED_TEXT[column], run_id)
    if column in _SEALED_JSON:
        return keys.put_json(_encode_run(column, value), _SEALED_JSON[column], run_id)
    return _encode_run(column, value)


_INSERT_RUN = f"INSERT INTO runs ({', '.join(_RUN_COLUMNS)}) VALUES ({', '.join('?' * len(_RUN_COLUMNS))})"
_INSERT_EVENT = f"INSERT INTO {run_events.name} (run_id, seq, type, ts, data, trace_id, span_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
_INSERT_SNAPSHOT = (
    f"INSERT OR IGNORE INTO {snapshots.name} (hash, schema_version, body, created_at) VALUES (?, ?, ?, ?)"
)
_NEXT_POSITIONS = (
    "UPDATE conversations SET message_count = message_count + ?, updated_at = ? WHERE id = ? "
    "RETURNING message_count"
)
_INSERT_MESSAGE = (
    f"INSERT INTO {conversation_messages.name} (conversation_id, position, role, content, run_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_MESSAGE = "conversation_messages.content"
_PROBE = f"INSERT OR REPLACE INTO {store_probe.name} (id, at) VALUES (1, ?)"


class WouldWait(Exception):
    """The write lock is held elsewhere (another process, a checkpoint): this write must wait for
    it, and so must not run on the event loop (see :mod:`agentstage.store.write_path`)."""


class SqliteWrites:
    """Owns the write connection; one method runs at a time, on the event loop or the write thread
    (:class:`agentstage.store.write_path.SqliteWritePath` decides)."""

    def __init__(self, path: Path, busy_timeout: float, keys: Keyring | None = None):
        self.path = path
        self.keys = keys or Keyring()
        self.busy_timeout_ms = max(int(busy_timeout * 1000), 1)
        self._connection: sqlite3.Connection | None = None
        self.checkpointer: WalCheckpointer | None = None
        self._no_wait = False  # set while a write runs on the event loop

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")  # while it is set up
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA foreign_keys=ON")
            connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")  # the log file after a burst
            self.checkpointer = WalCheckpointer(self.path, self.busy_timeout_ms)
            self.checkpointer.attach(connection)  # checkpoints run off this path
            connection.execute("PRAGMA busy_timeout=0")  # a write waits only in ``waiting``
            self._connection = connection
        return self._connection

    def may_write_now(self) -> bool:
        """Open, and its log checkpointed in time: a commit here will not copy the log itself."""
        return self._connection is not None and (self.checkpointer is None or self.checkpointer.keeping_up)

    def now(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a write without waiting for the write lock: :class:`WouldWait` when it is held.
        The connection has no busy timeout outside :meth:`waiting`, so this costs nothing more."""
        self._no_wait = True
        try:
            return function(*args)
        finally:
            self._no_wait = False

    def waiting(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a write that waits up to the busy timeout for the write lock (on the write thread)."""
        connection = self._open()
        connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        try:
            return function(*args)
        finally:
            if self._connection is not None:  # not closed by ``function``
                connection.execute("PRAGMA busy_timeout=0")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None

    def write(self, batch: Batch) -> dict[str, StoreError]:
        parts = [writes for writes in batch.runs.values() if writes]
        if not parts:
            return {}
        fenced: dict[str, StoreError] = {}

        def write_all(connection: sqlite3.Connection) -> None:
            fenced.update(_fenced(connection, parts))
            self._write_all(connection, [w for w in parts if w.run_id not in fenced])

        try:
            self._transaction(write_all)
            return fenced
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
            failure = self.classify(error)
            if failure.code != "store_write_failed":
                raise failure from None
        refused: dict[str, StoreError] = {}

        def write_each(connection: sqlite3.Connection) -> None:
            refused.update(_fenced(connection, parts))
            self._write_each(connection, [w for w in parts if w.run_id not in refused], refused)

        try:
            self._transaction(write_each)
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
            raise self.classify(error) from None
        return refused

    def probe(self, at: datetime) -> None:
        try:
            self._transaction(lambda c: c.execute(_PROBE, (sqlite_timestamp(at),)))
        except sqlite3.Error as error:
            raise self.classify(error) from None

    def add_spans(self, records: list[SpanRecord]) -> None:
        """Spans (observability) on the same connection as every run write: no lock contention."""
        try:
            self._transaction(lambda c: sqlite_insert_spans(c, records, self.keys))
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
            raise self.classify(error) from None

    def add_tool_timings(self, timings: list[ToolTiming]) -> None:
        """Tool timings (observability), on the same connection as every run write."""
        try:
            self._transaction(lambda c: sqlite_insert_tool_timings(c, timings))
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
            raise self.classify(error) from None

    def _transaction(self, body: Callable[[sqlite3.Connection], object]) -> None:
        connection = self._open()
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            if self._no_wait and getattr(error, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
                raise WouldWait from None
            raise
        try:
            body(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        if self.checkpointer is not None:
            self.checkpointer.wrote()

    def _write_all(self, connection: sqlite3.Connection, parts: list[RunWrites]) -> None:
        keys = self.keys
        new_runs = [_run_row(keys, w) for w in parts if w.new_run is not None]
        if new_runs:
            connection.executemany(_INSERT_RUN, new_runs)
        shots = [row for w in parts for row in _snapshot_rows(keys, w)]
        if shots:
            connection.executemany(_INSERT_SNAPSHOT, shots)
        events = [row for w in parts for row in _event_rows(keys, w)]
        if events:
            connection.executemany(_INSERT_EVENT, events)
        for sql, rows in _grouped_updates(keys, parts).items():
            connection.executemany(sql, rows)
        for writes in parts:
            _write_turns(keys, connection, writes)

    def _write_each(
        self, connection: sqlite3.Connection, parts: list[RunWrites], refused: dict[str, StoreError]
    ) -> None:
        for writes in parts:
            connection.execute("SAVEPOINT run_writes")
            try:
                self._write_all(connection, [writes])
            except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
                connection.execute("ROLLBACK TO run_writes")
                connection.execute("RELEASE run_writes")
                failure = self.classify(error)
                if failure.code != "store_write_failed":
                    raise failure from None
                refused[writes.run_id] = failure
                writes.kept_events = self._salvage(connection, writes)
            else:
                connection.execute("RELEASE run_writes")

    def _salvage(self, connection: sqlite3.Connection, writes: RunWrites) -> int:
        """A run's refused writes: keep its events up to the one the database refuses (or up to its
        ending: the run ends failed now), each in its own savepoint; how many were kept. A run whose
        creation was refused keeps nothing."""
        if writes.new_run is not None:
            return 0
        kept = 0
        for event, row in zip(writes.events, _event_rows(self.keys, writes), strict=True):
            if event.type in TERMINAL_EVENT_TYPES:
                break
            connection.execute("SAVEPOINT salvage")
            try:
                connection.execute(_INSERT_EVENT, row)
            except (sqlite3.Error, ValueError, TypeError, OverflowError):
                connection.execute("ROLLBACK TO salvage")
                connection.execute("RELEASE salvage")
                break
            connection.execute("RELEASE salvage")
            kept += 1
        return kept

    def classify(self, error: BaseException) -> StoreError:
        """Name what went wrong the way operators and clients act on it."""
        code = getattr(error, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(error)
        if primary in _FULL or "disk is full" in text or _errno(error) == errno.ENOSPC:
            return self.full()
        if primary == sqlite3.SQLITE_IOERR and self.free_bytes() < LOW_SPACE_BYTES:
            return self.full()
        if primary in _UNAVAILABLE or primary == sqlite3.SQLITE_IOERR or "locked" in text:
            return StoreError(
                f"the store {str(self.path)!r} cannot be written right now: {text}",
                code="store_unavailable",
                retry_after=1.0,
            )
        return StoreError(f"the store refused this run's data: {type(error).__name__}: {text}")

    def full(self) -> StoreError:
        free = self.free_bytes()
        return StoreError(
            f"the store {str(self.path)!r} is out of space ({free:,} bytes free on its disk)",
            code="storage_full",
            retry_after=5.0,
            details={"store": str(self.path), "free_bytes": free},
        )

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.path.parent).free
        except OSError:
            return 0


def _fenced(connection: sqlite3.Connection, parts: list[RunWrites]) -> dict[str, StoreError]:
    """The fenced runs whose stored attempt moved on (the write lock is already held)."""
    fences = {w.run_id: w.fence for w in parts if w.fence is not None}
    if not fences:
        return {}
    marks = ", ".join("?" * len(fences))
    rows = connection.execute(f"SELECT id, attempt FROM runs WHERE id IN ({marks})", list(fences)).fetchall()
    attempts = {run_id: int(attempt) for run_id, attempt in rows}
    return {
        run_id: fenced_error(run_id, fence, attempts.get(run_id))
        for run_id, fence in fences.items()
        if attempts.get(run_id) != fence
    }


def _errno(error: BaseException) -> int | None:
    cause = error.__cause__ or error.__context__
    return cause.errno if isinstance(cause, OSError) else None


def _run_row(keys: Keyring, writes: RunWrites) -> tuple[Any, ...]:
    assert writes.new_run is not None
    record = writes.new_run.model_dump()
    run_id = writes.run_id
    return tuple(_run_value(keys, run_id, column, record.get(column)) for column in _RUN_COLUMNS)


def _event_rows(keys: Keyring, writes: RunWrites) -> Iterable[tuple[Any, ...]]:
    sealing = keys.encrypting
    for event in writes.events:
        data = event.data_json
        yield (
            event.run_id,
            event.seq,
            event.type,
            sqlite_timestamp(event.ts),
            keys.put_json(data, "run_events.data", f"{event.run_id}:{event.seq}") if sealing else data,
            event.trace_id,
            event.span_id,
        )


def _snapshot_rows(keys: Keyring, writes: RunWrites) -> Iterable[tuple[Any, ...]]:
    for digest, body in writes.snapshots.items():
        yield (
            digest,
            int(body.get("schema_version", 1)),
            keys.put_json(
                json.dumps(body, separators=(",", ":"), ensure_ascii=False), "snapshots.body", digest
            ),
            sqlite_timestamp(datetime.now(UTC)),
        )


def _grouped_updates(keys: Keyring, parts: list[RunWrites]) -> dict[str, list[tuple[Any, ...]]]:
    """Run updates grouped by the columns they set: one executemany per group."""
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for writes in parts:
        if not writes.updates:
            continue
        columns = sorted(writes.updates)
        sql = f"UPDATE runs SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?"
        run_id = writes.run_id
        row = (*(_run_value(keys, run_id, c, writes.updates[c]) for c in columns), run_id)
        groups.setdefault(sql, []).append(row)
    return groups


def _write_turns(keys: Keyring, connection: sqlite3.Connection, writes: RunWrites) -> None:
    for turn in writes.turns:
        at = sqlite_timestamp(turn.at)
        row = connection.execute(_NEXT_POSITIONS, (len(turn.messages), at, turn.conversation_id)).fetchone()
        if row is None:  # the conversation was deleted while the run went on: nothing to add to
            continue
        first = int(row[0]) - len(turn.messages)
        conversation = turn.conversation_id
        connection.executemany(
            _INSERT_MESSAGE,
            [
                (conversation, first + offset, role, keys.put_text(content, _MESSAGE, f"{conversation}:{first + offset}"),
                 turn.run_id, at)
                for offset, (role, content) in enumerate(turn.messages)
            ],
        )  # fmt: skip
