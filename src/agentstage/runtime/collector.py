"""Garbage-collector settings for a process that executes runs.

A run lives for many milliseconds and allocates thousands of small objects (events, payloads,
rows, spans) that die with it. With CPython's default thresholds (a young collection every 700
net allocations) those objects are collected young again and again while the run is alive, are
promoted, and end as garbage in the oldest generation, whose full collections then walk the whole
heap — every module, schema and configuration object loaded at start-up — for hundreds of
milliseconds. Measured on the react benchmark (benchmarks/runtime_overhead.py), collection was
about a third of the CPU a run cost and the cause of the longest pauses.

So, once per process, when the first service opens: the objects made while starting are frozen
(moved out of the collector's sight, :func:`gc.freeze`) and the young-generation threshold is
raised, unless the program has set its own thresholds.
"""

from __future__ import annotations

import gc

DEFAULT_THRESHOLD = 700  # CPython's own first-generation threshold
RUNTIME_THRESHOLD = 10_000

_tuned = False


def tune_for_runs() -> None:
    global _tuned
    if _tuned:
        return
    _tuned = True
    gc.freeze()
    first, second, third = gc.get_threshold()
    if first == DEFAULT_THRESHOLD:
        gc.set_threshold(RUNTIME_THRESHOLD, second, third)
