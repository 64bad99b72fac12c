"""Executing Cases: in-process, or in isolated worker processes with a per-case timeout.

Every outcome is a Record: an exception is ``failed``, an out-of-memory error ``oom``, a case
past its time limit ``timeout``, a worker process that died ``crashed``, an unmet requirement
``skipped``. Records are written to disk as each case ends, and the run goes on.
"""

from __future__ import annotations

import datetime as _dt
import math
import multiprocessing as mp
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from .measure.flops import count_flops
from .measure.memory import measure_peak_memory
from .measure.telemetry import energy_mj, gpu_state
from .measure.timing import CpuTimer, CudaEventTimer, cuda_graph_callable, measure_time
from .plan import Case
from .results import Record, metric_value
from .suite import LATENCY, PEAK_MEMORY, TFLOPS, THROUGHPUT, Skip, Suite, Workload

MIB = 1024.0 * 1024.0


class CaseTimeout(Exception):
    """Raised inside a case that ran past its time limit (in-process mode)."""


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:
        pass
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_timer_factory(device: str, case: Case, cold_cache: bool):
    if device.startswith("cuda"):
        return CudaEventTimer(device, flush_l2=cold_cache)
    return CpuTimer()


@dataclass
class CaseExecutor:
    """Runs cases of suites in this process, sharing each grid point's setup among variants."""

    suites: dict[str, type[Suite]]
    run_id: str = ""
    timer_factory: Callable = default_timer_factory
    _instances: dict[str, Suite] = field(default_factory=dict)
    _state_key: tuple | None = None
    _state: Any = None
    _state_error: BaseException | None = None

    def instance(self, name: str) -> Suite:
        if name not in self._instances:
            self._instances[name] = self.suites[name]()
        return self._instances[name]

    def drop_state(self) -> None:
        self._state_key, self._state, self._state_error = None, None, None
        _free_device_memory()

    def state_for(self, suite: Suite, case: Case) -> Any:
        if self._state_key != case.setup_key:
            self.drop_state()
            self._state_key = case.setup_key
            _seed(suite.seed)
            try:
                grid = {k: v for k, v in case.params if k in case.grid_params}
                self._state = suite.prepare(grid, case.device)
            except BaseException as exc:  # remembered: every variant at this point reports it
                self._state_error = exc
        if self._state_error is not None:
            raise self._state_error
        return self._state

    def run(self, case: Case, timeout_s: float | None = None) -> Record:
        t0 = time.perf_counter()
        started = _now()
        try:
            with _alarm(timeout_s):
                status, reason, metrics, info = self._run(case)
        except CaseTimeout:
            status, reason, metrics, info = "timeout", f"ran past the {timeout_s:g} s case time limit", {}, {}
            self.drop_state()
        except Skip as exc:
            status, reason, metrics, info = "skipped", str(exc) or "skipped by the suite", {}, {}
        except BaseException as exc:  # noqa: BLE001 - failures are data
            if isinstance(exc, KeyboardInterrupt):
                raise
            if is_oom(exc):
                status, reason = "oom", f"{type(exc).__name__}: {_first_line(exc)}"
                self.drop_state()
            else:
                status, reason = "failed", f"{type(exc).__name__}: {_first_line(exc)}"
            metrics, info = {}, {"traceback": traceback.format_exc(limit=20)}
        return Record(
            suite=case.suite,
            variant=case.variant,
            params=case.params_dict,
            device=case.device,
            status=status,
            reason=reason,
            metrics=metrics,
            run_id=self.run_id,
            started_at=started,
            duration_s=time.perf_counter() - t0,
            info=info,
        )

    def _run(self, case: Case) -> tuple[str, str, dict, dict]:
        cls = self.suites[case.suite]
        spec = cls.variants()[case.variant]
        unmet = spec.unmet(case.device)
        if unmet:
            return "skipped", unmet, {}, {}
        suite = self.instance(case.suite)
        state = self.state_for(suite, case)
        params = case.params_dict
        _seed(suite.seed)
        workload = getattr(suite, spec.method_name)(state, params)
        if not isinstance(workload, Workload):
            raise TypeError(f"variant {case.variant!r} returned {type(workload).__name__}, not a Workload")
        metrics, info = measure_workload(workload, suite, case, state, self.timer_factory)
        return "ok", "", metrics, info

    def close(self) -> None:
        self.drop_state()


