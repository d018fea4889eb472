#!/usr/bin/env python3
"""What the run service costs: react runs through RunService (events stamped, persisted to SQLite,
streamed, observed) against the same orchestrator loop with no store and no events.

Each run is one react loop with the scripted provider at zero latency: one tool call
(math.calculate), then an answer. Prints runs/s and CPU per run for the bare loop, the service,
and the service with its telemetry (traces, metrics) off, and the ratio service/bare (aim: >= 0.5).

Then where the service's time goes: the same runs with one part switched off at a time (the
store's writes acknowledged without touching the database, secret masking, telemetry), and with
all three off. What is left then is the rest of the service (events, recorder, supervision, the
provider chain, the tool wrapper), which no change to storage, masking or telemetry can remove.
Rounds alternate bare and service runs (a shared machine's noise hits both alike); the figures
are medians over the rounds. Both sides run with the garbage-collector settings the service
applies to its process (see agentstage.runtime.collector).

    python benchmarks/runtime_overhead.py [--runs 1000] [--concurrency 50] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator

from _common import machine, temporary_home

from agentstage.core.orchestrators import AgentContext, ReactOrchestrator
from agentstage.core.prompts import PromptLibrary
from agentstage.errors import StoreError
from agentstage.providers.scripted import Script, ScriptedModel
from agentstage.runtime import recorder
from agentstage.runtime.collector import tune_for_runs
from agentstage.runtime.requests import RunRequest
from agentstage.runtime.wiring import build_service, tool_catalog
from agentstage.settings import load_settings
from agentstage.store.base import Batch
from agentstage.store.sql import SqlRunStore

SCRIPT = {
    "responses": [
        {
            "tool_calls": [{"name": "math.calculate", "arguments": {"expression": "6*7"}}],
            "usage": {"input_tokens": 50, "output_tokens": 5},
        },
        {"text": "The answer is 42.", "usage": {"input_tokens": 60, "output_tokens": 5}},
    ]
}


async def with_concurrency(total: int, concurrency: int, one: Callable[[], Awaitable[object]]) -> float:
    """Runs/s of ``total`` runs with at most ``concurrency`` in flight (a new one starts as one ends)."""
    gate = asyncio.Semaphore(concurrency)

    async def gated() -> None:
        async with gate:
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(gated() for _ in range(total)))
    return total / (time.perf_counter() - started)


async def bare_loop(runs: int, concurrency: int) -> float:
    settings = load_settings({"home": str(temporary_home())})
    toolset = tool_catalog(settings).toolset()
    prompts = PromptLibrary()
    script = Script.load(SCRIPT)

    async def one() -> None:
        context = AgentContext(
            run_id="bare",
            input="what is 6*7?",
            model=ScriptedModel(script, provider="s"),
            tools=toolset,
            prompts=prompts,
        )
        async for _ in ReactOrchestrator().run(context):
            pass
        assert context.output == "The answer is 42."

    return await with_concurrency(runs, concurrency, one)


async def through_service(
    runs: int, concurrency: int, *, telemetry: bool = True, stored: bool = True
) -> float:
    config: dict[str, object] = {
        "home": str(temporary_home()),
        "providers": {"s": {"type": "scripted", "script": SCRIPT}},
        "profiles": {"t": {"chain": [{"provider": "s"}]}},
        "default_profile": "t",
        "runtime": {"max_concurrent_runs": max(concurrency, 1)},
    }
    if not telemetry:
        config |= {"tracing": {"enabled": False}, "metrics": {"enabled": False}}
    async with build_service(load_settings(config)) as service:

        async def one() -> None:
            record = await service.run(RunRequest(input="what is 6*7?", mode="react"))
            assert record.output == "The answer is 42.", record.error_message

        rate = await with_concurrency(runs, concurrency, one)
        if stored:
            assert await service.count_runs() == runs
    return rate


async def without_safety(runs: int, concurrency: int) -> float:
    """The service with tool outputs recorded as they come (no JSON-safety pass, no size cap)."""
    from agentstage.core import tools

    def passthrough(value: object, **_: object) -> tuple[object, int]:
        return value, 0

    with switched_off(tools, "json_safe", passthrough):
        return await through_service(runs, concurrency)


@contextlib.contextmanager
def switched_off(module: object, name: str, replacement: object) -> Iterator[None]:
    """``module.name`` replaced for the block; fails loudly if the part was renamed."""
    original = getattr(module, name)  # AttributeError: the benchmark must follow the rename
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


async def _acknowledged(self: SqlRunStore, batch: Batch) -> dict[str, StoreError]:
    """A store write that keeps nothing: every write is acknowledged at once."""
    return {}


def _unmasked(text: str) -> str:
    return text


async def with_parts_off(
    runs: int, concurrency: int, *, store: bool, masking: bool, telemetry: bool
) -> float:
    with contextlib.ExitStack() as off:
        if not store:
            off.enter_context(switched_off(SqlRunStore, "write", _acknowledged))
        if not masking:
            off.enter_context(switched_off(recorder, "redact", _unmasked))
            off.enter_context(switched_off(recorder, "redact_repeated", _unmasked))
        return await through_service(runs, concurrency, telemetry=telemetry, stored=store)


async def breakdown(runs: int, concurrency: int, rounds: int) -> None:
    """CPU per run with one part off at a time, alternating in rounds; medians."""
    sides: dict[str, Callable[[], Awaitable[float]]] = {
        "bare": lambda: bare_loop(runs, concurrency),
        "service": lambda: through_service(runs, concurrency),
        "store writes": lambda: with_parts_off(runs, concurrency, store=False, masking=True, telemetry=True),
        "masking": lambda: with_parts_off(runs, concurrency, store=True, masking=False, telemetry=True),
        "telemetry": lambda: through_service(runs, concurrency, telemetry=False),
        "all three": lambda: with_parts_off(runs, concurrency, store=False, masking=False, telemetry=False),
    }
    rates, cpu = await alternating(sides, runs, rounds)
    ms = {name: statistics.median(values) for name, values in cpu.items()}
    speed = {name: statistics.median(values) for name, values in rates.items()}
    parts = " · ".join(
        f"without {name} {ms[name]:.2f} ms ({ms[name] - ms['service']:+.2f})"
        for name in ("store writes", "masking", "telemetry", "all three")
    )
    print(
        f"where the time goes ({runs} react runs, {concurrency} at a time, CPU per run, median of "
        f"{rounds} rounds): bare loop {ms['bare']:.2f} ms · service {ms['service']:.2f} ms · {parts} · "
        f"with all three off the service still costs {ms['all three'] - ms['bare']:.2f} ms over the "
        f"bare loop, ratio {speed['all three'] / speed['bare']:.2f}"
    )


async def measured(run: Callable[[], Awaitable[float]]) -> tuple[float, float]:
    """Runs/s, and the process's CPU seconds (every thread) spent in the call."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    rate = await run()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return rate, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


