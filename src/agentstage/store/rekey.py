"""Key upkeep for encryption at rest: which keys the stored data needs, and re-sealing it.

The store lists the ids (never the material) of the keys its values may be sealed with, in
``encryption_keys``. Opening the store compares that list with the keyring, so a wrong or missing
key is one clear error at start-up instead of a failure on some later read; a process that seals
with a new key adds its id before it writes anything.

Re-sealing (``agent store rotate-key``) keeps no bookkeeping of its own, which is what makes it
safe to interrupt and resumable: the work left is defined by the data — values not sealed with
the current key, found by comparing how each stored value begins, in SQL. Each page of rows is
rewritten in its own transaction, and a row only if it still holds what was read (compare and
set), so a value a running server writes meanwhile is never overwritten; it is picked up by the
next sweep. Once no value needs an older key, the older ids leave the list. On SQLite the
rewrite runs with ``secure_delete`` and ends with a truncating WAL checkpoint, so the replaced
values do not linger in free space or in the write-ahead log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, Text, and_, cast, delete, func, or_, select, text, tuple_, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from agentstage.errors import StoreError
from agentstage.store.base import KeyReport, RekeyResult
from agentstage.store.crypto import Keyring
from agentstage.store.tables import (
    batches,
    conversation_messages,
    conversations,
    encryption_keys,
    run_events,
    runs,
    snapshots,
    spans,
)

PAGE_ROWS = 500
SWEEPS = 3
Progress = Callable[[str, int], None]  # (table, rows just re-sealed)


@dataclass(frozen=True)
class Sealed:
    """A table's columns that carry content, and how its rows are named in associated data."""

    table: Table
    order: tuple[str, ...]  # the primary key: pages are taken in its order
    row: tuple[str, ...]  # the columns whose values, joined by ":", name the row
    text: tuple[str, ...] = ()
    json: tuple[str, ...] = ()

    def row_id(self, row: Row[Any]) -> str:
        return ":".join(str(row._mapping[name]) for name in self.row)


SEALED: tuple[Sealed, ...] = (
    Sealed(runs, ("id",), ("id",), text=("input", "output", "error_message"), json=("options",)),
    Sealed(run_events, ("run_id", "seq"), ("run_id", "seq"), json=("data",)),
    Sealed(conversations, ("id",), ("id",), text=("title",), json=("metadata",)),
    Sealed(conversation_messages, ("id",), ("conversation_id", "position"), text=("content",)),
    Sealed(snapshots, ("hash",), ("hash",), json=("body",)),
    Sealed(batches, ("id",), ("id",), json=("items",)),
    Sealed(
        spans,
        ("trace_id", "span_id"),
        ("trace_id", "span_id"),
        text=("status_message",),
        json=("attributes", "events"),
    ),
)


