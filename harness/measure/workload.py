"""Measuring one workload: its time, host-inclusive time and energy, peak memory and FLOPs.

This is the measuring half of running a case: it knows a workload's fields (``fn``,
``before_sample``, ``flops``) and a device, and returns numbers with their statistics. Turning
them into the record's metric values, and the suite's own quality metrics, is the run's job
(:mod:`harness.run.case_metrics`); nothing here imports the suite DSL or the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .device import device_for
from .flops import count_flops
from .peaks import peak_for
from .stats import SampleStats
from .timing import HostWindow, Timing, host_window, measure_time


@dataclass
class WorkloadMeasurement:
    """What :func:`measure_workload` measured; ``output`` is the result of the untimed memory
    probe call (what quality metrics look at unless the workload gives its own output)."""

    samples_ms: list[float]
    stats: SampleStats
    info: dict[str, Any]
    peak_bytes: int
    output: Any = None
    host: HostWindow | None = None
    flops: float | None = None  # work of one call (None or <= 0: not reported)
    peak: dict | None = None  # the device's measured matmul peak for the workload's dtype


def _call(fn: Callable[[], Any], before: Callable[[], Any] | None) -> Callable[[], Any]:
    """``fn`` preceded by the workload's untimed hook (for the untimed probe calls)."""
    if before is None:
        return fn

    def call():
        before()
        return fn()

    return call


def measure_workload(workload, timing: Timing, device: str | None = None, dev=None, timer=None,
                     dtype: str | None = None) -> WorkloadMeasurement:
    """Time, then one untimed probe call each for peak memory and FLOPs.

    ``workload`` is a :class:`harness.Workload`; ``dev`` the device (default: ``device_for(device)``),
    ``timer`` replaces the device's timer, ``dtype`` names the matmul peak achieved TFLOP/s is
    compared with. Call inside ``dev.scope()``. On CUDA the timed window (batches of
    device-timed samples, then a back-to-back window for the host-inclusive time and energy) is
    sampled by NVML for the record's ``valid`` flag.
    """
    import torch

    dev = dev if dev is not None else device_for(device)
    before = workload.before_sample
    fn = workload.fn
    if timing.cuda_graph and dev.is_cuda:
        fn = dev.graph(workload.fn)
    timer = timer if timer is not None else dev.timer(timing.cold_cache)
    window, no_telemetry = dev.telemetry() if dev.is_cuda else (None, "")
    on_batch = window.sample if window is not None else None
    result = measure_time(fn, timing, timer, before=before, on_batch=on_batch)
    stats = result.stats
    info: dict[str, Any] = {
        "timer": result.timer,
        "warmup_runs": result.warmup_runs,
        "stopped_by": result.stopped_by,
        "rel_ci": stats.rel_ci,
        "threads": torch.get_num_threads(),
        "cold_cache": bool(timing.cold_cache and dev.is_cuda),
        "cuda_graph": bool(timing.cuda_graph and dev.is_cuda),
    }
    if result.batch_size > 1:
        info["batch_size"], info["batches"] = result.batch_size, result.batches
    host = None
    if hasattr(timer, "host_window_ms") and stats.n:
        energy = window.device.energy_mj if window is not None else None
        host = host_window(fn, timer, stats.median, timing, before, energy=energy, on_batch=on_batch)
        if host.energy_mj is not None:
            info["energy_mj_per_call"] = host.energy_mj / host.total_calls
            info["energy_window"] = {"calls": host.total_calls, "seconds": host.seconds, "energy_mj": host.energy_mj}
    if dev.is_cuda:
        if window is not None:
            info["telemetry"] = window.summary()
            info["valid"], info["valid_reason"] = window.verdict()
        else:
            info["valid"], info["valid_reason"] = False, f"unverified: no GPU telemetry ({no_telemetry})"
    if stats.rel_iqr > 0.1:
        info["noisy"] = f"IQR is {stats.rel_iqr:.0%} of the median"

    peak_bytes, out, flops, peak = probe_workload(workload, dev, stats, info, dtype)
    return WorkloadMeasurement(samples_ms=result.samples_ms, stats=stats, info=info, peak_bytes=peak_bytes,
                               output=out, host=host, flops=flops, peak=peak)


def probe_workload(workload, dev, stats: SampleStats, info: dict[str, Any], dtype: str | None
                   ) -> tuple[int, Any, float | None, dict | None]:
    """The untimed calls after timing: (peak bytes, the probe call's output, FLOPs of one call or
    None, the device's matmul peak for ``dtype`` or None); what they found goes into ``info``."""
    # Memory and FLOPs from separate untimed calls: the FLOP counter keeps tensors alive
    # (activations that checkpointing would free), which would inflate the peak.
    before = workload.before_sample
    # Two probes, the smaller kept: the first profiled call of a workload can carry one-off
    # allocations (measured: SDPA forward+backward 0.44 MiB on the first probe, 0.25 MiB on every
    # later one), and whether a case pays them depends on what ran before it in the process.
    first, out = dev.peak_memory(_call(workload.fn, before))
    again, out = dev.peak_memory(_call(workload.fn, before))
    peak_bytes = min(first, again)
    if first != again:
        info["peak_memory_probes_mib"] = [first / 2**20, again / 2**20]
    if workload.flops is None:
        flops = count_flops(_call(workload.fn, before))[0]
        info["flops_method"] = "FlopCounterMode"
    else:
        flops = workload.flops
        info["flops_method"] = "formula"
    info.update(workload.info)  # a suite may say how it got its FLOPs (e.g. counted once, shared)
    reported = bool(flops and flops > 0 and stats.median > 0)
    if reported:
        info["flops"] = flops
    else:
        info.pop("flops_method", None)
    peak = _measured_peak(dev, dtype) if reported and dtype else None
    if peak is not None:
        info["peak"] = peak
    if dev.is_cuda:
        nvml, why = dev.nvml()
        info["gpu"] = nvml.state() if nvml is not None else {"nvml": why}
    return peak_bytes, out, flops if reported else None, peak


def _measured_peak(dev, dtype: str) -> dict | None:
    """This machine's measured matmul peak for ``dtype`` (from ``harness doctor``), or None."""
    try:
        return peak_for(dev.peak_key(), dtype)
    except Exception:  # no peaks stored, or the device cannot be named: no percentage
        return None
