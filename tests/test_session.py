"""The run session: every run folder is complete, whoever starts the run."""

from __future__ import annotations

import json

import pytest

from harness import load_results, run_suites
from harness.results.baseline import save_baseline
from harness.cli import main
from harness.plan import PlanError, plan_suite
from harness.declare.registry import discover
from harness.results import ResultsError
from harness.run.session import RunOptions, RunSession, SessionError, new_run_folder


def toy(path):
    return discover(extra=[path], builtin=False).get("toy")


def test_a_run_from_python_is_a_complete_run_folder(toy_suite_file, tmp_path, capsys):
    cls = toy(toy_suite_file)
    out = tmp_path / "py-run"
    results = run_suites([cls], profile="quick", device="cpu", out=out, variants=["ok", "skips"])
    assert [r.variant for r in results.records] == ["ok", "skips"]
    meta = json.loads((out / "run.json").read_text())
    assert meta["state"] == "finished" and meta["finished"] and meta["n_cases"] == 2
    assert meta["cases"] == [{"suite": "toy", "variant": "ok", "params": {"n": 8}},
                             {"suite": "toy", "variant": "skips", "params": {"n": 8}}]
    declared = meta["suites"]["toy"]
    assert declared["reference"] == "ok"
    assert declared["metrics"]["latency"]["kind"] == "time"
    assert declared["metrics"]["score"] == {"unit": "points", "better": "higher", "kind": "quality", "ratio": True,
                                            "description": ""}
    assert json.loads((out / "environment.json").read_text())["device"] == "cpu"
    assert results.records[0].metrics["latency"].kind == "time"

    # export renders it with ratios to the reference, compare accepts it against a second run
    assert main(["export", str(out), "--metric", "score"]) == 0
    assert "ratio to ok; device cpu" in capsys.readouterr().out
    run_suites([cls], profile="quick", device="cpu", out=tmp_path / "py-run-2", variants=["ok", "skips"])
    code = main(["compare", str(out), str(tmp_path / "py-run-2"), "--format", "json"])
    report = json.loads(capsys.readouterr().out)
    assert code in (0, 1) and report["rows"]
    assert report["a"]["device"] == report["b"]["device"]


def test_registered_suites_by_name(tmp_path):
    results = run_suites(["attention"], profile="quick", device="cpu", out=tmp_path / "att",
                         variants=["sdpa"], params={"causal": [False], "pass": ["forward"], "inputs": ["gaussian"]})
    (record,) = results.records
    assert record.status == "ok" and record.metrics["rel_error"].kind == "quality"
    assert load_results(tmp_path / "att").finished


class _InterruptAfter:
    """An executor that runs ``n`` cases, then behaves as if the user pressed Ctrl-C."""

    def __init__(self, inner, n):
        self.inner, self.n, self.closed = inner, n, False

    def run(self, case, timeout_s=None):
        if self.n == 0:
            raise KeyboardInterrupt
        self.n -= 1
        return self.inner.run(case, timeout_s)

    def close(self):
        self.closed = True
        self.inner.close()


def test_an_interrupted_run_is_marked_and_refused_as_a_baseline(toy_suite_file, tmp_path, capsys):
    from harness.run.executors import CaseExecutor

    cls = toy(toy_suite_file)
    cases = [c for c in plan_suite(cls, "quick", "cpu") if c.variant in ("ok", "raises", "skips")]
    executor = _InterruptAfter(CaseExecutor({"toy": cls}), 1)
    session = RunSession(tmp_path / "cut", cases, {"toy": cls}, RunOptions(device="cpu"), executor=executor)
    with pytest.raises(KeyboardInterrupt):
        session.run()
    assert executor.closed
    meta = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert meta["state"] == "interrupted" and not meta["finished"] and meta["status_counts"] == {"ok": 1}
    rs = load_results(tmp_path / "cut")
    assert not rs.finished and len(rs.records) == 1
    assert "is interrupted: 1 records of 3 planned" in rs.warnings[-1]
    with pytest.raises(ResultsError, match="unfinished run"):
        save_baseline(tmp_path / "cut", "partial", tmp_path / "baselines")
    assert save_baseline(tmp_path / "cut", "partial", tmp_path / "baselines", force=True).is_file()
    assert main(["export", str(tmp_path / "cut")]) == 0
    assert "harness: warning: run" in capsys.readouterr().err


def test_run_folder_rules(toy_suite_file, tmp_path):
    cls = toy(toy_suite_file)
    cases = plan_suite(cls, "quick", "cpu")[:1]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    with pytest.raises(SessionError, match="not empty"):
        RunSession(tmp_path / "full", cases, {"toy": cls})
    (tmp_path / "file").write_text("")
    with pytest.raises(SessionError, match="not a folder"):
        RunSession(tmp_path / "file", cases, {"toy": cls})
    # two runs started in the same second get their own folders
    first = new_run_folder("20260101-000000-cpu", tmp_path / "runs")
    second = new_run_folder("20260101-000000-cpu", tmp_path / "runs")
    assert first[1] != second[1] and second[0] == "20260101-000000-cpu-2"


