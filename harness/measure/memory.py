"""Peak tensor memory of one call.

CUDA: the caching allocator's peak during the call minus what was allocated before it.
CPU: every tensor allocation and free is recorded by the PyTorch profiler
(``profile_memory=True``); the peak of their running sum is the answer. (tracemalloc does not
see tensor storage, and RSS sees the whole process and its allocator's caching.)
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable


def measure_peak_memory(fn: Callable[[], Any], device: str) -> tuple[int, Any]:
    """Return (peak bytes above the starting point, fn's result)."""
    if device.startswith("cuda"):
        return _cuda_peak(fn, device)
    return _cpu_peak(fn)


def _cuda_peak(fn: Callable[[], Any], device: str) -> tuple[int, Any]:
    import torch

    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    before = torch.cuda.memory_allocated(dev)
    torch.cuda.reset_peak_memory_stats(dev)
    out = fn()
    torch.cuda.synchronize(dev)
    peak = torch.cuda.max_memory_allocated(dev)
    return max(0, int(peak - before)), out


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the profiler's native log lines (written to fd 2 by the C++ side)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _cpu_peak(fn: Callable[[], Any]) -> tuple[int, Any]:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
            out = fn()
    return cpu_peak_from_profile(prof), out


def cpu_peak_from_profile(prof) -> int:
    """Peak of the running sum of CPU allocation events (bytes) in a finished profile."""
    events = []
    for ev in prof.profiler.kineto_results.events():
        if ev.name() == "[memory]" and str(ev.device_type()).endswith("CPU"):
            events.append((ev.start_ns(), int(ev.nbytes())))
    events.sort(key=lambda e: e[0])
    current = peak = 0
    for _, nbytes in events:
        current += nbytes
        peak = max(peak, current)
    return peak
