"""A temporary git repository holding a copy of the project, benchmarked by real asv.

Shared by tests/test_asv.py and tests/test_browser.py: :func:`asv_project` builds it once per
test session. Commit 1 is the project plus a small probe suite of two variants; commit 2 edits
one variant's implementation in the suite file so that it asks for 3x the work (3x slower; the
work it reports triples exactly, and its score drops): asv's benchmark version stays, so the
edited variant's graph keeps its history and shows the step; commit 3 changes the grid, which
starts a new history. ``asv run --python=same`` records each commit (the third for the probe
suite only), ``asv publish`` writes the HTML.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.paths import PROJECT_ROOT

MACHINE = "asv-test-box"
# One attention case (every quick-profile metric) and the probe suite's one case.
ASV_PARAM = "variant=softmax,sleep,steady;causal=false;pass=forward;inputs=gaussian"

PROBE_SUITE = '''"""Probe suite for the asv tests: sleeps, reports a higher-is-better score and the sleep it asks
for (the work, exact on any machine), logs each build."""

import os

from harness import Metric, Profile, Suite, Timing, Workload, variant
from suites.common import asvprobe_op

GRID = [2]

class AsvProbe(Suite):
    name = "asvprobe"
    description = "sleeps for a configured time (asv test probe)"
    grid = {"size": GRID}
    profiles = {"quick": Profile(timing=Timing(warmup_s=0.0, budget_s=0.05, min_runs=5, max_runs=20)),
                "default": Profile()}
    metrics = [Metric("score", "", "higher", "a quality score, higher is better", ratio=False),
               Metric("work", "ms", "lower", "the sleep one call asks for", ratio=False)]

    @variant()
    def sleep(self, state, params):
        log = os.environ.get("ASVPROBE_LOG")
        if log:
            with open(log, "a") as fh:
                fh.write(f"size={params['size']}\\n")
        factor = 1
        return Workload(lambda: asvprobe_op.work(params["size"] * factor), flops=0, items=params["size"],
                        metrics={"score": asvprobe_op.SCORE, "work": asvprobe_op.work_ms(params["size"] * factor)})

    @variant()
    def steady(self, state, params):
        return Workload(lambda: asvprobe_op.work(params["size"]), flops=0, items=params["size"],
                        metrics={"work": asvprobe_op.work_ms(params["size"])})
'''

PROBE_OP = '''"""The operation the probe suite times."""

import time

DELAY_S = {delay}
SCORE = {score}


def work(size):
    time.sleep(DELAY_S * size)


def work_ms(size):
    return DELAY_S * size * 1e3
'''


@dataclass
class AsvProject:
    root: Path
    commits: list[str]
    env: dict[str, str]
    probe_log: Path
    outputs: dict[str, str]

    @property
    def html_dir(self) -> Path:
        return self.root / ".asv" / "html"

    @property
    def results_dir(self) -> Path:
        return self.root / ".asv" / "results" / MACHINE


def asv_exe() -> str:
    exe = Path(sys.executable).parent / "asv"
    return str(exe) if exe.exists() else "asv"


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{out[-6000:]}")
    return out


def _copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in files:
        if not rel or rel.startswith(("tests/", "baselines/", ".ci/")):
            continue
        src = PROJECT_ROOT / rel
        if not src.is_file():
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(src.read_bytes())


def _git(root: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()


def _graph(root: Path, benchmark: str) -> str:
    """The published graph of ``benchmark`` on this machine's branch (JSON text)."""
    (path,) = [p for p in (root / ".asv" / "html" / "graphs").rglob(f"{benchmark}.json")
               if "branch-main" in p.parts and "summary" not in p.parts]
    return path.read_text()


_BUILT: dict[str, AsvProject] = {}


def asv_project(base: Path) -> AsvProject:
    """Build (once per session) the two-commit repository, run asv on both commits, publish."""
    if "project" in _BUILT:
        return _BUILT["project"]
    root = base / "project"
    root.mkdir(parents=True)
    _copy_project(root)
    suite = root / "suites" / "asvprobe.py"
    suite.write_text(PROBE_SUITE)
    op = root / "suites" / "common" / "asvprobe_op.py"
    op.write_text(PROBE_OP.format(delay=0.002, score=0.9))
    home = base / "home"
    home.mkdir()
    probe_log = base / "probe.log"
    env = {**os.environ, "HOME": str(home), "HARNESS_ASV_PARAM": ASV_PARAM, "HARNESS_ASV_DEVICE": "cpu",
           "HARNESS_ASV_THREADS": "1", "ASVPROBE_LOG": str(probe_log), "PYTHONDONTWRITEBYTECODE": "1",
           # asv's benchmark package imports the harness and suites as installed; here the
           # installed ones are this copy's
           "ASV_PYTHONPATH": str(root)}
    env.pop("HARNESS_ASV_K", None)
    env.pop("HARNESS_ASV_PROFILE", None)
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "project with the probe suite")
    commits = [_git(root, "rev-parse", "HEAD")]
    asv = asv_exe()
    outputs = {"machine": run([asv, "machine", "--yes", "--machine", MACHINE], root, env)}
    outputs["run1"] = run([asv, "run", "--python=same", "--set-commit-hash", commits[0], "--machine", MACHINE,
                           "--show-stderr"], root, env)
    # one variant's implementation 3x slower, its score down by a third
    suite.write_text(PROBE_SUITE.replace("factor = 1", "factor = 3"))
    op.write_text(PROBE_OP.format(delay=0.002, score=0.6))
    _git(root, "commit", "-q", "-am", "slower sleep variant")
    commits.append(_git(root, "rev-parse", "HEAD"))
    outputs["run2"] = run([asv, "run", "--python=same", "--set-commit-hash", commits[1], "--machine", MACHINE,
                           "--show-stderr"], root, env)
    run([asv, "publish"], root, env)
    outputs["graph2"] = _graph(root, "asvprobe.AsvProbe.track_latency")
    outputs["graph2_work"] = _graph(root, "asvprobe.AsvProbe.track_work")
    suite.write_text(PROBE_SUITE.replace("factor = 1", "factor = 3").replace("GRID = [2]", "GRID = [2, 3]"))
    _git(root, "commit", "-q", "-am", "probe grid grows")
    commits.append(_git(root, "rev-parse", "HEAD"))
    outputs["run3"] = run([asv, "run", "--python=same", "--set-commit-hash", commits[2], "--machine", MACHINE,
                           "--show-stderr", "--bench", "asvprobe"], root, env)
    outputs["publish"] = run([asv, "publish"], root, env)
    outputs["graph3"] = _graph(root, "asvprobe.AsvProbe.track_latency")
    _BUILT["project"] = AsvProject(root, commits, env, probe_log, outputs)
    return _BUILT["project"]
