"""The fault matrix: one suite of faulty variants, as a user would write it, run in-process and
isolated. Each fault ends as its status, the healthy cases around it are ``ok``, and after
every test no process of the run is left."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from harness import load_results
from harness.plan import plan_suite
from harness.declare.registry import discover
from harness.run.session import run_cases

pytestmark = pytest.mark.slow  # runs of the faults suite: hangs, crashes, killed parents (minutes)

FAULTS = '''
import ctypes
import math
import os
import signal
import subprocess
import time

import torch

from harness import Metric, Profile, Suite, Timing, Workload, variant


class Faults(Suite):
    """Variants that fail in every way a user's code can."""

    name = "faults"
    grid = {"n": [8]}
    profiles = {"quick": Profile(timing=Timing(warmup_s=0, budget_s=0.01, min_runs=3)), "default": Profile(),
                "nightly": Profile()}
    reference = "ok"
    metrics = [Metric("quality", "", "lower", "a quality number"),
               Metric("state_ok", "", "higher", "1 when torch's global state is the default"),
               Metric("process_ok", "", "higher", "1 when cwd, environment and stdout are the run's own")]

    def prepare(self, params, device):
        return torch.ones(params["n"], params["n"])

    def _ok(self, x):
        return Workload(lambda: x @ x, metrics={"quality": 0.5})

    @variant()
    def ok(self, x, params):
        return self._ok(x)

    @variant()
    def raises(self, x, params):
        def fn():
            raise ValueError("bad value in the operation")
        return Workload(fn)

    @variant()
    def oom_torch(self, x, params):
        def fn():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return Workload(fn)

    @variant()
    def oom_cuda_message(self, x, params):
        def fn():
            raise RuntimeError("CUDA error: out of memory")
        return Workload(fn)

    @variant()
    def oom_cpu_allocator(self, x, params):
        return Workload(lambda: torch.empty(1 << 46, dtype=torch.uint8))  # 64 TiB: the CPU allocator refuses

    @variant()
    def hang_python(self, x, params):
        def fn():
            if os.environ.get("FAULTS_HANG_MARK"):  # the test waits for this before it kills the run
                open(os.environ["FAULTS_HANG_MARK"], "a").close()
            while True:
                time.sleep(0.01)
        return Workload(fn)

    @variant()
    def hang_c(self, x, params):
        def fn():  # one long C call with the alarm signal masked: only a kill stops it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
            ctypes.CDLL(None).sleep(600)
        return Workload(fn)

    @variant()
    def segfault(self, x, params):
        return Workload(lambda: ctypes.string_at(0))

    @variant()
    def exits(self, x, params):
        return Workload(lambda: os._exit(3))

    @variant()
    def child_hangs(self, x, params):
        def fn():
            subprocess.Popen(["sleep", "600"])  # a process of the case's own, left running
            while True:
                time.sleep(0.01)
        return Workload(fn)

    @variant()
    def nan_quality(self, x, params):
        return Workload(lambda: x @ x, metrics={"quality": math.nan})

    @variant()
    def inf_quality(self, x, params):
        return Workload(lambda: x @ x, metrics={"quality": math.inf})

    @variant()
    def leaks(self, x, params):
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        torch.set_num_threads(1)
        return Workload(lambda: x @ x)

    @variant()
    def checks_state(self, x, params):
        ok = (torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
              and torch.get_num_threads() == int(os.environ["FAULTS_THREADS"]))
        return Workload(lambda: x @ x, metrics={"state_ok": 1.0 if ok else 0.0})

    @variant()
    def changes_process(self, x, params):
        import io
        import sys

        os.chdir(os.environ["FAULTS_ELSEWHERE"])
        os.environ["FAULTS_LEAK"] = "1"
        sys.stdout = io.StringIO()
        return Workload(lambda: x @ x)

    @variant()
    def checks_process(self, x, params):
        import io
        import sys

        ok = (os.getcwd() == os.environ["FAULTS_CWD"] and "FAULTS_LEAK" not in os.environ
              and not isinstance(sys.stdout, io.StringIO))
        return Workload(lambda: x @ x, metrics={"process_ok": 1.0 if ok else 0.0})

    @variant()
    def ok_after(self, x, params):
        return self._ok(x)
