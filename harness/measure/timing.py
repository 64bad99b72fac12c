"""Timing an operation: CUDA events on the GPU, perf_counter_ns on the CPU.

Warm-up runs by time; samples are then taken in batches and repetition stops once the median
is stable (the CI of the median is within ``rel_spread``), when the time budget is spent, or at
``max_runs``. The CPU timer takes batches of one sample, each between two reads of a
nanosecond clock. The CUDA timer keeps the device's queue full, as triton's ``do_bench`` does:
for a batch of samples it records (L2 flush, start event, operation, end event) back to back and
synchronises once, so a sample is device time and the host's dispatch cost is hidden while the
GPU works. The host-inclusive time per call is a separate number: the wall clock around a
back-to-back window of calls, divided by their count.

Clocks, events and the device are injectable so tests can script them; nothing here imports
the suite DSL, which re-exports :class:`Timing` (the settings a suite declares) from here.
"""

from __future__ import annotations

import math
import time
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from .stats import MIN_CI_SAMPLES, SampleStats

L2_FLUSH_BYTES = 256 * 1024 * 1024  # larger than the L2 of any current GPU (H100: 50 MiB)
BATCH_TARGET_S = 0.05  # device time of one CUDA batch (the stopping rule looks at each batch)
MAX_CUDA_BATCH = 1000  # events per batch at most (each pair is a few hundred bytes of host memory)
# The stopping rule declares a median "stable" only from this many samples on: its 95% CI then
# comes from order statistics with real 95% coverage (>= MIN_CI_SAMPLES; 10 samples: 97.9%).
MIN_STABLE_SAMPLES = max(10, MIN_CI_SAMPLES)
HOST_WINDOW_BATCHES = 3  # back-to-back batches of the host-latency window (their spread is reported)

Hook = Callable[[], Any] | None


@dataclass(frozen=True)
class Timing:
    """How the engine times an operation.

    Repetition stops when the distribution-free 95% confidence interval of the median is
    narrower than ``rel_spread`` of the median (checked from ``max(min_runs, 10)`` samples on,
    where the interval really has 95% coverage), when ``budget_s`` of measured time has passed
    (after ``min_runs``), or at ``max_runs``.
    """

    warmup_s: float = 0.05
    min_warmup: int = 1
    budget_s: float = 1.0
    min_runs: int = 5
    max_runs: int = 10_000
    rel_spread: float = 0.005
    cold_cache: bool = False
    cuda_graph: bool = False

    def replace(self, **changes: Any) -> "Timing":
        return dataclasses.replace(self, **changes)


class CpuTimer:
    """Times each call with a nanosecond wall clock (``time.perf_counter_ns`` by default)."""

    kind = "perf_counter_ns"
    max_batch = 1  # every sample is seen by the stopping rule as soon as it exists

    def __init__(self, clock: Callable[[], int] = time.perf_counter_ns):
        self.clock = clock

    def time_ms(self, fn: Callable[[], Any]) -> float:
        t0 = self.clock()
        fn()
        t1 = self.clock()
        return (t1 - t0) / 1e6

    def samples_ms(self, fn: Callable[[], Any], count: int, before: Hook = None) -> list[float]:
        """``count`` samples; ``before`` (untimed) runs ahead of each."""
        clock = self.clock
        out = []
        for _ in range(count):
            if before is not None:
                before()
            t0 = clock()
            fn()
            t1 = clock()
            out.append((t1 - t0) / 1e6)
        return out

    def now_s(self) -> float:
        return self.clock() / 1e9

    def flush(self) -> None:  # CPU caches are not flushed: recorded as such in the record
        pass


class CudaApi(Protocol):
    """What the CUDA timer needs from the device: events, one synchronisation, an L2 flush."""

    def event(self) -> Any:  # has record() and elapsed_time(end) -> ms
        ...

    def synchronize(self) -> None:
        ...

    def flush_l2(self) -> None:
        ...


class TorchCudaApi:
    """:class:`CudaApi` on torch.cuda for one device (events on its current stream)."""

    def __init__(self, device: str, flush_l2: bool = False):
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.flush_buf = (
            torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.int32, device=self.device) if flush_l2 else None
        )

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def synchronize(self) -> None:
        self.torch.cuda.synchronize(self.device)

    def flush_l2(self) -> None:
        if self.flush_buf is not None:
            self.flush_buf.zero_()


class CudaEventTimer:
    """Device time of each call from CUDA events, one synchronisation per batch of samples.

    ``api`` provides events, synchronisation and the L2 flush (:class:`TorchCudaApi` by
    default); ``wall_clock`` (seconds) times warm-up and the host-latency window.
    """

    kind = "cuda_event"

    def __init__(self, device: str = "cuda", flush_l2: bool = False, api: CudaApi | None = None,
                 wall_clock: Callable[[], float] = time.perf_counter, max_batch: int = MAX_CUDA_BATCH):
        self.api = api if api is not None else TorchCudaApi(device, flush_l2)
        self.cold = bool(flush_l2)
        self.wall_clock = wall_clock
        self.max_batch = max_batch

    def samples_ms(self, fn: Callable[[], Any], count: int, before: Hook = None) -> list[float]:
        """Record (hook, flush, start, fn, end) ``count`` times back to back, then synchronise once.

        A batch of several samples starts with one untimed call, so that the first start event is
        recorded while the device is busy rather than idle and waiting for the host.
        """
        api = self.api
        pairs = [(api.event(), api.event()) for _ in range(count)]
        if count > 1:
            if before is not None:
                before()
            fn()
        for start, end in pairs:
            if before is not None:
                before()
            if self.cold:
                api.flush_l2()
            start.record()
            fn()
            end.record()
        api.synchronize()
        return [float(start.elapsed_time(end)) for start, end in pairs]

    def time_ms(self, fn: Callable[[], Any]) -> float:
        return self.samples_ms(fn, 1)[0]

    def host_window_ms(self, fn: Callable[[], Any], count: int, before: Hook = None) -> float:
        """Wall-clock ms per call of ``count`` back-to-back calls (no events, no flush), synchronised once."""
        self.api.synchronize()
        t0 = self.wall_clock()
        for _ in range(count):
            if before is not None:
                before()
            fn()
        self.api.synchronize()
        t1 = self.wall_clock()
        return (t1 - t0) * 1e3 / count

    def now_s(self) -> float:
        return self.wall_clock()

    def flush(self) -> None:
        self.api.flush_l2()


