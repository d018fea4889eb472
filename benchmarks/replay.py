#!/usr/bin/env python3
"""What replay, diff and export cost: exact replays of recorded react runs against running the
same runs with the scripted provider (zero latency) through the same RunService and SQLite store.

Each original is a react run with two tool calls (sql.query, math.calculate) and a streamed
answer. A replay re-executes the orchestrator with the replay provider and replaying tools and
compares every event with the recording as it goes; it also reads the original's record,
snapshot and log first, which a fresh run does not. Prints runs/s for both and the ratio (aim:
>= 0.5), then the time to diff two runs and to export one.

    python benchmarks/replay.py [--runs 300]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import time
from pathlib import Path

from _common import machine, temporary_home

from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service
from agentstage.settings import load_settings

ANSWER = "There are 3 sales; twelve times that is 36, as the calculation shows."
SCRIPT = {
    "responses": [
        {
            "text": "Let me count the sales. ",
            "tool_calls": [{"name": "sql.query", "arguments": {"query": "SELECT count(*) AS n FROM sales"}}],
        },
        {"tool_calls": [{"name": "math.calculate", "arguments": {"expression": "3 * 12"}}]},
        {"text": ANSWER},
    ]
}


def sales_db(path: Path) -> Path:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE sales (id INTEGER PRIMARY KEY, amount REAL)")
        connection.executemany("INSERT INTO sales (amount) VALUES (?)", [(1.0,), (2.0,), (3.0,)])
    connection.close()
    return path


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    home = temporary_home()
    config = {
        "home": str(home),
        "providers": {"s": {"type": "scripted", "script": SCRIPT}},
        "profiles": {"t": {"chain": [{"provider": "s"}]}},
        "default_profile": "t",
        "tools": {"sql_database": str(sales_db(home / "sales.db"))},
    }
    async with build_service(load_settings(config)) as service:
        request = RunRequest(input="How many sales, times twelve?", mode="react")
        for _ in range(20):  # warm imports and caches
            await service.wait((await service.replay((await service.run(request)).id)).id)
        started = time.perf_counter()
        originals = [await service.run(request) for _ in range(args.runs)]
        recorded = args.runs / (time.perf_counter() - started)
        started = time.perf_counter()
        for original in originals:
            replayed = await service.wait((await service.replay(original.id)).id)
            assert replayed.output == ANSWER, replayed.error_message
        replays = args.runs / (time.perf_counter() - started)
        diffs, exports = [], []
        for original in originals[:50]:
            begun = time.perf_counter()
            result = await service.snapshots.diff(originals[0].id, original.id)
            diffs.append(time.perf_counter() - begun)
            assert result["first_divergence"] is None
            begun = time.perf_counter()
            await service.snapshots.export(original.id)
            exports.append(time.perf_counter() - begun)
    print(
        f"{args.runs} react runs one at a time: scripted {recorded:,.0f} runs/s · exact replay "
        f"{replays:,.0f} runs/s · ratio {replays / recorded:.2f}"
    )
    print(
        f"diff of two runs: median {statistics.median(diffs) * 1000:.1f} ms · "
        f"export of one run: median {statistics.median(exports) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
