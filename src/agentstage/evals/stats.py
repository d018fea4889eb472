"""The statistics behind reports and comparisons, in the standard library only.

Means get a Student-t 95% interval, proportions a Wilson interval (sound for small n and for
rates near 0 or 1); two evals are compared case by case with McNemar's exact test for pass/fail
and a paired sign-flip permutation test for everything else.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

Z95 = 1.959964
# Two-sided 95% critical values of Student's t for 1..30 degrees of freedom, then 40, 60, 120.
_T95 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]  # fmt: skip
_T95_LARGE = [(40, 2.021), (60, 2.000), (120, 1.980)]
EXACT_PERMUTATIONS_UP_TO = 12
PERMUTATIONS = 10_000


def t_critical(df: int) -> float:
    """The 97.5th percentile of t with ``df`` degrees of freedom (the next lower tabulated df: conservative)."""
    if df < 1:
        raise ValueError("df must be at least 1")
    if df <= len(_T95):
        return _T95[df - 1]
    value = _T95[-1]
    for bound, critical in _T95_LARGE:
        if df >= bound:
            value = critical
    return value if df < 1000 else Z95


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """95% confidence interval of the mean; None for fewer than two values."""
    n = len(values)
    if n < 2:
        return None
    mean = statistics.fmean(values)
    half = t_critical(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean - half, mean + half


def wilson_interval(successes: int, n: int) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion; None when n is 0."""
    if n == 0:
        return None
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks (like numpy's default)."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs (passed in A only, in B only)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / float(1 << n)
    return min(1.0, 2 * tail)


def paired_permutation(a: Sequence[float], b: Sequence[float], seed: int = 0) -> float:
    """Two-sided p-value that the mean of b - a is zero, flipping the sign of each paired difference.

    Exact for up to 12 pairs, else 10,000 seeded random flips (so a report is reproducible)."""
    if len(a) != len(b):
        raise ValueError("paired samples must have the same length")
    diffs = [y - x for x, y in zip(a, b, strict=True) if y != x]
    if not diffs:
        return 1.0
    observed = abs(sum(diffs)) - 1e-12
    if len(diffs) <= EXACT_PERMUTATIONS_UP_TO:
        total = 1 << len(diffs)
        extreme = 0
        for mask in range(total):
            flipped = sum(-d if mask >> i & 1 else d for i, d in enumerate(diffs))
            extreme += abs(flipped) >= observed
        return float(extreme) / total
    rng = random.Random(seed)
    extreme = 0
    for _ in range(PERMUTATIONS):
        flipped = sum(d if rng.random() < 0.5 else -d for d in diffs)
        extreme += abs(flipped) >= observed
    return float(extreme + 1) / (PERMUTATIONS + 1)