@dataclass
class HostWindow:
    """Host-inclusive time per call, from back-to-back batches of ``calls`` calls each."""

    per_call_ms: list[float]  # one value per batch: its wall clock divided by its calls
    calls: int
    seconds: float  # wall-clock length of the whole window
    energy_mj: float | None = None  # device energy over the window (all batches), when known

    @property
    def stats(self) -> SampleStats:
        return SampleStats.of(self.per_call_ms)

    @property
    def total_calls(self) -> int:
        return self.calls * len(self.per_call_ms)


@dataclass
class TimingResult:
    samples_ms: list[float]
    stats: SampleStats
    warmup_runs: int
    stopped_by: str  # "stable", "budget", "max_runs"
    timer: str
    batch_size: int = 1
    batches: int = 0
    host: HostWindow | None = None
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


def batch_size_for(per_call_ms: float, max_batch: int, target_s: float = BATCH_TARGET_S) -> int:
    """Samples per batch so that a batch lasts about ``target_s`` (1 .. ``max_batch``)."""
    if max_batch <= 1:
        return 1
    if not per_call_ms or per_call_ms <= 0 or math.isnan(per_call_ms):
        return max_batch
    return int(max(1, min(max_batch, math.ceil(target_s * 1e3 / per_call_ms))))


def measure_time(fn: Callable[[], Any], timing, timer, before: Hook = None, on_batch: Hook = None) -> TimingResult:
    """Warm up for ``timing.warmup_s``, then take batches until the median is stable or budget ends.

    ``before`` is an untimed hook run ahead of every call, warm-up included. The stopping rule
    looks at each batch as a whole; the CPU timer's batches are single samples. ``on_batch``
    (e.g. a telemetry sample) runs when the timed window opens and after every batch in it.
    """
    warm = 0
    last: list[float] = []
    t_start = timer.now_s()
    while warm < timing.min_warmup or timer.now_s() - t_start < timing.warmup_s:
        last = timer.samples_ms(fn, 1, before)
        warm += 1
        if warm >= 10_000:
            break
    max_batch = getattr(timer, "max_batch", 1)
    batch = batch_size_for(last[0] if last else 0.0, max_batch)
    samples: list[float] = []
    spent_ms = 0.0
    stopped = "max_runs"
    check_every = max(1, timing.min_runs)
    min_stable = max(timing.min_runs, MIN_STABLE_SAMPLES)
    budget_ms = timing.budget_s * 1e3
    batches = 0
    if on_batch is not None:
        on_batch()
    while len(samples) < timing.max_runs:
        count = min(batch, timing.max_runs - len(samples))
        got = timer.samples_ms(fn, count, before)
        batches += 1
        if on_batch is not None:
            on_batch()
        samples.extend(got)
        spent_ms += sum(got)
        n = len(samples)
        over = spent_ms >= budget_ms
        if n >= min_stable and (count > 1 or n % check_every == 0 or over):
            if SampleStats.of(samples).rel_ci <= timing.rel_spread:
                stopped = "stable"
                break
        if n >= timing.min_runs and over:
            stopped = "budget"
            break
        if n < timing.min_runs and spent_ms >= budget_ms * 4:
            # a very slow operation: do not run min_runs times past four budgets
            stopped = "budget"
            break
    stats = SampleStats.of(samples)
    return TimingResult(samples, stats, warm, stopped, timer.kind, batch_size=batch, batches=batches)


def host_window(fn: Callable[[], Any], timer, per_call_ms: float, timing, before: Hook = None,
                energy: Callable[[], float | None] | None = None, on_batch: Hook = None,
                batches: int = HOST_WINDOW_BATCHES) -> HostWindow:
    """Host-inclusive time per call over back-to-back batches (after the timed samples).

    Each of ``batches`` batches runs ``calls`` calls with nothing between them but the hook and
    is synchronised once; the window lasts about a quarter of the time budget (at most 0.5 s).
    ``energy`` (a counter in mJ) is read right before the first and after the last batch, so
    energy per call comes from this back-to-back window only, never from warm-up.
    """
    target_s = min(0.5, max(0.01, timing.budget_s / 4))
    per_batch_s = target_s / batches
    calls = batch_size_for(per_call_ms, 100_000, per_batch_s)
    timer.api.synchronize()
    e0 = energy() if energy is not None else None
    t0 = timer.wall_clock()
    values = []
    for _ in range(batches):
        values.append(timer.host_window_ms(fn, calls, before))
        if on_batch is not None:
            on_batch()
    t1 = timer.wall_clock()
    e1 = energy() if energy is not None else None
    used = (e1 - e0) if (e0 is not None and e1 is not None) else None
    return HostWindow(values, calls, t1 - t0, used)


def spread_fields(stats: SampleStats) -> dict[str, float]:
    """Median, IQR, min, mean, n and the median's CI: the spread stored with a time metric."""
    return dict(median=stats.median, iqr=stats.iqr, min=stats.min, mean=stats.mean, n=stats.n,
                ci_low=stats.ci_low, ci_high=stats.ci_high)

