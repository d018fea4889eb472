"""``sql.query:v1`` — read-only SQL on a configured SQLite database.

Read-only is enforced by SQLite itself, not by inspecting the text: the database is opened with
``mode=ro``, ``query_only`` is on, and an authorizer refuses ATTACH (which could open another file
for writing). Row, byte and time limits are enforced while the query runs (SQLite itself refuses
to build a value longer than the byte limit). Queries run in worker processes with a memory limit
(see :mod:`agentstage.tools.isolation`): a query that ignores its deadline — one SQLite function
call can run for many seconds without being interruptible — or its run's cancel is stopped by
killing its worker, so no query can hold the server's CPU, memory or threads.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from agentstage.core.guidance import StringGrammar, ToolExample, default_quote, format_value
from agentstage.core.tools import ArgumentsTool, ToolContext
from agentstage.errors import ToolError
from agentstage.tools.isolation import IsolatedPool
from agentstage.tools.sql_schema import SqlGuide

HARD_STOP_GRACE = 1.0  # seconds a query may overrun its budget before its worker is killed

_DENIED = {sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH}
QUOTED_ROWS = 12
EXAMPLE_BUDGET = 0.25  # seconds an example query may take to show its result


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
    """``table(col, col (A | B), …)`` so a model knows what it can query."""
    if not path.is_file():
        return "(database not available)"
    return SqlGuide.load(path).describe()


class QueryArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="One SELECT statement.", min_length=1, max_length=10_000)
    max_rows: int | None = Field(default=None, ge=1, description="Return at most this many rows.")


class SqlQuery(ArgumentsTool):
    name: ClassVar[str] = "sql.query"
    version: ClassVar[str] = "v1"
    category: ClassVar[str] = "data"
    GENERIC_KEYWORDS: ClassVar[tuple[str, ...]] = (
        "sql", "query", "database", "table", "tables", "data", "rows", "records", "top", "total",
        "average", "summarize", "summary", "count", "most", "highest", "lowest", "best", "per",
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
        self._workers = IsolatedPool("agentstage.tools.sql_query:run_query", size=concurrency)
        self.guide = SqlGuide.load(self.database) if self.database.is_file() else SqlGuide([])
        self._example_outputs: dict[str, Any] = {}
        self.keywords = (*self.GENERIC_KEYWORDS, *sorted(self.guide.keywords()))
        self.description = (  # type: ignore[misc]
            "Run one read-only SQL SELECT on the SQLite database and return columns and rows. "
            f"Tables: {self.guide.describe()}"
        )

    def action_examples(self) -> list[ToolExample]:
        """Worked examples built from this database's own schema (see :mod:`sql_schema`)."""
        return self.guide.examples()

    def example_output(self, arguments: dict[str, Any]) -> Any:
        """An example's real result, so a worked example can show its answer (cheap queries only)."""
        key = arguments["query"]
        if key not in self._example_outputs:
            self._example_outputs[key] = run_query(
                str(self.database), key, 20, self.max_bytes, EXAMPLE_BUDGET
            )
        return self._example_outputs[key]

    def hints(self, text: str) -> list[str]:
        return self.guide.hints(text)

    def string_grammars(self, prefix: str) -> dict[str, StringGrammar]:
        grammar = self.guide.grammar(prefix)
        return {"query": grammar} if grammar is not None else {}

    def quote(self, output: Any) -> str:
        """Rows as a person reads them: ``South: 30902`` per line, a lone value as itself."""
        if not isinstance(output, dict) or "rows" not in output:
            return default_quote(output)
        rows = output["rows"]
        if not rows:
            return "no rows"
        columns = output.get("columns") or []
        if len(rows) == 1 and len(rows[0]) >= 3 and len(columns) == len(rows[0]):
            return ", ".join(f"{name}: {format_value(v)}" for name, v in zip(columns, rows[0], strict=True))
        lines = [": ".join(format_value(v) for v in row) if len(row) == 2 else
                 ", ".join(format_value(v) for v in row) for row in rows[:QUOTED_ROWS]]  # fmt: skip
        if len(rows) > QUOTED_ROWS or output.get("truncated"):
            lines.append(f"… ({output.get('row_count', len(rows))} rows in all)")
        return "\n".join(lines)

    async def run(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        limit = min(arguments.get("max_rows") or self.max_rows, self.max_rows)
        remaining = context.remaining()
        budget = self.timeout if remaining is None else min(self.timeout, remaining)
        result: dict[str, Any] = await self._workers.call(
            str(self.database),
            arguments["query"],
            limit,
            self.max_bytes,
            budget,
            seconds=budget + HARD_STOP_GRACE,
            cancelled=context.cancelled,
        )
        return result

    def close(self) -> None:
        """Stop the idle worker processes (the catalog calls this when the service closes)."""
        self._workers.close()


def _row_bytes(row: tuple[Any, ...]) -> int:
    """About how many bytes a row adds to the JSON answer."""
    total = 2
    for value in row:
        if isinstance(value, str | bytes):
            total += len(value) + 3
        else:
            total += len(json.dumps(value, default=str)) + 1
    return total


def run_query(database: str, query: str, limit: int, max_bytes: int, budget: float) -> dict[str, Any]:
    """One query, in a worker process: at most ``limit`` rows and ``max_bytes`` of answer."""
    deadline = time.monotonic() + budget
    connection = open_read_only(Path(database), max_bytes)
    connection.set_progress_handler(lambda: int(time.monotonic() > deadline), 1000)
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
            if size > max_bytes:
                cut = True
                break
            rows.append(list(row))
    except sqlite3.OperationalError as error:
        raise _explain(error, budget, max_bytes) from None
    except sqlite3.DataError as error:
        raise ToolError(
            f"a value in the answer is larger than the limit of {max_bytes:,} bytes ({error})",
            code="tool_limit",
        ) from None
    except sqlite3.Error as error:
        raise ToolError(f"SQL error: {error}", code="sql_error") from None
    finally:
        connection.close()
    if time.monotonic() > deadline:
        # One SQLite step the progress handler cannot interrupt (a huge printf) may finish late, even
        # with a NULL from a failed allocation: past its budget, an answer is a timeout, not a result.
        raise ToolError(f"the query ran longer than {budget:.1f}s and was stopped", code="tool_timeout")
    return {"columns": columns, "rows": rows, "row_count": len(rows), "truncated": cut}


def _explain(error: sqlite3.OperationalError, budget: float, max_bytes: int) -> ToolError:
    text = str(error)
    if "too big" in text:
        return ToolError(
            f"a value in the query is larger than the limit of {max_bytes:,} bytes ({text})",
            code="tool_limit",
        )
    if "interrupted" in text:
        return ToolError(f"the query ran longer than {budget:.1f}s and was stopped", code="tool_timeout")
    if "readonly" in text or "read-only" in text or "not authorized" in text or "query_only" in text:
        return ToolError(f"sql.query is read-only: {text}", code="sql_not_read_only")
    return ToolError(f"SQL error: {text}", code="sql_error")
