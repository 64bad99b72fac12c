"""Measurement: timing, memory, FLOPs and GPU telemetry."""

from .flops import count_flops
from .memory import measure_peak_memory
from .stats import SampleStats, median_ci
from .timing import CpuTimer, CudaEventTimer, measure_time

__all__ = [
    "CpuTimer",
    "CudaEventTimer",
    "SampleStats",
    "count_flops",
    "measure_peak_memory",
    "measure_time",
    "median_ci",
]
