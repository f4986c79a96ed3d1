"""The pure logic the benchmarks' verdicts rest on: statistics, slice orders, failed
requests, round counts and the A/A gate. Nothing here runs a benchmark or is timed."""

from __future__ import annotations

import math

from benchmarks import _stats


def test_bootstrap_leaves_out_nan_and_infinite_rounds_and_counts_only_the_rest() -> None:
    est = _stats.bootstrap([0.8] * 8 + [math.nan])
    assert est is not None and (est.median, est.rounds) == (0.8, 8)
    ge = _stats.Target("x >= 0.9", ">=", 0.9)
    # a NaN first or in the middle moved the median and gave "met"
    assert ge.verdict(_stats.bootstrap([math.nan] + [0.8] * 8)) == _stats.MISSED
    mixed = _stats.bootstrap([0.8] * 4 + [math.nan] + [0.95] * 4)
    assert mixed is not None and mixed.rounds == 8
    assert _stats.bootstrap([0.95] * 8 + [math.inf]) == _stats.bootstrap([0.95] * 8)
    assert _stats.bootstrap([math.nan] * 9) is None
    assert _stats.bootstrap([None, 1.0, None]) == _stats.Estimate(1.0, 1.0, 1.0, 1)