class KeyMaintenance:
    """Mixed into the SQL store (``engine``, ``keys`` and ``is_sqlite`` are the store's)."""

    keys: Keyring
    is_sqlite: bool

    @property
    def engine(self) -> AsyncEngine:
        raise NotImplementedError

    async def check_encryption(self, *, register: bool = False) -> None:
        """Raise the one key error when the store lists a key the keyring lacks; with ``register``,
        list the current key (before anything is sealed with it)."""
        async with self.engine.begin() as connection:
            listed = await _listed(connection)
            for kid in listed:
                if not self.keys.can_open(kid):
                    raise self.keys.missing_key(kid)
            current = self.keys.current_id
            if register and current is not None and current not in listed:
                await self._list_key(connection, current)

    async def _list_key(self, connection: AsyncConnection, kid: str) -> None:
        from agentstage.core.events import utc_now

        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as upsert
        else:
            from sqlalchemy.dialects.postgresql import insert as upsert  # type: ignore[assignment]
        row = {"key_id": kid, "added_at": utc_now()}
        await connection.execute(upsert(encryption_keys).values(**row).on_conflict_do_nothing())

    async def key_report(self) -> KeyReport:
        async with self.engine.connect() as connection:
            listed = await _listed(connection)
            pending = {spec.table.name: await self._count_stale(connection, spec) for spec in SEALED}
        return KeyReport(self.keys.current_id, self.keys.key_ids, listed, pending)

    async def reencrypt(self, progress: Progress | None = None, *, page: int = PAGE_ROWS) -> RekeyResult:
        """Re-seal every stored value with the current key (with no current key: store it in the
        clear). Each page commits on its own; run again after an interruption to finish."""
        report = progress or (lambda _table, _rows: None)
        rows = 0
        for _ in range(SWEEPS):
            for spec in SEALED:
                rows += await self._sweep(spec, page, report)
            left = (await self.key_report()).pending
            if not any(left.values()):
                break
        else:
            waiting = sum(left.values())
            raise StoreError(
                f"{waiting} rows were written with an older key while re-encrypting: a process still "
                "seals with it — restart every server with the new store.encryption_key, then run "
                "`agent store rotate-key` again",
                code="rekey_incomplete",
            )
        retired = await self._retire_old_keys()
        return RekeyResult(rows, retired, await self._checkpoint())

    async def _sweep(self, spec: Sealed, page: int, report: Progress) -> int:
        after: tuple[Any, ...] | None = None
        total = 0
        while True:
            async with self.engine.begin() as connection:
                if self.is_sqlite:
                    await connection.execute(text("PRAGMA secure_delete = ON"))
                found = (await connection.execute(self._stale_page(spec, after, page))).all()
                changed = sum([await self._reseal(connection, spec, row) for row in found])
            if changed:
                report(spec.table.name, changed)
            total += changed
            if len(found) < page:
                return total
            after = tuple(found[-1]._mapping[name] for name in spec.order)

    def _stale_page(self, spec: Sealed, after: tuple[Any, ...] | None, page: int) -> Any:
        table = spec.table
        names = dict.fromkeys(spec.order + spec.row)
        columns: list[Any] = [table.c[name] for name in names]
        columns += [cast(table.c[name], Text).label(f"raw_{name}") for name in spec.text + spec.json]
        order = [table.c[name] for name in spec.order]
        query = select(*columns).where(self._stale(spec)).order_by(*order).limit(page)
        if after is not None:
            query = query.where(tuple_(*order) > tuple_(*after) if len(order) > 1 else order[0] > after[0])
        return query

    def _stale(self, spec: Sealed) -> ColumnElement[bool]:
        """Rows holding a value that is not sealed with the current key (or, with none, is sealed)."""
        kid = self.keys.current_id
        tests = []
        for name, is_json in [(n, False) for n in spec.text] + [(n, True) for n in spec.json]:
            column = spec.table.c[name]
            prefix = self.keys.prefix(kid, json_column=is_json)
            head = func.substr(cast(column, Text), 1, len(prefix))
            tests.append(and_(column.is_not(None), head != prefix) if kid else head == prefix)
        return or_(*tests)

    async def _count_stale(self, connection: AsyncConnection, spec: Sealed) -> int:
        query = select(func.count()).select_from(spec.table).where(self._stale(spec))
        return int((await connection.execute(query)).scalar_one())

    async def _reseal(self, connection: AsyncConnection, spec: Sealed, row: Row[Any]) -> int:
        """Rewrite the row's stale values; 0 when a writer changed the row since it was read."""
        keys, row_id, table = self.keys, spec.row_id(row), spec.table
        values: dict[str, Any] = {}
        guards = [table.c[name] == row._mapping[name] for name in spec.order]
        for name in spec.text + spec.json:
            raw = row._mapping[f"raw_{name}"]
            label = f"{table.name}.{name}"
            if raw is None or not self._is_stale(raw, json_column=name in spec.json):
                continue
            if name in spec.text:
                values[name] = keys.put_text(keys.get_text(raw, label, row_id) or "", label, row_id)
            else:
                plain = keys.get_json_text(json.loads(raw), label, row_id) or raw
                values[name] = keys.seal(plain, label, row_id) if keys.encrypting else json.loads(plain)
            guards.append(cast(table.c[name], Text) == raw)
        if not values:
            return 0
        result = await connection.execute(update(table).where(*guards).values(values))
        return 1 if result.rowcount else 0

    def _is_stale(self, raw: str, *, json_column: bool) -> bool:
        kid = self.keys.current_id
        if kid is None:
            return raw.startswith(self.keys.prefix(None, json_column=json_column))
        return not raw.startswith(self.keys.prefix(kid, json_column=json_column))

    async def _retire_old_keys(self) -> list[str]:
        """Once nothing needs them, keys other than the current one leave the store's list."""
        current = self.keys.current_id
        async with self.engine.begin() as connection:
            retired = [kid for kid in await _listed(connection) if kid != current]
            if retired:
                await connection.execute(delete(encryption_keys).where(encryption_keys.c.key_id.in_(retired)))
        return retired

    async def _checkpoint(self) -> bool:
        """Empty SQLite's write-ahead log, which may still hold pages with the replaced values."""
        if not self.is_sqlite:
            return True
        async with self.engine.connect() as connection:
            busy = (await connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))).first()
        return busy is None or not busy[0]


async def _listed(connection: AsyncConnection) -> list[str]:
    rows = await connection.execute(select(encryption_keys.c.key_id).order_by(encryption_keys.c.added_at))
    return [str(row[0]) for row in rows]