'''


FAULT_RUN_THREADS = 2  # not 1: the ``leaks`` variant sets 1, which the next case must not see


@pytest.fixture
def tag(monkeypatch):
    """A marker in the environment of every process of this test's runs."""
    value = uuid.uuid4().hex
    monkeypatch.setenv("HARNESS_FAULT_TAG", value)
    # the runs below ask for FAULT_RUN_THREADS torch threads; a variant that changes the count
    # must not leak it into the next case
    monkeypatch.setenv("FAULTS_THREADS", str(FAULT_RUN_THREADS))
    yield value
    deadline = time.monotonic() + 10
    while True:
        left = tagged_processes(value)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"processes of the run left behind: {left}"


def tagged_processes(value: str) -> list[str]:
    found = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            if f"HARNESS_FAULT_TAG={value}".encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().split(")")[-1].split()[0]
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:80]
                # multiprocessing's resource tracker belongs to the process that started workers
                # (here: pytest itself) and ends with it, not with the run
                if state != "Z" and b"multiprocessing.resource_tracker" not in cmdline:
                    found.append(f"{proc.name}: {cmdline!r}")
        except OSError:
            continue
    return found


@pytest.fixture
def faults(write_suite):
    path = write_suite("faults", FAULTS)
    return path, discover(extra=[path], builtin=False).get("faults")


def cases(cls, *variants):
    by_name = {c.variant: c for c in plan_suite(cls, "quick", "cpu")}
    return [by_name[v] for v in variants]


IN_PROCESS = {
    "ok": "ok", "raises": "failed", "oom_torch": "oom", "oom_cuda_message": "oom", "oom_cpu_allocator": "oom",
    "hang_python": "timeout", "nan_quality": "ok", "inf_quality": "ok", "leaks": "ok", "checks_state": "ok",
    "ok_after": "ok",
}
ISOLATED = {**IN_PROCESS, "hang_c": "timeout", "segfault": "crashed", "exits": "crashed", "child_hangs": "timeout",
            "ok_after": "ok"}
# what a crash or a hang may cost a run: in a worker or the supervised child, one case
ORDER = ["ok", "segfault", "raises", "hang_c", "oom_torch", "exits", "oom_cuda_message", "child_hangs",
         "oom_cpu_allocator", "hang_python", "nan_quality", "inf_quality", "leaks", "checks_state", "ok_after"]


def _check(records, expected):
    got = {r.variant: r.status for r in records}
    assert got == expected, {v: (r.status, r.reason) for v, r in ((r.variant, r) for r in records)}
    by = {r.variant: r for r in records}
    assert math.isnan(by["nan_quality"].metrics["quality"].value)
    assert by["inf_quality"].metrics["quality"].value == math.inf
    assert by["checks_state"].metrics["state_ok"].value == 1.0, "a variant's global torch state leaked"
    assert "can't allocate memory" in by["oom_cpu_allocator"].reason


def test_in_process(faults, tag, tmp_path):
    _, cls = faults
    records = run_cases(cases(cls, *IN_PROCESS), {"faults": cls}, tmp_path / "run", timeout_s=3.0,
                        threads=FAULT_RUN_THREADS)
    _check(records, IN_PROCESS)
    stored = load_results(tmp_path / "run")
    assert math.isnan(next(r for r in stored.records if r.variant == "nan_quality").metrics["quality"].value)


@pytest.mark.parametrize("mode", ["supervised", "isolated"])
def test_every_fault_is_one_record_and_the_run_goes_on(faults, tag, tmp_path, mode):
    _, cls = faults
    records = run_cases(cases(cls, *ORDER), {"faults": cls}, tmp_path / "run", timeout_s=3.0,
                        isolate=mode == "isolated", supervise=mode == "supervised", threads=FAULT_RUN_THREADS)
    _check(records, ISOLATED)
    by = {r.variant: r for r in records}
    assert "SIGSEGV" in by["segfault"].reason and "code 3" in by["exits"].reason
    if mode == "supervised":
        # the child's own alarm ends a Python hang (the child goes on); only the C hang is killed
        assert "killed" not in by["hang_python"].reason
        assert "did not stop at the alarm" in by["hang_c"].reason
    assert all(r.info["worker_overhead_ms"] >= 0 for r in records if r.status in ("ok", "failed", "oom"))


def _harness(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "harness", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_without_the_supervisor_a_crash_is_recorded_when_resumed(faults, tag, tmp_path):
    path, _ = faults
    out = tmp_path / "run"
    p = _harness("run", str(path), "--device", "cpu", "--variant", "ok,segfault,ok_after", "--out", str(out),
                 "--no-supervisor", "--quiet", "--no-progress")
    _, err = p.communicate(timeout=300)
    assert p.returncode == -signal.SIGSEGV
    assert "running case faults/segfault n=8" in err  # the fault handler's traceback names the case
    p = _harness("run", "--resume", str(out), "--quiet", "--no-progress")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1
    assert [(r.variant, r.status) for r in load_results(out).records] == [
        ("ok", "ok"), ("segfault", "crashed"), ("ok_after", "ok")]


def _wait_for_record(out: Path, variant: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = out / "running.json"
        try:
            if running.is_file() and json.loads(running.read_text())["variant"] == variant:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{variant} never started")


def _wait_for_the_hang(mark: Path, p: subprocess.Popen, timeout: float = 300) -> None:
    """Return once the worker is inside the hanging case (it touched ``mark``)."""
    deadline = time.monotonic() + timeout
    while not mark.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"hang_python never started (exit {p.poll()}): {p.stderr.read()[-2000:]}")
        time.sleep(0.05)


def test_sigkill_of_the_parent_then_resume(faults, tag, tmp_path, monkeypatch):
    path, _ = faults
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    p = _harness("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,ok_after", "--out", str(out),
                 "--isolate", "--timeout", "60", "--quiet", "--no-progress")
    _wait_for_record(out, "hang_python")
    _wait_for_the_hang(mark, p)  # the worker is inside the hanging case
    p.kill()
    p.communicate(timeout=60)
    # the worker does not outlive its parent (checked again by the fixture at the end)
    deadline = time.monotonic() + 10
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tagged_processes(tag)
    q = _harness("run", "--resume", str(out), "--quiet", "--no-progress")
    q.communicate(timeout=300)
    assert [(r.variant, r.status) for r in load_results(out).records] == [
        ("ok", "ok"), ("hang_python", "crashed"), ("ok_after", "ok")]


def test_sigterm_of_the_parent_marks_the_run_interrupted(faults, tag, tmp_path, monkeypatch):
    path, _ = faults
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    p = _harness("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,ok_after", "--out", str(out),
                 "--isolate", "--timeout", "60", "--quiet", "--no-progress")
    _wait_for_record(out, "hang_python")
    _wait_for_the_hang(mark, p)
    p.terminate()
    _, err = p.communicate(timeout=60)
    assert p.returncode == 143, err
    assert "Traceback" not in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["state"] == "interrupted"
    assert [r.variant for r in load_results(out, strict=False).records] == ["ok"]


def test_a_broken_file_beside_a_good_one(faults, tag, tmp_path, write_suite):
    path, _ = faults
    folder = path.parent
    write_suite("broken", "raise ImportError('no module named magic')\n", folder=folder)
    out = tmp_path / "run"
    p = _harness("run", str(folder), "--device", "cpu", "--variant", "ok", "--out", str(out), "--quiet",
                 "--no-progress")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1  # the broken file is a failed record
    assert "Traceback" not in err and "broken.py failed to load: ImportError: no module named magic" in err
    statuses = {(r.suite, r.variant): r.status for r in load_results(out).records}
    assert statuses == {("broken", "*"): "failed", ("faults", "ok"): "ok"}
    p = _harness("list", str(folder))
    listing, err = p.communicate(timeout=300)
    assert p.returncode == 1 and "faults:" in listing and "broken.py failed to load" in err


# --------------------------------------------------------------------------- items of the fault matrix,
# each as a user meets it on the command line: the default run (its cases in a supervised child
# process) and --isolate
MODES = {"default": [], "isolated": ["--isolate"]}


def _ended(p: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    """The run's output once it ends; a run that does not end is killed and fails the test."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"the run did not end within {timeout:g} s") from None


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_ends_the_run_interrupted_and_blames_no_case(faults, tag, tmp_path, monkeypatch, mode, sig, code):
    path, _ = faults
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    # as a terminal's foreground job gets it: a job started in the background by a shell without
    # job control (CI, nohup) inherits SIGINT ignored, and keeps ignoring it, as Unix intends
    p = _harness("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,ok_after", "--out", str(out),
                 "--timeout", "120", "--quiet", "--no-progress", *MODES[mode],
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_the_hang(mark, p)
    p.send_signal(sig)
    _, err = _ended(p, 120)
    assert p.returncode == code, err
    assert "Traceback" not in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["state"] == "interrupted"
    # the case that was running has no record: --resume runs it again
    assert [r.variant for r in load_results(out, strict=False).records] == ["ok"]


@pytest.mark.parametrize("mode", MODES)
def test_a_hang_in_c_a_segfault_and_an_exit_cost_one_case_each(faults, tag, tmp_path, mode):
    path, _ = faults
    out = tmp_path / "run"
    p = _harness("run", str(path), "--device", "cpu", "--variant", "ok,hang_c,segfault,exits,ok_after",
                 "--out", str(out), "--timeout", "3", "--quiet", "--no-progress", *MODES[mode])
    _, err = _ended(p)
    assert p.returncode == 1, err  # failures, no usage error
    run = load_results(out)
    assert run.finished and not run.duplicates
    assert [(r.variant, r.status) for r in run.records] == [
        ("ok", "ok"), ("hang_c", "timeout"), ("segfault", "crashed"), ("exits", "crashed"), ("ok_after", "ok")]


@pytest.mark.parametrize("mode", MODES)
def test_two_resumes_of_one_killed_run_run_each_case_once(faults, tag, tmp_path, monkeypatch, mode):
    path, _ = faults
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    p = _harness("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,raises,ok_after",
                 "--out", str(out), "--timeout", "3", "--quiet", "--no-progress", *MODES[mode])
    _wait_for_the_hang(mark, p)
    p.kill()
    _ended(p, 60)
    monkeypatch.delenv("FAULTS_HANG_MARK")
    resumes = [_harness("run", "--resume", str(out), "--quiet", "--no-progress") for _ in range(2)]
    ended = [_ended(q) for q in resumes]
    codes = sorted(q.returncode for q in resumes)
    assert codes == [1, 2], ended  # one resume ran the rest (with failures); the other was refused
    refused = ended[[q.returncode for q in resumes].index(2)][1].strip()
    assert len(refused.splitlines()) == 1 and "is being written by another harness process" in refused
    run = load_results(out)
    assert run.finished and not run.duplicates
    got = [(r.variant, r.status) for r in run.records]
    # the case the killed run was in is blamed once (crashed); every other case ran once
    assert sorted(got) == [("hang_python", "crashed"), ("ok", "ok"), ("ok_after", "ok"), ("raises", "failed")], got


LEAK_MODES = {**MODES, "worker-per-case": ["--worker-per-case"], "no-supervisor": ["--no-supervisor"]}


@pytest.mark.parametrize("mode", LEAK_MODES)
def test_a_variant_that_moves_cwd_environment_and_stdout_leaks_nothing(faults, tag, tmp_path, monkeypatch, mode):
    path, _ = faults
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("FAULTS_ELSEWHERE", str(elsewhere))
    monkeypatch.setenv("FAULTS_CWD", str(tmp_path))
    # a relative --out: the run writes where it was started, whatever a variant does to the cwd
    p = _harness("run", str(path), "--device", "cpu", "--variant", "ok,changes_process,checks_process,ok_after",
                 "--out", "run", "--quiet", "--no-progress", *LEAK_MODES[mode], cwd=tmp_path)
    _, err = _ended(p)
    assert p.returncode == 0, err
    run = load_results(tmp_path / "run")
    assert run.finished and [r.status for r in run.records] == ["ok"] * 4
    by = {r.variant: r for r in run.records}
    assert by["checks_process"].metrics["process_ok"].value == 1.0, "cwd, environment or stdout leaked"
    if mode != "worker-per-case":  # a fresh worker has nothing to put back
        assert set(by["changes_process"].info["restored_process_state"]) == {"cwd", "environ", "streams"}
    assert not any(elsewhere.iterdir())


def test_a_suite_a_child_cannot_load_runs_in_this_process_with_a_note(tmp_path, capsys):
    from harness import Metric, Profile, Suite, Timing, Workload, run_suites, variant

    class Local(Suite):  # defined in a function: a child process cannot import it
        name = "local"
        grid = {"n": [4]}
        profiles = {"quick": Profile(timing=Timing(warmup_s=0, budget_s=0.01, min_runs=2))}
        metrics = [Metric("pid", "", "higher", "the process that ran the case")]

        def prepare(self, params, device):
            return params["n"]

        @variant()
        def pid(self, n, params):
            return Workload(lambda: n * n, metrics={"pid": float(os.getpid())})

    run = run_suites([Local], out=tmp_path / "run")
    assert [r.status for r in run.records] == ["ok"]
    err = capsys.readouterr().err
    assert "suite local cannot be loaded by a child process" in err and "without a supervisor" in err
    assert run.records[0].metrics["pid"].value == os.getpid()


def test_a_script_without_a_main_guard_gets_the_supervisor_too(faults, tag, tmp_path):
    """run_suites() from a plain script: the child does not run the script again, and a segfault
    costs one case."""
    path, _ = faults
    script = tmp_path / "bench.py"
    script.write_text(
        "from harness import run_suites\n"
        "from harness.declare.registry import discover\n"
        f"cls = discover(extra=[{str(path)!r}], builtin=False).get('faults')\n"
        f"rs = run_suites([cls], device='cpu', out={str(tmp_path / 'run')!r}, variants=['ok', 'segfault', 'ok_after'])\n"
        "print('statuses', *[r.status for r in rs.records])\n")
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=tmp_path)
    out, err = _ended(p)
    assert p.returncode == 0, err
    assert out.splitlines() == ["statuses ok crashed ok"]
    assert load_results(tmp_path / "run").finished
