"""What the snapshot tests share: a react script with two tool calls and a streamed answer, a
small sales database for ``sql.query``, and settings that use them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from agentstage.core.events import RunEvent
from agentstage.settings import Settings
from conftest import make_settings, scripted_config

QUESTION = "How many sales are there, and what is that times twelve?"
ANSWER = "There are 3 sales; twelve times that is 36."
REACT: dict[str, Any] = {
    "responses": [
        {
            "text": "Let me count the sales. ",
            "tool_calls": [{"name": "sql.query", "arguments": {"query": "SELECT count(*) AS n FROM sales"}}],
            "usage": {"input_tokens": 40, "output_tokens": 9},
        },
        {
            "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "3 * 12"}}],
            "usage": {"input_tokens": 60, "output_tokens": 6},
        },
        {"text": ANSWER, "usage": {"input_tokens": 80, "output_tokens": 12}},
    ]
}


def sales_db(path: Path, rows: int) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, amount REAL)")
        connection.executemany("INSERT INTO sales (amount) VALUES (?)", [(10.0 * i,) for i in range(rows)])
    connection.close()
    return path


def write_script(path: Path, script: dict[str, Any]) -> Path:
    path.write_text(json.dumps(script), encoding="utf-8")
    return path


def settings_for(home: Path, script: Path | dict[str, Any], database: Path, **extra: Any) -> Settings:
    source = str(script) if isinstance(script, Path) else script
    return make_settings(home, scripted_config(source, tools={"sql_database": str(database)}, **extra))


def tool_calls(events: list[RunEvent]) -> list[tuple[str, dict[str, Any]]]:
    return [(e.data["tool"], e.data["arguments"]) for e in events if e.type == "tool.call"]


def tool_results(events: list[RunEvent]) -> list[Any]:
    return [(e.data["output"], e.data["error"]) for e in events if e.type == "tool.result"]


def types(events: list[RunEvent]) -> list[str]:
    return [e.type for e in events]
