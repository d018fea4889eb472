"""The built-in tools, built from settings. The catalog that serves them lives in the runtime."""

from __future__ import annotations

from pathlib import Path

from agentstage.core.tools import Tool


def builtin_tools(
    sql_database: Path | None,
    *,
    sql_max_rows: int = 200,
    sql_timeout: float = 5.0,
    sql_max_bytes: int = 1_048_576,
    sql_concurrency: int = 4,
) -> list[Tool]:
    from agentstage.tools.math_calculate import MathCalculate
    from agentstage.tools.sql_query import SqlQuery

    tools: list[Tool] = [MathCalculate()]
    if sql_database is not None:
        tools.append(
            SqlQuery(
                sql_database,
                max_rows=sql_max_rows,
                timeout=sql_timeout,
                max_bytes=sql_max_bytes,
                concurrency=sql_concurrency,
            )
        )
    return tools
