"""``harness ab``: two commits of a repository measured side by side, paired.

Each test makes a small git repository whose suite changes between two commits (a variant made
2x slower, a variant that starts failing, a variant added), then runs the command as a user
would. No wall-clock time is asserted: a 2x slowdown is found by the paired rounds, whatever the
machine's load; untouched variants are not flagged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness import load_results

pytestmark = pytest.mark.slow  # two worker processes per test, each importing torch

PROBE = '''
import torch

from harness import Metric, Profile, Suite, Timing, Workload, variant

WORK = {work}  # matmuls per call of the 'slowed' variant
FAIL = {fail}


class Probe(Suite):
    name = "probe"
    grid = {{"n": [48]}}
    profiles = {{"quick": Profile(timing=Timing(warmup_s=0.01, budget_s=0.05, min_runs=3)), "default": Profile(),
                "nightly": Profile()}}
    reference = "steady"
    metrics = [Metric("score", "", "higher", "a quality score")]

    def prepare(self, params, device):
        return torch.randn(params["n"], params["n"])

    def _chain(self, x, count):
        def fn():
            y = x
            for _ in range(count):
                y = torch.tanh(y @ x)
            return y
        return fn

    @variant()
    def steady(self, x, params):
        return Workload(self._chain(x, 4), metrics={{"score": 1.0}})

    @variant()
    def slowed(self, x, params):
        return Workload(self._chain(x, WORK), metrics={{"score": 1.0}})

    @variant()
    def breaks(self, x, params):
        if FAIL:
            raise RuntimeError("the new code path is broken")
        return Workload(self._chain(x, 4), metrics={{"score": 1.0}})

    @variant()
    def crashes(self, x, params):
        import ctypes
        if FAIL:
            return Workload(lambda: ctypes.string_at(0))  # a segfault in the timed call
        return Workload(self._chain(x, 4), metrics={{"score": 1.0}})

    @variant()
    def hangs(self, x, params):
        import time
        if FAIL:
            def forever():
                while True:
                    time.sleep(0.01)
            return Workload(forever)
        return Workload(self._chain(x, 4), metrics={{"score": 1.0}})
{extra}'''

ADDED = '''
    @variant()
    def added(self, x, params):
        return Workload(self._chain(x, 4), metrics={"score": 1.0})
'''


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.com", "-c", "user.name=t", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout.strip()


def _write_probe(path: Path, work: int = 4, fail: bool = False, extra: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(PROBE.format(work=work, fail=fail, extra=extra)))


@pytest.fixture
def repo(tmp_path, monkeypatch) -> Path:
    """Commit 1: the probe suite; commit 2: 'slowed' does 2x the work, 'breaks' raises, 'added' is new."""
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q")
    _write_probe(root / "suites" / "probe.py")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "probe")
    _write_probe(root / "suites" / "probe.py", work=8, fail=True, extra=ADDED)
    _git(root, "commit", "-qam", "slower")
    # worktrees of the commits go under a cache of this test's own
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    return root


def _ab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", "ab", *args, "--device", "cpu", "--no-progress"],
                          cwd=cwd, capture_output=True, text=True, timeout=900)


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    doc = json.loads((out / "ab.json").read_text())
    return {(r["variant"], r["metric"]): r for r in doc["comparison"]["rows"]}


def test_a_2x_slowdown_and_a_broken_variant_fail_the_gate_and_nothing_else_is_flagged(repo, tmp_path):
    out = tmp_path / "ab"
    done = _ab("HEAD~1", "HEAD", "--variant", "steady,slowed,breaks,added", "--out", str(out), "--quiet", cwd=repo)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    rows = _rows(out)
    slowed = rows[("slowed", "latency")]
    assert slowed["verdict"] == "slower" and slowed["ratio_low"] > 1.0, slowed
    assert rows[("steady", "latency")]["verdict"] in ("same", "noisy"), rows[("steady", "latency")]
    assert any(r["variant"] == "breaks" and r["verdict"] == "failed" for r in rows.values())
    doc = json.loads((out / "ab.json").read_text())
    assert doc["paired"]["only_b"] == ["probe/added n=48"]
    assert "only on side B" in done.stderr + (out / "ab.md").read_text()
    # every paired case has its rounds and both sides' values
    for case in doc["paired"]["cases"]:
        if case["a_status"] == case["b_status"] == "ok":
            assert case["verdict"]["rounds"] >= 10 and len(case["ratios"]) == case["verdict"]["rounds"]
    # the sides are plain run folders of the same cases, with their commits
    a, b = load_results(out / "a"), load_results(out / "b")
    assert a.finished and b.finished
    assert sorted(r.key for r in a.records) == sorted(r.key for r in b.records)
    run_a = json.loads((out / "a" / "run.json").read_text())
    assert run_a["ab"]["commit"] == _git(repo, "rev-parse", "HEAD~1") and run_a["ab"]["cpus"]
    assert {r.variant: r.status for r in b.records}["breaks"] == "failed"
    # the report of the ab folder: side B's run with the paired comparison (exit 1: the regression)
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(out), "--output",
                             str(tmp_path / "ab.html")], capture_output=True, text=True, timeout=300)
    assert report.returncode == 1 and "Traceback" not in report.stderr, report.stderr
    page = (tmp_path / "ab.html").read_text()
    assert "slower" in page and "paired" in page


def test_a_commit_against_itself_passes_pinned_to_the_chosen_core(repo, tmp_path):
    import os

    core = max(os.sched_getaffinity(0))
    out = tmp_path / "ab"
    done = _ab("HEAD", "HEAD", "--variant", "steady,slowed", "--cpus", str(core), "--out", str(out), cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "| verdict |" in done.stdout and "paired" in done.stdout
    for side in ("a", "b"):
        assert json.loads((out / side / "run.json").read_text())["ab"]["cpus"] == [core]
    assert {r["verdict"] for r in _rows(out).values()} <= {"same", "noisy"}


def test_two_checkouts_of_a_repository_that_holds_only_suite_files(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _write_probe(one / "bench" / "probe.py")
    _write_probe(two / "bench" / "probe.py", work=8)
    out = tmp_path / "ab"
    done = _ab("--a-path", str(one), "--b-path", str(two), "bench/probe.py", "--variant", "steady,slowed",
               "--out", str(out), "--quiet", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    rows = _rows(out)
    assert rows[("slowed", "latency")]["verdict"] == "slower"


@pytest.mark.parametrize("args,message", [
    (["HEAD"], "needs two refs"),
    (["nope", "HEAD"], "'nope' is not a commit"),
    (["HEAD", "HEAD", "--a-path", "."], "--a-path and --b-path go together"),
    (["HEAD", "HEAD", "--cpus", "0", "--threads", "2"], "more than the 1 pinned core"),
    (["HEAD", "HEAD", "--cpus", "4096"], "not among the cores"),
    (["HEAD", "HEAD", "--cpus", "a-b"], "expected core numbers"),
    (["HEAD", "HEAD", "nosuch"], "unknown suite 'nosuch'"),
    (["HEAD", "HEAD", "--variant", "nope"], "unknown variant 'nope': neither side has it"),
    (["HEAD", "HEAD", "other/probe.py"], "has no other/probe.py"),
])
def test_bad_input_is_one_line(repo, tmp_path, args, message):
    done = _ab(*args, "--out", str(tmp_path / "ab"), cwd=repo)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "ab").exists()  # nothing written


def test_outside_a_git_checkout_is_one_line(tmp_path):
    done = _ab("HEAD~1", "HEAD", cwd=tmp_path)
    assert done.returncode == 2 and "not inside a git checkout" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_engine_sides_needs_the_worker_in_the_sides_harness(repo, tmp_path):
    fake = repo / "harness"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "an engine without the ab worker")
    done = _ab("HEAD", "HEAD", "--engine", "sides", "--out", str(tmp_path / "ab"), cwd=repo)
    assert done.returncode == 2 and "has no ab worker" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    shutil.rmtree(fake)


def test_a_crash_and_a_hang_on_one_side_are_records_and_the_run_goes_on(repo, tmp_path):
    out = tmp_path / "ab"
    done = _ab("HEAD~1", "HEAD", "--variant", "steady,crashes,hangs,slowed", "--timeout", "20", "--out", str(out),
               "--quiet", cwd=repo)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    statuses = {r.variant: r.status for r in load_results(out / "b").records}
    assert statuses == {"steady": "ok", "crashes": "crashed", "hangs": "timeout", "slowed": "ok"}, statuses
    assert {r.status for r in load_results(out / "a").records} == {"ok"}
    rows = _rows(out)
    assert rows[("slowed", "latency")]["verdict"] == "slower"  # measured after the crash and the hang
    assert "SIGSEGV" in next(r.reason for r in load_results(out / "b").records if r.variant == "crashes")


def test_a_killed_driver_leaves_no_worker_behind(repo, tmp_path):
    """The driver killed (SIGKILL) while side B's worker is inside a hung batch: the worker's
    guardian ends it."""
    import os
    import signal
    import time
    import uuid

    tag = uuid.uuid4().hex
    env = {**os.environ, "AB_TEST_TAG": tag}
    p = subprocess.Popen([sys.executable, "-m", "harness", "ab", "HEAD~1", "HEAD", "--variant", "hangs", "--device",
                          "cpu", "--no-progress", "--out", str(tmp_path / "ab")], cwd=repo, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tagged() -> list[int]:
        found = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and int(proc.name) != p.pid:
                try:
                    if f"AB_TEST_TAG={tag}".encode() in (proc / "environ").read_bytes() and \
                            (proc / "stat").read_text().split(")")[-1].split()[0] != "Z":
                        found.append(int(proc.name))
                except OSError:
                    pass
        return found

    deadline = time.monotonic() + 300
    while len(tagged()) < 2 and time.monotonic() < deadline:  # both workers are up
        time.sleep(0.5)
    time.sleep(15)  # side B is inside its hung call
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.monotonic() + 20
    while tagged() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tagged()
