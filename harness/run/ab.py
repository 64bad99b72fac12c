"""``harness ab``: two commits (or two checkouts) measured in the same window, paired.

A machine's state drifts (other jobs, clocks, caches) on a scale of seconds to minutes, so two
runs made apart differ by more than most regressions, and on a VM two identical processes on
different vCPUs differ by up to a third. So:

- each side gets one long-lived worker process (:mod:`harness.run.ab_worker`), both pinned to
  the same CPU core(s) (``--cpus``; by default the last core this process may use);
- for every case the sides alternate in short batches, A B B A (the next round B A A B), never
  at once; each round gives a paired ratio, and the verdict is on the ratios
  (:mod:`harness.measure.paired`);
- a case keeps adding rounds until its verdict is clear or its budget is spent;
- each side's records go to a run folder of its own (``OUT/a``, ``OUT/b``: ordinary run folders,
  for ``report``, ``export``, ``compare``), and the comparison of the two, with the paired
  verdicts in place of the time rows, to ``OUT/ab.md`` and ``OUT/ab.json``.

The sides' ``suites/`` come from git worktrees of the two commits, made once under the cache
(``$HARNESS_CACHE_DIR/ab-worktrees``) and reused, or from ``--a-path``/``--b-path``. With
``--engine driver`` (the default) the installed harness measures both sides' suites, so any
commit, however old, can be side A; with ``--engine sides`` each worker runs its side's own
``harness/`` too (that commit must have this worker), which is how an engine change is gated.
Cases are paired by their case key; a case one side lacks (a new variant, a changed grid) is
named and not measured; unlike cases are never paired.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..measure.paired import DEFAULT_THRESHOLD, PairedRounds, batch_value, paired_verdict
from ..key import CaseKey
from ..paths import cache_dir
from ..results import ENVIRONMENT_FILE, RUN_FILE, Record, RecordWriter, ResultsError, write_json
from ..results.store import RunFolderLock, make_folder, remove_made_folder
from .request import last_cores
from .session import _sigterm_as_exception

WORKER_MODULE = "harness.run.ab_worker"
AB_FILE = "ab.json"
BATCH_TARGET_MS = 20.0  # time of one batch of calls (a batch is at least MIN_BATCH_CALLS calls)
MIN_BATCH_CALLS = 1
MAX_BATCH_CALLS = 10_000
MIN_ROUNDS = 10
MAX_ROUNDS = 60
CHECK_AT = (10, 15, 20, 30, 40, 60)  # rounds at which the verdict is looked at (few looks: few false alarms)
CASE_BUDGET_S = 20.0  # paired measuring time of one case, both sides, at most (after MIN_ROUNDS)
START_TIMEOUT_S = 300.0


class ABError(ResultsError):
    """``harness ab`` cannot run as asked (a ref that is not a commit, a side without suites...)."""


# --------------------------------------------------------------------------- the sides' code
@dataclass
class SideSource:
    name: str  # "a" or "b"
    label: str  # the ref or path as given
    root: Path  # the checkout whose suites/ (and with --engine sides, harness/) the side runs
    commit: str | None = None


def _git(args: list[str], cwd: Path) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise ABError("harness ab needs git to check out the two commits (or give --a-path and --b-path)") from None
    if done.returncode != 0:
        raise ABError(f"git {' '.join(args)} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return done.stdout.strip()


def repository_root(cwd: Path) -> Path:
    try:
        done = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True,
                              timeout=60)
    except FileNotFoundError:
        raise ABError("harness ab needs git to check out the two commits (or give --a-path and --b-path)") from None
    if done.returncode != 0:
        raise ABError(f"{cwd} is not inside a git checkout: run harness ab there, or give --a-path and --b-path")
    return Path(done.stdout.strip())


def resolve_commit(repo: Path, ref: str) -> str:
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], cwd=repo,
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or not done.stdout.strip():
        raise ABError(f"{ref!r} is not a commit of the repository at {repo}")
    return done.stdout.strip()


def worktree_for(repo: Path, commit: str) -> Path:
    """A checkout of ``commit`` under the cache, made once (``git worktree add --detach``) and reused."""
    digest = repo.resolve().as_posix().encode()
    import hashlib

    folder = cache_dir("ab-worktrees", hashlib.sha1(digest).hexdigest()[:10]) / commit[:16]
    if folder.is_dir():
        try:
            if _git(["rev-parse", "HEAD"], folder) == commit:
                return folder
        except ABError:
            pass
        _git(["worktree", "remove", "--force", str(folder)], repo)
    _git(["worktree", "prune"], repo)
    _git(["worktree", "add", "--detach", "--force", str(folder), commit], repo)
    return folder


def sides_from_refs(ref_a: str, ref_b: str, cwd: Path) -> tuple[SideSource, SideSource]:
    repo = repository_root(cwd)
    out = []
    for name, ref in (("a", ref_a), ("b", ref_b)):
        commit = resolve_commit(repo, ref)
        out.append(SideSource(name, ref, worktree_for(repo, commit), commit))
    return out[0], out[1]


def side_paths(side: SideSource, selection: list[str]) -> tuple[list[str], list[str]]:
    """(suite files of the side, suite names to keep): a SUITE name is ``suites/NAME.py`` of the side,
    a PATH is taken relative to the side's checkout (the same file at the other commit)."""
    names, files = [], []
    for item in selection:
        if item.endswith(".py") or os.sep in item or "/" in item:
            path = Path(item)
            if path.is_absolute():
                try:
                    path = path.relative_to(Path.cwd())
                except ValueError:
                    pass
            target = side.root / path if not path.is_absolute() else path
            if not target.exists():
                raise ABError(f"side {side.name.upper()} ({side.label}) has no {item}")
            files.append(str(target))
        else:
            names.append(item)
    if names or not files:
        folder = side.root / "suites"
        if not folder.is_dir():
            raise ABError(f"side {side.name.upper()} ({side.label}) has no suites/ folder; name its suite files")
        files.append(str(folder))
    return files, names


