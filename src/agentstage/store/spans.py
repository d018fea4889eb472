"""The store's span tables: what a trace is made of, so it can be shown with nothing else running.

A run's own spans are not rows: they are derived from the run's events when its trace is read
(``agentstage.observability``). Kept here are what events do not hold: each tool call's timings
(``tool_timings``: its validation and its work), and whole spans that belong to no run's events
(the doors' server spans; and the spans runs wrote before their spans were derived).

Kept apart from the run tables like :mod:`agentstage.store.security`; ``SqlRunStore`` inherits
these methods. On SQLite, spans are written through the store's one write connection (the
same that writes runs), so they never contend with run writes for the database lock.

With content capture on, a span's attributes and events hold prompts, answers and tool data, and
its status message can quote them: with encryption at rest on, those three columns are sealed like
the runs' own content (store/crypto.py), bound to the span's row (``<trace id>:<span id>``), on both
write paths, and re-sealed by ``agent store rotate-key`` (store/rekey.py). Names, ids, kinds and
timings stay in the clear, so traces are still found by run and trace id.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.engine import Row

from agentstage.core.records import SpanRecord, ToolTiming
from agentstage.store.crypto import Keyring, dump
from agentstage.store.reads import Reads
from agentstage.store.tables import spans, tool_timings

_COLUMNS = ("trace_id", "span_id", "parent_span_id", "run_id", "name", "kind", "start_ns", "end_ns", "status",
            "status_message", "attributes", "events")  # fmt: skip
_INSERT = f"INSERT OR IGNORE INTO spans ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
assert set(_COLUMNS) == {c.name for c in spans.columns}, "the span insert names every column"


def row_name(trace_id: str, span_id: str) -> str:
    """How a span's row is named in the associated data of its sealed values."""
    return f"{trace_id}:{span_id}"


def _row(span: SpanRecord, keys: Keyring) -> dict[str, Any]:
    """The row SQLAlchemy writes: sealed values in place of the content columns when sealing."""
    row = row_name(span.trace_id, span.span_id)
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
        "status_message": keys.put_optional_text(span.status_message, "spans.status_message", row),
        "attributes": keys.put_json_value(span.attributes, "spans.attributes", row),
        "events": keys.put_json_value(span.events, "spans.events", row),
    }


def sqlite_insert_spans(
    connection: sqlite3.Connection, records: Sequence[SpanRecord], keys: Keyring | None = None
) -> None:
    """Insert on the SQLite write connection (a span seen twice is kept once). The JSON columns
    are written as the text SQLAlchemy's path would store, sealed or not. Rows are built as plain
    tuples in the insert's column order: a dozen spans per run make this a hot path."""
    keys = keys or Keyring()
    if keys.encrypting:
        rows = [_sealed_row(span, keys) for span in records]
    else:
        rows = [
            (span.trace_id, span.span_id, span.parent_span_id, span.run_id, span.name, span.kind,
             span.start_ns, span.end_ns, span.status, span.status_message, dump(span.attributes),
             dump(span.events) if span.events else "[]")
            for span in records
        ]  # fmt: skip
    connection.executemany(_INSERT, rows)


def _sealed_row(span: SpanRecord, keys: Keyring) -> tuple[Any, ...]:
    name = row_name(span.trace_id, span.span_id)
    return (
        span.trace_id, span.span_id, span.parent_span_id, span.run_id, span.name, span.kind,
        span.start_ns, span.end_ns, span.status,
        keys.put_optional_text(span.status_message, "spans.status_message", name),
        keys.put_json(dump(span.attributes), "spans.attributes", name),
        keys.put_json(dump(span.events), "spans.events", name),
    )  # fmt: skip


_TIMING_COLUMNS = ("run_id", "call_id", "validate_start_ns", "validate_end_ns", "run_start_ns", "run_end_ns",
                   "failed")  # fmt: skip
_INSERT_TIMINGS = (
    f"INSERT OR IGNORE INTO tool_timings ({', '.join(_TIMING_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_TIMING_COLUMNS))})"
)
assert set(_TIMING_COLUMNS) == {c.name for c in tool_timings.columns}, "the timing insert names every column"


def _timing_row(timing: ToolTiming) -> tuple[Any, ...]:
    return (timing.run_id, timing.call_id, timing.validate_start_ns, timing.validate_end_ns,
            timing.run_start_ns, timing.run_end_ns, timing.failed)  # fmt: skip


def sqlite_insert_tool_timings(connection: sqlite3.Connection, timings: Sequence[ToolTiming]) -> None:
    """Insert on the SQLite write connection (a call's timing seen twice is kept once)."""
    connection.executemany(_INSERT_TIMINGS, [_timing_row(timing) for timing in timings])


def _span(row: Row[Any], keys: Keyring) -> SpanRecord:
    data = dict(row._mapping)
    name = row_name(data["trace_id"], data["span_id"])
    data["status_message"] = keys.get_text(data["status_message"], "spans.status_message", name)
    data["attributes"] = keys.get_json(data["attributes"], "spans.attributes", name)
    data["events"] = keys.get_json(data["events"], "spans.events", name)
    return SpanRecord(**data)


class SpanTables(Reads):
    """Mixed into the SQL store; ``engine`` and ``keys`` are the store's."""

    keys: Keyring

    async def _insert_spans(self, records: Sequence[SpanRecord]) -> None:
        """Every database but SQLite (which writes on its write connection, see ``SqlRunStore``)."""
        async with self.engine.begin() as connection:
            await connection.execute(insert(spans), [_row(span, self.keys) for span in records])

    async def _insert_tool_timings(self, timings: Sequence[ToolTiming]) -> None:
        """Every database but SQLite; a call's timing seen twice is kept once."""
        rows = [dict(zip(_TIMING_COLUMNS, _timing_row(timing), strict=True)) for timing in timings]
        async with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as upsert

                await connection.execute(upsert(tool_timings).on_conflict_do_nothing(), rows)
            else:
                await connection.execute(insert(tool_timings), rows)

    async def tool_timings(self, run_id: str) -> list[ToolTiming]:
        """The timings of a run's tool calls (any order)."""
        query = select(tool_timings).where(tool_timings.c.run_id == run_id)
        return [ToolTiming(**dict(row._mapping)) for row in await self._rows(query)]

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
        return [_span(row, self.keys) for row in await self._rows(query)]
