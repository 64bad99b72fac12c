"""The fault matrix's items as a user meets them on the command line, in the default run (its
cases in a supervised child process) and with --isolate: a signal ends the run, a hang in C, a
segfault and an exit cost one case each, two resumes of one killed run run each case once, and
a variant that moves the process's cwd, environment and stdout leaks nothing. After every test no
process of the run is left (the ``tag`` fixture).

Only ``harness.load_results`` and the command line are used, and duplicates are counted in
``records.jsonl`` itself, so these tests run against any version of the engine.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest

from harness import load_results

from fault_suite import ended, fault_file, harness_process, tag, wait_for_the_hang  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow  # runs of the fault suite: hangs, crashes, killed parents (minutes)

MODES = {"default": [], "isolated": ["--isolate"]}


def records_per_case(out: Path) -> Counter:
    """How many records each variant has in the run folder's records file, as written."""
    lines = (out / "records.jsonl").read_text().splitlines()
    return Counter(json.loads(line)["variant"] for line in lines if line.strip())



@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGHUP, 129)],
                         ids=["SIGTERM", "SIGINT", "SIGHUP"])
def test_a_signal_ends_the_run_interrupted_and_blames_no_case(fault_file, tag, tmp_path, monkeypatch, mode, sig, code):
    path = fault_file
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    # as a terminal's foreground job gets it: a job started in the background by a shell without
    # job control (CI, nohup) inherits SIGINT ignored, and keeps ignoring it, as Unix intends
    p = harness_process("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,ok_after", "--out", str(out),
                        "--timeout", "120", "--quiet", "--no-progress", *MODES[mode],
                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    wait_for_the_hang(mark, p)
    p.send_signal(sig)
    _, err = ended(p, 120)
    assert p.returncode == code, err
    assert "Traceback" not in err
    meta = json.loads((out / "run.json").read_text())
    assert meta["state"] == "interrupted"
    # the case that was running has no record: --resume runs it again
    assert [r.variant for r in load_results(out, strict=False).records] == ["ok"]


@pytest.mark.parametrize("mode", MODES)
def test_a_hang_in_c_a_segfault_and_an_exit_cost_one_case_each(fault_file, tag, tmp_path, mode):
    path = fault_file
    out = tmp_path / "run"
    p = harness_process("run", str(path), "--device", "cpu", "--variant", "ok,hang_c,segfault,exits,ok_after",
                        "--out", str(out), "--timeout", "3", "--quiet", "--no-progress", *MODES[mode])
    _, err = ended(p)
    assert p.returncode == 1, err  # failures, no usage error
    run = load_results(out)
    assert run.finished and set(records_per_case(out).values()) == {1}
    assert [(r.variant, r.status) for r in run.records] == [
        ("ok", "ok"), ("hang_c", "timeout"), ("segfault", "crashed"), ("exits", "crashed"), ("ok_after", "ok")]


@pytest.mark.parametrize("mode", MODES)
def test_two_resumes_of_one_killed_run_run_each_case_once(fault_file, tag, tmp_path, monkeypatch, mode):
    path = fault_file
    mark = tmp_path / "hanging"
    monkeypatch.setenv("FAULTS_HANG_MARK", str(mark))
    out = tmp_path / "run"
    p = harness_process("run", str(path), "--device", "cpu", "--variant", "ok,hang_python,raises,ok_after",
                        "--out", str(out), "--timeout", "3", "--quiet", "--no-progress", *MODES[mode])
    wait_for_the_hang(mark, p)
    p.kill()
    ended(p, 60)
    monkeypatch.delenv("FAULTS_HANG_MARK")
    resumes = [harness_process("run", "--resume", str(out), "--quiet", "--no-progress") for _ in range(2)]
    outputs = [ended(q) for q in resumes]
    codes = sorted(q.returncode for q in resumes)
    assert codes == [1, 2], outputs  # one resume ran the rest (with failures); the other was refused
    refused = outputs[[q.returncode for q in resumes].index(2)][1].strip()
    assert len(refused.splitlines()) == 1 and "is being written by another harness process" in refused
    run = load_results(out)
    assert run.finished and set(records_per_case(out).values()) == {1}
    got = [(r.variant, r.status) for r in run.records]
    # the case the killed run was in is blamed once (crashed); every other case ran once
    assert sorted(got) == [("hang_python", "crashed"), ("ok", "ok"), ("ok_after", "ok"), ("raises", "failed")], got


LEAK_MODES = {**MODES, "worker-per-case": ["--worker-per-case"], "no-supervisor": ["--no-supervisor"]}


@pytest.mark.parametrize("mode", LEAK_MODES)
def test_a_variant_that_moves_cwd_environment_and_stdout_leaks_nothing(fault_file, tag, tmp_path, monkeypatch, mode):
    path = fault_file
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("FAULTS_ELSEWHERE", str(elsewhere))
    monkeypatch.setenv("FAULTS_CWD", str(tmp_path))
    # a relative --out: the run writes where it was started, whatever a variant does to the cwd
    p = harness_process("run", str(path), "--device", "cpu", "--variant", "ok,changes_process,checks_process,ok_after",
                        "--out", "run", "--quiet", "--no-progress", *LEAK_MODES[mode], cwd=tmp_path)
    _, err = ended(p)
    assert p.returncode == 0, err
    run = load_results(tmp_path / "run")
    assert run.finished and [r.status for r in run.records] == ["ok"] * 4
    by = {r.variant: r for r in run.records}
    assert by["checks_process"].metrics["process_ok"].value == 1.0, "cwd, environment or stdout leaked"
    if mode != "worker-per-case":  # a fresh worker has nothing to put back
        assert set(by["changes_process"].info["restored_process_state"]) == {"cwd", "environ", "streams"}
    assert not any(elsewhere.iterdir())


