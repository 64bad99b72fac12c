"""Executing Cases: in-process, or in isolated worker processes with a per-case timeout
(measuring a case's workload is :mod:`harness.measure.workload`'s job).

Every outcome is a Record: an exception is ``failed``, an out-of-memory error ``oom``, a case
past its time limit ``timeout``, a worker process that died ``crashed``, an unmet requirement
``skipped``. Records are written to disk as each case ends, and the run goes on.
"""

from __future__ import annotations

import datetime as _dt
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from ..measure.device import device_for
from ..measure.workload import measure_workload
from ..plan import Case
from ..results import Record
from ..declare.suite import Skip, Suite, Workload
from .case_metrics import case_metrics

BUILD_LIMIT_S = 3600.0  # an artifact build holds the case limit, up to max(this, 10 x the limit)

# Messages of allocation failures that are out-of-memory errors whatever exception carries them.
OOM_MESSAGES = (
    "out of memory",
    "cublas_status_alloc_failed",
    "cudnn_status_alloc_failed",
    "cudnn_status_not_enough_workspace",
    "not_enough_workspace",
    "defaultcpuallocator: can't allocate memory",
    "can't allocate memory",
    "cudaerrormemoryallocation",
)
# CUDA errors after which the process's CUDA context is unusable: every later CUDA call fails.
STICKY_CUDA_MESSAGES = (
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "invalid program counter",
    "hardware stack error",
    "uncorrectable ecc error",
    "the launch timed out and was terminated",
    "operation not supported on global/shared address space",
    "cudaerrorillegaladdress",
    "cudaerrorassert",
    "cudaerrorlaunchfailure",
)


class CaseTimeout(Exception):
    """Raised inside a case that ran past its time limit (in-process mode)."""


class RunTerminated(BaseException):
    """Raised in the main thread when the run receives SIGTERM or SIGHUP (so the run folder is
    closed as ``interrupted``); never a case's record. ``signum`` gives the exit code 128+signum."""

    def __init__(self, signum: int = signal.SIGTERM):
        self.signum = int(signum)
        super().__init__(f"terminated by {signal.Signals(signum).name}")


