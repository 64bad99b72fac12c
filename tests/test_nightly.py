"""The nightly script on a CPU profile: it runs isolated cases with a time limit, finds the
stored baseline among several (no pipe race), compares, reports and exits by the outcome."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

pytestmark = pytest.mark.slow  # the nightly script over whole runs

ROOT = Path(__file__).resolve().parent.parent

PROBE = '''
from harness import Metric, Profile, Suite, Timing, Workload, variant


class NightlyProbe(Suite):
    name = "nightlyprobe"
    grid = {"n": [16]}
    profiles = {"quick": Profile(timing=Timing(warmup_s=0, budget_s=0.02, min_runs=5)), "default": Profile(),
                "nightly": Profile()}
    reference = "a"
    metrics = [Metric("score", "", "higher", "a quality score")]

    @variant()
    def a(self, state, params):
        import torch
        x = torch.ones(params["n"], params["n"])
        return Workload(lambda: x @ x, metrics={"score": 1.0})

    @variant()
    def b(self, state, params):
        import torch
        x = torch.ones(params["n"], params["n"])
        return Workload(lambda: x + x, flops=0, metrics={"score": 0.5})
'''


def test_nightly_compares_with_the_baseline_among_several(tmp_path, capsys):
    probe = tmp_path / "nightlyprobe.py"
    probe.write_text(PROBE)
    baselines = tmp_path / "baselines"
    first = tmp_path / "first"
    assert main(["run", str(probe), "--device", "cpu", "--out", str(first), "--no-progress", "--quiet"]) == 0
    for name in ("cpu-quick", "another", "zz-third"):  # cpu-quick is not the last one listed
        assert main(["baseline", "save", str(first), "--name", name, "--dir", str(baselines)]) == 0
    capsys.readouterr()
    artifacts = tmp_path / "artifacts"
    env = {**os.environ, "PROFILE": "quick", "DEVICE": "cpu", "SUITES": str(probe), "SKIP_ASV": "1",
           "OUT": str(tmp_path / "night"), "ARTIFACTS": str(artifacts), "HARNESS_BASELINES_DIR": str(baselines),
           "HARNESS": str(Path(sys.executable).parent / "harness"), "CASE_TIMEOUT": "120",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "nightly.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "comparison skipped" not in done.stdout
    compare_md = (artifacts / "compare.md").read_text()
    assert "### Comparison: B = run " in compare_md and "A = baseline cpu-quick on cpu" in compare_md
    assert (artifacts / "compare.json").is_file() and (artifacts / "report.html").is_file()
    meta = (tmp_path / "night" / "run.json").read_text()
    assert '"isolate": true' in meta and '"timeout_s": 120.0' in meta and '"threads": 1' in meta
    assert '"rounds": 3' in meta
