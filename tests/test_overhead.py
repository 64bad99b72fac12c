"""The harness's own overhead, as a pytest-benchmark benchmark (not a timed test).

Run with `pytest tests/test_overhead.py --benchmark-enable` to see the numbers: the bare loop
is pytest-benchmark timing the workload itself, and `extra_info` holds the median the harness
reports for the same workload and their ratio. Nothing here asserts a time.
"""

from __future__ import annotations

import torch

from harness import Timing
from harness.measure import CpuTimer, measure_time

A = torch.randn(128, 128)
B = torch.randn(128, 128)


def workload():
    return A @ B


def test_harness_median_against_a_bare_loop(benchmark):
    timing = Timing(warmup_s=0.05, budget_s=0.5, min_runs=20, rel_spread=0.005)
    result = measure_time(workload, timing, CpuTimer())
    benchmark.extra_info["harness_median_ms"] = result.stats.median
    benchmark.extra_info["harness_iqr_ms"] = result.stats.iqr
    benchmark.extra_info["harness_samples"] = result.stats.n
    benchmark(workload)
    stats = getattr(benchmark, "stats", None)
    if stats is not None:  # present when benchmarks are enabled
        bare_ms = stats.stats.median * 1e3
        benchmark.extra_info["bare_median_ms"] = bare_ms
        benchmark.extra_info["harness_over_bare"] = result.stats.median / bare_ms
    assert result.stats.n >= 1 and len(result.samples_ms) == result.stats.n


def test_harness_timer_call_cost(benchmark):
    """The per-sample cost of the harness's timer around an empty operation."""
    timer = CpuTimer()
    benchmark(timer.time_ms, lambda: None)