@pytest.mark.slow
def test_a_killed_run_resumes_and_names_the_case_that_was_running(toy_suite_file, tmp_path):
    """In this process (--no-supervisor), a case that kills the process takes the run down;
    --resume records it as crashed and finishes the rest with the same plan."""
    import subprocess
    import sys

    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "harness", "run", str(toy_suite_file), "--device", "cpu",
            "--variant", "ok,dies,skips", "--out", str(out), "--no-supervisor", "--no-progress", "--quiet"]
    first = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert first.returncode == -9  # the 'dies' variant SIGKILLs its own process
    meta = json.loads((out / "run.json").read_text())
    assert meta["state"] == "running" and not meta["finished"]
    rs = load_results(out, strict=False)
    assert [r.variant for r in rs.records] == ["ok"]
    assert "was killed or crashed" in rs.warnings[-1] and "--resume" in rs.warnings[-1]
    assert json.loads((out / "running.json").read_text())["variant"] == "dies"

    again = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out), "--no-progress",
                            "--quiet"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1, again.stderr  # a crashed case fails the run
    assert "the run stopped while running toy/dies n=8; recorded as crashed" in again.stderr
    rs = load_results(out)
    assert [(r.variant, r.status) for r in rs.records] == [("ok", "ok"), ("dies", "crashed"), ("skips", "skipped")]
    assert rs.finished and not (out / "running.json").exists()
    assert json.loads((out / "run.json").read_text())["resumed_at"]
    with pytest.raises(SessionError, match="has finished"):
        RunSession.resume(out)


