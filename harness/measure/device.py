"""Where a case runs: the device-specific pieces of measuring, behind one small interface.

:class:`CpuDevice` and :class:`CudaDevice` give the engine a scope that makes the device current
(``torch.cuda.device(index)`` for ``cuda:N``, so events, graphs, memory statistics, capability
checks and a suite's own CUDA work all use the case's GPU), a timer, the peak-memory
measurement and a telemetry window. The torch.cuda module and NVML are injectable, so the logic
is tested with fakes.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

from .memory import measure_peak_memory
from .peaks import machine_key
from .telemetry import TelemetryWindow, nvml_device
from .timing import CpuTimer, CudaEventTimer, cuda_graph_callable


def cuda_index(device: str) -> int | None:
    """0 for ``cuda``, N for ``cuda:N``, None for anything else."""
    if device == "cuda":
        return 0
    if device.startswith("cuda:"):
        return int(device.split(":", 1)[1])
    return None


class CpuDevice:
    is_cuda = False

    def __init__(self, device: str = "cpu"):
        self.name = device

    def scope(self):
        return contextlib.nullcontext()

    def timer(self, cold_cache: bool = False) -> CpuTimer:
        return CpuTimer()

    def peak_memory(self, fn: Callable[[], Any]) -> tuple[int, Any]:
        return measure_peak_memory(fn, self.name)

    def telemetry(self) -> tuple[TelemetryWindow | None, str]:
        return None, "the CPU has no NVML telemetry"

    def graph(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        return fn

    def peak_key(self) -> str:
        """Machine key of measured peaks: host, CPU model and torch's thread count."""
        import torch

        from .peaks import cpu_model

        return machine_key(cpu_model(), threads=torch.get_num_threads())

    def synchronize(self) -> None:
        pass


class CudaDevice:
    """One CUDA device. ``cuda`` is torch.cuda (or a fake); ``nv`` is pynvml (or a fake)."""

    is_cuda = True

    def __init__(self, device: str, cuda: Any = None, nv: Any = None):
        index = cuda_index(device)
        if index is None:
            raise ValueError(f"not a CUDA device: {device!r}")
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.name = f"cuda:{index}"
        self.index = index
        self.cuda = cuda
        self.nv = nv
        self._nvml: tuple | None = None

    def scope(self):
        """Make this device current (restored on exit)."""
        return self.cuda.device(self.index)

    def timer(self, cold_cache: bool = False) -> CudaEventTimer:
        return CudaEventTimer(self.name, flush_l2=cold_cache)

    def peak_memory(self, fn: Callable[[], Any]) -> tuple[int, Any]:
        return measure_peak_memory(fn, self.name)

    def nvml(self):
        """(NvmlDevice or None, reason), found once by the device's UUID or PCI bus id."""
        if self._nvml is None:
            self._nvml = nvml_device(self.index, self.nv, cuda=self.cuda)
        return self._nvml

    def telemetry(self) -> tuple[TelemetryWindow | None, str]:
        dev, reason = self.nvml()
        return (TelemetryWindow(dev), "") if dev is not None else (None, reason)

    def graph(self, fn: Callable[[], Any]) -> Callable[[], Any]:
        return cuda_graph_callable(fn, self.name)

    def synchronize(self) -> None:
        self.cuda.synchronize(self.index)

    def peak_key(self) -> str:
        """Machine key of measured peaks: host and GPU name."""
        return machine_key(self.cuda.get_device_name(self.index))


def device_for(device: str):
    """The :class:`CpuDevice` or :class:`CudaDevice` of a device name."""
    return CudaDevice(device) if cuda_index(device) is not None else CpuDevice(device)
