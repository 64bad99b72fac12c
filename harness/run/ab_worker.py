"""One side of a paired A/B measurement (``harness ab``): a long-lived worker process.

The driver (:mod:`harness.run.ab`) starts one worker per side, pinned to the same CPU core(s),
and speaks to it in JSON lines over two pipes (never stdout: a suite may print). The worker
imports its side's suites (from that side's checkout, so ``suites.common`` is that side's too)
and answers, one request at a time:

- ``plan``: the side's cases for a profile, device and filters (with their case keys), the
  suites' declarations and the files that failed to load;
- ``setup``: prepare case ``i`` (the grid point's inputs, the variant's workload), warm it up and
  estimate its time per call;
- ``batch``: ``calls`` timed calls of the case's workload, their times in ms;
- ``finish``: the case's record (its time from every batch, then the untimed memory and FLOP
  probes and the suite's quality metrics, as a plain run measures them);
- ``quit``.

A request that fails in the case's code answers with the case's record (``failed``, ``oom``,
``skipped``...) and the worker goes on with the next case. The worker pins itself before torch
starts a thread, so every thread of the process runs on the given cores.

Run as ``python -m harness.run.ab_worker --root DIR --cmd-fd R --reply-fd W [--cpus 0,1]
[--threads N] [--run-id ID] [SUITE_PATH ...]``; with ``--engine-root`` the worker imports the
harness from there (``harness ab --engine sides``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any

PROTOCOL = 1


def pin(cpus: list[int]) -> str:
    """Pin this process to ``cpus``; '' when done, else why not (recorded by the driver)."""
    if not cpus:
        return "no cores asked for"
    if not hasattr(os, "sched_setaffinity"):
        return "this platform cannot pin a process to cores (no sched_setaffinity)"
    try:
        os.sched_setaffinity(0, set(cpus))
    except OSError as exc:
        return f"cannot pin to cores {cpus}: {exc.strerror or exc}"
    return ""


class Side:
    """The worker's state: its suites and cases, and the case being measured."""

    def __init__(self, root: str, paths: list[str], run_id: str, threads: int | None):
        self.root, self.paths, self.run_id, self.threads = root, paths, run_id, threads
        self.cases: list = []
        self.executor = None
        self.current: dict[str, Any] | None = None

    # ------------------------------------------------------------------ requests
    def plan(self, msg: dict[str, Any]) -> dict[str, Any]:
        from ..declare.registry import discover
        from ..plan import PlanError, plan_cases
        from .executors import CaseExecutor
        from .session import _location

        reg = discover(extra=self.paths, builtin=False)
        names = msg.get("suites") or []
        classes = [reg.get(n) for n in names] if names else [reg.suites[n] for n in reg.names()]
        # a variant one side lacks (new in B, removed in B) is no error here: the driver names the
        # cases only one side has, and refuses a variant neither side knows
        asked = msg.get("variants") or []
        known = {v for cls in classes for v in cls.variants()}
        unknown = [v for v in asked if v not in known]
        kept = [v for v in asked if v in known]
        if asked and not kept:
            cases = []
        else:
            try:
                cases = plan_cases(classes, msg.get("profile") or "quick", msg["device"], msg.get("pattern"),
                                   msg.get("params") or {}, kept)
            except PlanError as exc:
                if not str(exc).startswith("no case matches"):
                    raise
                cases = []
        self.cases = cases
        suites = {cls.suite_name(): cls for cls in classes}
        self.executor = CaseExecutor(suites, run_id=self.run_id, replace_on_sticky=False)
        import torch

        return {
            "cases": [{"key": c.key.to_dict(), "label": c.label(), "suite": c.suite, "variant": c.variant,
                       "params": c.params_dict} for c in cases],
            "suites": {name: cls.declaration() for name, cls in suites.items()},
            "suite_locations": {name: list(_location(cls)) for name, cls in suites.items()},
            "load_failures": [{"path": f.path, "error": f.error} for f in reg.failures
                              if not names or os.path.splitext(os.path.basename(f.path))[0] in names],
            "threads": torch.get_num_threads(),
            "unknown_variants": unknown,
        }

    def setup(self, msg: dict[str, Any]) -> dict[str, Any]:
        from ..declare.suite import Workload
        from .executors import ProcessState, TorchState, _seed

        self.abort()
        case = self.cases[msg["i"]]
        ex = self.executor
        stack = contextlib.ExitStack()
        cur = {"case": case, "stack": stack, "samples": [], "t0": time.perf_counter(), "started": _now(),
               "torch": TorchState.capture(), "process": ProcessState.capture()}
        self.current = cur
        cls = ex.suites[case.suite]
        spec = cls.variants()[case.variant]
        dev = ex.device(case.device)
        stack.enter_context(dev.scope())
        unmet = spec.unmet(case.device)
        if unmet:
            return self._ended("skipped", unmet)
        suite = ex.instance(case.suite)
        state = ex.state_for(suite, case)
        _seed(suite.seed)
        workload = getattr(suite, spec.method_name)(state, case.params_dict)
        if not isinstance(workload, Workload):
            raise TypeError(f"variant {case.variant!r} returned {type(workload).__name__}, not a Workload")
        timing = workload.timing or case.timing
        timer = dev.timer(timing.cold_cache)
        cur.update(suite=suite, state=state, workload=workload, timing=timing, timer=timer, dev=dev)
        fn, before = workload.fn, workload.before_sample
        # warm-up by time, as a plain run's timer does, then a per-call estimate for the batch size
        t_end = time.perf_counter() + timing.warmup_s
        warm = 0
        while warm < max(1, timing.min_warmup) or time.perf_counter() < t_end:
            timer.samples_ms(fn, 1, before)
            warm += 1
        probe = timer.samples_ms(fn, 3, before)
        cur["warmup_runs"] = warm
        return {"status": "ok", "per_call_ms": sorted(probe)[1], "timer": timer.kind}

    def batch(self, msg: dict[str, Any]) -> dict[str, Any]:
        cur = self._need()
        samples = cur["timer"].samples_ms(cur["workload"].fn, int(msg["calls"]), cur["workload"].before_sample)
        cur["samples"].extend(samples)
        return {"status": "ok", "samples_ms": samples}

    def finish(self, msg: dict[str, Any]) -> dict[str, Any]:
        import torch

        from ..measure.stats import SampleStats
        from ..measure.workload import WorkloadMeasurement, probe_workload
        from .case_metrics import case_metrics

        cur = self._need()
        case, workload = cur["case"], cur["workload"]
        samples = cur["samples"]
        stats = SampleStats.of(samples)
        info: dict[str, Any] = {"timer": cur["timer"].kind, "warmup_runs": cur["warmup_runs"],
                                "stopped_by": "paired", "rel_ci": stats.rel_ci, "threads": torch.get_num_threads(),
                                "cold_cache": bool(cur["timing"].cold_cache and cur["dev"].is_cuda),
                                **(msg.get("info") or {})}
        dtype = workload.dtype or case.params_dict.get("dtype")
        peak_bytes, out, flops, peak = probe_workload(workload, cur["dev"], stats, info, dtype)
        measured = WorkloadMeasurement(samples_ms=samples, stats=stats, info=info, peak_bytes=peak_bytes, output=out,
                                       flops=flops, peak=peak)
        metrics = case_metrics(measured, workload, cur["suite"], case, cur["state"])
        return self._ended("ok", "", metrics, measured.info)

    # ------------------------------------------------------------------ the case's end
    def _need(self) -> dict[str, Any]:
        if self.current is None or "workload" not in self.current:
            raise RuntimeError("no case is set up")
        return self.current

    def _ended(self, status: str, reason: str, metrics: dict | None = None, info: dict | None = None) -> dict:
        from ..results import Record

        cur = self.current
        case = cur["case"]
        info = dict(info or {})
        changed = self.abort()
        if changed:
            info["restored_state"] = changed
        record = Record(suite=case.suite, variant=case.variant, params=case.params_dict, key=case.key,
                        device=case.device, status=status, reason=reason, metrics=metrics or {}, run_id=self.run_id,
                        started_at=cur["started"], duration_s=time.perf_counter() - cur["t0"], info=info)
        return {"status": status, "record": json.loads(record.to_json())}

    def failed(self, exc: BaseException) -> dict[str, Any]:
        """The record of a case whose code raised (call inside the ``except``)."""
        from ..declare.suite import Skip
        from .executors import failure_of

        if self.current is None:
            raise exc
        if isinstance(exc, Skip):
            return self._ended("skipped", str(exc) or "skipped by the suite")
        status, reason, info = failure_of(exc)
        if status in ("oom", "crashed") and self.executor is not None:
            self.executor.drop_state()
        reply = self._ended(status, reason, info=info)
        reply["fatal"] = status == "crashed"  # a lost CUDA context: the driver starts a new worker
        return reply

    def abort(self) -> list[str]:
        """Leave the current case: its device scope, and the process and torch state it changed."""
        cur, self.current = self.current, None
        if cur is None:
            return []
        cur["stack"].close()
        return [*cur["torch"].restore(), *cur["process"].restore()]


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def serve(side: Side, cmd, reply) -> None:
    handlers = {"plan": side.plan, "setup": side.setup, "batch": side.batch, "finish": side.finish}
    for line in cmd:
        msg = json.loads(line)
        op = msg.get("op")
        if op == "quit":
            return
        try:
            answer = handlers[op](msg)
        except Exception as exc:  # noqa: BLE001 - a case's failure is its record
            if op == "plan":
                answer = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            else:
                answer = side.failed(exc)
        reply.write(json.dumps(answer, allow_nan=True) + "\n")
        reply.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="harness.run.ab_worker")
    ap.add_argument("--root", required=True)
    ap.add_argument("--cmd-fd", type=int, required=True)
    ap.add_argument("--reply-fd", type=int, required=True)
    ap.add_argument("--cpus", default="")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--run-id", default="")
    ap.add_argument("paths", nargs="*")
    args = ap.parse_args(argv)
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver ends the run; it stops its workers
    from .executors import _lead_process_group

    # a group of its own, and a guardian that ends it when the driver dies, however it dies (a
    # case hung in a batch never reads the closed pipe)
    _lead_process_group(os.getppid())
    cpus = [int(c) for c in args.cpus.split(",") if c != ""]
    pinned = pin(cpus)
    if args.root not in sys.path:
        sys.path.insert(0, args.root)  # this side's `suites` package (suites.common...)
    from ..declare import registry

    side_suites = os.path.join(args.root, "suites")
    if os.path.isfile(os.path.join(side_suites, "__init__.py")):
        # a side whose suites/ is a package (as this project's): its files are imported as
        # `suites.NAME`, as a plain run imports its own (their functions then pickle by that name, e.g. for torch's checkpoint offload)
        registry.BUILTIN_DIR = registry.Path(side_suites).resolve()
    import torch

    from . import executors

    if args.threads:
        torch.set_num_threads(args.threads)
    executors.warm_up_engine()
    reply = os.fdopen(args.reply_fd, "w", buffering=1)
    cmd = os.fdopen(args.cmd_fd, "r")
    engine = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # this worker's harness/
    hello = {"protocol": PROTOCOL, "pid": os.getpid(), "engine": engine,
             "worker": os.path.abspath(__file__),
             "pinned": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
             "pin_problem": pinned, "threads": torch.get_num_threads(), "torch": torch.__version__}
    reply.write(json.dumps(hello) + "\n")
    reply.flush()
    serve(Side(args.root, args.paths, args.run_id, args.threads), cmd, reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
