"""The statistics of reports and comparisons, against values worked out by hand or from textbooks."""

from __future__ import annotations

import pytest

from agentstage.evals.stats import (
    mcnemar_exact,
    mean_interval,
    paired_permutation,
    percentile,
    t_critical,
    wilson_interval,
)


def test_wilson_interval_known_values() -> None:
    assert wilson_interval(3, 6) == pytest.approx((0.18761, 0.81239), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) is None


def test_mean_interval_uses_student_t() -> None:
    # mean 3, sd 1.5811, n 5: 3 ± 2.776 * 1.5811 / sqrt(5) = 3 ± 1.9630
    assert mean_interval([1, 2, 3, 4, 5]) == pytest.approx((1.0370, 4.9630), abs=1e-3)
    assert mean_interval([7.0, 7.0]) == (7.0, 7.0)
    assert mean_interval([1.0]) is None
    assert (
        t_critical(1) == 12.706
        and t_critical(45) == 2.021
        and t_critical(5000) == pytest.approx(1.96, abs=1e-3)
    )


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile(list(range(1, 21)), 95) == pytest.approx(19.05)
    assert percentile([5.0], 95) == 5.0


def test_mcnemar_exact() -> None:
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)  # 2 * (1/2)^5
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(4, 4) == 1.0


def test_paired_permutation() -> None:
    assert paired_permutation([0, 0, 0], [1, 1, 1]) == pytest.approx(0.25)  # 2 of 8 sign patterns
    assert paired_permutation([1, 2], [1, 2]) == 1.0
    many = paired_permutation([0.0] * 20, [1.0] * 20)
    assert many < 0.001 and many == paired_permutation([0.0] * 20, [1.0] * 20)  # seeded: reproducible
    noise = paired_permutation([0.0, 1.0] * 10, [1.0, 0.0] * 10)
    assert noise > 0.5