async def alternating(
    sides: dict[str, Callable[[], Awaitable[float]]], runs: int, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each side once per round, in turn (a shared machine's noise hits them alike): runs/s and
    CPU milliseconds per run, by side, one value per round."""
    rates: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():
            rate, seconds = await measured(side)
            rates[name].append(rate)
            cpu[name].append(seconds / runs * 1000)
    return rates, cpu


async def compare(runs: int, concurrency: int, rounds: int) -> None:
    sides: dict[str, Callable[[], Awaitable[float]]] = {
        "bare": lambda: bare_loop(runs, concurrency),
        "service": lambda: through_service(runs, concurrency),
        "no telemetry": lambda: through_service(runs, concurrency, telemetry=False),
    }
    rates, cpu = await alternating(sides, runs, rounds)
    ratios = [full / bare for full, bare in zip(rates["service"], rates["bare"], strict=True)]
    med = {name: statistics.median(values) for name, values in rates.items()}
    ms = {name: statistics.median(values) for name, values in cpu.items()}
    print(
        f"{runs} react runs, {concurrency} at a time, median of {rounds} rounds: "
        f"bare loop {med['bare']:,.0f} runs/s ({ms['bare']:.2f} ms CPU/run) · "
        f"RunService + SQLite {med['service']:,.0f} runs/s ({ms['service']:.2f} ms) · "
        f"ratio {statistics.median(ratios):.2f} (rounds: {', '.join(f'{r:.2f}' for r in ratios)}) · "
        f"telemetry off {med['no telemetry']:,.0f} runs/s ({ms['no telemetry']:.2f} ms)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-safety", action="store_true", help="leave out the JSON-safety figure")
    parser.add_argument("--skip-breakdown", action="store_true", help="leave out where the time goes")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    tune_for_runs()  # what the service does to its process: both sides run under it
    await bare_loop(50, 10)  # warm imports and caches
    for concurrency in (1, args.concurrency):
        await compare(args.runs, concurrency, args.rounds)
    if not args.skip_breakdown:
        await breakdown(args.runs, args.concurrency, args.rounds)
    if args.skip_safety:
        return
    safe = unsafe = 0.0
    for _ in range(args.rounds):  # interleaved rounds, best of each: the machine's noise hits both alike
        unsafe = max(unsafe, await without_safety(args.runs, args.concurrency))
        safe = max(safe, await through_service(args.runs, args.concurrency))
    print(
        f"JSON-safety pass and size caps: {safe:,.0f} runs/s with, {unsafe:,.0f} without · "
        f"cost {max(0.0, 1 - safe / unsafe):.1%} (aim < 5%)"
    )


if __name__ == "__main__":
    asyncio.run(main())