def measure_workload(workload: Workload, suite: Suite, case: Case, state: Any, timer_factory) -> tuple[dict, dict]:
    """Time, then one untimed probe call for peak memory, FLOPs and the output for quality."""
    import torch

    timing = workload.timing or case.timing
    device = case.device
    fn = workload.fn
    if timing.cuda_graph and device.startswith("cuda"):
        fn = cuda_graph_callable(workload.fn, device)
    timer = timer_factory(device, case, timing.cold_cache)
    energy_before = energy_mj(_gpu_index(device)) if device.startswith("cuda") else None
    result = measure_time(fn, timing, timer)
    energy_after = energy_mj(_gpu_index(device)) if device.startswith("cuda") else None
    stats = result.stats
    metrics: dict[str, dict] = {
        LATENCY.name: metric_value(
            stats.median, LATENCY.unit, LATENCY.better, LATENCY.kind,
            median=stats.median, iqr=stats.iqr, min=stats.min, mean=stats.mean, n=stats.n,
            ci_low=stats.ci_low, ci_high=stats.ci_high, samples=result.samples_ms,
        )
    }
    info: dict[str, Any] = {
        "timer": result.timer,
        "warmup_runs": result.warmup_runs,
        "stopped_by": result.stopped_by,
        "rel_ci": stats.rel_ci,
        "threads": torch.get_num_threads(),
        "cold_cache": bool(timing.cold_cache and device.startswith("cuda")),
        "cuda_graph": bool(timing.cuda_graph and device.startswith("cuda")),
        **workload.info,
    }
    if stats.rel_iqr > 0.1:
        info["noisy"] = f"IQR is {stats.rel_iqr:.0%} of the median"
    if energy_before is not None and energy_after is not None and stats.n:
        info["energy_mj_per_call"] = (energy_after - energy_before) / (stats.n)

    # Memory and FLOPs from separate untimed calls: the FLOP counter keeps tensors alive
    # (activations that checkpointing would free), which would inflate the peak.
    peak_bytes, out = measure_peak_memory(workload.fn, device)
    metrics[PEAK_MEMORY.name] = metric_value(peak_bytes / MIB, PEAK_MEMORY.unit, PEAK_MEMORY.better, PEAK_MEMORY.kind,
                                            bytes=peak_bytes)
    flops = count_flops(workload.fn)[0] if workload.flops is None else workload.flops
    if flops and flops > 0 and stats.median > 0:
        info["flops"] = flops
        metrics[TFLOPS.name] = metric_value(flops / (stats.median * 1e-3) / 1e12, TFLOPS.unit, TFLOPS.better, TFLOPS.kind)
    if workload.items:
        metrics[THROUGHPUT.name] = metric_value(
            workload.items / (stats.median * 1e-3), workload.items_unit, THROUGHPUT.better, THROUGHPUT.kind
        )
    specs = suite.metric_specs()
    extra = dict(workload.metrics)
    if workload.per_item_latency and workload.items:
        per = workload.items
        extra[workload.per_item_latency] = {
            "value": stats.median / per, "median": stats.median / per, "iqr": stats.iqr / per, "n": stats.n,
            "items": per, "samples": [ms / per for ms in result.samples_ms],
        }
    if suite.wants_output(case.variant):
        output = workload.output() if workload.output is not None else out
        extra.update(suite.evaluate(state, case.params_dict, case.variant, output) or {})
    del out
    for name, value in extra.items():
        if name not in specs:
            raise KeyError(f"suite {case.suite!r} reported metric {name!r}, which it does not declare")
        spec = specs[name]
        if isinstance(value, dict):  # value plus extra fields (e.g. number of samples)
            metrics[name] = metric_value(value.pop("value"), spec.unit, spec.better, spec.kind, **value)
        else:
            metrics[name] = metric_value(float(value) if value is not None else math.nan, spec.unit, spec.better,
                                         spec.kind)
    if device.startswith("cuda"):
        info["gpu"] = gpu_state(_gpu_index(device))
    return metrics, info


def _gpu_index(device: str) -> int:
    return int(device.split(":", 1)[1]) if ":" in device else 0


