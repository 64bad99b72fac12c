"""The fault matrix through the engine's API: the fault suite (tests/fault_suite.py) run in-process,
supervised and isolated. Each fault ends as its status, the healthy cases around it are ``ok``,
and after every test no process of the run is left. The items a user meets on the command line
(signals, hangs in C, concurrent resumes, leaks) are in tests/test_fault_items.py."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import load_results
from harness.plan import plan_suite
from harness.declare.registry import discover
from harness.run.session import run_cases

from fault_suite import (  # noqa: F401 (tag: a fixture)
    FAULT_RUN_THREADS, FAULTS, ended, harness_process, tag, tagged_processes, wait_for_record, wait_for_the_hang)

pytestmark = pytest.mark.slow  # runs of the faults suite: hangs, crashes, killed parents (minutes)


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


def test_without_the_supervisor_a_crash_is_recorded_when_resumed(faults, tag, tmp_path):
    path, _ = faults
    out = tmp_path / "run"
    p = harness_process("run", str(path), "--device", "cpu", "--variant", "ok,segfault,ok_after", "--out", str(out),
                        "--no-supervisor", "--quiet", "--no-progress")
    _, err = p.communicate(timeout=300)
    assert p.returncode == -signal.SIGSEGV
    assert "running case faults/segfault n=8" in err  # the fault handler's traceback names the case
    p = harness_process("run", "--resume", str(out), "--quiet", "--no-progress")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1
    assert [(r.variant, r.status) for r in load_results(out).records] == [
        ("ok", "ok"), ("segfault", "crashed"), ("ok_after", "ok")]


def test_sigkill_of_the_parent_then_resume(faults, tag, tmp_path, monkeypatch):
    path, _ = faults
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    p = harness_process("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,ok_after", "--out", str(out),
                        "--isolate", "--timeout", "60", "--quiet", "--no-progress")
    wait_for_record(out, "hang_python")
    wait_for_the_hang(mark, p)  # the worker is inside the hanging case
    p.kill()
    p.communicate(timeout=60)
    # the worker does not outlive its parent (checked again by the fixture at the end)
    deadline = time.monotonic() + 10
    while tagged_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tagged_processes(tag)
    q = harness_process("run", "--resume", str(out), "--quiet", "--no-progress")
    q.communicate(timeout=300)
    assert [(r.variant, r.status) for r in load_results(out).records] == [
        ("ok", "ok"), ("hang_python", "crashed"), ("ok_after", "ok")]


def test_sigterm_of_the_parent_marks_the_run_interrupted(faults, tag, tmp_path, monkeypatch):
    path, _ = faults
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    p = harness_process("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,ok_after", "--out", str(out),
                        "--isolate", "--timeout", "60", "--quiet", "--no-progress")
    wait_for_record(out, "hang_python")
    wait_for_the_hang(mark, p)
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
    p = harness_process("run", str(folder), "--device", "cpu", "--variant", "ok", "--out", str(out), "--quiet",
                        "--no-progress")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 1  # the broken file is a failed record
    assert "Traceback" not in err and "broken.py failed to load: ImportError: no module named magic" in err
    statuses = {(r.suite, r.variant): r.status for r in load_results(out).records}
    assert statuses == {("broken", "*"): "failed", ("faults", "ok"): "ok"}
    p = harness_process("list", str(folder))
    listing, err = p.communicate(timeout=300)
    assert p.returncode == 1 and "faults:" in listing and "broken.py failed to load" in err


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
    out, err = ended(p)
    assert p.returncode == 0, err
    assert out.splitlines() == ["statuses ok crashed ok"]
    assert load_results(tmp_path / "run").finished
