"""One run session: from planned cases to a complete run folder.

Every caller that runs cases (the ``harness run`` command, the asv adapter, the tests, a user's
Python) goes through :class:`RunSession`, so every run folder keeps the same promises:

- ``environment.json``: where the run happened (written before the first case);
- ``run.json``: what was asked for, the declarations of the suites involved (reference,
  variants, metric units, directions and kinds), the planned cases, and the run's state:
  ``running`` while it runs, then ``finished`` or ``interrupted``, with the status counts;
- ``records.jsonl``: one record per case, appended and flushed as each case ends, so a killed
  run loses nothing it had measured.

:func:`run_suites` is the short form for Python users::

    from .. import run_suites
    results = run_suites(["attention"], profile="quick", device="cpu", out="results/att")
    results.frame()          # pandas, one row per (case, metric)
"""

from __future__ import annotations

import datetime as _dt
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..key import case_ident, params_text
from ..plan import Case, PlanError
from ..results import (
    ENVIRONMENT_FILE,
    RUN_FILE,
    Record,
    RecordWriter,
    ResultSet,
    ResultsError,
    read_json,
    write_json,
)
from ..results.loader import _pid_alive, stray_records, stray_text
from ..results.store import RUN_FIELDS, RunFolderLock, StoreWriteError, make_folder, remove_made_folder
from ..declare.suite import Suite
from .executors import RunTerminated
from .request import (RunRequest, build_request, pin_cores, plan_request, positive_seconds, request_from_json,
                      strictly_positive, thread_count, usable_cores)

RUNS_ROOT = Path("results")
RUNNING_FILE = "running.json"  # the case in progress; left behind only by a run that died


class SessionError(ResultsError):
    """A run folder cannot be created or written as asked."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def default_run_id(device: str) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{device.replace(':', '')}"


def new_run_folder(run_id: str, root: Path = RUNS_ROOT) -> tuple[str, Path]:
    """A fresh folder ``root/<run_id>`` (``-2``, ``-3``... when runs start in the same second)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 1000):
        rid = run_id if i == 1 else f"{run_id}-{i}"
        try:
            (root / rid).mkdir()
            return rid, root / rid
        except FileExistsError:
            continue
    raise SessionError(f"cannot find a free run folder name for {run_id} under {root}")


RunOptions = RunRequest  # the request's earlier name, kept for callers that build one directly


MAX_DEFAULT_CPU_THREADS = 8


