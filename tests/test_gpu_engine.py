"""The engine's CUDA paths on fakes: device selection, NVML mapping, telemetry and validity,
energy per call, and failures (sticky CUDA errors replace the process, allocator errors are oom)."""

from __future__ import annotations

import os

import pytest

from cuda_fakes import FakeCudaDevice, FakeCudaModule, FakeGpu, FakeNvml, physical_uuid
from harness import Suite, Timing, Workload, variant
from harness.measure.telemetry import NvmlDevice, TelemetryWindow, cuda_identity, nvml_device
from harness.plan import Case, plan_suite
from harness.declare.registry import discover
from harness.run.executors import CaseExecutor, is_oom, is_sticky_cuda_error
from harness.run.session import run_cases

FAST = Timing(warmup_s=0.0, min_warmup=1, budget_s=0.02, min_runs=5, rel_spread=0.01)


# --------------------------------------------------------------------------- NVML mapping
def test_nvml_device_found_by_uuid_under_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    cuda, nv = FakeCudaModule(), FakeNvml()
    first, why = nvml_device(0, nv, cuda=cuda)  # CUDA 0 is physical GPU 2
    second, _ = nvml_device(1, nv, cuda=cuda)  # CUDA 1 is physical GPU 0
    assert why == ""
    assert (first.nvml_index, first.matched_by, first.uuid) == (2, "uuid", "GPU-" + physical_uuid(2))
    assert second.nvml_index == 0


def test_nvml_device_falls_back_to_the_pci_bus_id():
    class PciOnly(FakeNvml):
        def nvmlDeviceGetHandleByUUID(self, uuid):
            raise RuntimeError("not supported")

        def nvmlDeviceGetHandleByPciBusId_v2(self, bus):
            assert bus == "00000000:12:00.0"
            return ("handle", 2)

    dev, _ = NvmlDevice.find({"uuid": "x", "pci_bus_id": "00000000:12:00.0"}, PciOnly())
    assert (dev.nvml_index, dev.matched_by) == (2, "pci_bus_id")
    missing, why = NvmlDevice.find({"uuid": "nope"}, FakeNvml())
    assert missing is None and "no NVML device has UUID nope" in why


