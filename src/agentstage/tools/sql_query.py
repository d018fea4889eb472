"""``sql.query:v1`` — read-only SQL on a configured SQLite database.

Read-only is enforced by SQLite itself, not by inspecting the text: the database is opened with
``mode=ro``, ``query_only`` is on, and an authorizer refuses ATTACH (which could open another file
for writing). Row and time limits are enforced while the query runs; a cancel interrupts it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentstage.core.tools import ArgumentsTool, ToolContext
from agentstage.errors import ToolError

_DENIED = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}


def _authorizer(action: int, *_: object) -> int:
    return sqlite3.SQLITE_DENY if action in _DENIED else sqlite3.SQLITE_OK


def open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise ToolError(f"the SQL database {str(path)!r} does not exist", code="tool_unavailable")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    connection.set_authorizer(_authorizer)
    return connection


def describe_schema(path: Path) -> str:
    """``table(col type, …)`` lines so a model knows what it can query."""
    try:
        connection = open_read_only(path)
    except (ToolError, sqlite3.Error):
        return "(database not available)"
    try:
        tables = [
            r[0]
            for r in connection.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        lines = []
        for table in tables:
            columns = connection.execute(f'PRAGMA table_info("{table}")').fetchall()
            lines.append(f"{table}({', '.join(f'{c[1]} {c[2]}' for c in columns)})")
        return "; ".join(lines)
    finally:
        connection.close()


class QueryArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="One SELECT statement.", min_length=1, max_length=10_000)
    max_rows: int | None = Field(default=None, ge=1, description="Return at most this many rows.")


class SqlQuery(ArgumentsTool):
    name: ClassVar[str] = "sql.query"
    version: ClassVar[str] = "v1"
    category: ClassVar[str] = "data"
    keywords: ClassVar[tuple[str, ...]] = (
        "sql", "query", "database", "table", "data", "sales", "revenue", "orders", "customers",
        "products", "region", "regions", "top", "total", "average", "summarize", "summary",
    )  # fmt: skip
    Arguments = QueryArguments

    def __init__(self, database: str | Path, *, max_rows: int = 200, timeout: float = 5.0):
        self.database = Path(database).expanduser()
        self.max_rows = max_rows
        self.timeout = timeout
        self.description = (  # type: ignore[misc]
            "Run one read-only SQL SELECT on the SQLite database and return columns and rows. "
            f"Tables: {describe_schema(self.database)}"
        )

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        limit = min(arguments.get("max_rows") or self.max_rows, self.max_rows)
        budget = (
            self.timeout if context.remaining() is None else min(self.timeout, context.remaining() or 0.0)
        )
        stop = threading.Event()
        watcher = asyncio.create_task(self._relay_cancel(context, stop))
        try:
            return await asyncio.to_thread(self._query, arguments["query"], limit, budget, stop)
        finally:
            watcher.cancel()

    @staticmethod
    async def _relay_cancel(context: ToolContext, stop: threading.Event) -> None:
        try:
            await context.cancelled.wait()
        finally:
            stop.set()

    def _query(self, query: str, limit: int, budget: float, stop: threading.Event) -> dict[str, Any]:
        deadline = time.monotonic() + budget
        connection = open_read_only(self.database)
        connection.set_progress_handler(lambda: int(stop.is_set() or time.monotonic() > deadline), 1000)
        try:
            cursor = connection.execute(query)
            columns = [d[0] for d in cursor.description or []]
            rows = cursor.fetchmany(limit + 1)
        except sqlite3.OperationalError as error:
            raise self._explain(error, budget, stop) from None
        except sqlite3.Error as error:
            raise ToolError(f"SQL error: {error}", code="sql_error") from None
        finally:
            connection.close()
        return {
            "columns": columns,
            "rows": [list(row) for row in rows[:limit]],
            "row_count": min(len(rows), limit),
            "truncated": len(rows) > limit,
        }

    @staticmethod
    def _explain(error: sqlite3.OperationalError, budget: float, stop: threading.Event) -> ToolError:
        text = str(error)
        if "interrupted" in text:
            if stop.is_set():
                return ToolError("the query was cancelled", code="cancelled")
            return ToolError(f"the query ran longer than {budget:.1f}s and was stopped", code="tool_timeout")
        if "readonly" in text or "read-only" in text or "not authorized" in text or "query_only" in text:
            return ToolError(f"sql.query is read-only: {text}", code="sql_not_read_only")
        return ToolError(f"SQL error: {text}", code="sql_error")