# --------------------------------------------------------------------------- one side's worker
class WorkerGone(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


class SideWorker:
    """A side's worker process and the two pipes to it."""

    def __init__(self, side: SideSource, files: list[str], cpus: list[int], threads: int | None, run_id: str,
                 engine: str, log: Path):
        self.side, self.files, self.cpus, self.threads = side, files, cpus, threads
        self.run_id, self.engine, self.log = run_id, engine, log
        self.proc: subprocess.Popen | None = None
        self.hello: dict[str, Any] = {}
        self._buf = b""

    def start(self) -> dict[str, Any]:
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        argv = [sys.executable, "-m", WORKER_MODULE, "--root", str(self.side.root), "--cmd-fd", str(cmd_r),
                "--reply-fd", str(rep_w), "--cpus", ",".join(map(str, self.cpus)), "--run-id", self.run_id]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        argv += self.files
        env = dict(os.environ)
        if self.engine == "sides":
            cwd = self.side.root  # `-m` puts the working folder first: the side's own harness/
        else:
            driver_root = str(Path(__file__).resolve().parents[2])  # the folder holding this harness/
            cwd = self.log.parent  # no harness/ there: the driver's harness, from its installation
            env["PYTHONPATH"] = os.pathsep.join([driver_root, *filter(None, [env.get("PYTHONPATH")])])
        log = open(self.log, "ab")
        try:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         pass_fds=(cmd_r, rep_w))
        finally:
            log.close()
            os.close(cmd_r)
            os.close(rep_w)
        self._cmd = os.fdopen(cmd_w, "w", buffering=1)
        self._reply = rep_r
        self._buf = b""
        try:
            self.hello = self._read(time.monotonic() + START_TIMEOUT_S)
        except WorkerGone as exc:
            tail = self.log_tail()
            if self.engine == "sides" and "No module named" in tail:
                raise ABError(f"side {self.side.name.upper()} ({self.side.label}) has no ab worker in its harness/ "
                              f"(it predates harness ab): measure it with --engine driver") from None
            raise ABError(f"the worker of side {self.side.name.upper()} did not start: {exc.reason}; "
                          f"{tail.strip().splitlines()[-1] if tail.strip() else ''}") from None
        if self.engine == "sides":
            root = self.side.root.resolve()
            if root not in Path(self.hello.get("worker", "")).resolve().parents:
                self.kill()
                raise ABError(f"side {self.side.name.upper()} ({self.side.label}) has no ab worker in its own "
                              f"harness/ (it predates harness ab, or holds no harness): measure it with --engine "
                              f"driver")
        return self.hello

    def log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def call(self, msg: dict[str, Any], deadline: float | None) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            raise WorkerGone("crashed", "the worker process is not running")
        try:
            self._cmd.write(json.dumps(msg) + "\n")
            self._cmd.flush()
        except (BrokenPipeError, OSError):
            self._died()
        return self._read(deadline)

    def _read(self, deadline: float | None) -> dict[str, Any]:
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.kill()
                raise WorkerGone("timeout", "")
            ready, _, _ = select.select([self._reply], [], [], None if left is None else min(left, 1.0))
            if not ready:
                if self.proc.poll() is not None:
                    self._died()
                continue
            chunk = os.read(self._reply, 1 << 20)
            if not chunk:
                self._died()
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def _died(self):
        from .executors import _death_reason

        code = self.proc.wait(timeout=30) if self.proc is not None else None
        self.close_pipes()
        raise WorkerGone("crashed", _death_reason(code))

    def close_pipes(self) -> None:
        for f in (getattr(self, "_cmd", None),):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self._cmd = None
        try:
            os.close(self._reply)
        except (OSError, TypeError, AttributeError):
            pass
        self._reply = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
            self.proc.wait(timeout=30)
        self.close_pipes()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None and self._cmd is not None:
            try:
                self._cmd.write(json.dumps({"op": "quit"}) + "\n")
                self._cmd.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()


