"""Every bad input across every subcommand: one line, exit 2, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from synthetic_runs import standard_run, write_run, ok_record


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Run folders, baselines and files the bad commands point at (built once)."""
    root = tmp_path_factory.mktemp("world")
    standard_run(root / "run_a", seed=0)
    standard_run(root / "run_b", seed=1)
    other = write_run(root / "run_other", [ok_record("base", 64, [1.0, 1.1, 0.9])])
    meta = json.loads((other / "run.json").read_text())
    recs = [json.loads(x) for x in (other / "records.jsonl").read_text().splitlines()]
    for r in recs:
        r["suite"] = "elsewhere"
    (other / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    meta["suites"] = {"elsewhere": meta["suites"]["toy"]}
    (other / "run.json").write_text(json.dumps(meta))
    (root / "a_file.txt").write_text("not a folder\n")
    (root / "not_json.json").write_text("{oops")
    (root / "other_schema.json").write_text(json.dumps({"schema": "dl-harness-baseline", "schema_version": 99}))
    (root / "not_baseline.json").write_text(json.dumps({"hello": 1}))
    nulls = root / "null_params"
    nulls.mkdir()
    rec = {"suite": "s", "variant": "v", "params": None, "device": "cpu", "status": "ok", "schema_version": 2}
    (nulls / "records.jsonl").write_text(json.dumps(rec) + "\n")
    badmetric = root / "bad_metric"
    badmetric.mkdir()
    rec = {"suite": "s", "variant": "v", "params": {}, "device": "cpu", "status": "ok", "schema_version": 2,
           "metrics": {"latency": {"value": 1.0, "unit": "ms", "better": "sideways", "kind": "time"}}}
    (badmetric / "records.jsonl").write_text(json.dumps(rec) + "\n")
    badstatus = root / "bad_status"
    badstatus.mkdir()
    rec = {"suite": "s", "variant": "v", "params": {}, "device": "cpu", "status": "exploded", "schema_version": 2}
    (badstatus / "records.jsonl").write_text(json.dumps(rec) + "\n")
    empty = root / "empty_run"
    empty.mkdir()
    (empty / "records.jsonl").write_text("")
    ro = root / "readonly"
    ro.mkdir()
    for name, edit in (("run_json_list", lambda d: (d / "run.json").write_text("[1, 2]")),
                       ("run_json_types", _retype_run_json),
                       ("environment_list", lambda d: (d / "environment.json").write_text("[]")),
                       ("samples_text", _samples_as_text),
                       ("written_twice", _first_record_again)):
        shutil.copytree(root / "run_a", root / name)
        edit(root / name)
    return root


def _retype_run_json(folder: Path) -> None:
    meta = json.loads((folder / "run.json").read_text())
    meta.update(suites=5, finished=False, state="interrupted")
    (folder / "run.json").write_text(json.dumps(meta))


def _first_record_again(folder: Path) -> None:
    with open(folder / "records.jsonl", "a") as fh:
        fh.write((folder / "records.jsonl").read_text().splitlines()[0] + "\n")


def _samples_as_text(folder: Path) -> None:
    lines = (folder / "records.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    next(iter(rec["metrics"].values()))["samples"] = "xyz"
    (folder / "records.jsonl").write_text("\n".join([json.dumps(rec)] + lines[1:]) + "\n")


W = "{w}"  # replaced by the world folder
BAD = [
    # run: names, values, devices, limits
    (["run", "attentoin"], "unknown suite"),
    (["run", "attention", "--variant", "sofmax"], "unknown variant"),
    (["run", "attention", "--variant", ""], "names no variant"),
    (["run", "attention", "--variant", ",,"], "names no variant"),
    (["run", "attention", "--param", "seqlen=128"], "unknown param"),
    (["run", "attention", "--param", "seq_len=long"], "malformed value"),
    (["run", "attention", "--param", "seq_len=128,128"], "given twice"),
    (["run", "attention", "--param", "seq_len=128", "--param", "seq_len=128"], "given twice"),
    (["run", "attention", "--param", "=128"], "expected NAME=V1,V2"),
    (["run", "attention", "--param", "seq_len="], "expected NAME=V1,V2"),
    (["run", "attention", "--param", "causal=maybe"], "is not a boolean"),
    (["run", "attention", "--profile", "quik"], "has no profile"),
    (["run", "attention", "--device", "tpu"], "unknown device"),
    (["run", "attention", "--device", "cuda:x"], "device"),
    (["run", "attention", "-k", "zzz-nothing"], "no case matches"),
    (["run", "attention", "--threads", "0"], "--threads must be at least 1"),
    (["run", "attention", "--threads", "two"], "invalid int value"),
    (["run", "attention", "--timeout", "-1"], "--timeout must be a positive number"),
    (["run", "attention", "--timeout", "0"], "--timeout must be a positive number"),
    (["run", "attention", "--timeout", "nan"], "--timeout must be a positive number"),
    (["run", "attention", "--timeout", "inf"], "--timeout must be a positive number"),
    (["run", "attention", "--timeout", "soon"], "invalid float value"),
    (["run", "attention", "--timeout", "1e308"], "--timeout must be at most a week"),
    (["run", "attention", "--timeout", "604801"], "--timeout must be at most a week"),
    (["run", "attention", "--threads", "100000"], "--threads must be at most"),
    (["run", "attention", "--out", ""], "--out must name a folder"),
    (["run", "attention", "--out", "  "], "--out must name a folder"),
    (["run", "attention", "--quality-atol", "-0.5"], "--quality-atol must be a finite number"),
    (["run", "no/such/file.py"], "no such suite file or folder"),
    (["run", f"{W}/a_file.txt"], "not a Python file"),
    (["run", "attention", "--out", f"{W}/a_file.txt"], "not a folder"),
    (["run", "attention", "--out", f"{W}/run_a"], "not empty"),
    (["run", "attention", "--format", "pdf"], "invalid choice"),
    (["run", "attention", "--against", "no-such-baseline"], "unknown baseline"),
    (["run", "attention", "--against", f"{W}/not_json.json"], "corrupt"),
    (["run", "attention", "--threshold", "time"], "expected KIND=FRACTION"),
    (["run", "--resume", f"{W}/a_file.txt"], "not a run folder"),
    (["run", "--resume", f"{W}/run_a"], "has finished"),
    (["run", "attention", "--resume", f"{W}/run_a"], "--resume continues the run's own plan"),
    (["run", "attention", "--frobnicate"], "unrecognized arguments"),
    (["run", "--resume", f"{W}/run_json_list"], "run.json is corrupt: it must hold a JSON object"),
    (["run", "--resume", f"{W}/run_json_types"], "run.json is corrupt: suites must be an object"),
    (["run", "--resume", f"{W}/missing"], "is not a run folder (no run.json)"),
    (["run", "--resume", f"{W}/run_a", "--shard", "1/2"], "--resume continues the run's own shard"),
    (["run", "attention", "--rounds", "0"], "--rounds must be at least 1, not 0"),
    (["run", "attention", "--rounds", "-2"], "--rounds must be at least 1, not -2"),
    (["run", "attention", "--rounds", "x"], "invalid int value"),
    (["run", "attention", "--shard", "0/2"], "expected I/N with 1 <= I <= N"),
    (["run", "attention", "--shard", "3/2"], "expected I/N with 1 <= I <= N"),
    (["run", "attention", "--shard", "1/0"], "expected I/N with 1 <= I <= N"),
    (["run", "attention", "--shard", "half"], "expected I/N with 1 <= I <= N"),
    (["run", "attention", "--ray-address", "auto"], "--ray-address needs --executor ray"),
    (["run", "attention", "--executor", "dask"], "invalid choice"),
    (["run", "attention", "--param", "seq_len=1e999"], "malformed value"),
    (["run", "attention", "--variant", "softmax", "--variant", "softmax,nosuch"], "unknown variant 'nosuch'"),
    # run: where cases run (contradictions)
    (["run", "attention", "--isolate", "--no-supervisor"], "--no-supervisor runs the cases in this process"),
    (["run", "attention", "--worker-per-case", "--no-supervisor"], "--no-supervisor runs the cases in this process"),
    (["run", "attention", "--executor", "ray", "--isolate"], "with --executor ray each grid point runs in a Ray worker"),
    (["run", "attention", "--executor", "ray", "--worker-per-case"], "with --executor ray each grid point runs"),
    (["run", "attention", "--executor", "ray", "--no-supervisor"], "with --executor ray each grid point runs"),
    # list
    (["list", "attentoin"], "unknown suite"),
    (["list", "no/such/dir/"], "no such suite file or folder"),
    (["list", "--frob"], "unrecognized arguments"),
    # export
    (["export", f"{W}/missing"], "no such run folder"),
    (["export", f"{W}/empty_run"], "holds no records"),
    (["export", f"{W}/null_params"], "params must be an object"),
    (["export", f"{W}/bad_metric"], "direction must be"),
    (["export", f"{W}/bad_status"], "status must be one of"),
    (["export", f"{W}/run_a", "--format", "docx"], "unknown format"),
    (["export", f"{W}/run_a", "--metric", "latncy"], "run has no metric"),
    (["export", f"{W}/run_a", "--suite", "toyy"], "run has no suite"),
    (["export", f"{W}/run_a", "-o", f"{W}/no/such/dir/out.md"], "does not exist"),
    (["export", f"{W}/run_a", "-o", f"{W}"], "is a folder"),
    (["export", f"{W}/run_a", "-o", f"{W}/readonly/out.md"], "cannot be written"),
    (["export", f"{W}/a_file.txt"], "neither a run folder nor a baseline file"),
    (["export", f"{W}/run_a", "-o", ""], "--output must name a file, not ''"),
    (["export", f"{W}/run_a", "-o", " "], "--output must name a file"),
    (["export", f"{W}/run_a", "--layout", "diagonal"], "unknown layout 'diagonal'"),
    (["export", f"{W}/run_a", "--pivot", "nosuch"], "has the param 'nosuch' to pivot"),
    (["export", f"{W}/run_a", "--format", "github-action-benchmark"], "needs --better lower"),
    (["export", f"{W}/run_json_list"], "run.json is corrupt: it must hold a JSON object, not a list"),
    (["export", f"{W}/run_json_types"], "run.json is corrupt: suites must be an object, not a whole number"),
    (["export", f"{W}/samples_text"], "metric samples must be a list of numbers"),
    (["export", f"{W}/run_a", "--format", "pytest-benchmark", "--storage", f"{W}/a_file.txt"],
     "a_file.txt cannot be written: Not a directory"),
    # compare
    (["compare", f"{W}/run_a", f"{W}/missing"], "no such run folder"),
    (["compare", f"{W}/run_a", "no-such-baseline"], "unknown baseline"),
    (["compare", f"{W}/run_a", f"{W}/not_json.json"], "corrupt"),
    (["compare", f"{W}/run_a", f"{W}/other_schema.json"], "schema version"),
    (["compare", f"{W}/run_a", f"{W}/not_baseline.json"], "is not a harness baseline"),
    (["compare", f"{W}/run_a", f"{W}/run_other"], "no case in common"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--format", "xml"], "unknown format"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--threshold", "speed=0.1"], "unknown metric kind"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--threshold", "time=-1"], "non-negative"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--threshold", "time=fast"], "expected KIND=FRACTION"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--single-round-change", "-1"], "--single-round-change must be a finite number of at least 0"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--single-round-change", "inf"], "--single-round-change must be a finite"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--quality-atol", "-1"], "--quality-atol must be a finite number of at least 0"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--quality-atol", "nan"], "--quality-atol must be a finite number"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "-o", f"{W}/no/such/dir/c.md"], "does not exist"),
    (["compare", f"{W}/run_a"], "the following arguments are required"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "-o", ""], "--output must name a file"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--threshold", "memory=abc"], "expected KIND=FRACTION"),
    (["compare", f"{W}/run_a", f"{W}/run_b", "--threshold", "time=nan"], "must be a non-negative number, not nan"),
    (["compare", f"{W}/run_a", f"{W}/environment_list"], "environment.json is corrupt: it must hold a JSON object"),
    (["compare", f"{W}/samples_text", f"{W}/run_b"], "metric samples must be a list of numbers"),
    (["compare", f"{W}/run_a", f"{W}/written_twice"], "B (run run_a) holds 1 duplicate record (toy/base n=64)"),
    (["report", f"{W}/run_a", "--against", f"{W}/written_twice"], "A (run run_a) holds 1 duplicate record"),
    # baseline
    (["baseline", "save", f"{W}/run_a", "--name", "bad name"], "bad baseline name"),
    (["baseline", "save", f"{W}/run_a", "--name", "x", "--dir", f"{W}/a_file.txt"], "is not a folder"),
    (["baseline", "save", f"{W}/missing", "--name", "x", "--dir", f"{W}/bl"], "no such run folder"),
    (["baseline", "save", f"{W}/empty_run", "--name", "x", "--dir", f"{W}/bl"], "holds no records"),
    (["baseline", "save", f"{W}/run_a"], "the following arguments are required"),
    (["baseline", "save", f"{W}/run_a", "--name", "x" * 300, "--dir", f"{W}/bl"], "(300 characters): use at most 100"),
    (["baseline"], "baseline needs a subcommand"),
    (["baseline", "frob"], "invalid choice: 'frob'"),
    (["baseline", "list", "--dir", f"{W}/a_file.txt"], "a_file.txt is not a folder"),
    # report
    (["report", f"{W}/missing"], "no such run folder"),
    (["report", f"{W}/run_a", "--against", "no-such-baseline"], "unknown baseline"),
    (["report", f"{W}/run_a", "-o", f"{W}/no/such/dir/r.html"], "does not exist"),
    (["report", f"{W}/run_a", "-o", f"{W}"], "is a folder"),
    (["report", f"{W}/run_a", "--quality-atol", "inf"], "--quality-atol must be a finite number"),
    (["report", f"{W}/environment_list"], "environment.json is corrupt"),
    (["report", f"{W}/run_a", "-o", ""], "--output must name a file"),
    (["report", f"{W}/run_a", "--against", f"{W}/a_file.txt"], "neither a run folder nor a baseline file"),
    # doctor
    (["doctor", "--device", "tpu"], "unknown device 'tpu'"),
    # merge
    (["merge", f"{W}/run_a", f"{W}/run_b", "--out", ""], "--out must name a folder"),
    (["merge", f"{W}/run_a", "--out", f"{W}/merged"], "merge needs at least two run folders"),
    (["merge", f"{W}/run_a", f"{W}/run_b", "--out", f"{W}/run_a"], "already exists and is not empty"),
    (["merge", f"{W}/missing", f"{W}/run_b", "--out", f"{W}/merged"], "no such run folder"),
    (["merge", f"{W}/run_a", f"{W}/run_b"], "the following arguments are required: --out"),
    # no command at all / unknown command
    (["frobnicate"], "invalid choice"),
]