def test_resume_refuses_a_changed_plan(toy_suite_file, tmp_path):
    from harness.plan import plan_cases
    from harness.results.store import FolderBusy
    from harness.run.executors import CaseExecutor

    cls = toy(toy_suite_file)
    cases = plan_cases([cls], "quick", "cpu", only_variants=["ok", "raises"])
    options = RunOptions(device="cpu", profile="quick", variants=["ok", "raises"])
    session = RunSession(tmp_path / "r", cases, {"toy": cls}, options,
                         executor=_InterruptAfter(CaseExecutor({"toy": cls}), 1))
    with pytest.raises(KeyboardInterrupt):
        session.run()
    resumed = RunSession.resume(tmp_path / "r")
    assert [r.variant for r in resumed.records] == ["ok"] and len(resumed.cases) == 2
    with pytest.raises(FolderBusy, match="being written by another harness process"):
        RunSession.resume(tmp_path / "r")  # the resumed session holds the folder until it runs or closes
    resumed.close()
    meta = json.loads((tmp_path / "r" / "run.json").read_text())
    meta["cases"] = meta["cases"][:1]
    (tmp_path / "r" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(SessionError, match="plan has changed"):
        RunSession.resume(tmp_path / "r")


def test_rounds_interleave_every_case_and_resume_by_round(toy_suite_file, tmp_path):
    """--rounds 3: round 2 runs the plan backwards after round 1 has ended; the loaded run has
    one aggregated record per case whose metrics keep the per-round values; a run cut in round 2
    resumes with the missing (case, round) pairs only."""
    from harness.run.executors import CaseExecutor

    cls = toy(toy_suite_file)
    cases = [c for c in plan_suite(cls, "quick", "cpu") if c.variant in ("ok", "skips")]
    session = RunSession(tmp_path / "r3", cases, {"toy": cls}, RunOptions(device="cpu", rounds=3))
    rs = session.run()
    order = [(r.variant, r.info["round"]) for r in rs.round_records]
    assert order == [("ok", 0), ("skips", 0), ("skips", 1), ("ok", 1), ("ok", 2), ("skips", 2)]
    meta = json.loads((tmp_path / "r3" / "run.json").read_text())
    assert meta["rounds"] == 3 and meta["threads"] == 1 and meta["threads_source"].startswith("default")
    loaded = load_results(tmp_path / "r3")
    assert loaded.rounds == 3 and [r.variant for r in loaded.records] == ["ok", "skips"]
    ok = loaded.records[0]
    lat = ok.metrics["latency"]
    assert len(lat.extra["rounds"]) == 3 and lat.value == sorted(lat.extra["rounds"])[1]
    assert ok.info["rounds"] == 3 and len(ok.info["stopped_by_rounds"]) == 3

    executor = _InterruptAfter(CaseExecutor({"toy": cls}), 3)
    cut = RunSession(tmp_path / "cut3", cases, {"toy": cls}, RunOptions(device="cpu", rounds=2, profile="quick", variants=["ok", "skips"]),
                     executor=executor)
    with pytest.raises(KeyboardInterrupt):
        cut.run()
    resumed = RunSession.resume(tmp_path / "cut3")
    assert resumed.options.rounds == 2
    done = resumed.run_remaining()
    assert sorted((r.variant, r.info["round"]) for r in done.round_records) == [
        ("ok", 0), ("ok", 1), ("skips", 0), ("skips", 1)]


def test_cpu_thread_default_and_hint():
    from harness.run.session import cpu_thread_hint, default_cpu_threads

    n, why = default_cpu_threads()
    assert n >= 1 and "usable cores" in why
    assert cpu_thread_hint("cpu", 2, cores=2, load=3.5).startswith("hint: 2 torch threads on 2 cores")
    assert cpu_thread_hint("cpu", 1, cores=2, load=0.2) == ""
    assert cpu_thread_hint("cpu", 8, cores=16, load=1.0) == ""
    assert cpu_thread_hint("cuda", 64, cores=2, load=9.0) == ""


def test_run_json_holds_the_typed_request_and_resume_reads_it_back(toy_suite_file, tmp_path):
    """--param n=4,2 is typed once (by the suite's declared ints): run.json holds ints, resume
    rebuilds the same frozen request from them, and a run.json of earlier versions (param values
    as text) still resumes to the same plan."""
    from harness.run.executors import CaseExecutor
    from harness.run.request import RunRequest, build_request, plan_request

    cls = toy(toy_suite_file)
    request = build_request([cls], profile="quick", device="cpu", params={"n": ["4", 2]}, variants=["ok"],
                            shard="1/1", rounds=2)
    assert request.param_overrides == {"n": (4, 2)} and request.shard == (1, 1) and request.variants == ("ok",)
    cases = plan_request(request, [cls])
    assert [c.params_dict["n"] for c in cases] == [4, 2]
    session = RunSession(tmp_path / "t", cases, {"toy": cls}, request,
                         executor=_InterruptAfter(CaseExecutor({"toy": cls}), 1))
    with pytest.raises(KeyboardInterrupt):
        session.run()
    meta = json.loads((tmp_path / "t" / "run.json").read_text())
    assert meta["param_overrides"] == {"n": [4, 2]} and meta["shard"] == "1/1" and meta["rounds"] == 2
    resumed = RunSession.resume(tmp_path / "t")
    assert isinstance(resumed.request, RunRequest)
    assert resumed.request.param_overrides == {"n": (4, 2)} and resumed.cases == cases
    resumed.close()
    meta["param_overrides"] = {"n": ["4", "2"]}  # as the previous version wrote it
    (tmp_path / "t" / "run.json").write_text(json.dumps(meta))
    resumed = RunSession.resume(tmp_path / "t")
    assert resumed.request.param_overrides == {"n": (4, 2)} and resumed.cases == cases
    resumed.close()
    assert main(["run", "--resume", str(tmp_path / "t"), "--quiet", "--no-progress", "--allow-failures"]) == 0
    assert {(r.params["n"], r.info["round"]) for r in load_results(tmp_path / "t").round_records} == {
        (4, 0), (2, 0), (4, 1), (2, 1)}


def test_run_suites_checks_its_python_values_once_at_the_edge(toy_suite_file, tmp_path):
    cls = toy(toy_suite_file)
    with pytest.raises(PlanError, match="rounds must be at least 1, not 0"):
        run_suites([cls], out=tmp_path / "x", rounds=0)
    with pytest.raises(PlanError, match="n: malformed value"):
        run_suites([cls], out=tmp_path / "x", params={"n": ["four"]})
    assert not (tmp_path / "x").exists()


def test_a_cpu_run_is_pinned_to_recorded_cores_and_the_affinity_is_put_back(toy_suite_file, tmp_path, capsys):
    """By default the last --threads cores; --cpus names them; --cpus all pins nothing; run.json
    records them, and the process gets its own affinity back after the run."""
    import os

    allowed = sorted(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    out = tmp_path / "default"
    assert main(["run", str(toy_suite_file), "--device", "cpu", "--variant", "ok", "--threads", "1", "--out",
                 str(out), "--quiet", "--no-progress", "--no-supervisor"]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["pinned_cpus"] == allowed[-1:] and meta["pin"] is True and meta["cpus"] is None
    assert os.sched_getaffinity(0) == before
    out = tmp_path / "named"
    assert main(["run", str(toy_suite_file), "--device", "cpu", "--variant", "ok", "--cpus", str(allowed[0]),
                 "--threads", "1", "--out", str(out), "--quiet", "--no-progress"]) == 0
    assert json.loads((out / "run.json").read_text())["pinned_cpus"] == [allowed[0]]
    out = tmp_path / "all"
    assert main(["run", str(toy_suite_file), "--device", "cpu", "--variant", "ok", "--cpus", "all", "--out",
                 str(out), "--quiet", "--no-progress"]) == 0
    meta = json.loads((out / "run.json").read_text())
    assert meta["pinned_cpus"] is None and "not pinned" in meta["pin_note"]
    # more threads than the named cores is one line, exit 2
    capsys.readouterr()
    assert main(["run", str(toy_suite_file), "--device", "cpu", "--cpus", str(allowed[0]), "--threads", "2",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "more than the 1 core(s) of --cpus" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
