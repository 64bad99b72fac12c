"""Measurement against known work: a scripted clock, known allocations, a matmul's FLOPs."""

from __future__ import annotations

import pytest
import torch

from harness import Timing
from harness.measure import CpuTimer, SampleStats, count_flops, measure_peak_memory, measure_time, median_ci


class ScriptedClock:
    """A fake nanosecond clock: each call of the operation advances it by the next duration."""

    def __init__(self, durations_ms):
        self.durations_ns = [int(d * 1e6) for d in durations_ms]
        self.now = 0
        self.reads = 0

    def __call__(self) -> int:
        # Clock is read twice per timed call (start, end) and once per warm-up check.
        self.reads += 1
        return self.now

    def op(self):
        self.now += self.durations_ns.pop(0)


def test_cpu_timer_reports_exact_scripted_durations():
    clock = ScriptedClock([5.0, 1.0, 2.0, 3.0, 4.0, 100.0])
    timer = CpuTimer(clock=clock)
    timing = Timing(warmup_s=0.0, min_warmup=1, budget_s=1e6, min_runs=5, max_runs=5, rel_spread=0.0)
    result = measure_time(clock.op, timing, timer)
    assert result.warmup_runs == 1  # the 5 ms call
    assert result.samples_ms == [1.0, 2.0, 3.0, 4.0, 100.0]
    assert result.stats.median == 3.0
    assert result.stats.iqr == 2.0  # numpy linear percentiles: 4.0 - 2.0
    assert result.stats.min == 1.0
    assert result.stats.n == 5
    assert result.stopped_by == "max_runs"


def test_repetition_stops_when_median_is_stable():
    clock = ScriptedClock([1.0] * 1000)
    timing = Timing(warmup_s=0.0, min_warmup=1, budget_s=1e6, min_runs=10, max_runs=1000, rel_spread=0.005)
    result = measure_time(clock.op, timing, CpuTimer(clock=clock))
    assert result.stopped_by == "stable"
    assert result.stats.n == 10  # identical samples are stable at the first check


def test_a_stable_median_needs_enough_samples_for_its_ci():
    """min_runs=2 asks for little, but 'stable' needs the samples whose CI has real 95%
    coverage: with 2 samples [min, max] covers the median half the time."""
    clock = ScriptedClock([1.0] * 1000)
    timing = Timing(warmup_s=0.0, min_warmup=1, budget_s=1e6, min_runs=2, max_runs=1000, rel_spread=0.005)
    result = measure_time(clock.op, timing, CpuTimer(clock=clock))
    assert result.stopped_by == "stable" and result.stats.n == 10
    assert result.stats.ci_coverage >= 0.95


def test_median_ci_coverage_is_exact_and_checked_by_simulation():
    import numpy as np

    from harness.measure.stats import median_ci_ranks

    assert median_ci_ranks(2)[2] == 0.5 and median_ci_ranks(5)[2] < 0.95 <= median_ci_ranks(6)[2]
    rng = np.random.default_rng(0)
    for n in (6, 10, 25, 200):
        lo, hi, cov = median_ci_ranks(n)
        x = np.sort(rng.lognormal(0.0, 0.5, size=(20000, n)), axis=1)
        hit = ((x[:, lo] <= 1.0) & (x[:, hi] >= 1.0)).mean()  # the true median of lognormal(0, s) is 1
        assert cov >= 0.95 and abs(hit - cov) < 0.01, (n, hit, cov)


def test_repetition_stops_at_the_time_budget():
    # alternating 1 ms / 3 ms never gets a tight median CI; the 20 ms budget ends it
    clock = ScriptedClock([1.0, 3.0] * 500)
    timing = Timing(warmup_s=0.0, min_warmup=1, budget_s=0.02, min_runs=3, max_runs=1000, rel_spread=0.0001)
    result = measure_time(clock.op, timing, CpuTimer(clock=clock))
    assert result.stopped_by == "budget"
    assert sum(result.samples_ms) >= 20.0
    assert sum(result.samples_ms) - result.samples_ms[-1] < 20.0


def test_warmup_runs_for_the_warmup_time():
    clock = ScriptedClock([10.0] * 50)
    timing = Timing(warmup_s=0.035, min_warmup=1, budget_s=1e6, min_runs=2, max_runs=2, rel_spread=0.0)
    result = measure_time(clock.op, timing, CpuTimer(clock=clock))
    assert result.warmup_runs == 4  # 0, 10, 20, 30 ms elapsed < 35 ms -> 4 calls


def test_median_ci_brackets_the_median():
    xs = list(range(1, 101))
    lo, hi = median_ci(xs)
    assert lo < 50.5 < hi
    assert (lo, hi) == (41, 60)  # normal approximation above 60 samples
    stats = SampleStats.of(xs)
    assert stats.ci_low == lo and stats.ci_high == hi


def test_cpu_peak_memory_sees_known_tensor_allocations():
    def fn():
        a = torch.empty(4 * 1024 * 1024, dtype=torch.uint8)  # 4 MiB
        b = torch.empty(2 * 1024 * 1024, dtype=torch.float32)  # 8 MiB, peak 12 MiB
        del a
        c = torch.empty(1024 * 1024, dtype=torch.uint8)  # 1 MiB, below the peak
        return b, c

    peak, (b, c) = measure_peak_memory(fn, "cpu")
    assert peak == 12 * 1024 * 1024
    assert b.numel() == 2 * 1024 * 1024


def test_cpu_peak_memory_counts_temporaries_inside_ops():
    x = torch.ones(512, 512)  # allocated before: not counted

    def fn():
        return (x * 2.0).sum()  # a 1 MiB temporary, freed inside the call

    peak, out = measure_peak_memory(fn, "cpu")
    assert peak >= 512 * 512 * 4
    assert peak < 2 * 512 * 512 * 4
    assert float(out) == 2.0 * 512 * 512


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_memory_sees_known_allocation():
    before = torch.empty(1024 * 1024, device="cuda")  # noqa: F841 - allocated before: not counted

    def fn():
        return torch.empty(16 * 1024 * 1024, dtype=torch.uint8, device="cuda")

    peak, _ = measure_peak_memory(fn, "cuda")
    assert peak == 16 * 1024 * 1024


def test_matmul_flops_are_counted():
    a, b = torch.randn(64, 128), torch.randn(128, 32)
    flops, out = count_flops(lambda: a @ b)
    assert flops == 2 * 64 * 128 * 32
    assert out.shape == (64, 32)


def test_backward_flops_are_counted():
    a = torch.randn(64, 128, requires_grad=True)
    b = torch.randn(128, 32, requires_grad=True)
    flops, _ = count_flops(lambda: (a @ b).sum().backward())
    assert flops == 3 * 2 * 64 * 128 * 32  # forward + two backward matmuls
