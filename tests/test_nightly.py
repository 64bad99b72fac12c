"""The nightly script: its gate is `harness ab` of the last green commit against HEAD, measured
now on this machine; a weekly ab against a fixed anchor; the stored baseline kept for history (one
from another device is a one-line note, not a failure); each night in a fresh folder of its own.
The fast tests drive the script with a stub HARNESS that writes what each command would; the slow
one runs the real harness (GATE=baseline, then the device note from the real `harness compare`)."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "nightly.sh"
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.invalid", "GIT_CONFIG_NOSYSTEM": "1"}
# Settings a developer's shell may hold that would change a night's course.
NIGHT_SETTINGS = ("PROFILE", "DEVICE", "GATE", "GREEN", "LAST_GREEN", "ANCHOR", "WEEKDAY", "ANCHOR_EVERY_DAY", "BASELINE", "OUT",
                  "ARTIFACTS", "SUITES", "THREADS", "CPUS", "AB_ARGS", "ROUNDS", "CASE_TIMEOUT", "SKIP_ASV",
                  "HARNESS_BASELINES_DIR")
REFUSAL = ("harness: error: refusing to compare results from different devices: A was measured on cpu (Intel Xeon), "
           "B on cpu (AMD EPYC); pass --force to compare anyway")

STUB = '''#!{python}
"""A stand-in for `harness`: logs its arguments, writes what each command would, exits as told."""
import json, os, sys
from pathlib import Path

args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")


def opt(name):
    return args[args.index(name) + 1] if name in args else None


def run_folder(path):
    path.mkdir(parents=True)  # fails where it exists: every night writes into a fresh folder
    (path / "run.json").write_text('{{"device": "cpu"}}')


cmd = args[0]
if cmd == "ab":
    out = Path(opt("--out"))
    code = int(os.environ.get("STUB_ANCHOR_EXIT" if out.name == "anchor" else "STUB_AB_EXIT", "0"))
    if code == 2:
        print("harness: error: cannot check out the commit", file=sys.stderr)
        sys.exit(2)
    run_folder(out / "a")
    run_folder(out / "b")
    (out / "ab.md").write_text(f"| STUB AB TABLE {{out.name}}: {{args[1][:12]}} vs {{args[2][:12]}} | exit {{code}} |\\n")
    (out / "ab.json").write_text("{{}}")
    sys.exit(code)
if cmd == "run":
    run_folder(Path(opt("--out")))
    sys.exit(int(os.environ.get("STUB_RUN_EXIT", "0")))
if cmd in ("report", "export"):
    Path(opt("--output")).write_text(cmd)
    sys.exit(0)
if cmd == "baseline":
    print(os.environ.get("STUB_BASELINES", ""))
    sys.exit(0)
if cmd == "compare":
    if os.environ.get("STUB_COMPARE_REFUSES"):
        print({refusal!r}, file=sys.stderr)
        sys.exit(2)
    code = int(os.environ.get("STUB_COMPARE_EXIT", "0"))
    if code == 2:
        print("harness: error: baseline file is not JSON", file=sys.stderr)
        sys.exit(2)
    Path(opt("--output")).write_text("compare " + opt("--format"))
    sys.exit(code)
sys.exit(2)
'''


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_ENV}, capture_output=True, text=True,
                          check=True)
    return done.stdout.strip()


def commit(repo: Path, text: str) -> str:
    (repo / "file.txt").write_text(text)
    git(repo, "add", "file.txt")
    git(repo, "commit", "-q", "-m", text)
    return git(repo, "rev-parse", "HEAD")


class Nights:
    """A git checkout, an artifacts folder and a stub harness; night(...) runs the script once."""

    def __init__(self, tmp_path: Path, commits: int = 2):
        self.repo = tmp_path / "repo"
        self.repo.mkdir()
        git(self.repo, "init", "-q")
        self.shas = [commit(self.repo, f"commit {i}") for i in range(commits)]
        self.artifacts = tmp_path / "artifacts"
        self.log = tmp_path / "stub.log"
        self.stub = tmp_path / "harness-stub"
        self.stub.write_text(STUB.format(python=sys.executable, refusal=REFUSAL))
        self.stub.chmod(self.stub.stat().st_mode | stat.S_IXUSR)

    def night(self, **settings: str) -> subprocess.CompletedProcess:
        self.log.write_text("")
        env = {k: v for k, v in os.environ.items() if k not in NIGHT_SETTINGS and not k.startswith("STUB_")}
        env.update({"PROFILE": "quick", "DEVICE": "cpu", "SKIP_ASV": "1", "HARNESS": str(self.stub),
                    "ARTIFACTS": str(self.artifacts), "STUB_LOG": str(self.log),
                    "STUB_BASELINES": "cpu-quick: cpu, 3 cases, profile quick", **GIT_ENV, **settings})
        return subprocess.run(["bash", str(SCRIPT)], cwd=self.repo, env=env, capture_output=True, text=True,
                              timeout=120)

    def calls(self, command: str) -> list[list[str]]:
        return [c for c in map(json.loads, self.log.read_text().splitlines()) if c[0] == command]

    def latest(self) -> Path:
        name = (self.artifacts / "latest.txt").read_text().strip()
        assert (self.artifacts / "latest").resolve() == (self.artifacts / name).resolve()
        return self.artifacts / name

    def green(self) -> str | None:
        path = self.artifacts / "last-green.txt"
        return path.read_text().split()[0] if path.exists() else None


def files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


GATE_FILES = {"ab/a/run.json", "ab/b/run.json", "ab/ab.md", "ab/ab.json"}
NIGHT_FILES = GATE_FILES | {"baselines.txt", "report.html", "tables.md", "nightly.txt"}
COMPARED = {"compare.json", "compare.md"}


def test_three_nights_are_three_clean_folders(tmp_path):
    n = Nights(tmp_path)
    folders = []
    for settings, code in (({}, 0), ({"STUB_AB_EXIT": "1", "STUB_COMPARE_EXIT": "2"}, 2), ({}, 0)):
        done = n.night(**settings)
        assert done.returncode == code, done.stdout + done.stderr
        assert ("comparison with baseline cpu-quick failed (exit 2)" in done.stderr) == (code == 2)
        folders.append(n.latest())
    assert len(set(folders)) == 3
    assert sorted(p.name for p in n.artifacts.iterdir() if p.is_dir() and not p.is_symlink()) == \
        sorted(f.name for f in folders)
    assert files(folders[0]) == NIGHT_FILES | COMPARED
    assert files(folders[1]) == NIGHT_FILES  # its compare failed: no compare.md of the night before
    assert files(folders[2]) == NIGHT_FILES | COMPARED
    for folder, code in zip(folders, (0, 2, 0)):  # each night's summary is its own
        assert f"exit: {code}" in (folder / "nightly.txt").read_text()


def test_last_green_is_written_on_a_green_night_and_is_side_a_of_the_next(tmp_path):
    n = Nights(tmp_path)
    c0, c1 = n.shas
    done = n.night()
    assert done.returncode == 0, done.stdout + done.stderr
    assert n.calls("ab")[0][1:3] == [c0, c1]  # no green night yet: HEAD~1
    assert "HEAD~1, no green night recorded" in done.stdout
    assert n.green() == c1
    c2 = commit(n.repo, "commit 2")
    c3 = commit(n.repo, "commit 3")
    done = n.night(STUB_AB_EXIT="1")
    assert done.returncode == 1
    assert n.calls("ab")[0][1:3] == [c1, c3]  # the last green commit, not HEAD~1 (c2)
    assert n.green() == c1  # a red night leaves it
    done = n.night()
    assert done.returncode == 0, done.stdout + done.stderr
    assert n.calls("ab")[0][1:3] == [c1, c3]
    assert n.green() == c3 and n.latest().name in (n.artifacts / "last-green.txt").read_text()
    done = n.night()  # HEAD is the last green commit: an A/A run
    assert n.calls("ab")[0][1:3] == [c3, c3] and "an A/A run" in done.stdout
    elsewhere = tmp_path / "state" / "green.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"{c2} 2026-01-01T00:00:00Z kept-elsewhere\n")
    done = n.night(LAST_GREEN=str(elsewhere))  # the file kept where a clean checkout does not reach
    assert n.calls("ab")[0][1:3] == [c2, c3] and elsewhere.read_text().split()[0] == c3
    done = n.night(GREEN="HEAD~3")  # GREEN overrides
    assert n.calls("ab")[0][1:3] == [n.shas[0], c3] and c2 not in n.calls("ab")[0]


def test_single_commit_is_compared_with_itself(tmp_path):
    n = Nights(tmp_path, commits=1)
    done = n.night()
    assert done.returncode == 0, done.stdout + done.stderr
    assert n.calls("ab")[0][1:3] == [n.shas[0]] * 2
    assert "a single commit, so A/A" in done.stdout


def test_a_baseline_from_another_device_is_one_line_and_the_night_goes_on(tmp_path):
    n = Nights(tmp_path)
    done = n.night(STUB_COMPARE_REFUSES="1")
    assert done.returncode == 0, done.stdout + done.stderr
    notes = [line for line in (done.stdout + done.stderr).splitlines() if "cpu-quick" in line]
    assert len(notes) == 1
    assert notes[0].startswith("nightly: baseline cpu-quick was measured on cpu (Intel Xeon), this machine is "
                               "cpu (AMD EPYC); not compared (save one here with: harness baseline save ")
    assert "refusing" not in done.stdout + done.stderr
    night = n.latest()
    assert files(night) == NIGHT_FILES
    assert n.calls("report")[0][-4:] == ["report", str(night / "ab"), "--output", str(night / "report.html")]
    assert n.green() == n.shas[1]


def test_a_regression_in_the_gate_makes_the_night_red_with_its_table(tmp_path):
    n = Nights(tmp_path)
    done = n.night(STUB_AB_EXIT="1")
    assert done.returncode == 1
    assert f"| STUB AB TABLE ab: {n.shas[0][:12]} vs {n.shas[1][:12]} | exit 1 |" in done.stdout
    assert "nightly: REGRESSION: HEAD against" in done.stderr
    assert files(n.latest()) == NIGHT_FILES | COMPARED  # every artifact written all the same
    assert n.green() is None
    done = n.night(STUB_AB_EXIT="2")  # the ab could not run: a run of its own feeds the report
    assert done.returncode == 2 and "harness ab failed (exit 2)" in done.stderr
    assert {"run/run.json", "report.html", "tables.md"} <= files(n.latest())
    assert "--isolate" in n.calls("run")[0]


def test_the_stored_baseline_is_history_unless_it_is_the_gate(tmp_path):
    n = Nights(tmp_path)
    done = n.night(STUB_COMPARE_EXIT="1")
    assert done.returncode == 0 and "history, not the gate" in done.stdout
    done = n.night(GATE="baseline", STUB_COMPARE_EXIT="1")
    assert done.returncode == 1 and "REGRESSION against baseline cpu-quick" in done.stderr
    assert not n.calls("ab") and "--rounds" in n.calls("run")[0]
    assert files(n.latest()) == {"run/run.json", "baselines.txt", "report.html", "tables.md", "nightly.txt"} | COMPARED


def test_the_weekly_anchor(tmp_path):
    n = Nights(tmp_path, commits=3)
    today = datetime.datetime.now(datetime.timezone.utc).isoweekday()
    other = today % 7 + 1
    done = n.night(ANCHOR=n.shas[0], WEEKDAY=str(other))
    assert done.returncode == 0 and len(n.calls("ab")) == 1
    done = n.night(ANCHOR=n.shas[0], WEEKDAY=["mon", "Tuesday", "wed", "thu", "fri", "sat", "Sunday"][today - 1])
    assert done.returncode == 0, done.stdout + done.stderr
    assert [c[1:3] for c in n.calls("ab")] == [[n.shas[2], n.shas[2]], [n.shas[0], n.shas[2]]]  # A/A: HEAD is green
    assert {"anchor/ab.md", "anchor/a/run.json", "anchor/b/run.json"} <= files(n.latest())
    done = n.night(ANCHOR=n.shas[0], ANCHOR_EVERY_DAY="1", STUB_ANCHOR_EXIT="1")
    assert done.returncode == 1 and "REGRESSION against the anchor" in done.stderr
    assert "| STUB AB TABLE anchor:" in done.stdout
    assert n.night(ANCHOR="no-such-commit", ANCHOR_EVERY_DAY="1").returncode == 2
    assert n.night(ANCHOR=n.shas[0], WEEKDAY="someday").returncode == 2


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

# `harness ab` faked by copying a real run folder into both sides; every other command is the real one.
AB_BY_COPY = '''#!/usr/bin/env bash
if [ "$1" = ab ]; then
    while [ $# -gt 0 ]; do [ "$1" = --out ] && out="$2"; shift; done
    mkdir -p "$out" && cp -r "$RUN_TO_COPY" "$out/a" && cp -r "$RUN_TO_COPY" "$out/b"
    echo "| copied ab |" > "$out/ab.md"
    exit 0
fi
exec "$REAL_HARNESS" "$@"
'''


@pytest.mark.slow  # the nightly script over a whole (small) run with the real harness
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
    real = str(Path(sys.executable).parent / "harness")
    env = {k: v for k, v in os.environ.items() if k not in NIGHT_SETTINGS}
    env.update({"PROFILE": "quick", "DEVICE": "cpu", "SUITES": str(probe), "SKIP_ASV": "1", "GATE": "baseline",
                "ARTIFACTS": str(artifacts), "HARNESS_BASELINES_DIR": str(baselines), "HARNESS": real,
                "CASE_TIMEOUT": "120", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                **GIT_ENV})
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    assert "comparison skipped" not in done.stdout
    night = artifacts / "latest"
    compare_md = (night / "compare.md").read_text()
    assert "### Comparison: B = run " in compare_md and "A = baseline cpu-quick on cpu" in compare_md
    assert (night / "compare.json").is_file() and (night / "report.html").is_file()
    meta = (night / "run" / "run.json").read_text()
    assert '"isolate": true' in meta and '"timeout_s": 120.0' in meta and '"threads": 1' in meta
    assert '"rounds": 3' in meta

    # The gate by ab (faked by a copy of the run), the baseline from another CPU: the real compare's
    # refusal becomes one line, and the night is green.
    doc = json.loads((baselines / "cpu-quick.json").read_text())
    doc["environment"]["device_name"] = doc["environment"]["cpu"] = "Other CPU 9000"
    (baselines / "cpu-quick.json").write_text(json.dumps(doc))
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    commit(repo, "only")
    wrapper = tmp_path / "harness-ab-by-copy"
    wrapper.write_text(AB_BY_COPY)
    wrapper.chmod(0o755)
    shutil.copytree(first, tmp_path / "copyable")
    env.update({"GATE": "ab", "HARNESS": str(wrapper), "REAL_HARNESS": real, "RUN_TO_COPY": str(tmp_path / "copyable")})
    done = subprocess.run(["bash", str(SCRIPT)], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    notes = [line for line in (done.stdout + done.stderr).splitlines() if "Other CPU 9000" in line]
    assert len(notes) == 1 and notes[0].startswith("nightly: baseline cpu-quick was measured on cpu (Other CPU 9000), "
                                                   "this machine is cpu (")
    second = artifacts / (artifacts / "latest.txt").read_text().strip()
    assert second.resolve() != (tmp_path / "artifacts").resolve() and not (second / "compare.md").exists()
    assert (second / "report.html").is_file() and (second / "tables.md").is_file()
    assert (artifacts / "last-green.txt").read_text().split()[0] == git(repo, "rev-parse", "HEAD")