# --------------------------------------------------------------------------- one side's run folder
class SideFolder:
    """A side's run folder: run.json, environment.json and records.jsonl, as a plain run writes them."""

    def __init__(self, folder: Path, meta: dict[str, Any], environment: dict[str, Any]):
        self.folder = folder
        make_folder(folder)
        self.lock = RunFolderLock(folder)
        self.meta = meta
        self.counts: dict[str, int] = {}
        write_json(folder / RUN_FILE, meta)
        write_json(folder / ENVIRONMENT_FILE, environment)
        self.writer = RecordWriter(folder)

    def keep(self, record: Record) -> None:
        self.writer.write(record)
        self.counts[record.status] = self.counts.get(record.status, 0) + 1

    def close(self, state: str) -> None:
        self.writer.close()
        self.meta.update(state=state, finished=state == "finished", status_counts=self.counts, finished_at=_now())
        try:
            write_json(self.folder / RUN_FILE, self.meta, in_place_fallback=True)
        finally:
            self.lock.release()


def _now() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the A/B run
@dataclass
class ABOptions:
    profile: str = "quick"
    device: str = "cpu"
    pattern: str | None = None
    params: dict[str, list] = field(default_factory=dict)
    variants: list[str] = field(default_factory=list)
    threads: int | None = None
    cpus: list[int] | None = None
    timeout_s: float | None = None
    threshold: float = DEFAULT_THRESHOLD
    min_rounds: int = MIN_ROUNDS
    max_rounds: int = MAX_ROUNDS
    case_budget_s: float = CASE_BUDGET_S
    engine: str = "driver"
    progress: bool = True


@dataclass
class PairResult:
    key: CaseKey
    label: str
    verdict: dict[str, Any] | None  # the paired time verdict (None: a side did not measure)
    a_status: str
    b_status: str
    ratios: list[float]
    a_values: list[float]
    b_values: list[float]
    seconds: float


