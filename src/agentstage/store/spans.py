"""The store's span table: every finished span, so a trace can be shown with nothing else running.

Kept apart from the run tables like :mod:`agentstage.store.security`; ``SqlRunStore`` inherits
these methods. On SQLite, spans are written by the store's one write thread and connection (the
same that writes runs), so they never contend with run writes for the database lock.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from agentstage.core.records import SpanRecord
from agentstage.store.tables import spans

_COLUMNS = [c.name for c in spans.columns]
_INSERT = f"INSERT OR IGNORE INTO spans ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


def _row(span: SpanRecord) -> dict[str, Any]:
    return {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_span_id": span.parent_span_id,
        "run_id": span.run_id,
        "name": span.name,
        "kind": span.kind,
        "start_ns": span.start_ns,
        "end_ns": span.end_ns,
        "status": span.status,
        "status_message": span.status_message,
        "attributes": span.attributes,
        "events": span.events,
    }


def sqlite_insert_spans(connection: sqlite3.Connection, records: Sequence[SpanRecord]) -> None:
    """Insert on the SQLite write connection (a span seen twice is kept once)."""
    rows = []
    for span in records:
        row = _row(span)
        row["attributes"] = json.dumps(span.attributes, separators=(",", ":"), ensure_ascii=False)
        row["events"] = json.dumps(span.events, separators=(",", ":"), ensure_ascii=False)
        rows.append(tuple(row[c] for c in _COLUMNS))
    connection.executemany(_INSERT, rows)


def _span(row: Row[Any]) -> SpanRecord:
    data = dict(row._mapping)
    return SpanRecord(**data)


class SpanTables:
    """Mixed into the SQL store; ``engine`` is the store's async engine."""

    @property
    def engine(self) -> AsyncEngine:
        raise NotImplementedError

    async def _insert_spans(self, records: Sequence[SpanRecord]) -> None:
        """Every database but SQLite (which writes on its write thread, see ``SqlRunStore``)."""
        async with self.engine.begin() as connection:
            await connection.execute(insert(spans), [_row(span) for span in records])

    async def spans(self, *, run_id: str | None = None, trace_id: str | None = None) -> list[SpanRecord]:
        """The spans of a run, or of a whole trace, oldest first. With both: the run's spans and
        the spans of its trace that belong to no run (the requests that started it)."""
        query = select(spans).order_by(spans.c.start_ns, spans.c.span_id)
        if run_id is not None and trace_id is not None:
            query = query.where(
                or_(spans.c.run_id == run_id, (spans.c.trace_id == trace_id) & spans.c.run_id.is_(None))
            )
        elif run_id is not None:
            query = query.where(spans.c.run_id == run_id)
        elif trace_id is not None:
            query = query.where(spans.c.trace_id == trace_id)
        else:
            raise ValueError("spans() needs a run_id or a trace_id")
        async with self.engine.connect() as connection:
            return [_span(row) for row in await connection.execute(query)]
