"""Scripted stand-ins for a GPU, torch.cuda and NVML, so CUDA logic is tested without a GPU.

:class:`FakeGpu` models a device queue: the host enqueues kernels and events, the device runs
kernels one after another, starting each when both the device is free and the host has launched
it; ``synchronize`` makes the host wait for the queue. Every operation is logged, so a test can
read the order of host calls (hooks, flushes, event records, kernels, synchronisations).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from harness.measure.device import CudaDevice
from harness.measure.timing import CudaEventTimer


class FakeGpu:
    def __init__(self, host_ms_per_op: float = 0.0, watts: float = 300.0):
        self.host_ms = 0.0  # host clock
        self.queue_end_ms = 0.0  # when the device finishes what is enqueued
        self.busy_ms = 0.0  # device time spent in kernels (energy = busy time x watts)
        self.host_ms_per_op = host_ms_per_op
        self.watts = watts
        self.log: list[str] = []

    def _host_op(self, name: str) -> None:
        self.log.append(name)
        self.host_ms += self.host_ms_per_op

    def kernel(self, ms: float, name: str = "kernel") -> None:
        self._host_op(name)
        start = max(self.queue_end_ms, self.host_ms)
        self.queue_end_ms = start + ms
        self.busy_ms += ms

    def stamp(self) -> float:
        self._host_op("record")
        self.queue_end_ms = max(self.queue_end_ms, self.host_ms)
        return self.queue_end_ms

    def synchronize(self) -> None:
        self.log.append("sync")
        self.host_ms = max(self.host_ms, self.queue_end_ms)

    def host_work(self, ms: float, name: str) -> None:
        self.log.append(name)
        self.host_ms += ms

    def wall_s(self) -> float:
        return self.host_ms / 1e3

    def energy_mj(self) -> float:
        return self.busy_ms * self.watts  # W x ms = mJ


@dataclass
class FakeEvent:
    gpu: FakeGpu
    t: float | None = None
    scale: float = 1.0  # a broken event clock reads scale x the true time

    def record(self) -> None:
        self.t = self.gpu.stamp()

    def elapsed_time(self, end: "FakeEvent") -> float:
        if self.t is None or end.t is None:
            raise RuntimeError("event not recorded")
        if self.gpu.queue_end_ms < end.t or self.gpu.host_ms < end.t:
            raise RuntimeError("event not completed: elapsed_time before synchronize")
        return (end.t - self.t) * self.scale


class FakeCudaApi:
    """The CudaApi of the timer, on a FakeGpu."""

    def __init__(self, gpu: FakeGpu, flush_ms: float = 0.05, event_scale: float = 1.0):
        self.gpu = gpu
        self.flush_ms = flush_ms
        self.event_scale = event_scale

    def event(self) -> FakeEvent:
        return FakeEvent(self.gpu, scale=self.event_scale)

    def synchronize(self) -> None:
        self.gpu.synchronize()

    def flush_l2(self) -> None:
        self.gpu.kernel(self.flush_ms, "flush")


def visible_physical() -> list[int]:
    """Physical GPU indices as CUDA numbers them under CUDA_VISIBLE_DEVICES (as the driver does)."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [int(x) for x in text.split(",")] if text else [0, 1, 2]


def physical_uuid(physical: int) -> str:
    return f"{physical}{physical}{physical}{physical}aaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


@dataclass
class FakeProps:
    name: str
    uuid: str
    pci_bus_id: int
    pci_device_id: int = 0
    pci_domain_id: int = 0


class FakeCudaModule:
    """The parts of torch.cuda the engine uses for device selection and identity."""

    def __init__(self):
        self.current = 0
        self.entered: list[int] = []

    def device(self, index: int):
        @contextlib.contextmanager
        def scope():
            saved, self.current = self.current, index
            self.entered.append(index)
            try:
                yield
            finally:
                self.current = saved

        return scope()

    def get_device_properties(self, index: int) -> FakeProps:
        phys = visible_physical()[index]
        return FakeProps(f"Fake GPU {phys}", physical_uuid(phys), pci_bus_id=0x10 + phys)

    def get_device_name(self, index: int) -> str:
        return self.get_device_properties(index).name

    def synchronize(self, index=None) -> None:
        pass


class NVMLError(Exception):
    pass


@dataclass
class FakeNvml:
    """pynvml's names over three physical GPUs; NVML numbers them by physical index.

    ``reasons`` is a script of clock-event reason bits returned by successive reads (the last
    repeats); ``clocks_mhz`` likewise for the SM clock. ``modern`` False removes the current
    clock-event call, leaving only the deprecated throttle-reasons call.
    """

    gpu: FakeGpu | None = None
    reasons: list[int] = field(default_factory=lambda: [0])
    clocks_mhz: list[float] = field(default_factory=lambda: [1980.0])
    default_clock_mhz: float = 1755.0
    modern: bool = True
    calls: list[str] = field(default_factory=list)

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __post_init__(self):
        if not self.modern:
            self.nvmlDeviceGetCurrentClocksEventReasons = None

    def _next(self, script: list):
        return script.pop(0) if len(script) > 1 else script[0]

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 3

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for phys in range(3):
            if uuid == "GPU-" + physical_uuid(phys):
                return ("handle", phys)
        raise NVMLError("Not Found")

    def nvmlDeviceGetIndex(self, handle):
        return handle[1]

    def nvmlDeviceGetUUID(self, handle):
        return "GPU-" + physical_uuid(handle[1])

    def nvmlDeviceGetClockInfo(self, handle, kind):
        return self._next(self.clocks_mhz) if kind == self.NVML_CLOCK_SM else 2619

    def nvmlDeviceGetMaxClockInfo(self, handle, kind):
        return 1980

    def nvmlDeviceGetDefaultApplicationsClock(self, handle, kind):
        return self.default_clock_mhz

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle):
        self.calls.append("nvmlDeviceGetCurrentClocksEventReasons")
        return self._next(self.reasons)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle):
        self.calls.append("nvmlDeviceGetCurrentClocksThrottleReasons")
        return self._next(self.reasons)

    def nvmlDeviceGetPowerUsage(self, handle):
        return 300_000

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000

    def nvmlDeviceGetTemperature(self, handle, kind):
        return 55

    def nvmlSystemGetDriverVersion(self):
        return "999.1"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return self.gpu.energy_mj() if self.gpu is not None else 0.0


class FakeCudaDevice(CudaDevice):
    """A CudaDevice on fakes: its scope, identity and NVML logic are the real ones.

    Records which device was current when the engine timed, measured memory or built a graph.
    """

    def __init__(self, device: str, gpu: FakeGpu | None = None, nv: FakeNvml | None = None,
                 cuda: FakeCudaModule | None = None, event_scale: float = 1.0):
        self.gpu = gpu or FakeGpu()
        super().__init__(device, cuda=cuda or FakeCudaModule(), nv=nv if nv is not None else FakeNvml(self.gpu))
        self.event_scale = event_scale
        self.current_during: dict[str, list[int]] = {}

    def _note(self, what: str) -> None:
        self.current_during.setdefault(what, []).append(self.cuda.current)

    def timer(self, cold_cache: bool = False) -> CudaEventTimer:
        self._note("timer")
        api = FakeCudaApi(self.gpu, event_scale=self.event_scale)
        return CudaEventTimer(self.name, flush_l2=cold_cache, api=api, wall_clock=self.gpu.wall_s)

    def peak_memory(self, fn):
        self._note("memory")
        return 4096, fn()

    def graph(self, fn):
        self._note("graph")
        return fn
