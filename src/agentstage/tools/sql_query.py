"""``sql.query:v1`` — read-only SQL on a configured SQLite database.

Read-only is enforced by SQLite itself, not by inspecting the text: the database is opened with
``mode=ro``, ``query_only`` is on, and an authorizer refuses ATTACH (which could open another file
for writing). Row, byte and time limits are enforced while the query runs (SQLite itself refuses
to build a value longer than the byte limit, so a query cannot balloon the server's memory); a
cancel interrupts it. Queries run on their own small thread pool, so slow queries never queue
behind (or hold up) the rest of the process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentstage.core.tools import ArgumentsTool, ToolContext
from agentstage.errors import ToolError

_DENIED = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}


def _authorizer(action: int, *_: object) -> int:
    return sqlite3.SQLITE_DENY if action in _DENIED else sqlite3.SQLITE_OK


def open_read_only(path: Path, max_value_bytes: int | None = None) -> sqlite3.Connection:
    if not path.is_file():
        raise ToolError(f"the SQL database {str(path)!r} does not exist", code="tool_unavailable")
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    connection.execute("PRAGMA query_only = ON")
    connection.set_authorizer(_authorizer)
    if max_value_bytes is not None:
        connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)
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

    def __init__(
        self,
        database: str | Path,
        *,
        max_rows: int = 200,
        timeout: float = 5.0,
        max_bytes: int = 1_048_576,
        concurrency: int = 4,
    ):
        self.database = Path(database).expanduser()
        self.max_rows = max_rows
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._threads = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sql-query")
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
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            return await loop.run_in_executor(
                self._threads, self._query, arguments["query"], limit, budget, stop, started
            )
        except asyncio.CancelledError:
            stop.set()  # the thread's progress handler interrupts the query
            raise
        finally:
            watcher.cancel()

    @staticmethod
    async def _relay_cancel(context: ToolContext, stop: threading.Event) -> None:
        try:
            await context.cancelled.wait()
        finally:
            stop.set()

    def _query(
        self, query: str, limit: int, budget: float, stop: threading.Event, queued_at: float
    ) -> dict[str, Any]:
        deadline = queued_at + budget  # time spent waiting for a thread counts against the budget
        if time.monotonic() > deadline:
            raise ToolError(f"the query waited longer than {budget:.1f}s for its turn", code="tool_timeout")
        connection = open_read_only(self.database, self.max_bytes)
        connection.set_progress_handler(lambda: int(stop.is_set() or time.monotonic() > deadline), 1000)
        rows: list[list[Any]] = []
        size = 0
        cut = False
        try:
            cursor = connection.execute(query)
            columns = [d[0] for d in cursor.description or []]
            for row in cursor:
                if len(rows) == limit:
                    cut = True
                    break
                size += _row_bytes(row)
                if size > self.max_bytes:
                    cut = True
                    break
                rows.append(list(row))
        except sqlite3.OperationalError as error:
            raise self._explain(error, budget, stop) from None
        except sqlite3.DataError as error:
            raise ToolError(
                f"a value in the answer is larger than the limit of {self.max_bytes:,} bytes ({error})",
                code="tool_limit",
            ) from None
        except sqlite3.Error as error:
            raise ToolError(f"SQL error: {error}", code="sql_error") from None
        finally:
            connection.close()
        return {
            "columns": columns,
            "rows": rows,
            "row_count": len(rows),
            "truncated": cut,
        }

    def _explain(self, error: sqlite3.OperationalError, budget: float, stop: threading.Event) -> ToolError:
        text = str(error)
        if "too big" in text:
            return ToolError(
                f"a value in the query is larger than the limit of {self.max_bytes:,} bytes ({text})",
                code="tool_limit",
            )
        if "interrupted" in text:
            if stop.is_set():
                return ToolError("the query was cancelled", code="cancelled")
            return ToolError(f"the query ran longer than {budget:.1f}s and was stopped", code="tool_timeout")
        if "readonly" in text or "read-only" in text or "not authorized" in text or "query_only" in text:
            return ToolError(f"sql.query is read-only: {text}", code="sql_not_read_only")
        return ToolError(f"SQL error: {text}", code="sql_error")


def _row_bytes(row: tuple[Any, ...]) -> int:
    """About how many bytes a row adds to the JSON answer."""
    total = 2
    for value in row:
        if isinstance(value, str | bytes):
            total += len(value) + 3
        else:
            total += len(json.dumps(value, default=str)) + 1
    return total