def test_cuda_identity_formats_the_pci_bus_id(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    ident = cuda_identity(0, FakeCudaModule())
    assert ident == {"uuid": physical_uuid(1), "pci_bus_id": "00000000:11:00.0"}


# --------------------------------------------------------------------------- validity
def window(**nvml) -> TelemetryWindow:
    dev, _ = NvmlDevice.find({"uuid": physical_uuid(0)}, FakeNvml(**nvml))
    return TelemetryWindow(dev)


def test_valid_window_holds_its_clock_without_slowdown():
    w = window(reasons=[0x1, 0x0], clocks_mhz=[1980.0, 1755.0])  # gpu_idle is not a slowdown
    for _ in range(3):
        w.sample()
    valid, reason = w.verdict()
    assert valid and "no power or thermal slowdown" in reason
    assert w.summary()["sm_clock_min_mhz"] == 1755.0 and w.summary()["sm_clock_median_mhz"] == 1755.0


def test_throttle_bit_during_the_window_makes_the_record_invalid():
    w = window(reasons=[0x0, 0x4, 0x0])  # one sample with the software power cap
    for _ in range(3):
        w.sample()
    valid, reason = w.verdict()
    assert not valid and reason == "clock slowdown during the timed window: sw_power_cap"


def test_clock_under_75_percent_of_default_is_invalid():
    w = window(clocks_mhz=[1800.0, 1200.0, 1800.0], default_clock_mhz=1755.0)
    for _ in range(3):
        w.sample()
    valid, reason = w.verdict()
    assert not valid and "SM clock fell to 1200 MHz, under 75% of its default application clock 1755 MHz" in reason


def test_reasons_fall_back_to_the_deprecated_throttle_call():
    nv = FakeNvml(reasons=[0x40], modern=False)
    dev, _ = NvmlDevice.find({"uuid": physical_uuid(0)}, nv)
    w = TelemetryWindow(dev)
    w.sample()
    assert nv.calls == ["nvmlDeviceGetCurrentClocksThrottleReasons"]
    assert w.verdict() == (False, "clock slowdown during the timed window: hw_thermal_slowdown")
    modern = FakeNvml()
    NvmlDevice.find({"uuid": physical_uuid(0)}, modern)[0].reasons()
    assert modern.calls == ["nvmlDeviceGetCurrentClocksEventReasons"]


# --------------------------------------------------------------------------- the engine on a fake GPU
class Probe(Suite):
    """Records which CUDA device is current in every step the engine runs."""

    name = "probe"
    grid = {"n": [1]}
    timing = FAST
    fake: FakeCudaDevice | None = None

    def note(self, what):
        self.fake.current_during.setdefault(what, []).append(self.fake.cuda.current)

    def prepare(self, params, device):
        self.note("prepare")
        return None

    @variant(requires=("cuda",))
    def kernel(self, state, params):
        self.note("variant")
        gpu = self.fake.gpu
        return Workload(lambda: gpu.kernel(2.0), flops=4e9, before_sample=lambda: self.note("before_sample"))

    def evaluate(self, state, params, variant, output):
        self.note("evaluate")
        return {}


def probe_case(device: str) -> Case:
    return Case("probe", "kernel", (("n", 1),), device, ("n",), FAST)


def run_probe(fake: FakeCudaDevice, device: str):
    Probe.fake = fake
    executor = CaseExecutor({"probe": Probe}, device_factory=lambda name: fake)
    try:
        return executor.run(probe_case(device))
    finally:
        executor.close()


def test_case_device_is_current_for_every_step(monkeypatch):
    import harness.declare.suite as suite_mod

    fake = FakeCudaDevice("cuda:1")
    real_unmet = suite_mod._requirement_unmet
    monkeypatch.setattr(suite_mod, "_requirement_unmet", lambda req, dev: (
        fake.current_during.setdefault("capability", []).append(fake.cuda.current), real_unmet(req, dev))[1])
    record = run_probe(fake, "cuda:1")
    assert record.status == "ok", record.reason
    steps = ("capability", "prepare", "variant", "timer", "before_sample", "memory", "evaluate")
    assert {k: set(fake.current_during[k]) for k in steps} == {k: {1} for k in steps}
    assert fake.cuda.current == 0  # restored after the case


def test_gpu_record_has_device_latency_host_latency_validity_and_energy(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    gpu = FakeGpu(host_ms_per_op=0.001, watts=300.0)
    fake = FakeCudaDevice("cuda:0", gpu=gpu, nv=FakeNvml(gpu))
    record = run_probe(fake, "cuda:0")
    assert record.status == "ok", record.reason
    assert record.metrics["latency"].value == pytest.approx(2.0)
    assert record.metrics["host_latency"].value == pytest.approx(2.0, rel=1e-3)
    assert record.metrics["host_latency"].unit == "ms" and record.metrics["host_latency"].n == 3
    assert record.info["valid"] is True
    assert record.info["telemetry"]["nvml_index"] == 2  # CUDA 0 under CUDA_VISIBLE_DEVICES=2,0
    assert record.info["gpu"]["nvml_index"] == 2
    # energy only from the back-to-back window: 2 ms x 300 W per call, warm-up not included
    assert record.info["energy_mj_per_call"] == pytest.approx(600.0)
    assert record.info["flops_method"] == "formula"


def test_gpu_record_is_invalid_with_the_reason_under_a_throttle_bit():
    gpu = FakeGpu()
    fake = FakeCudaDevice("cuda:0", gpu=gpu, nv=FakeNvml(gpu, reasons=[0x0, 0x0, 0x20, 0x0]))
    record = run_probe(fake, "cuda:0")
    assert record.status == "ok"
    assert record.info["valid"] is False
    assert record.info["valid_reason"] == "clock slowdown during the timed window: sw_thermal_slowdown"


def test_gpu_record_without_nvml_is_unverified():
    class NoNvml(FakeNvml):
        def nvmlDeviceGetHandleByUUID(self, uuid):
            raise RuntimeError("NVML unavailable")

    fake = FakeCudaDevice("cuda:0", nv=NoNvml())
    record = run_probe(fake, "cuda:0")
    assert record.info["valid"] is False and record.info["valid_reason"].startswith("unverified: no GPU telemetry")


# --------------------------------------------------------------------------- failures
FAILURES_SUITE = '''
import os

from harness import Suite, Timing, Workload, variant


def raising(message):
    def fn():
        raise RuntimeError(message)
    return fn


class Failing(Suite):
    name = "failing"
    grid = {"n": [1]}
    timing = Timing(warmup_s=0, budget_s=0.01, min_runs=3)

    @variant()
    def pid(self, state, params):
        return Workload(lambda: None, flops=0, info={"pid": os.getpid()})

    @variant()
    def sticky(self, state, params):
        return Workload(raising("CUDA error: an illegal memory access was encountered\\n"
                                "CUDA kernel errors might be asynchronously reported at some other API call"))

    @variant()
    def cpu_oom(self, state, params):
        return Workload(raising("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                                "memory: you tried to allocate 1099511627776 bytes. Error code 12"))

    @variant()
    def cublas_oom(self, state, params):
        return Workload(raising("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"))
'''


@pytest.fixture
def failing(write_suite):
    path = write_suite("failing_suite", FAILURES_SUITE)
    cls = discover(extra=[path], builtin=False).get("failing")
    by_name = {c.variant: c for c in plan_suite(cls, "default", "cpu")}
    return cls, by_name


@pytest.mark.slow
def test_sticky_cuda_error_is_crashed_and_later_cases_run_in_a_fresh_process(failing):
    cls, case = failing
    cases = [case["pid"], case["sticky"], case["pid"], case["cpu_oom"]]
    records = run_cases(cases, {"failing": cls}, None, progress=False)
    first, sticky, after, oom = records
    assert first.status == "ok" and first.info["pid"] == os.getpid()
    assert sticky.status == "crashed"
    assert sticky.reason.startswith("sticky CUDA error, the process's CUDA context is lost: RuntimeError: CUDA error: an illegal")
    assert after.status == "ok" and after.info["pid"] != os.getpid()
    assert oom.status == "oom" and "DefaultCPUAllocator" in oom.reason


@pytest.mark.slow
def test_isolated_worker_is_replaced_after_a_sticky_cuda_error(failing):
    cls, case = failing
    records = run_cases([case["pid"], case["sticky"], case["pid"]], {"failing": cls}, None, isolate=True,
                        timeout_s=60, progress=False)
    first, sticky, after = records
    assert [r.status for r in records] == ["ok", "crashed", "ok"]
    assert sticky.info["sticky_cuda_error"] is True
    assert first.info["pid"] != after.info["pid"]
    assert os.getpid() not in (first.info["pid"], after.info["pid"])


def test_allocator_failures_are_oom_and_other_errors_are_not(failing):
    cls, case = failing
    executor = CaseExecutor({"failing": cls})
    try:
        assert executor.run(case["cpu_oom"]).status == "oom"
        assert executor.run(case["cublas_oom"]).status == "oom"
    finally:
        executor.close()
    assert is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))
    assert is_sticky_cuda_error(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_sticky_cuda_error(RuntimeError("CUDA error: unspecified launch failure"))
    assert is_sticky_cuda_error(RuntimeError("CUDA error: misaligned address"))
    assert not is_sticky_cuda_error(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_sticky_cuda_error(ValueError("illegal memory access"))
