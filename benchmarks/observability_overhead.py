#!/usr/bin/env python3
"""What observation costs: the same scripted react runs with tracing (tool timings kept in the
store, from which with the run's events its spans are derived when read), metrics and logs on,
against the same runs with all three off.

Each run is one react loop with the scripted provider at zero latency: one tool call
(math.calculate), then a streamed answer — 22 events, 12 spans (one run's are read back and
counted). Logs go to /dev/null through the real log writer thread (JSON lines). Rounds alternate between the settings and the best round of
each is kept, so a noisy neighbour hurts both sides alike. Prints runs/s and the ratio of times
(aim: <= 1.15x the time with everything off), and the CPU the process spent per run with its ratio:
on a machine shared with other work the CPU figure is the steadier one.

    python benchmarks/observability_overhead.py [--runs 500] [--concurrency 1 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import time
from typing import Any

from _common import machine, temporary_home

from agentstage.observability.logging import configure_logging, stop_logging
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_services
from agentstage.settings import load_settings

SCRIPT = {
    "responses": [
        {
            "text": "Let me compute.",
            "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "6*7"}}],
            "usage": {"input_tokens": 50, "output_tokens": 5},
        },
        {"text": "The answer is 42.", "usage": {"input_tokens": 60, "output_tokens": 5}},
    ]
}

SETTINGS: dict[str, dict[str, Any]] = {
    "off": {"tracing": {"enabled": False}, "metrics": {"enabled": False}, "logging": {"level": "fatal"}},
    "on (logs at info)": {
        "tracing": {"enabled": True},
        "metrics": {"enabled": True},
        "logging": {"level": "info"},
    },
    "on (logs at debug)": {
        "tracing": {"enabled": True},
        "metrics": {"enabled": True},
        "logging": {"level": "debug"},
    },
}


DEVNULL = open(os.devnull, "w")


async def measure(runs: int, concurrency: int, observed: dict[str, Any]) -> tuple[float, float]:
    """Seconds for ``runs`` runs with at most ``concurrency`` in flight, and the CPU seconds the
    process spent on them (every thread: the store's writer and the log writer included)."""
    config = {
        "home": str(temporary_home()),
        "providers": {"s": {"type": "scripted", "script": SCRIPT}},
        "profiles": {"t": {"chain": [{"provider": "s"}]}},
        "default_profile": "t",
        "runtime": {"max_concurrent_runs": max(concurrency, 1)},
        **observed,
    }
    settings = load_settings(config)
    configure_logging(settings.logging.level, "json", stream=DEVNULL)
    services = build_services(settings)
    gate = asyncio.Semaphore(concurrency)
    async with services.runs as service:

        async def one() -> None:
            async with gate:
                record = await service.run(RunRequest(input="what is 6*7?", mode="react"))
                assert record.output == "The answer is 42.", record.error_message

        started, cpu = time.perf_counter(), _cpu()
        await asyncio.gather(*(one() for _ in range(runs)))
        elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
        if observed["tracing"]["enabled"] and observed["tracing"].get("store", True):
            await services.telemetry.flush()
            spans = await services.traces.spans((await service.list_runs(limit=1))[0].id)
            assert len(spans) == 12, [s.name for s in spans]
    stop_logging()
    return elapsed, cpu


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    logging.getLogger("agentstage").setLevel(logging.CRITICAL)
    await measure(50, 10, SETTINGS["on (logs at info)"])  # warm imports and caches
    for concurrency in args.concurrency:
        best: dict[str, float] = {}
        best_cpu: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, observed in SETTINGS.items():
                seconds, cpu = await measure(args.runs, concurrency, observed)
                best[name] = min(best.get(name, seconds), seconds)
                best_cpu[name] = min(best_cpu.get(name, cpu), cpu)
        off, off_cpu = best["off"], best_cpu["off"]
        parts = [
            f"{name} {args.runs / s:,.0f} runs/s ({s / off:.3f}x; CPU {best_cpu[name] / args.runs * 1000:.2f} ms/run, "
            f"{best_cpu[name] / off_cpu:.3f}x)"
            for name, s in best.items()
        ]
        print(f"{args.runs} react runs, {concurrency} at a time: " + " · ".join(parts))


if __name__ == "__main__":
    asyncio.run(main())