def is_oom(exc: BaseException) -> bool:
    """An allocation failure: Python's MemoryError, torch's OutOfMemoryError, or an allocator's message
    (CUDA caching allocator, cuBLAS and cuDNN allocation failures, the CPU allocator)."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except Exception:
        pass
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(m in text for m in OOM_MESSAGES)


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """A CUDA error that poisons the process (device-side assert, illegal address, launch failure...)."""
    if not isinstance(exc, RuntimeError):  # torch.AcceleratorError is a RuntimeError
        return False
    text = str(exc).lower()
    return any(m in text for m in STICKY_CUDA_MESSAGES)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class CaseExecutor:
    """Runs cases of suites in this process, sharing each grid point's setup among variants.

    The case's device is current (``torch.cuda.device``) for prepare, the variant, timing,
    memory, capability checks and evaluate. After a sticky CUDA error (the process's CUDA
    context is lost) the case is ``crashed`` and, with ``replace_on_sticky``, every later case
    runs in a fresh worker process (an :class:`IsolatedExecutor`).
    """

    suites: dict[str, type[Suite]]
    run_id: str = ""
    timer_factory: Callable | None = None  # (device, case, cold_cache) -> timer; None: the device's
    device_factory: Callable[[str], Any] = device_for
    replace_on_sticky: bool = True
    _instances: dict[str, Suite] = field(default_factory=dict)
    _devices: dict[str, Any] = field(default_factory=dict)
    _state_key: tuple | None = None
    _state: Any = None
    _state_error: BaseException | None = None
    _delegate: Any = None
    poisoned: bool = False
    _warm: bool = False

    def instance(self, name: str) -> Suite:
        if name not in self._instances:
            self._instances[name] = self.suites[name]()
        return self._instances[name]

    def device(self, name: str):
        if name not in self._devices:
            self._devices[name] = self.device_factory(name)
        return self._devices[name]

    def drop_state(self) -> None:
        self._state_key, self._state, self._state_error = None, None, None
        if not self.poisoned:
            _free_device_memory()

    def close(self) -> None:
        """Free the shared state and stop a replacement worker, if one was started."""
        if self._delegate is not None:
            self._delegate.close()
            self._delegate = None
        self.drop_state()

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
        if self._delegate is not None:
            return self._delegate.run(case, timeout_s)
        if not self._warm:
            warm_up_engine()  # first-call costs of the engine, outside any case's time limit
            self._warm = True
        t0 = time.perf_counter()
        started = _now()
        saved, process = TorchState.capture(), ProcessState.capture()
        try:
            with _alarm(timeout_s):
                status, reason, metrics, info = self._run(case)
        except CaseTimeout:
            status, reason, metrics, info = "timeout", f"ran past the {timeout_s:g} s case time limit", {}, {}
            self.drop_state()
        except Skip as exc:
            status, reason, metrics, info = "skipped", str(exc) or "skipped by the suite", {}, {}
        except BaseException as exc:  # noqa: BLE001 - failures are data
            if isinstance(exc, (KeyboardInterrupt, RunTerminated)):  # the run ends, no case is blamed
                raise
            metrics = {}
            status, reason, info = failure_of(exc)
            if status == "crashed":
                info["process_replaced"] = self._poison()
            elif status == "oom":
                self.drop_state()
        finally:
            changed, process_changed = saved.restore(), process.restore()
        if changed:
            info = {**info, "restored_torch_state": changed}
        if process_changed:
            info = {**info, "restored_process_state": process_changed}
        return Record(
            suite=case.suite,
            variant=case.variant,
            params=case.params_dict,
            key=case.key,
            device=case.device,
            status=status,
            reason=reason,
            metrics=metrics,
            run_id=self.run_id,
            started_at=started,
            duration_s=time.perf_counter() - t0,
            info=info,
        )

    def _poison(self) -> bool:
        """Forget everything that lived in the lost CUDA context; hand later cases to a fresh worker."""
        self.poisoned = True
        self._state_key, self._state, self._state_error = None, None, None
        self._instances.clear()
        self._devices.clear()
        if not self.replace_on_sticky:
            return True  # a worker process: it exits after this record and its parent starts another
        import torch

        self._delegate = IsolatedExecutor(self.suites, self.run_id, threads=torch.get_num_threads())
        return True

    def _run(self, case: Case) -> tuple[str, str, dict, dict]:
        cls = self.suites[case.suite]
        spec = cls.variants()[case.variant]
        device = self.device(case.device)
        with device.scope():
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
            timing = workload.timing or case.timing
            timer = self.timer_factory(case.device, case, timing.cold_cache) if self.timer_factory else None
            measured = measure_workload(workload, timing, case.device, device, timer,
                                        dtype=workload.dtype or params.get("dtype"))
            metrics = case_metrics(measured, workload, suite, case, state)
        return "ok", "", metrics, measured.info


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


def failure_of(exc: BaseException) -> tuple[str, str, dict[str, Any]]:
    """(status, reason, info) of an exception a case raised; call inside its ``except`` (the info
    keeps the traceback). A sticky CUDA error is ``crashed``: the process's CUDA context is lost."""
    info: dict[str, Any] = {"traceback": traceback.format_exc(limit=20)}
    what = f"{type(exc).__name__}: {_first_line(exc)}"
    if is_sticky_cuda_error(exc):
        return "crashed", f"sticky CUDA error, the process's CUDA context is lost: {what}", {
            **info, "sticky_cuda_error": True}
    if is_oom(exc):
        return "oom", what, info
    return "failed", what, info


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
def _worker_main(conn, suite_locations: dict[str, tuple[str, str]], run_id: str, threads: int | None,
                 parent_pid: int) -> None:
    """Worker process: import the suites, then run cases sent over ``conn`` until told to stop.

    The worker leads a process group of its own (the processes a case starts join it), so the
    parent ends the whole group on a timeout or crash; a guardian process ends the group when
    the parent dies, however it dies (SIGKILL included).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _lead_process_group(parent_pid)
    import torch

    from ..declare.registry import load_suite_class

    if threads:
        torch.set_num_threads(threads)
    suites = {name: load_suite_class(path, qual) for name, (path, qual) in suite_locations.items()}
    executor = CaseExecutor(suites, run_id=run_id, replace_on_sticky=False)
    from ..artifacts import set_build_listener

    # while a case builds a cached artifact (trains weights, writes a dataset), the parent
    # holds its time limit, so a build is never killed half way
    set_build_listener(lambda building: conn.send(("building", bool(building))))
    warm_up_engine()  # before "ready": the parent's case time limit starts after it
    executor._warm = True
    conn.send("ready")
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        if msg is None:
            return
        case, timeout_s = msg
        record = executor.run(case, timeout_s)
        conn.send(record.to_json())
        if executor.poisoned:  # a sticky CUDA error: this process's CUDA context is lost
            return


class IsolatedExecutor:
    """Runs each case in a worker process; a dead or hung worker is replaced.

    The worker runs case after case (a grid point's ``prepare`` is shared by its variants) and
    puts the process back after each one (torch's settings, cwd, environment, standard streams,
    signal mask); with ``per_case`` every case gets a fresh worker. The parent ends a case at
    its time limit by killing the worker.
    """

    clock = staticmethod(time.perf_counter)  # the clock of the case time limit (tests give a fake one)
    child_alarm = False  # whether the worker's own alarm ends a case past its limit first

    def __init__(self, suites: dict[str, type[Suite]], run_id: str = "", threads: int | None = None, *,
                 per_case: bool = False):
        from ..declare.registry import class_location

        self.locations = {name: class_location(cls) for name, cls in suites.items()}
        self.run_id = run_id
        self.threads = threads
        self.per_case = per_case
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.conn = None
        self.pgid: int | None = None
        self.busy = False  # a case was sent and its record has not come back
        self.start_timeout_s = 600.0

    def _start(self) -> str | None:
        """Start a worker and wait until it has imported the suites; a reason if it could not."""
        parent, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(
            # not a daemon: a case may start processes of its own (e.g. a largest-batch search)
            target=_worker_main, args=(child, self.locations, self.run_id, self.threads, os.getpid()),
            daemon=False
        )
        with _main_module_hidden():
            self.proc.start()
        child.close()
        self.conn = parent
        deadline = time.perf_counter() + self.start_timeout_s
        while time.perf_counter() < deadline:
            if parent.poll(0.05):
                try:
                    if parent.recv() == "ready":
                        try:  # the group it leads: what its cases start, killed with it, even after it exits
                            self.pgid = self.proc.pid if os.getpgid(self.proc.pid) == self.proc.pid else None
                        except OSError:
                            self.pgid = None
                        return None
                except (EOFError, OSError):
                    break
            if not self.proc.is_alive():
                break
        code = self.proc.exitcode
        self._kill()
        return "the worker process could not start: " + (_death_reason(code) if code is not None else "no answer")

    def _kill(self) -> None:
        # the worker and every process a case started. By the group id noted at the start, which
        # also reaches what a worker that ended on its own left behind (a timed-out case's
        # subprocess): Linux gives no new process a pid still in use as a group id
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except OSError:
                pass
        elif self.proc is not None:
            _kill_group(self.proc.pid)
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join(timeout=10)
        if self.conn is not None:
            self.conn.close()
        self.proc, self.conn, self.pgid, self.busy = None, None, None, False

    def close(self) -> None:
        # a worker inside a case (the run was interrupted) is killed at once; an idle one is let go
        if self.proc is not None and self.proc.is_alive() and self.conn is not None and not self.busy:
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
        self.conn.send((case, timeout_s if self.child_alarm else None))
        self.busy = True
        limit = self.limit_s(timeout_s)
        deadline = None if not limit else self.clock() + limit
        build_started = None  # while the worker builds an artifact, the limit is held
        while True:
            if self.conn.poll(0.05):
                try:
                    msg = self.conn.recv()
                except (EOFError, OSError):
                    msg = None  # the worker died while sending; reported below
                if isinstance(msg, tuple) and msg[:1] == ("building",):
                    if msg[1] and build_started is None:
                        build_started = self.clock()
                    elif not msg[1] and build_started is not None:
                        if deadline is not None:
                            deadline += self.clock() - build_started
                        build_started = None
                    continue
                if msg is not None:
                    self.busy = False
                    record = Record.from_dict(json.loads(msg))
                    # what the worker costs a case: the round trip and the bookkeeping around it
                    record.info["worker_overhead_ms"] = round(
                        max(0.0, time.perf_counter() - t0 - (record.duration_s or 0.0)) * 1e3, 3)
                    if record.info.get("sticky_cuda_error"):
                        self._kill()  # the next case gets a fresh worker and CUDA context
                    elif self.per_case:
                        self.close()
                    return record
            if not self.proc.is_alive():
                code = self.proc.exitcode
                self._kill()
                return self._record(case, "crashed", _death_reason(code), started, t0)
            if build_started is not None and timeout_s and self.clock() - build_started > max(
                    BUILD_LIMIT_S, 10 * timeout_s):
                self._kill()
                return self._record(case, "timeout", "an artifact build ran past its own limit "
                                    f"({max(BUILD_LIMIT_S, 10 * timeout_s):g} s); worker killed", started, t0)
            if deadline is not None and build_started is None and self.clock() > deadline:
                self._kill()
                return self._record(case, "timeout", self.timeout_reason(timeout_s), started, t0)

    def limit_s(self, timeout_s: float | None) -> float | None:
        """How long the parent waits for a case before it kills the worker."""
        return timeout_s or None

    def timeout_reason(self, timeout_s: float) -> str:
        return f"ran past the {timeout_s:g} s case time limit; worker killed"

    def _record(self, case: Case, status: str, reason: str, started: str, t0: float) -> Record:
        return Record(
            suite=case.suite, variant=case.variant, params=case.params_dict, key=case.key, device=case.device,
            status=status, reason=reason, run_id=self.run_id, started_at=started,
            duration_s=time.perf_counter() - t0,
        )


class SupervisedExecutor(IsolatedExecutor):
    """The default executor: the run's cases run in one child process, as in-process cases do
    (the child's own alarm ends a case past its time limit, and the child goes on with the grid
    point's shared state), watched by this thin parent. What the child cannot record itself
    the parent does: a hang it cannot interrupt (C code, masked signals) is ``timeout`` once
    the limit and a grace have passed, a death (segfault, ``os._exit``, a kill) ``crashed``;
    then a new child continues with the next case.
    """

    child_alarm = True

    @staticmethod
    def grace_s(timeout_s: float) -> float:
        """How long past the limit the child's alarm has to end a case: 2 s, or a tenth of the limit."""
        return max(2.0, 0.1 * timeout_s)

    def limit_s(self, timeout_s: float | None) -> float | None:
        return timeout_s + self.grace_s(timeout_s) if timeout_s else None

    def timeout_reason(self, timeout_s: float) -> str:
        return (f"ran past the {timeout_s:g} s case time limit and did not stop at the alarm (C code or "
                "masked signals); the run's child process was killed and replaced")


def suites_a_child_cannot_import(suites: dict[str, type[Suite]]) -> list[str]:
    """Suites that a fresh process cannot load from their source file: defined in ``__main__``
    (a notebook, a script's body), inside a function, or from a file that is not there."""
    from ..declare.registry import class_location

    out = []
    for name, cls in suites.items():
        try:
            path, qualname = class_location(cls)
        except Exception:  # noqa: BLE001 - no source file at all (interactive)
            out.append(name)
            continue
        if cls.__module__ == "__main__" or "<locals>" in qualname or not os.path.isfile(path):
            out.append(name)
    return out


class _main_module_hidden:
    """While a worker is started: ``__main__`` is an empty module, so that multiprocessing's spawn
    does not run the caller's script (or ``python -m`` module) again in the worker. The worker
    needs none of it (suites are loaded from their files), and a script that calls ``run_suites``
    without an ``if __name__ == "__main__":`` guard would otherwise start itself again."""

    def __enter__(self):
        import sys
        import types

        self.main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        return self

    def __exit__(self, *exc):
        import sys

        if self.main is not None:
            sys.modules["__main__"] = self.main
        return False


def _lead_process_group(parent_pid: int) -> None:
    """Make this process a group leader and fork a guardian that kills the group when
    ``parent_pid`` is gone (or exits when this process is gone)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        return
    me = os.getpid()
    try:
        guardian = os.fork()
    except OSError:
        return
    if guardian:
        return
    # the guardian: no Python state beyond this loop matters; it never returns
    try:
        while True:
            time.sleep(0.2)
            if os.getppid() != me:  # the worker is gone: nothing left to guard
                os._exit(0)
            if not _parent_alive(me, parent_pid):
                os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(0)


def _parent_alive(child: int, parent_pid: int) -> bool:
    """Whether ``parent_pid`` is still ``child``'s parent. A parent that died is so at once,
    even while it waits, a zombie, to be reaped (its children are handed on when it exits)."""
    try:
        with open(f"/proc/{child}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[1]) == parent_pid
    except (OSError, ValueError, IndexError):  # no /proc: ask the process itself
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            return False
        except OSError:
            pass
        return True


def _kill_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` (a worker), if it leads one."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def warm_up_engine() -> None:
    """Pay the engine's first-call costs once (the profiler behind CPU peak memory takes
    seconds to start), so that they never count against a case's time limit."""
    from ..measure.device import device_for
    from ..measure.flops import count_flops

    try:
        device_for("cpu").peak_memory(lambda: None)
        count_flops(lambda: None)
    except Exception:  # a warm-up is an optimisation; a failure shows in the first case instead
        pass


@dataclass
class TorchState:
    """torch's process-wide settings a variant may change; restored after every case."""

    values: dict[str, Any]

    @staticmethod
    def _read() -> dict[str, Any]:
        import torch

        state = {
            "num_threads": torch.get_num_threads(),
            "default_dtype": torch.get_default_dtype(),
            "grad_enabled": torch.is_grad_enabled(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
        }
        if hasattr(torch, "is_inference_mode_enabled"):
            state["inference_mode"] = torch.is_inference_mode_enabled()
        return state

    @classmethod
    def capture(cls) -> "TorchState":
        return cls(cls._read())

    def restore(self) -> list[str]:
        """Put every changed setting back; the names of those that had changed."""
        import torch

        now = self._read()
        changed = [k for k, v in self.values.items() if now.get(k) != v]
        setters = {
            "num_threads": torch.set_num_threads,
            "default_dtype": torch.set_default_dtype,
            "grad_enabled": torch.set_grad_enabled,
            "deterministic": torch.use_deterministic_algorithms,
            "float32_matmul_precision": torch.set_float32_matmul_precision,
            "cudnn_benchmark": lambda v: setattr(torch.backends.cudnn, "benchmark", v),
            "cudnn_deterministic": lambda v: setattr(torch.backends.cudnn, "deterministic", v),
        }
        for key in changed:
            if key in setters:
                setters[key](self.values[key])
        return changed


@dataclass
class ProcessState:
    """What a variant may change in the process beyond torch: the working directory, the
    environment, the standard streams and the main thread's signal mask; restored after every case."""

    cwd: str | None
    environ: dict[str, str]
    streams: tuple
    sigmask: frozenset | None

    @classmethod
    def capture(cls) -> "ProcessState":
        import sys

        try:
            cwd = os.getcwd()
        except OSError:  # the directory was removed under us
            cwd = None
        main = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_sigmask")
        mask = frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, [])) if main else None
        return cls(cwd, dict(os.environ), (sys.stdin, sys.stdout, sys.stderr), mask)

    def restore(self) -> list[str]:
        """Put back what changed; the names of what had changed."""
        import sys

        now = ProcessState.capture()
        changed = []
        if self.cwd is not None and now.cwd != self.cwd:
            try:
                os.chdir(self.cwd)
                changed.append("cwd")
            except OSError:
                pass
        if now.environ != self.environ:
            for key in set(now.environ) - set(self.environ):
                del os.environ[key]
            os.environ.update(self.environ)
            changed.append("environ")
        if now.streams != self.streams:
            sys.stdin, sys.stdout, sys.stderr = self.streams
            changed.append("streams")
        if self.sigmask is not None and now.sigmask != self.sigmask:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.sigmask)
            changed.append("signal_mask")
        return changed


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
def make_executor(suites: dict[str, type[Suite]], run_id: str = "", isolate: bool = False, threads: int | None = None,
                  *, supervise: bool = True, worker_per_case: bool = False, note: Callable[[str], None] | None = None):
    """The executor a run session uses: isolated workers (``isolate``; a fresh one per case with
    ``worker_per_case``), a supervised child process (the default), or this process (without
    ``supervise``, or when a suite cannot be loaded by a child: ``note`` says so in one line)."""
    if isolate or worker_per_case:
        return IsolatedExecutor(suites, run_id, threads, per_case=worker_per_case)
    if supervise:
        unloadable = suites_a_child_cannot_import(suites)
        if not unloadable:
            return SupervisedExecutor(suites, run_id, threads)
        if note is not None:
            note(f"suite {', '.join(sorted(unloadable))} cannot be loaded by a child process (defined in "
                 "__main__, a function or a notebook); the run goes on in this process, without a supervisor")
    return CaseExecutor(suites, run_id=run_id)
