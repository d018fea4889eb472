#!/usr/bin/env python3
"""What one read of the embedded SQLite store costs: on the store's read threads with a plain
connection (what the store does) against the same query through SQLAlchemy's async engine on
aiosqlite (the baseline, what it did before), which hops between threads five times a query.

Every status poll, run list, stream resume and API key check is such a read. The store holds
``--runs`` finished runs of 8 events each; each read is timed one at a time (wall and CPU of every
thread of the process) and 16 at once (wall per read). Rounds alternate the two ways (a shared
machine's noise hits both alike); the figures are medians over the rounds.

    python benchmarks/store_reads.py [--runs 2000] [--reads 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import machine, temporary_home

from agentstage.core.events import RunEvent, utc_now
from agentstage.core.records import RunRecord
from agentstage.store.base import Batch
from agentstage.store.sql import SqlRunStore
from agentstage.types import RunStatus

PAYLOAD = {"text": "x" * 400}


async def fill(store: SqlRunStore, count: int) -> list[str]:
    ids = [f"run-{index:06d}" for index in range(count)]
    for start in range(0, count, 200):
        batch = Batch()
        for run_id in ids[start : start + 200]:
            writes = batch.of(run_id)
            writes.new_run = RunRecord(
                id=run_id, status=RunStatus.COMPLETED, input="Summarize the sales data",
                output="Sales grew.", mode="chat", profile="default", tenant="default", created_at=utc_now(),
            )  # fmt: skip
            writes.events = [
                RunEvent(run_id, seq, utc_now(), type="model.delta", data=PAYLOAD) for seq in range(1, 9)
            ]
        assert not await store.write(batch)
    return ids


async def timed(read: Callable[[], Awaitable[Any]], reads: int) -> tuple[float, float, float]:
    """Per read: wall ms one at a time, CPU ms one at a time, wall ms with 16 in flight."""
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(reads):
        await read()
    wall, spent = (time.perf_counter() - started) / reads, (time.process_time() - cpu) / reads
    gate = asyncio.Semaphore(16)

    async def gated() -> None:
        async with gate:
            await read()

    started = time.perf_counter()
    await asyncio.gather(*(gated() for _ in range(reads)))
    return wall * 1000, spent * 1000, (time.perf_counter() - started) / reads * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    store = SqlRunStore(f"sqlite+aiosqlite:///{temporary_home() / 'runs.db'}")
    await store.open()
    try:
        ids = await fill(store, args.runs)
        middle = ids[len(ids) // 2]
        reads: dict[str, Callable[[], Awaitable[Any]]] = {
            "get_run (a status poll)": lambda: store.get_run(middle),
            "events (a stream resumed)": lambda: store.events(middle),
            "list_runs, 20 newest": lambda: store.list_runs(limit=20, tenant="default"),
            "count_runs": lambda: store.count_runs(tenant="default"),
        }
        read_engine = store._read_engine  # the baseline is the same store without its read threads
        figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for _ in range(args.rounds):
            for way, engine in (("read threads", read_engine), ("aiosqlite", None)):
                store._read_engine = engine
                for name, read in reads.items():
                    await timed(read, 50)  # warm the pools and statement caches
                    figures.setdefault((name, way), []).append(await timed(read, args.reads))
        store._read_engine = read_engine
        print(f"{args.runs:,} runs of 8 events; medians of {args.rounds} rounds, per read")
        for name in reads:
            line = []
            for way in ("read threads", "aiosqlite"):
                wall, cpu, together = (
                    statistics.median(f[i] for f in figures[(name, way)]) for i in range(3)
                )
                line.append(f"{way} {wall:.3f} ms ({cpu:.3f} ms CPU; 16 at once {together:.3f} ms)")
            ratio = statistics.median(
                base[1] / ours[1]
                for ours, base in zip(
                    figures[(name, "read threads")], figures[(name, "aiosqlite")], strict=True
                )
            )
            print(f"  {name}: {' · '.join(line)} · CPU {ratio:.1f} times less")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
