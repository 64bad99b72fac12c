"""``harness doctor``: check the harness's measurements on this machine before trusting them.

Each check measures something whose answer is known, through the same code a run uses:

- timer: on the CPU a busy spin of known length, timed by the harness timer (error in %); on
  CUDA a sleep kernel calibrated against the wall clock over a long back-to-back window, then
  timed by the harness's event timer, and a large matmul timed by events against the wall
  clock around many back-to-back calls (they agree when the GPU, not the host, is the limit);
- memory: an allocation of known size through the harness's peak-memory measurement;
- NVML (CUDA): the NVML device found for the CUDA device (by UUID or PCI bus id), and the
  clocks and clock-event reasons sampled while the matmul ran (the record ``valid`` rule);
- peaks: dense matmul TFLOP/s per dtype and copy bandwidth (GB/s), stored per machine in the
  harness cache (``peaks.json``), where runs read them to report ``pct_of_peak``.

Every check prints one line; a failed one starts with ``FAIL`` and the exit code is 1. The
device-specific work is behind small interfaces (:class:`CpuWork`, :class:`CudaWork` and the
devices of :mod:`harness.measure.device`), so the logic is tested with fakes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, TextIO

from .device import CpuDevice, CudaDevice, device_for
from .peaks import store_peaks
from .timing import Timing, host_window, measure_time

SPIN_MS = 2.0
TIMER_TOLERANCE = 0.005  # the CPU timer must read a known spin within 0.5%
CUDA_TIMER_TOLERANCE = 0.02  # events against the wall clock on a calibrated kernel
MATMUL_AGREEMENT = 0.03  # events against wall clock around back-to-back matmuls
KNOWN_ALLOCATION_BYTES = 64 * 1024 * 1024
CPU_DTYPES = ("float32", "bfloat16")
CUDA_DTYPES = ("float32", "tf32", "float16", "bfloat16")


# the doctor's measurements: two warm-up calls, a short budget, a tighter stopping rule
DOCTOR_TIMING = Timing(min_warmup=2, budget_s=0.3, min_runs=10, rel_spread=0.002)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


@dataclass
class Report:
    device: str
    checks: list[Check] = field(default_factory=list)
    peaks: dict[str, Any] = field(default_factory=dict)
    peaks_file: str = ""

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


# --------------------------------------------------------------------------- known work
def spin(ms: float, clock: Callable[[], int] = time.monotonic_ns) -> None:
    """Busy-wait for ``ms`` milliseconds of ``clock`` (a known amount of work for the timer)."""
    end = clock() + int(ms * 1e6)
    while clock() < end:
        pass


class CpuWork:
    """Known work on the CPU: a spin, matmuls, a copy, an allocation."""

    def spin(self, ms: float) -> Callable[[], None]:
        return lambda: spin(ms)

    def matmul(self, dtype: str, n: int) -> tuple[Callable[[], Any], float]:
        import torch

        a = torch.randn(n, n).to(getattr(torch, dtype))
        b = torch.randn(n, n).to(getattr(torch, dtype))
        return (lambda: torch.mm(a, b)), 2.0 * n**3

    def copy(self, nbytes: int) -> tuple[Callable[[], Any], float]:
        import torch

        src = torch.ones(nbytes // 4)
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)), 2.0 * nbytes  # read once, written once

    def allocation(self, nbytes: int, device: str) -> Callable[[], Any]:
        import torch

        return lambda: torch.empty(nbytes, dtype=torch.uint8, device=device)


class CudaWork(CpuWork):
    """Known work on one CUDA device: a sleep kernel of a given cycle count, matmuls, a copy."""

    def __init__(self, device: str):
        self.device = device

    def sleep(self, cycles: int) -> None:
        import torch

        torch.cuda._sleep(int(cycles))

    def matmul(self, dtype: str, n: int) -> tuple[Callable[[], Any], float]:
        import torch

        real = torch.float32 if dtype == "tf32" else getattr(torch, dtype)
        a = torch.randn(n, n, device=self.device, dtype=real)
        b = torch.randn(n, n, device=self.device, dtype=real)
        matmul = torch.backends.cuda.matmul
        if hasattr(matmul, "fp32_precision"):
            attr, value = "fp32_precision", ("tf32" if dtype == "tf32" else "ieee")
        else:
            attr, value = "allow_tf32", dtype == "tf32"

        def fn():
            saved = getattr(matmul, attr)
            setattr(matmul, attr, value)
            try:
                return torch.mm(a, b)
            finally:
                setattr(matmul, attr, saved)

        return fn, 2.0 * n**3

    def copy(self, nbytes: int) -> tuple[Callable[[], Any], float]:
        import torch

        src = torch.ones(nbytes // 4, device=self.device)
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)), 2.0 * nbytes


# --------------------------------------------------------------------------- the checks
class Doctor:
    """Runs the checks of one device. ``dev`` and ``work`` are injectable (fakes in tests)."""

    def __init__(self, device: str, dev=None, work=None, timing: Timing | None = None,
                 matmul_n: int | None = None, copy_bytes: int | None = None, dtypes: tuple[str, ...] | None = None,
                 store: bool = True):
        self.device = device
        self.dev = dev if dev is not None else device_for(device)
        cuda = self.dev.is_cuda
        self.work = work if work is not None else (CudaWork(self.dev.name) if cuda else CpuWork())
        self.timing = timing or DOCTOR_TIMING
        self.matmul_n = matmul_n or (8192 if cuda else 1024)
        self.copy_bytes = copy_bytes or ((1 << 30) if cuda else (64 << 20))
        self.dtypes = dtypes or (CUDA_DTYPES if cuda else CPU_DTYPES)
        self.store = store
        self.report = Report(device)

    def check(self, name: str, fn: Callable[[], tuple[bool, str]]) -> Check:
        try:
            ok, detail = fn()
        except Exception as exc:  # noqa: BLE001 - a check that cannot run has failed
            ok, detail = False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        result = Check(name, ok, detail)
        self.report.checks.append(result)
        return result

    def run(self, emit: Callable[[str], Any] | None = None) -> Report:
        emit = emit or (lambda line: None)
        with self.dev.scope():
            steps = [self.timer_checks, self.memory_check]
            if self.dev.is_cuda:
                steps.append(self.nvml_check)
            steps.append(self.peak_checks)
            for step in steps:
                before = len(self.report.checks)
                step()
                for c in self.report.checks[before:]:
                    emit(c.line())
        return self.report

    # ---------------------------------------------------------------- timer
    def timer_checks(self) -> None:
        if not self.dev.is_cuda:
            self.check("cpu timer", self._cpu_spin)
            return
        self.check("cuda timer vs wall clock", self._cuda_sleep)
        self.check("cuda matmul, events vs wall clock", self._cuda_matmul_agreement)

    def _cpu_spin(self) -> tuple[bool, str]:
        timer = self.dev.timer()
        result = measure_time(self.work.spin(SPIN_MS), self.timing, timer)
        # The spin ends at a deadline of its own clock, so other load can only lengthen a
        # sample (a preemption between the deadline and the timer's stop), never shorten it:
        # the shortest sample is the timer's reading of the known work; the median also
        # carries the machine's noise and is reported beside it.
        err = (result.stats.min - SPIN_MS) / SPIN_MS
        med_err = (result.stats.median - SPIN_MS) / SPIN_MS
        reads = [timer.clock() for _ in range(1001)]
        read_us = (reads[-1] - reads[0]) / 1000 / 1e3
        detail = (f"a {SPIN_MS:g} ms spin reads {result.stats.min:.5f} ms at least (error {err:+.3%}; "
                  f"median {result.stats.median:.5f} ms, {med_err:+.3%} with this machine's load, "
                  f"IQR {result.stats.iqr * 1e3:.1f} us, n={result.stats.n}; one clock read costs "
                  f"{read_us:.2f} us); tolerance {TIMER_TOLERANCE:.1%}")
        return abs(err) <= TIMER_TOLERANCE, detail

    def _cuda_sleep(self) -> tuple[bool, str]:
        timer = self.dev.timer()
        # Calibrate: cycles per ms of the sleep kernel from the wall clock over a long back-to-back
        # window (launch gaps are hidden behind kernels of milliseconds).
        probe = 1_000_000
        timer.api.synchronize()
        t0 = timer.wall_clock()
        self.work.sleep(probe)
        timer.api.synchronize()
        first_ms = (timer.wall_clock() - t0) * 1e3
        reps = max(5, int(math.ceil(200.0 / max(first_ms, 1e-3))))  # about 200 ms
        t0 = timer.wall_clock()
        for _ in range(reps):
            self.work.sleep(probe)
        timer.api.synchronize()
        cycles_per_ms = probe * reps / ((timer.wall_clock() - t0) * 1e3)
        target_ms = 1.0
        cycles = int(cycles_per_ms * target_ms)
        result = measure_time(lambda: self.work.sleep(cycles), self.timing, timer)
        err = (result.stats.median - target_ms) / target_ms
        detail = (f"a sleep kernel calibrated by wall clock to {target_ms:g} ms ({cycles} cycles) reads "
                  f"{result.stats.median:.4f} ms by events (error {err:+.2%}, n={result.stats.n}, "
                  f"{result.batches} batches of {result.batch_size}); tolerance {CUDA_TIMER_TOLERANCE:.0%}")
        return abs(err) <= CUDA_TIMER_TOLERANCE, detail

    def _cuda_matmul_agreement(self) -> tuple[bool, str]:
        fn, flops = self.work.matmul("bfloat16" if "bfloat16" in self.dtypes else self.dtypes[0], self.matmul_n)
        timer = self.dev.timer()
        window, why = self.dev.telemetry()
        on_batch = window.sample if window is not None else None
        result = measure_time(fn, self.timing, timer, on_batch=on_batch)
        host = host_window(fn, timer, result.stats.median, self.timing, on_batch=on_batch)
        events_ms, wall_ms = result.stats.median, host.stats.median
        diff = (wall_ms - events_ms) / events_ms
        self._matmul_window = (window, why)
        detail = (f"{self.matmul_n}^3 matmul: events {events_ms:.4f} ms, wall clock over {host.total_calls} "
                  f"back-to-back calls {wall_ms:.4f} ms per call ({diff:+.2%}); tolerance {MATMUL_AGREEMENT:.0%}")
        return abs(diff) <= MATMUL_AGREEMENT, detail

    # ---------------------------------------------------------------- memory
    def memory_check(self) -> None:
        def measure() -> tuple[bool, str]:
            nbytes = KNOWN_ALLOCATION_BYTES
            peak, out = self.dev.peak_memory(self.work.allocation(nbytes, self.dev.name))
            del out
            return peak == nbytes, f"an allocation of {nbytes} bytes reads {peak} bytes"

        self.check(f"{'cuda' if self.dev.is_cuda else 'cpu'} memory", measure)

    # ---------------------------------------------------------------- NVML, clocks
    def nvml_check(self) -> None:
        def mapping() -> tuple[bool, str]:
            nvml, why = self.dev.nvml()
            if nvml is None:
                return False, f"no NVML device for {self.dev.name}: {why}"
            return True, (f"{self.dev.name} is NVML device {nvml.nvml_index} (matched by {nvml.matched_by}"
                          f"{', ' + nvml.uuid if nvml.uuid else ''})")

        def clocks() -> tuple[bool, str]:
            window, why = getattr(self, "_matmul_window", (None, "the matmul check did not run"))
            if window is None:
                return False, f"no telemetry: {why}"
            valid, reason = window.verdict()
            s = window.summary()
            power = f", power median {s['power_w_median']:.0f} W" if "power_w_median" in s else ""
            temp = f", temperature max {s['temperature_c_max']:.0f} C" if "temperature_c_max" in s else ""
            return valid, f"while the matmul ran: {reason}{power}{temp}"

        self.check("nvml mapping", mapping)
        self.check("clocks and throttling", clocks)

    # ---------------------------------------------------------------- peaks
    def peak_checks(self) -> None:
        tflops: dict[str, float] = {}
        for dtype in self.dtypes:
            def one(dtype=dtype) -> tuple[bool, str]:
                fn, flops = self.work.matmul(dtype, self.matmul_n)
                result = measure_time(fn, self.timing, self.dev.timer())
                value = flops / (result.stats.median * 1e-3) / 1e12
                tflops[dtype] = value
                return True, (f"{self.matmul_n}^3 matmul {value:.3f} TFLOP/s (median of {result.stats.n}, "
                              f"{result.stats.median:.4f} ms per call)")

            self.check(f"peak {dtype} matmul", one)
        copy: dict[str, float] = {}

        def bandwidth() -> tuple[bool, str]:
            fn, moved = self.work.copy(self.copy_bytes)
            result = measure_time(fn, self.timing, self.dev.timer())
            copy["gb_s"] = moved / (result.stats.median * 1e-3) / 1e9
            return True, f"copy of {self.copy_bytes >> 20} MiB: {copy['gb_s']:.1f} GB/s (read + write)"

        self.check("peak copy bandwidth", bandwidth)
        if not tflops:
            return
        peaks = {"matmul_tflops": tflops, "matmul_n": self.matmul_n, "device": self.dev.name,
                 "copy_gb_s": copy.get("gb_s")}
        self.report.peaks = peaks
        if self.store:
            import torch

            peaks["torch"] = torch.__version__
            if not self.dev.is_cuda:
                peaks["threads"] = torch.get_num_threads()
            path = store_peaks(self.dev.peak_key(), peaks)
            self.report.peaks_file = str(path)


def run_doctor(device: str, out: TextIO, **options: Any) -> int:
    """Run every check of ``device`` ('cpu', 'cuda', 'cuda:N'), print one line each; 0 or 1."""
    doctor = Doctor(device, **options)
    kind = "CUDA device " + doctor.dev.name if isinstance(doctor.dev, CudaDevice) else "CPU"
    if isinstance(doctor.dev, CpuDevice):
        import torch

        kind += f" ({torch.get_num_threads()} torch threads)"
    print(f"harness doctor: checking the {kind}", file=out, flush=True)
    report = doctor.run(lambda line: print(line, file=out, flush=True))
    if report.peaks_file:
        print(f"peaks stored in {report.peaks_file} (runs on this machine report pct_of_peak)", file=out)
    failed = [c for c in report.checks if not c.ok]
    print(f"{len(report.checks) - len(failed)} of {len(report.checks)} checks passed", file=out)
    return 1 if failed else 0