def _snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")}


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input(world, capsys, argv, message, monkeypatch):
    if "readonly" in " ".join(argv):
        if os.geteuid() == 0:
            pytest.skip("root writes anywhere: a read-only folder cannot be made here")
        (world / "readonly").chmod(0o500)
    monkeypatch.setenv("HARNESS_BASELINES_DIR", str(world / "bl"))
    monkeypatch.chdir(world)
    before = _snapshot(world)
    code = main([a.replace(W, str(world)) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("harness: error: "), err
    assert message in err
    assert "Traceback" not in err
    assert _snapshot(world) == before, "a bad command wrote something"


def test_a_threads_bound_follows_the_usable_cores(monkeypatch):
    from harness.run import request

    monkeypatch.setattr(request, "usable_cores", lambda: 3)
    assert request.thread_count(12, "--threads") == 12
    with pytest.raises(ValueError, match=r"--threads must be at most 12 \(4 x the 3 usable cores\), not 13"):
        request.thread_count(13, "--threads")


def test_python_callers_get_the_same_bounds(tmp_path):
    from harness.judge.compare import CompareOptions
    from harness.plan import PlanError
    from harness.run.session import run_suites

    for kwargs, message in (({"threads": 10**5}, "threads must be at most"), ({"timeout_s": 1e308}, "at most a week")):
        with pytest.raises(PlanError, match=message):
            run_suites(["attention"], out=tmp_path / "r", **kwargs)
    assert not (tmp_path / "r").exists()
    for name in ("quality_atol", "memory_atol_mib"):
        with pytest.raises(ValueError, match="finite non-negative"):
            CompareOptions(**{name: -1.0})


def test_a_report_into_a_pipe_is_written_in_place_not_replaced(world, tmp_path):
    """A target that is not a regular file (a pipe, a device) is written through, never renamed over."""
    import stat
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert main(["report", str(world / "run_a"), "-o", str(fifo)]) == 0
    reader.join(timeout=60)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the pipe was replaced by a file"
    assert got and got[0].lstrip().lower().startswith("<!doctype html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"], "a temporary file was left"


def test_a_report_that_cannot_be_written_is_one_line(world, tmp_path, monkeypatch, capsys):
    """The disk fills while the page is written: one line, exit 2, no temporary file left."""
    import errno

    from harness.results import store

    real = store._write_all

    def full(fd, data):
        real(fd, data[: len(data) // 2])  # a part is written, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store, "_write_all", full)
    assert main(["report", str(world / "run_a"), "-o", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"harness: error: --output {tmp_path / 'r.html'} cannot be written: No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_run_written_twice_or_holding_unplanned_cases_is_named_and_not_resumed(toy_suite_file, tmp_path, capsys):
    """Records appended again (10x slower) or of a variant the plan does not hold: the loader says
    so, compare refuses the duplicates, --resume refuses both."""
    from harness.results import load_results

    def interrupted_copy(name: str, extra: dict) -> Path:
        folder = tmp_path / name
        shutil.copytree(tmp_path / "run", folder)
        meta = json.loads((folder / "run.json").read_text())
        meta.update(finished=False, state="interrupted")
        (folder / "run.json").write_text(json.dumps(meta))
        with open(folder / "records.jsonl", "a") as fh:
            fh.write(json.dumps(extra) + "\n")
        return folder

    assert main(["run", str(toy_suite_file), "--variant", "ok", "--param", "n=8,16", "--quiet", "--no-progress",
                 "--out", str(tmp_path / "run")]) == 0
    first = json.loads((tmp_path / "run" / "records.jsonl").read_text().splitlines()[0])
    slower = json.loads(json.dumps(first))
    for m in slower["metrics"].values():
        if m["kind"] == "time":
            m["value"] *= 10
    twice = interrupted_copy("twice", slower)
    stray = json.loads(json.dumps(first))
    stray["variant"] = stray["key"]["variant"] = "raises"
    unplanned = interrupted_copy("unplanned", stray)
    capsys.readouterr()

    rs = load_results(twice)
    assert len(rs.duplicates) == 1 and not rs.unplanned
    assert any("1 duplicate record of a case and round (toy/ok n=8)" in w for w in rs.warnings)
    rs = load_results(unplanned)
    assert len(rs.unplanned) == 1 and not rs.duplicates
    assert any("1 record of cases not in its plan (toy/raises n=8)" in w for w in rs.warnings)
    for folder, message in ((twice, "holds 1 duplicate record of a case and round"),
                            (unplanned, "holds 1 record of cases not in its plan")):
        before = _snapshot(tmp_path)
        assert main(["run", "--resume", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot resume {folder}: records.jsonl {message}" in err
        assert _snapshot(tmp_path) == before
    assert main(["compare", str(tmp_path / "run"), str(twice)]) == 2
    assert "holds 1 duplicate record" in capsys.readouterr().err


def test_there_are_at_least_forty(world):
    assert len(BAD) >= 40


@pytest.mark.slow
def test_commands_survive_a_closed_pipe(tmp_path):
    """`harness ... | head -1`: the reader leaves early; no traceback, exit 0."""
    env = {**os.environ, "HARNESS_BASELINES_DIR": str(Path(__file__).resolve().parent.parent / "baselines")}
    code = ("import sys, subprocess\n"
            "p = subprocess.Popen([sys.executable, '-m', 'harness', 'list'], stdout=subprocess.PIPE, "
            "stderr=subprocess.PIPE)\n"
            "p.stdout.readline(); p.stdout.close()\n"
            "err = p.stderr.read().decode(); print(p.wait()); print(err)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    rc, _, err = done.stdout.partition("\n")
    assert rc.strip() == "0", done.stdout
    assert "Traceback" not in err and "BrokenPipe" not in err
