"""Timing an operation: CUDA events on the GPU, perf_counter_ns on the CPU.

Warm-up runs by time; repetition stops once the median is stable (the CI of the median is
within ``rel_spread``), when the time budget is spent, or at ``max_runs``. The clock is
injectable so tests can script it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the settings object only; measurement does not depend on the suite DSL
    from ..suite import Timing
from .stats import SampleStats

L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than the L2 of any current GPU (H100: 50 MiB)


class CpuTimer:
    """Times one call with a nanosecond wall clock (``time.perf_counter_ns`` by default)."""

    kind = "perf_counter_ns"

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns):
        self.clock = clock

    def time_ms(self, fn: Callable[[], Any]) -> float:
        t0 = self.clock()
        fn()
        t1 = self.clock()
        return (t1 - t0) / 1e6

    def now_s(self) -> float:
        return self.clock() / 1e9

    def flush(self) -> None:  # CPU caches are not flushed: recorded as such in the record
        pass


class CudaEventTimer:
    """Times one call with CUDA events recorded on the current stream; optional L2 flush."""

    kind = "cuda_event"

    def __init__(self, device: str, flush_l2: bool = False):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.flush_buf = (
            torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=self.device) if flush_l2 else None
        )

    def time_ms(self, fn: Callable[[], Any]) -> float:
        torch = self.torch
        if self.flush_buf is not None:
            self.flush_buf.zero_()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end))

    def now_s(self) -> float:
        return time.perf_counter()

    def flush(self) -> None:
        if self.flush_buf is not None:
            self.flush_buf.zero_()


@dataclass
class TimingResult:
    samples_ms: list[float]
    stats: SampleStats
    warmup_runs: int
    stopped_by: str  # "stable", "budget", "max_runs"
    timer: str
    extra: dict = field(default_factory=dict)


def cuda_graph_callable(fn: Callable[[], Any], device: str) -> Callable[[], Any]:
    """Capture ``fn`` into a CUDA graph and return its replay (for launch-bound work)."""
    import torch

    stream = torch.cuda.Stream(device=device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up on a side stream as capture requires
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def measure_time(fn: Callable[[], Any], timing: Timing, timer) -> TimingResult:
    """Warm up for ``timing.warmup_s`` then repeat until the median is stable or budget ends."""
    warm = 0
    t_start = timer.now_s()
    while warm < timing.min_warmup or timer.now_s() - t_start < timing.warmup_s:
        timer.time_ms(fn)
        warm += 1
        if warm >= 10_000:
            break
    samples: list[float] = []
    spent_ms = 0.0
    stopped = "max_runs"
    check_every = max(1, timing.min_runs)
    while len(samples) < timing.max_runs:
        ms = timer.time_ms(fn)
        samples.append(ms)
        spent_ms += ms
        n = len(samples)
        if n >= timing.min_runs and (n % check_every == 0 or spent_ms >= timing.budget_s * 1e3):
            if SampleStats.of(samples).rel_ci <= timing.rel_spread:
                stopped = "stable"
                break
        if n >= timing.min_runs and spent_ms >= timing.budget_s * 1e3:
            stopped = "budget"
            break
        if n < timing.min_runs and spent_ms >= timing.budget_s * 1e3 * 4:
            # a very slow operation: do not run min_runs times past four budgets
            stopped = "budget"
            break
    return TimingResult(samples, SampleStats.of(samples), warm, stopped, timer.kind)