class ABRun:
    """Runs the paired measurement of two sides into ``out``."""

    def __init__(self, a: SideSource, b: SideSource, selection: list[str], out: Path, options: ABOptions,
                 argv: list[str] | None = None, note: Callable[[str], None] | None = None):
        self.sides = {"a": a, "b": b}
        self.selection, self.out, self.opts = selection, out, options
        self.argv = argv or []
        self.note = note or (lambda line: print(f"harness: {line}", file=sys.stderr))
        self.workers: dict[str, SideWorker] = {}
        self.folders: dict[str, SideFolder] = {}
        self.plans: dict[str, dict[str, Any]] = {}
        self.pairs: list[PairResult] = []
        self.only: dict[str, list[str]] = {"a": [], "b": []}
        self.cpus = options.cpus if options.cpus is not None else last_cores(1)

    # ------------------------------------------------------------------ workers
    def _plan_request(self, names: list[str]) -> dict[str, Any]:
        o = self.opts
        return {"op": "plan", "suites": names, "profile": o.profile, "device": o.device, "pattern": o.pattern,
                "params": o.params, "variants": o.variants}

    def _start(self, name: str) -> None:
        side = self.sides[name]
        files, names = self._selection[name]
        worker = SideWorker(side, files, self.cpus, self.opts.threads, f"ab-{name}", self.opts.engine,
                            self.out / f"worker-{name}.log")
        worker.start()
        try:
            reply = worker.call(self._plan_request(names), time.monotonic() + START_TIMEOUT_S)
        except WorkerGone as gone:
            raise ABError(f"the worker of side {name.upper()} ({side.label}) died while planning its cases: "
                          f"{gone.reason or 'it took longer than ' + str(int(START_TIMEOUT_S)) + ' s'}; "
                          f"{(worker.log_tail().strip().splitlines() or [''])[-1]}") from None
        if reply.get("status") == "error":
            worker.stop()
            raise ABError(f"side {name.upper()} ({side.label}): {reply['error']}")
        self.workers[name] = worker
        self.plans.setdefault(name, reply)

    def _restart(self, name: str) -> None:
        old = self.workers.pop(name, None)
        if old is not None:
            old.kill()
        self._start(name)

    # ------------------------------------------------------------------ the run
    def run(self) -> dict[str, Any]:
        self._selection = {n: side_paths(s, self.selection) for n, s in self.sides.items()}
        made = make_folder(self.out)
        lock = RunFolderLock(self.out)
        state = "interrupted"
        try:
            with _sigterm_as_exception():  # SIGTERM/SIGHUP end the run as Ctrl-C does: folders marked
                for name in ("a", "b"):
                    self._start(name)
                self._pair_plans()
                self._open_folders()
                self._measure_all()
            state = "finished"
        finally:
            for w in self.workers.values():
                w.stop()
            for f in self.folders.values():
                f.close(state)
            if self.folders:  # what was measured is kept, a finished run or not
                write_json(self.out / AB_FILE, {**self._summary(), "state": state})
            else:  # nothing measured (a bad selection, a side that cannot start): nothing left behind
                for name in ("a", "b"):
                    (self.out / f"worker-{name}.log").unlink(missing_ok=True)
                remove_made_folder(made)
            lock.release()
        return self._summary()

    def _pair_plans(self) -> None:
        unknown = [v for v in self.plans["a"].get("unknown_variants") or []
                   if v in (self.plans["b"].get("unknown_variants") or [])]
        if unknown:
            raise ABError(f"unknown variant {unknown[0]!r}: neither side has it")
        by = {n: {CaseKey.from_dict(c["key"]).ident: i for i, c in enumerate(p["cases"])} for n, p in self.plans.items()}
        self.order = [(by["a"][ident], i) for ident, i in by["b"].items() if ident in by["a"]]
        self.order.sort(key=lambda pair: pair[1])
        for name, other in (("a", "b"), ("b", "a")):
            self.only[name] = [self.plans[name]["cases"][i]["label"] for ident, i in by[name].items()
                               if ident not in by[other]]
        for name, labels in self.only.items():
            if labels:
                self.note(f"{len(labels)} case(s) only on side {name.upper()} ({self.sides[name].label}), not "
                          f"measured (a new or removed variant, a changed grid): {', '.join(labels[:5])}"
                          f"{' ...' if len(labels) > 5 else ''}")
        if not self.order:
            raise ABError("the two sides have no case in common: nothing to pair")

    def _open_folders(self) -> None:
        from ..measure.environment import fingerprint, git_info

        env = fingerprint(self.opts.device)
        for name, side in self.sides.items():
            plan = self.plans[name]
            hello = self.workers[name].hello
            cases = [plan["cases"][pair[0 if name == "a" else 1]] for pair in self.order]
            meta = {
                "run_id": f"{self.out.name}-{name}", "profile": self.opts.profile, "device": self.opts.device,
                "pattern": self.opts.pattern, "param_overrides": {k: list(v) for k, v in self.opts.params.items()},
                "variants": list(self.opts.variants), "isolate": True, "supervise": False, "worker_per_case": False,
                "executor": "ab", "ray_address": None, "shard": None, "timeout_s": self.opts.timeout_s,
                "threads": hello.get("threads") or plan.get("threads") or 1, "threads_source": "given"
                if self.opts.threads else "worker default", "rounds": 1, "argv": self.argv,
                "suites": plan["suites"], "suite_locations": plan["suite_locations"],
                "load_failures": plan["load_failures"],
                "cases": [{"suite": c["suite"], "variant": c["variant"], "params": c["params"]} for c in cases],
                "n_cases": len(cases), "started_at": _now(), "state": "running", "finished": False,
                "pid": os.getpid(),
                "ab": {"side": name, "ref": side.label, "commit": side.commit, "root": str(side.root),
                       "engine": hello.get("engine"), "cpus": hello.get("pinned"),
                       "pin_problem": hello.get("pin_problem") or None},
            }
            side_env = {**env, "device": self.opts.device, "git": git_info(side.root), "torch_threads": meta["threads"],
                        "pinned_cpus": hello.get("pinned")}
            self.folders[name] = SideFolder(self.out / name, meta, side_env)

    def _measure_all(self) -> None:
        total = len(self.order)
        for n, (ia, ib) in enumerate(self.order, 1):
            label = self.plans["b"]["cases"][ib]["label"]
            result = self._measure_pair(ia, ib)
            self.pairs.append(result)
            if self.opts.progress:
                v = result.verdict
                text = (f"{v['verdict']} {v['ratio']:.3f} [{v['ratio_low']:.3f}, {v['ratio_high']:.3f}] "
                        f"({v['rounds']} rounds)") if v and v.get("ratio") is not None else \
                    f"A {result.a_status}, B {result.b_status}"
                print(f"[{n}/{total}] {label}: {text}  {result.seconds:.1f} s", file=sys.stderr, flush=True)

    def _deadline(self, started: float) -> float | None:
        return None if self.opts.timeout_s is None else started + self.opts.timeout_s

    def _measure_pair(self, ia: int, ib: int) -> PairResult:
        t0 = time.monotonic()
        index = {"a": ia, "b": ib}
        case = self.plans["b"]["cases"][ib]
        key = CaseKey.from_dict(case["key"])
        started = {"a": 0.0, "b": 0.0}
        spent = {"a": 0.0, "b": 0.0}  # each side's own time on this case (its --timeout)
        records: dict[str, dict] = {}
        per_call: dict[str, float] = {}

        def call(name: str, msg: dict[str, Any]) -> dict[str, Any] | None:
            """The reply, or None once the side has its record (failed, timed out, crashed)."""
            w = self.workers[name]
            t = time.monotonic()
            limit = None if self.opts.timeout_s is None else t + max(0.0, self.opts.timeout_s - spent[name])
            try:
                reply = w.call(msg, limit)
            except WorkerGone as gone:
                spent[name] += time.monotonic() - t
                reason = (f"ran past the {self.opts.timeout_s:g} s case time limit" if gone.status == "timeout"
                          else f"{gone.reason} (its log: {w.log})")
                records[name] = self._lost_record(name, index[name], gone.status, reason, spent[name])
                self._restart(name)
                return None
            spent[name] += time.monotonic() - t
            if reply.get("record") is not None:
                records[name] = reply["record"]
                if reply.get("fatal"):
                    self._restart(name)
                return None
            return reply

        for name in ("a", "b"):
            started[name] = time.monotonic()
            reply = call(name, {"op": "setup", "i": index[name]})
            if reply is not None:
                per_call[name] = max(float(reply["per_call_ms"]), 1e-6)
        rounds = PairedRounds()
        if len(per_call) == 2:
            calls = {n: int(min(MAX_BATCH_CALLS, max(MIN_BATCH_CALLS, BATCH_TARGET_MS / max(per_call.values()))))
                     for n in per_call}
            measure_t0 = time.monotonic()
            for r in range(self.opts.max_rounds):
                order = ("a", "b", "b", "a") if r % 2 == 0 else ("b", "a", "a", "b")
                values: dict[str, list[float]] = {"a": [], "b": []}
                for name in order:
                    reply = call(name, {"op": "batch", "calls": calls[name]})
                    if reply is None:
                        break
                    values[name].append(batch_value(reply["samples_ms"]))
                if records:
                    break
                rounds.add(sum(values["a"]) / 2, sum(values["b"]) / 2)
                done = r + 1
                if done >= self.opts.min_rounds and (done in CHECK_AT or done == self.opts.max_rounds):
                    verdict = paired_verdict(rounds.ratios, self.opts.threshold)
                    if verdict.verdict != "noisy":
                        break
                    if time.monotonic() - measure_t0 > self.opts.case_budget_s:
                        break
        verdict = paired_verdict(rounds.ratios, self.opts.threshold) if rounds.a and not records else None
        paired_info = {"cpus": self.cpus, "rounds": len(rounds.a), "batch": "A B B A, then B A A B",
                       "batch_value": "lower decile of per-call times"}
        if verdict is not None:
            paired_info.update(verdict.to_dict())
        for name in ("a", "b"):
            if name not in records:
                reply = call(name, {"op": "finish", "info": {"paired": paired_info}})
                del reply  # a finish that fails leaves the side's failure record
        for name in ("a", "b"):
            record = Record.from_dict(records[name])
            record.info.setdefault("paired", paired_info)
            record.info[f"{name}_values_ms"] = rounds.a if name == "a" else rounds.b
            self.folders[name].keep(record)
        return PairResult(key, case["label"], verdict.to_dict() if verdict else None,
                          records["a"]["status"], records["b"]["status"], rounds.ratios, rounds.a, rounds.b,
                          time.monotonic() - t0)

    def _lost_record(self, name: str, i: int, status: str, reason: str, seconds: float) -> dict[str, Any]:
        c = self.plans[name]["cases"][i]
        rec = Record(suite=c["suite"], variant=c["variant"], params=c["params"], key=CaseKey.from_dict(c["key"]),
                     device=self.opts.device, status=status, reason=reason, run_id=f"{self.out.name}-{name}",
                     started_at=_now(), duration_s=seconds)
        return json.loads(rec.to_json())

    def _summary(self) -> dict[str, Any]:
        """What ``ab.json`` holds of the measurement (``paired``); the comparison is added by the judge."""
        a, b = self.sides["a"], self.sides["b"]
        return {
            "a_label": a.label + (f" ({a.commit[:10]})" if a.commit else ""),
            "b_label": b.label + (f" ({b.commit[:10]})" if b.commit else ""),
            "paired": {
                "cpus": self.cpus, "threads": self.opts.threads, "engine": self.opts.engine,
                "threshold": self.opts.threshold, "profile": self.opts.profile, "device": self.opts.device,
                "a": {"ref": a.label, "commit": a.commit, "root": str(a.root)},
                "b": {"ref": b.label, "commit": b.commit, "root": str(b.root)},
                "only_a": self.only["a"], "only_b": self.only["b"],
                "cases": [{"label": p.label, "key": p.key.to_dict(), "a_status": p.a_status, "b_status": p.b_status,
                           "verdict": p.verdict, "ratios": p.ratios, "a_ms": p.a_values, "b_ms": p.b_values,
                           "seconds": p.seconds} for p in self.pairs],
            },
        }
