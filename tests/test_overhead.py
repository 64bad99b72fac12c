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


class _NullEvent:
    """An event that costs nothing: what remains is the timer's own host path."""

    def record(self):
        pass

    def elapsed_time(self, end):
        return 0.0


class _NullCudaApi:
    def event(self):
        return _NullEvent()

    def synchronize(self):
        pass

    def flush_l2(self):
        pass


def test_cuda_timer_host_path_per_sample_on_a_fake_device(benchmark):
    """Host cost of the CUDA timer per sample in a batch of 100 (events and device faked)."""
    from harness.measure import CudaEventTimer

    timer = CudaEventTimer(api=_NullCudaApi())
    samples = benchmark(timer.samples_ms, lambda: None, 100)
    assert len(samples) == 100
    stats = getattr(benchmark, "stats", None)
    if stats is not None:
        benchmark.extra_info["host_us_per_sample"] = stats.stats.median * 1e6 / 100


def test_cpu_timer_accuracy_on_a_known_spin(benchmark):
    """The harness's median of a 2 ms busy spin against its known length (error in extra_info)."""
    from harness.measure.doctor import SPIN_MS, spin

    timing = Timing(warmup_s=0.02, budget_s=0.2, min_runs=20, rel_spread=0.002)
    result = benchmark.pedantic(measure_time, args=(lambda: spin(SPIN_MS), timing, CpuTimer()), rounds=1, iterations=1)
    benchmark.extra_info["spin_ms"] = SPIN_MS
    benchmark.extra_info["harness_median_ms"] = result.stats.median
    benchmark.extra_info["error_pct"] = 100.0 * (result.stats.median - SPIN_MS) / SPIN_MS
    assert result.stats.n >= 20