def _seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _free_device_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else "(no message)"


class _alarm:
    """Raise CaseTimeout in the main thread after ``seconds`` (no-op where not possible)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.active = bool(
            seconds
            and seconds > 0
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
        )

    def _fire(self, signum, frame):
        raise CaseTimeout()

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        return False


# --------------------------------------------------------------------------- isolation
def _worker_main(conn, suite_locations: dict[str, tuple[str, str]], run_id: str, threads: int | None) -> None:
    """Worker process: import the suites, then run cases sent over ``conn`` until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from .registry import load_suite_class

    if threads:
        torch.set_num_threads(threads)
    suites = {name: load_suite_class(path, qual) for name, (path, qual) in suite_locations.items()}
    executor = CaseExecutor(suites, run_id=run_id)
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        record = executor.run(msg)
        conn.send(record.to_json())


class IsolatedExecutor:
    """Runs each case in a worker process; a dead or hung worker is replaced."""

    def __init__(self, suites: dict[str, type[Suite]], run_id: str = "", threads: int | None = None):
        from .registry import class_location

        self.locations = {name: class_location(cls) for name, cls in suites.items()}
        self.run_id = run_id
        self.threads = threads
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.conn = None
        self.start_timeout_s = 600.0

    def _start(self) -> str | None:
        """Start a worker and wait until it has imported the suites; a reason if it could not."""
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(
            # not a daemon: a case may start processes of its own (e.g. a largest-batch search)
            target=_worker_main, args=(child, self.locations, self.run_id, self.threads), daemon=False
        )
        self.proc.start()
        child.close()
        self.conn = parent
        deadline = time.perf_counter() + self.start_timeout_s
        while time.perf_counter() < deadline:
            if parent.poll(0.05):
                try:
                    if parent.recv() == "ready":
                        return None
                except (EOFError, OSError):
                    break
            if not self.proc.is_alive():
                break
        code = self.proc.exitcode
        self._kill()
        return "the worker process could not start: " + (_death_reason(code) if code is not None else "no answer")

    def _kill(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(timeout=10)
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn = None, None

    def close(self) -> None:
        if self.proc is not None and self.proc.is_alive() and self.conn is not None:
            try:
                self.conn.send(None)
                self.proc.join(timeout=5)
            except (OSError, BrokenPipeError):
                pass
        self._kill()

    def run(self, case: Case, timeout_s: float | None = None) -> Record:
        import json

        t0 = time.perf_counter()
        started = _now()
        if self.proc is None or not self.proc.is_alive():
            self._kill()
            failure = self._start()
            if failure:
                return self._record(case, "crashed", failure, started, t0)
        t0 = time.perf_counter()  # the time limit counts the case, not the worker's start
        self.conn.send(case)
        deadline = None if not timeout_s else t0 + timeout_s
        while True:
            if self.conn.poll(0.05):
                try:
                    data = json.loads(self.conn.recv())
                    return Record.from_dict(data)
                except (EOFError, OSError):
                    pass  # the worker died while sending; reported below
            if not self.proc.is_alive():
                code = self.proc.exitcode
                self._kill()
                return self._record(case, "crashed", _death_reason(code), started, t0)
            if deadline is not None and time.perf_counter() > deadline:
                self._kill()
                return self._record(case, "timeout", f"ran past the {timeout_s:g} s case time limit; worker killed", started, t0)

    def _record(self, case: Case, status: str, reason: str, started: str, t0: float) -> Record:
        return Record(
            suite=case.suite, variant=case.variant, params=case.params_dict, device=case.device,
            status=status, reason=reason, run_id=self.run_id, started_at=started,
            duration_s=time.perf_counter() - t0,
        )


def _death_reason(code: int | None) -> str:
    if code is None:
        return "the worker process vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the OS out-of-memory killer sends this)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {code}"


# --------------------------------------------------------------------------- choosing one
def make_executor(suites: dict[str, type[Suite]], run_id: str = "", isolate: bool = False, threads: int | None = None):
    """The executor a run session uses: in this process, or in isolated worker processes."""
    if isolate:
        return IsolatedExecutor(suites, run_id, threads)
    return CaseExecutor(suites, run_id=run_id)
