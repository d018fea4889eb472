#!/usr/bin/env python3
"""How long one run's write to the embedded SQLite store takes, p50/p99/p99.9, and its CPU, three ways:

- what the store does: the write runs on the event loop when the write lock is free at once, and
  write-ahead-log checkpoints run on the store's checkpoint thread;
- every write handed to the store's write thread and back (the baseline for the first: what the
  store did before writes ran on the loop);
- on the write thread, with SQLite's own automatic checkpoints inside the commit that crosses
  1,000 log pages (the baseline for the checkpoint thread).

Every stream's first event and every run's end wait for such a write, so its slow tail is theirs.
Each write is one run: its record and 8 events of ~400 characters, written one after the other
with a millisecond between them, as runs arriving one at a time do. Rounds alternate the ways
(a shared machine's noise hits both alike); the figures are medians over the rounds.

    python benchmarks/store_writes.py [--writes 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _common import machine, temporary_home

from agentstage.core.events import RunEvent, utc_now
from agentstage.core.records import RunRecord
from agentstage.store.base import Batch
from agentstage.store.sql import SqlRunStore
from agentstage.types import RunStatus

PAYLOAD = {"text": "x" * 400}


def one_run(run_id: str) -> Batch:
    batch = Batch()
    writes = batch.of(run_id)
    writes.new_run = RunRecord(
        id=run_id,
        status=RunStatus.COMPLETED,
        input="Summarize the sales data " * 4,
        mode="chat",
        profile="default",
        created_at=utc_now(),
    )
    writes.events.extend(
        RunEvent(run_id, seq, utc_now(), type="model.delta", data=PAYLOAD) for seq in range(1, 9)
    )
    return batch


WAYS = {
    "loop when free + checkpoint thread": (True, False),
    "write thread + checkpoint thread": (False, False),
    "write thread + SQLite's checkpoints": (False, True),
}


async def latencies(writes: int, loop_writes: bool, inline_checkpoints: bool) -> tuple[list[float], float]:
    """Each write's time in ms, and the process's CPU per write in ms (every thread)."""
    store = SqlRunStore(f"sqlite+aiosqlite:///{temporary_home() / 'store.db'}")
    await store.open()
    try:
        sqlite, path = store._sqlite, store._write_path
        assert sqlite is not None and path is not None
        path.loop_writes = loop_writes
        await store.probe()  # the write connection opens on the first write
        if inline_checkpoints:  # the baseline: SQLite's default, checkpoints inside commits
            connection = sqlite._open()
            connection.execute("PRAGMA wal_autocheckpoint=1000")
            if sqlite.checkpointer is not None:
                sqlite.checkpointer.stop()
                sqlite.checkpointer = None
        measured = []
        cpu = 0.0
        for index in range(writes):
            batch = one_run(f"run-{index}")
            started, cpu_started = time.perf_counter(), time.process_time()
            await store.write(batch)
            measured.append((time.perf_counter() - started) * 1000)
            cpu += time.process_time() - cpu_started
            await asyncio.sleep(0.001)
        return measured, cpu / writes * 1000
    finally:
        await store.close()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * q), len(ordered) - 1)]


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writes", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    figures: dict[str, dict[str, list[float]]] = {name: {} for name in WAYS}
    for _ in range(args.rounds):
        for name, (loop_writes, inline_checkpoints) in WAYS.items():
            measured, cpu = await latencies(args.writes, loop_writes, inline_checkpoints)
            for label, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
                figures[name].setdefault(label, []).append(quantile(measured, q))
            figures[name].setdefault("CPU", []).append(cpu)
    for name, by_label in figures.items():
        line = " · ".join(f"{label} {statistics.median(values):.2f} ms" for label, values in by_label.items())
        print(f"one run's write, {args.writes} writes, median of {args.rounds} rounds, {name}: {line}")
    now, thread, before = (figures[name] for name in WAYS)
    print(
        f"write thread / loop when free: p50 {statistics.median(thread['p50']) / statistics.median(now['p50']):.1f}x, "
        f"CPU {statistics.median(thread['CPU']) / statistics.median(now['CPU']):.1f}x · "
        f"SQLite's checkpoints / checkpoint thread: p99 "
        f"{statistics.median(before['p99']) / statistics.median(thread['p99']):.1f}x"
    )


if __name__ == "__main__":
    asyncio.run(main())
