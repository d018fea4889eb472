"""The store's security tables: API key upkeep, the hash-chained audit log, shared rate limits.

Kept apart from the run tables so the run write path stays its own module; ``SqlRunStore``
inherits these methods. Reads run on the store's async engine. On SQLite, audit rows are written
on the store's one write connection, in a plain ``sqlite3`` transaction next to the run writes: every
audited request waits for its row, so this write is on the request path, and here it neither
competes with the run writer for SQLite's write lock nor pays for a pooled connection and
statement compilation per group of rows.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from agentstage.store.reads import Reads
from agentstage.store.sqlite_writes import sqlite_timestamp
from agentstage.store.tables import api_keys, audit_head, audit_log, rate_limits

if TYPE_CHECKING:
    from agentstage.store.sqlite_writes import SqliteWrites

HeadHash = Callable[[str, dict[str, Any]], str]
GENESIS = "0" * 64
_AUDIT_COLUMNS = [column.name for column in audit_log.columns]
_INSERT_AUDIT = (
    f"INSERT INTO audit_log ({', '.join(_AUDIT_COLUMNS)}) VALUES ({', '.join('?' * len(_AUDIT_COLUMNS))})"
)


def _chain_rows(
    entries: Sequence[dict[str, Any]], seq: int, prev: str, chain: HeadHash
) -> tuple[list[dict[str, Any]], str]:
    rows = []
    for offset, entry in enumerate(entries):
        row = {**entry, "id": seq + offset + 1, "prev_hash": prev}
        row["hash"] = prev = chain(prev, row)
        rows.append(row)
    return rows, prev


def _sqlite_audit_value(column: str, value: Any) -> Any:
    """The form SQLAlchemy itself stores (and reads back) for these columns on SQLite."""
    if value is None:
        return None
    if column == "ts":
        return sqlite_timestamp(value)
    if column == "details":
        return json.dumps(value)
    return value


def _utc(value: Any) -> Any:
    from datetime import UTC

    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def audit_row(row: Row[Any]) -> dict[str, Any]:
    data = dict(row._mapping)
    data["ts"] = _utc(data["ts"])
    return data


class SecurityTables(Reads):
    """Mixed into the SQL store; ``engine`` is the store's async engine."""

    is_sqlite: bool
    _sqlite: SqliteWrites | None

    if TYPE_CHECKING:

        async def _on_write_connection(self, function: Any, *args: Any) -> Any: ...

    # API keys --------------------------------------------------------------------------------

    async def rotate_api_key(self, name: str, key_hash: str, prefix: str, at: datetime) -> bool:
        """Give an active key a new secret; the old one stops working at once."""
        async with self.engine.begin() as connection:
            result = await connection.execute(
                update(api_keys)
                .where(api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                .values(key_hash=key_hash, prefix=prefix, rotated_at=at)
            )
        return bool(result.rowcount)

    async def touch_api_key(self, key_id: str, at: datetime) -> None:
        async with self.engine.begin() as connection:
            await connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at))

    # audit log -------------------------------------------------------------------------------

    async def append_audit(self, entries: Sequence[dict[str, Any]], chain: HeadHash) -> None:
        """Append entries in order, each chained to the previous row by ``chain(prev_hash, row)``.

        The head row is updated first, so the write lock is taken before the head is read: two
        processes appending at once are serialised and the chain never forks."""
        if not entries:
            return
        if self._sqlite is not None:
            await self._on_write_connection(self._append_audit_sqlite, self._sqlite, list(entries), chain)
            return
        async with self.engine.begin() as connection:
            seq, prev = await self._lock_head(connection, len(entries))
            rows, prev = _chain_rows(entries, seq, prev, chain)
            await connection.execute(insert(audit_log), rows)
            await connection.execute(update(audit_head).where(audit_head.c.id == 1).values(hash=prev))

    @staticmethod
    def _append_audit_sqlite(writes: SqliteWrites, entries: list[dict[str, Any]], chain: HeadHash) -> None:
        """On the write connection: the same statements as below, in one ``BEGIN IMMEDIATE`` transaction
        (the write lock first, so another process appending at once cannot fork the chain)."""
        count = len(entries)

        def append(connection: sqlite3.Connection) -> None:
            bumped = connection.execute("UPDATE audit_head SET seq = seq + ? WHERE id = 1", (count,))
            if not bumped.rowcount:
                connection.execute(
                    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?)", (count, GENESIS)
                )
            seq, prev = connection.execute("SELECT seq, hash FROM audit_head WHERE id = 1").fetchone()
            rows, prev = _chain_rows(entries, int(seq) - count, str(prev), chain)
            connection.executemany(
                _INSERT_AUDIT,
                [tuple(_sqlite_audit_value(c, row.get(c)) for c in _AUDIT_COLUMNS) for row in rows],
            )
            connection.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))

        try:
            writes._transaction(append)
        except (sqlite3.Error, ValueError, TypeError, OverflowError) as error:
            raise writes.classify(error) from None

    async def _lock_head(self, connection: AsyncConnection, count: int) -> tuple[int, str]:
        bumped = await connection.execute(
            update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq + count)
        )
        if not bumped.rowcount:
            await connection.execute(insert(audit_head).values(id=1, seq=count, hash=GENESIS))
        row = (await connection.execute(select(audit_head.c.seq, audit_head.c.hash))).one()
        return int(row.seq) - count, str(row.hash)

    async def audit_entries(
        self,
        *,
        since: datetime | None = None,
        principal: str | None = None,
        action: str | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        query = select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id)
        if since is not None:
            query = query.where(audit_log.c.ts >= since)
        if principal is not None:
            query = query.where(audit_log.c.principal == principal)
        if action is not None:
            query = query.where(audit_log.c.action == action)
        if limit is not None:
            query = query.limit(limit)
        return [audit_row(row) for row in await self._rows(query)]

    async def audit_chain_head(self) -> tuple[int, str] | None:
        row = await self._first(select(audit_head.c.seq, audit_head.c.hash))
        return (int(row.seq), str(row.hash)) if row else None

    async def audit_count(self) -> int:
        return int(await self._scalar(select(func.count()).select_from(audit_log)))

    # rate limits -----------------------------------------------------------------------------

    async def take_tokens(
        self, identity: str, capacity: float, per_second: float, need: int, extra: int, now: float
    ) -> tuple[int, float]:
        """Take ``need`` tokens (and up to ``extra`` more, to lease) from a shared bucket.

        Returns (tokens granted, seconds until ``need`` would be available); grants nothing unless
        all of ``need`` is there, so a batch is admitted whole or not at all."""
        async with self.engine.begin() as connection:
            locked = await connection.execute(
                update(rate_limits)
                .where(rate_limits.c.identity == identity)
                .values(updated_at=rate_limits.c.updated_at)
            )
            if not locked.rowcount:
                await self._insert_bucket(connection, identity, capacity, now)
            row = (
                await connection.execute(
                    select(rate_limits.c.tokens, rate_limits.c.updated_at).where(
                        rate_limits.c.identity == identity
                    )
                )
            ).one()
            tokens = min(capacity, float(row.tokens) + max(0.0, now - float(row.updated_at)) * per_second)
            if tokens >= need:
                granted = min(need + extra, math.floor(tokens))
                tokens -= granted
                wait = 0.0
            else:
                granted = 0
                wait = (need - tokens) / per_second if need <= capacity else math.inf
            await connection.execute(
                update(rate_limits)
                .where(rate_limits.c.identity == identity)
                .values(tokens=tokens, updated_at=now)
            )
        return granted, wait

    async def _insert_bucket(
        self, connection: AsyncConnection, identity: str, capacity: float, now: float
    ) -> None:
        values = {"identity": identity, "tokens": capacity, "updated_at": now}
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
        await connection.execute(upsert(rate_limits).values(**values).on_conflict_do_nothing())
