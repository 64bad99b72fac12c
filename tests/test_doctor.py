"""``harness doctor``: on the CPU for real (and through the CLI), on CUDA with a scripted GPU."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from cuda_fakes import FakeCudaDevice, FakeGpu, FakeNvml
from harness import Suite, Workload, variant
from harness.cli import main
from harness.measure.doctor import DOCTOR_TIMING, Doctor
from harness.measure.device import CpuDevice
from harness.measure.peaks import load_peaks, peak_for, peaks_path, store_peaks
from harness.plan import Case
from harness.run.executors import CaseExecutor

FAKE_CYCLES_PER_MS = 1.98e6  # the fake SM runs at 1980 MHz


class FakeCudaWork:
    """Known work on a FakeGpu: sleep kernels by cycles, matmuls and copies of scripted length."""

    def __init__(self, gpu: FakeGpu):
        self.gpu = gpu

    def sleep(self, cycles: int) -> None:
        self.gpu.kernel(cycles / FAKE_CYCLES_PER_MS, "sleep")

    def matmul(self, dtype, n):
        ms = {"float32": 20.0, "tf32": 5.0, "float16": 2.5, "bfloat16": 2.5}[dtype]
        return (lambda: self.gpu.kernel(ms, "matmul")), 2.0 * n**3

    def copy(self, nbytes):
        return (lambda: self.gpu.kernel(0.4, "copy")), 2.0 * nbytes

    def allocation(self, nbytes, device):
        return lambda: SimpleNamespace(nbytes=nbytes)


class MeasuringFakeDevice(FakeCudaDevice):
    def peak_memory(self, fn):
        out = fn()
        return out.nbytes, out


def fake_doctor(event_scale=1.0, reasons=(0,)):
    gpu = FakeGpu(host_ms_per_op=0.001)
    dev = MeasuringFakeDevice("cuda:0", gpu=gpu, nv=FakeNvml(gpu, reasons=list(reasons)), event_scale=event_scale)
    timing = DOCTOR_TIMING.replace(warmup_s=0.01, budget_s=0.1, min_runs=5, rel_spread=0.01)
    return Doctor("cuda:0", dev=dev, work=FakeCudaWork(gpu), timing=timing)


def test_cuda_doctor_passes_on_a_faithful_device():
    lines = []
    doctor = fake_doctor()
    report = doctor.run(lines.append)
    assert report.ok, lines
    names = [c.name for c in report.checks]
    assert names == ["cuda timer vs wall clock", "cuda matmul, events vs wall clock", "cuda memory",
                     "nvml mapping", "clocks and throttling", "peak float32 matmul", "peak tf32 matmul",
                     "peak float16 matmul", "peak bfloat16 matmul", "peak copy bandwidth"]
    assert all(line.startswith("ok   ") for line in lines)
    n = 8192
    assert report.peaks["matmul_tflops"]["bfloat16"] == pytest.approx(2.0 * n**3 / 2.5e-3 / 1e12)
    stored = load_peaks()[doctor.dev.peak_key()]
    assert doctor.dev.peak_key().endswith("|Fake GPU 0")
    assert stored["matmul_tflops"]["tf32"] == pytest.approx(2.0 * n**3 / 5e-3 / 1e12)
    assert "cuda:0 is NVML device 0 (matched by uuid" in lines[3]


def test_cuda_doctor_fails_one_line_per_check_when_events_disagree_with_the_wall_clock():
    lines = []
    report = fake_doctor(event_scale=0.8).run(lines.append)
    failed = [line for line in lines if line.startswith("FAIL")]
    assert not report.ok
    assert len(failed) == 2
    assert failed[0].startswith("FAIL cuda timer vs wall clock: a sleep kernel calibrated by wall clock to 1 ms")
    assert "(error -20.00%" in failed[0]
    assert failed[1].startswith("FAIL cuda matmul, events vs wall clock")


def test_cuda_doctor_reports_throttling_seen_while_the_matmul_ran():
    report = fake_doctor(reasons=[0x0, 0x4]).run()
    (failed,) = [c for c in report.checks if not c.ok]
    assert failed.name == "clocks and throttling"
    assert "clock slowdown during the timed window: sw_power_cap" in failed.detail


def test_cpu_doctor_passes_through_the_cli_and_stores_peaks(capsys):
    code = main(["doctor", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].startswith("harness doctor: checking the CPU")
    assert any(line.startswith("ok   cpu timer: a 2 ms spin reads") for line in lines)
    assert any(line.startswith("ok   cpu memory: an allocation of 67108864 bytes reads 67108864 bytes") for line in lines)
    assert lines[-1].endswith("checks passed") and "FAIL" not in out
    peak = peak_for(CpuDevice().peak_key(), "float32")
    assert peak is not None and peak["tflops"] > 0
    assert json.loads(peaks_path().read_text())["schema"] == 1


def test_doctor_rejects_an_unknown_device_in_one_line(capsys):
    assert main(["doctor", "--device", "tpu"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["harness: error: unknown device 'tpu' (use cpu, cuda, cuda:N or auto)"]


class Matmul(Suite):
    name = "matmul_peak"
    grid = {"dtype": ["float32"]}

    @variant()
    def mm(self, state, params):
        import torch

        a = torch.randn(64, 64)
        return Workload(lambda: a @ a, flops=2.0 * 64**3)


def test_records_show_the_percentage_of_the_measured_peak():
    store_peaks(CpuDevice().peak_key(), {"matmul_tflops": {"float32": 0.5}})
    from harness import Timing

    case = Case("matmul_peak", "mm", (("dtype", "float32"),), "cpu", ("dtype",),
                Timing(warmup_s=0, budget_s=0.02, min_runs=5))
    executor = CaseExecutor({"matmul_peak": Matmul})
    record = executor.run(case)
    executor.close()
    assert record.status == "ok", record.reason
    tflops = record.metrics["tflops"].value
    assert record.metrics["pct_of_peak"].value == pytest.approx(100.0 * tflops / 0.5)
    assert record.metrics["pct_of_peak"].unit == "%"
    assert record.info["peak"]["dtype"] == "float32" and record.info["peak"]["tflops"] == 0.5
    bf16 = Case("matmul_peak", "mm", (("dtype", "bfloat16"),), "cpu", ("dtype",), case.timing)
    executor = CaseExecutor({"matmul_peak": Matmul})
    other = executor.run(bf16)  # no bfloat16 peak stored: no percentage
    executor.close()
    assert "pct_of_peak" not in other.metrics and "peak" not in other.info