def default_cpu_threads() -> tuple[int, str]:
    """Torch threads of a CPU run when none are asked for: half the usable cores (at most 8).

    Timings with every core busy swing with whatever else the machine runs (on a shared 2-core
    machine, by orders of magnitude); half the cores leaves room for it. Returns the count and
    the reason recorded in run.json.
    """
    cores = usable_cores()
    n = max(1, min(MAX_DEFAULT_CPU_THREADS, cores // 2))
    return n, f"default: half of the {cores} usable cores, at most {MAX_DEFAULT_CPU_THREADS} (--threads N sets it)"


def cpu_thread_hint(device: str, threads: int, cores: int | None = None, load: float | None = None) -> str:
    """One line when CPU timings will be unstable: threads beyond the cores the machine has free."""
    if device != "cpu":
        return ""
    cores = cores or usable_cores()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    free = cores - load
    if threads > max(1.0, free):
        return (f"hint: {threads} torch threads on {cores} cores with a load average of {load:.1f}: the CPU is "
                f"oversubscribed and timings will swing; pin fewer with --threads (e.g. --threads "
                f"{max(1, int(free)) if free >= 1 else 1}) or run on a quieter machine")
    return ""


class Progress:
    """Cases done, the current case and elapsed time, on stderr."""

    def __init__(self, total: int, stream=None, enabled: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.t0 = time.perf_counter()
        self.done = 0

    @staticmethod
    def _clock(seconds: float) -> str:
        s = int(seconds)
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"

    def _elapsed(self) -> str:
        """Elapsed time, and the time left estimated from the cases done so far."""
        spent = time.perf_counter() - self.t0
        text = self._clock(spent)
        if 0 < self.done < self.total:
            text += f" eta {self._clock(spent / self.done * (self.total - self.done))}"
        return text

    def start(self, case: Case) -> None:
        if self.enabled and self.tty:
            line = f"[{self.done}/{self.total} {self._elapsed()}] {case.label()}"
            self.stream.write("\r\x1b[2K" + line[:150])
            self.stream.flush()

    def finish(self, case: Case, record: Record) -> None:
        self.done += 1
        if not self.enabled:
            return
        lat = record.metrics["latency"].value if "latency" in record.metrics else None
        extra = f" {lat:.4g} ms" if isinstance(lat, (int, float)) else ""
        why = f" ({record.reason[:80]})" if record.status != "ok" else ""
        where = _where(record.info.get("placement"))
        line = f"[{self.done}/{self.total} {self._elapsed()}] {record.status:<7} {case.label()}{extra}{why}{where}"
        self.stream.write(("\r\x1b[2K" if self.tty else "") + line + "\n")
        self.stream.flush()


class _sigterm_as_exception:
    """Turn SIGTERM and SIGHUP into :class:`RunTerminated` in the main thread while a run is open
    (SIGINT is Python's KeyboardInterrupt already)."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __enter__(self):
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.previous = {sig: signal.signal(sig, self._raise) for sig in self.SIGNALS}
        return self

    @staticmethod
    def _raise(signum, frame):
        raise RunTerminated(signum)

    def __exit__(self, *exc):
        if self.active:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
        return False


class RunSession:
    """Owns one run folder: writes its environment, its request and every record.

    ``cases`` and ``suites`` (name -> Suite class) come from :func:`harness.plan.plan_cases`.
    ``executor`` replaces the default one (a supervised child process, this process, or isolated
    worker processes, as the request says). An executor has ``close()`` and either ``run(case, timeout_s) ->
    Record`` (cases one at a time, in order) or ``run_all(cases, timeout_s, on_record)`` (many
    at once: it calls ``on_record(record)`` as each case finishes, in any order).
    """

    def __init__(
        self,
        folder: str | Path | None,
        cases: Sequence[Case],
        suites: dict[str, type[Suite]],
        request: RunRequest | None = None,
        *,
        run_id: str | None = None,
        load_failures: Iterable[Any] = (),
        executor=None,
        meta: dict[str, Any] | None = None,
    ):
        self.request = request or RunRequest()
        self.cases = list(cases)
        self.suites = dict(suites)
        self.load_failures = list(load_failures)
        self.executor = executor
        self.run_id = run_id or default_run_id(self.request.device)
        self.meta: dict[str, Any] = dict(meta or {})
        self.records: list[Record] = []
        self._lock: RunFolderLock | None = None  # held from _open (or resume) to the run's end
        # absolute: a variant that changes the working directory cannot move where the run writes
        if meta is not None:  # continuing the run in ``folder`` (see resume)
            self.folder = Path(folder).absolute()
        elif folder is None:
            self.run_id, self.folder = new_run_folder(self.run_id)
            self.folder = self.folder.absolute()
        else:
            self.folder = Path(folder).absolute()
            if self.folder.exists() and not self.folder.is_dir():
                raise SessionError(f"run folder {self.folder} exists and is not a folder")
            if self.folder.is_dir() and any(self.folder.iterdir()):
                raise SessionError(f"run folder {self.folder} already exists and is not empty; choose a new folder")

    @property
    def options(self) -> RunRequest:
        """The request (its earlier name)."""
        return self.request

    # ------------------------------------------------------------------ the run folder
    def _open(self) -> None:
        import torch

        from ..measure.environment import fingerprint

        try:
            made = make_folder(self.folder)  # the folder this run made, taken back if it cannot start
        except OSError as exc:
            raise SessionError(f"cannot create run folder {self.folder}: {exc.strerror or exc}") from None
        self._lock = RunFolderLock(self.folder)
        if (self.folder / RUN_FILE).exists():  # another run took the folder between the check and here
            self._release()
            raise SessionError(f"run folder {self.folder} already exists and is not empty; choose a new folder")
        if self.request.threads is None and self.request.device == "cpu":
            threads, why = default_cpu_threads()
            self.request = replace(self.request, threads=threads, threads_source=why)
        opts = self.request
        if opts.threads is not None:
            torch.set_num_threads(opts.threads)
        hint = cpu_thread_hint(opts.device, torch.get_num_threads())
        if hint:
            print(f"harness: {hint}", file=sys.stderr)
        self.meta = {
            "run_id": self.run_id,
            **opts.to_json(),
            "threads": torch.get_num_threads(),
            "suites": {name: cls.declaration() for name, cls in self.suites.items()},
            "suite_locations": {name: list(_location(cls)) for name, cls in self.suites.items()},
            "load_failures": [{"path": f.path, "error": f.error} for f in self.load_failures],
            "cases": [{"suite": c.suite, "variant": c.variant, "params": c.params_dict} for c in self.cases],
            "n_cases": len(self.cases),
            "started_at": _now(),
            "state": "running",
            "finished": False,
            "pid": os.getpid(),
        }
        try:
            write_json(self.folder / RUN_FILE, self.meta)
            # with Ray the driver may have no GPU: it describes itself; each node adds its own
            # fingerprint as its first task reports in (see _add_node)
            driver_device = "cpu" if opts.executor == "ray" else opts.device
            write_json(self.folder / ENVIRONMENT_FILE, {**fingerprint(driver_device), "device": opts.device})
        except OSError as exc:  # a full disk: run.json, if written, says interrupted; the lock goes
            if not (self.folder / RUN_FILE).is_file():
                self._release()
                remove_made_folder(made)
                raise SessionError(f"cannot write to run folder {self.folder}: {exc.strerror or exc}") from None
            raise self._write_failure(exc, marked=self._close("interrupted") is None) from None

    def _close(self, state: str) -> OSError | None:
        """Mark run.json ``state`` and let go of the folder. On a full disk run.json is rewritten
        over its own bytes (``write_json(in_place_fallback=True)``); when even that fails it stays
        as it was, and the error is returned, not raised."""
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.status] = counts.get(r.status, 0) + 1
        self.meta.update(state=state, finished=state == "finished", status_counts=counts, finished_at=_now())
        try:
            write_json(self.folder / RUN_FILE, self.meta, in_place_fallback=True)
        except OSError as exc:
            return exc
        finally:
            self._release()
        return None

    def _write_failure(self, exc: OSError, marked: bool, finished: bool = False) -> SessionError:
        """The one line for a write into the run folder that failed (a full disk): what failed, and
        what run.json says now."""
        where = f"cannot write to run folder {self.folder}: {exc.strerror or exc}"
        resume = f"'harness run --resume {self.folder}'"
        if finished:
            return SessionError(f"{where}; every case ran and its record is kept, but run.json could not be marked "
                                f"finished ({resume} marks it once there is space)")
        if marked:
            return SessionError(f"{where}; the run is marked interrupted ({resume} continues it once there is space)")
        return SessionError(f"{where}; run.json could not be marked interrupted either (it is left as it was; "
                            f"{resume} continues the run once there is space)")

    def close(self) -> None:
        """Let go of the run folder without running (a resumed session that is not run on)."""
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _make_executor(self):
        from .executors import make_executor

        if self.request.executor == "ray":
            from .ray_executor import RayExecutor

            return RayExecutor(self.suites, self.run_id, self.request.threads, address=self.request.ray_address)
        opts = self.request
        return make_executor(self.suites, self.run_id, isolate=opts.isolate, threads=opts.threads,
                             supervise=opts.supervise, worker_per_case=opts.worker_per_case,
                             note=lambda line: print(f"harness: {line}", file=sys.stderr))

    def run(self) -> ResultSet:
        """Run every case, writing each record as it ends; returns the loaded run."""
        self._open()
        return self._execute(self._work(), self.load_failures)

    def _work(self, done: set = frozenset()) -> list[tuple[int, Case]]:
        """(round, case) in the order they run: every case of round 1, then of round 2...; even
        rounds go through the plan backwards, so drift over a run hits early and late cases alike."""
        work = []
        for r in range(self.request.rounds):
            order = self.cases if r % 2 == 0 else list(reversed(self.cases))
            work += [(r, c) for c in order if (c.key, r) not in done]
        return work

    def _execute(self, work: list[tuple[int, Case]], load_failures: list) -> ResultSet:
        try:
            writer = RecordWriter(self.folder)
        except OSError as exc:
            raise self._write_failure(exc, marked=self._close("interrupted") is None) from None
        with _pinned(self):
            return self._execute_pinned(writer, work, load_failures)

    def _execute_pinned(self, writer: RecordWriter, work: list[tuple[int, Case]], load_failures: list) -> ResultSet:
        bar = Progress(len(work), enabled=self.request.progress)
        several = self.request.rounds > 1

        def keep(record: Record, round_index: int) -> None:
            if several:
                record.info["round"] = round_index
            writer.write(record)
            self.records.append(record)
        state = "interrupted"
        executor = None
        write_failure: OSError | None = None  # a write into the run folder failed (a full disk)
        close_failure: OSError | None = None
        try:
            executor = self.executor or self._make_executor()
            with _sigterm_as_exception():
                for failure in load_failures:
                    record = Record(suite=Path(failure.path).stem, variant="*", params={}, device=self.request.device,
                                    status="failed", reason=f"suite file failed to load: {failure.error}",
                                    run_id=self.run_id)
                    writer.write(record)
                    self.records.append(record)
                if hasattr(executor, "watch_nodes"):
                    executor.watch_nodes(self._add_node)
                if hasattr(executor, "run_all"):
                    # an executor that runs many cases at once (e.g. over a cluster) reports each
                    # record as it finishes, in any order; cases in flight when the run dies have
                    # no record and run again on --resume. Rounds run one after the other.
                    for r in sorted({r for r, _ in work}):
                        cases = [c for rr, c in work if rr == r]
                        by_key = {c.key: c for c in cases}

                        def on_record(record: Record, r=r, cases=cases, by_key=by_key) -> None:
                            keep(record, r)
                            bar.finish(by_key.get(record.key, cases[0]), record)

                        executor.run_all(cases, self.request.timeout_s, on_record)
                else:
                    for r, case in work:
                        bar.start(case)
                        write_json(self.folder / RUNNING_FILE, {"suite": case.suite, "variant": case.variant,
                                                                "params": case.params_dict, "round": r,
                                                                "started_at": _now()})
                        record = _named_call(f"running case {case.label()}", executor.run, case,
                                             self.request.timeout_s)
                        keep(record, r)
                        (self.folder / RUNNING_FILE).unlink(missing_ok=True)
                        bar.finish(case, record)
                state = "finished"
        except StoreWriteError as exc:  # reported as one line below, once run.json is marked
            write_failure = exc
            try:  # the case's record is not kept: --resume runs it again, not as 'crashed'
                (self.folder / RUNNING_FILE).unlink(missing_ok=True)
            except OSError:
                pass
        except BaseException:
            print(f"harness: run {self.run_id} stopped; {self.folder} is marked interrupted "
                  f"('harness run --resume {self.folder}' continues it)", file=sys.stderr)
            raise
        finally:
            writer.close()
            try:
                if executor is not None:
                    executor.close()
            finally:
                close_failure = self._close(state)
                if close_failure is not None and write_failure is None and state != "finished":
                    print(f"harness: warning: run.json in {self.folder} could not be marked interrupted: "
                          f"{close_failure.strerror or close_failure}", file=sys.stderr)
        if write_failure is not None or close_failure is not None:
            raise self._write_failure(write_failure or close_failure, marked=close_failure is None,
                                      finished=write_failure is None) from None
        return self.results()

    def _add_node(self, node_id: str, node_env: dict[str, Any], where: dict[str, Any]) -> None:
        """Keep a node's fingerprint (and each GPU seen on it) in environment.json, at once."""
        from ..measure.environment import merge_node

        path = self.folder / ENVIRONMENT_FILE
        write_json(path, merge_node(read_json(path), node_id, node_env, where))

    # ------------------------------------------------------------------ resuming
    @classmethod
    def resume(cls, folder: str | Path, *, progress: bool = False, executor=None,
               ray_address: str | None = None) -> "RunSession":
        """A session that continues an interrupted, killed or crashed run in ``folder``.

        The plan is made again from the request in ``run.json`` and must equal the planned
        cases stored there. Finished records stay; the case that was running when the run died
        becomes ``crashed``; call :meth:`run_remaining` to run the rest. The session holds the
        folder's lock (:class:`RunFolderLock`) until that run ends.
        """
        folder = Path(folder)
        if not (folder / RUN_FILE).is_file():
            raise SessionError(f"{folder} is not a run folder (no {RUN_FILE})")
        lock = RunFolderLock(folder)  # before anything is read: a second --resume stops here
        try:
            session = cls._resume_locked(folder, progress, executor, ray_address)
        except BaseException:
            lock.release()
            raise
        session._lock = lock
        return session

    @classmethod
    def _resume_locked(cls, folder: Path, progress: bool, executor, ray_address) -> "RunSession":
        from ..declare.registry import RegistryError, load_suite_class
        from ..results import RECORDS_FILE, read_records

        meta = read_json(folder / RUN_FILE, RUN_FIELDS)
        if not meta:
            raise SessionError(f"{folder} is not a run folder (no {RUN_FILE})")
        if meta.get("finished"):
            raise SessionError(f"run {meta.get('run_id') or folder.name} in {folder} has finished; nothing to resume")
        if meta.get("state") == "running" and _pid_alive(meta.get("pid")):
            raise SessionError(f"run {meta.get('run_id')} in {folder} is still running (pid {meta['pid']})")
        suites: dict[str, type[Suite]] = {}
        for name, (path, qualname) in (meta.get("suite_locations") or {}).items():
            try:
                suites[name] = load_suite_class(path, qualname)
            except Exception as exc:
                raise RegistryError(f"cannot resume: suite {name!r} from {path} does not load: {exc}") from None
        request = request_from_json(meta, list(suites.values()), progress=progress, ray_address=ray_address)
        cases = plan_request(request, list(suites.values()))
        planned = [{"suite": c.suite, "variant": c.variant, "params": c.params_dict} for c in cases]
        if params_text(planned) != params_text(meta.get("cases")):
            raise SessionError(f"cannot resume {folder}: the suites' plan has changed since the run started")
        session = cls(folder, cases, suites, request, run_id=meta.get("run_id") or folder.name, executor=executor,
                      meta=meta)
        _drop_truncated_tail(folder / RECORDS_FILE)
        session.records = read_records(folder / RECORDS_FILE) if (folder / RECORDS_FILE).is_file() else []
        duplicates, unplanned = stray_records(session.records, meta.get("cases"))
        for strays, noun, tail in ((duplicates, "duplicate record", " of a case and round"),
                                   (unplanned, "record", " of cases not in its plan")):
            if strays:
                raise SessionError(f"cannot resume {folder}: records.jsonl holds {stray_text(strays, noun, tail)}")
        return session

    def run_remaining(self) -> ResultSet:
        """Record the case that was running as ``crashed``, then run the cases not yet recorded."""
        done = {(r.key, int(r.info.get("round", 0))) for r in self.records}
        running = read_json(self.folder / RUNNING_FILE)
        self.meta.setdefault("resumed_at", []).append(_now())
        self.meta.update(state="running", finished=False, pid=os.getpid())
        try:
            write_json(self.folder / RUN_FILE, self.meta)
        except OSError as exc:  # a full disk: one line, run.json as it was (or marked interrupted)
            raise self._write_failure(exc, marked=self._close("interrupted") is None) from None
        if running:
            by_ident = {c.key.ident: c for c in self.cases}
            case = by_ident.get(case_ident(running.get("suite"), running.get("variant"), running.get("params") or {}))
            round_index = int(running.get("round") or 0)
            if case is not None and (case.key, round_index) not in done:
                record = Record(suite=case.suite, variant=case.variant, params=case.params_dict, key=case.key,
                                device=case.device, status="crashed", run_id=self.run_id, started_at=str(running.get("started_at", "")),
                                reason="the run's process died while this case was running (killed, or a crash "
                                       "such as a segfault); recorded when the run was resumed")
                if self.request.rounds > 1:
                    record.info["round"] = round_index
                print(f"harness: the run stopped while running {case.label()}; recorded as crashed", file=sys.stderr)
                try:
                    with RecordWriter(self.folder) as w:
                        w.write(record)
                except OSError as exc:  # a full disk: one line, run.json marked interrupted again
                    raise self._write_failure(exc, marked=self._close("interrupted") is None) from None
                self.records.append(record)
                done.add((case.key, round_index))
            (self.folder / RUNNING_FILE).unlink(missing_ok=True)
        return self._execute(self._work(done), [])

    def results(self) -> ResultSet:
        """The run folder as loaded results (what export and compare read)."""
        environment = read_json(self.folder / ENVIRONMENT_FILE)
        return ResultSet(f"run {self.run_id}", "run", list(self.records), environment, dict(self.meta), [], self.folder)


class _pinned:
    """A CPU run's process (and every worker it starts) pinned to its cores while it runs; the
    cores go into run.json (``pinned_cpus``), and the process's affinity is put back after."""

    def __init__(self, session: "RunSession"):
        self.session = session
        self.previous = None

    def __enter__(self):
        if hasattr(os, "sched_getaffinity"):
            self.previous = os.sched_getaffinity(0)
        cores, why = pin_cores(self.session.request)
        meta = self.session.meta
        meta["pinned_cpus"] = cores
        meta["pin_note"] = why or None
        try:
            write_json(self.session.folder / RUN_FILE, meta)
        except OSError:
            pass  # the run's own first write reports a full disk
        return self

    def __exit__(self, *exc):
        if self.previous is not None and hasattr(os, "sched_setaffinity"):
            try:
                os.sched_setaffinity(0, self.previous)
            except OSError:
                pass
        return False


def _call(fn, *args):
    return fn(*args)


def _named_call(name: str, fn, *args):
    """``fn(*args)`` inside a frame called ``name``: if the process crashes (a segfault in a
    case run in-process), the fault handler's traceback on stderr names the case."""
    import types

    frame_fn = types.FunctionType(_call.__code__.replace(co_name=name[:300]), {})
    return frame_fn(fn, *args)


def _where(placement: dict[str, Any] | None) -> str:
    """' on HOST GPU' for a record that says where it ran (cases spread over workers)."""
    if not placement:
        return ""
    gpu = placement.get("gpu_name") or (f"CUDA_VISIBLE_DEVICES={placement['cuda_visible_devices']}"
                                        if placement.get("cuda_visible_devices") is not None else "")
    return f" on {placement.get('host') or placement.get('node_id', '?')[:8]}" + (f" {gpu}" if gpu else "")


def _location(cls: type[Suite]) -> tuple[str, str]:
    from ..declare.registry import class_location

    return class_location(cls)


def _drop_truncated_tail(path: Path) -> None:
    """Cut a records file back to its last complete line (a run killed while writing one)."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        os.truncate(path, data.rfind(b"\n") + 1)  # never rewritten: on a full disk that could lose records


def run_suites(
    suites: Sequence[str | type[Suite]],
    profile: str = "quick",
    device: str = "cpu",
    out: str | Path | None = None,
    *,
    pattern: str | None = None,
    params: dict[str, Sequence[Any]] | None = None,
    variants: Sequence[str] | None = None,
    isolate: bool = False,
    supervise: bool = True,
    worker_per_case: bool = False,
    timeout_s: float | None = None,
    threads: int | None = None,
    progress: bool = False,
    rounds: int = 1,
) -> ResultSet:
    """Plan and run suites (classes, or names of registered suites) into a complete run folder.

    ``params`` replaces a param's values (``{"seq_len": [256, 512]}``), as ``--param`` does;
    ``rounds`` passes over all cases, interleaved, as ``--rounds`` does. The cases run in a
    supervised child process (``supervise=False``: in this process), in isolated workers
    (``isolate``) or a fresh worker each (``worker_per_case``), as on the command line.
    """
    from ..declare.registry import discover

    classes: list[type[Suite]] = []
    registry = None
    for s in suites:
        if isinstance(s, str):
            registry = registry or discover()
            classes.append(registry.get(s))
        elif isinstance(s, type) and issubclass(s, Suite):
            classes.append(s)
        else:
            raise PlanError(f"not a suite: {s!r}")
    try:  # the Python edge: values are typed already, checked here as argparse checks the command line's
        rounds = strictly_positive(rounds, "rounds")
        threads = None if threads is None else thread_count(threads, "threads")
        timeout_s = None if timeout_s is None else positive_seconds(timeout_s, "timeout_s")
    except ValueError as exc:
        raise PlanError(str(exc)) from None
    request = build_request(classes, profile=profile, device=device, pattern=pattern, params=params,
                            variants=list(variants or []), isolate=isolate, supervise=supervise,
                            worker_per_case=worker_per_case, timeout_s=timeout_s, threads=threads,
                            progress=progress, rounds=rounds)
    session = RunSession(out, plan_request(request, classes), {c.suite_name(): c for c in classes}, request)
    return session.run()


def run_cases(
    cases: Sequence[Case],
    suites: dict[str, type[Suite]],
    out_dir: str | Path | None = None,
    *,
    run_id: str = "",
    isolate: bool = False,
    supervise: bool = False,
    worker_per_case: bool = False,
    timeout_s: float | None = None,
    threads: int | None = None,
    progress: bool = False,
    executor=None,
) -> list[Record]:
    """Run already planned cases through a session; returns the records.

    Without ``out_dir`` the run folder is a temporary one, removed afterwards (for tests and
    callers that only want the records). Unlike ``run_suites``, the cases run in this process
    unless asked otherwise (``supervise``, ``isolate``, ``worker_per_case``): a caller that
    patched a suite's module sees its patch.
    """
    import tempfile

    import contextlib

    cases = list(cases)
    device = cases[0].device if cases else "cpu"
    request = RunRequest(device=device, isolate=isolate, supervise=supervise, worker_per_case=worker_per_case,
                         timeout_s=timeout_s, threads=threads, progress=progress)
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="harness-run-"))) / "run"
        session = RunSession(out_dir, cases, suites, request, run_id=run_id or None, executor=executor)
        session.run()
        return session.records
