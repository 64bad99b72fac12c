"""Baselines: save from a run folder, load by name or path, refuse bad ones, run --against."""

from __future__ import annotations

import json

import pytest

from harness.results.baseline import MAX_SAMPLES, thin_samples
from harness.results import BASELINE_SCHEMA_VERSION, load_results
from harness.cli import main
from synthetic_runs import standard_run


@pytest.fixture
def bdir(tmp_path, monkeypatch):
    folder = tmp_path / "baselines"
    monkeypatch.setenv("HARNESS_BASELINES_DIR", str(folder))
    return folder


def test_save_and_load(tmp_path, bdir, capsys):
    run = standard_run(tmp_path / "run", seed=0)
    assert main(["baseline", "save", str(run), "--name", "cpu-test"]) == 0
    doc = json.loads((bdir / "cpu-test.json").read_text())
    assert doc["schema_version"] == BASELINE_SCHEMA_VERSION and doc["name"] == "cpu-test"
    assert doc["environment"]["device_name"] == "Test CPU 9000"
    lat = doc["cases"][0]["metrics"]["latency"]
    assert {"value", "unit", "better", "median", "iqr", "n", "samples"} <= set(lat)
    assert lat["unit"] == "ms" and lat["better"] == "lower" and lat["n"] == 90  # 3 rounds of 30 samples
    assert len(lat["rounds"]) == 3 and doc["source"]["rounds"] == 3
    assert doc["suites"]["toy"]["spec_hash"] == "0123456789abcdef"
    rs = load_results("cpu-test")
    assert rs.kind == "baseline" and len(rs.records) == 6
    assert rs.describe_device() == "cpu (Test CPU 9000)"
    # a baseline compared with the run it came from: all the same
    assert main(["compare", "cpu-test", str(run)]) == 0
    assert main(["baseline", "list"]) == 0
    assert "cpu-test: cpu (Test CPU 9000), 6 cases" in capsys.readouterr().out


def test_no_overwrite_without_force(tmp_path, bdir, capsys):
    run = standard_run(tmp_path / "run", seed=0)
    assert main(["baseline", "save", str(run), "--name", "x"]) == 0
    assert main(["baseline", "save", str(run), "--name", "x"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["baseline", "save", str(run), "--name", "x", "--force"]) == 0
    assert main(["baseline", "save", str(run), "--name", "../evil"]) == 2


def test_thinning_keeps_extremes_and_median():
    xs = list(range(5000))
    thin = thin_samples(xs)
    assert len(thin) == MAX_SAMPLES and thin[0] == 0 and thin[-1] == 4999
    assert abs(thin[len(thin) // 2] - 2500) <= 5000 / (MAX_SAMPLES - 1)


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: "), err
    return err[0]


def test_other_schema_version_exit_2(tmp_path, bdir, capsys):
    run = standard_run(tmp_path / "run", seed=0)
    main(["baseline", "save", str(run), "--name", "old"])
    path = bdir / "old.json"
    doc = json.loads(path.read_text())
    doc["schema_version"] = 0
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["compare", "old", str(run)]) == 2
    assert "schema version 0" in _error_line(capsys)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"schema": "dl-harness-baseline", "schema_version": 1}'])
def test_corrupt_baseline_exit_2(tmp_path, bdir, capsys, content):
    bdir.mkdir()
    (bdir / "bad.json").write_text(content)
    run = standard_run(tmp_path / "run", seed=0)
    assert main(["compare", "bad", str(run)]) == 2
    _error_line(capsys)


def test_unknown_baseline_name_exit_2(tmp_path, bdir, capsys):
    run = standard_run(tmp_path / "run", seed=0)
    main(["baseline", "save", str(run), "--name", "cpu-quick"])
    capsys.readouterr()
    assert main(["compare", "cpu-quik", str(run)]) == 2
    assert "did you mean 'cpu-quick'" in _error_line(capsys)
    assert main(["baseline", "save", str(tmp_path / "missing"), "--name", "y"]) == 2
    assert "no such run folder" in _error_line(capsys)


def test_run_against_unknown_baseline_fails_before_running(tmp_path, bdir, capsys):
    out = tmp_path / "never"
    assert main(["run", "attention", "--device", "cpu", "--out", str(out), "--against", "nope"]) == 2
    _error_line(capsys)
    assert not out.exists()


@pytest.mark.slow
def test_run_against_baseline(tmp_path, bdir, capsys):
    """Runs one small attention case twice: against itself it is no regression (speed thresholds
    no machine load reaches: this checks the --against flow, not the machine's noise)."""
    args = ["run", "attention", "--device", "cpu", "--param", "causal=false", "--param", "pass=forward",
            "-k", "softmax", "--quiet", "--no-progress"]
    assert main(args + ["--out", str(tmp_path / "r1")]) == 0
    assert main(["baseline", "save", str(tmp_path / "r1"), "--name", "mine"]) == 0
    capsys.readouterr()
    code = main(args + ["--out", str(tmp_path / "r2"), "--against", "mine", "--threshold", "time=1e6",
                        "--threshold", "rate=1e6", "--threshold", "memory=10"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "baseline mine" in out


def test_shipped_cpu_baseline_loads():
    rs = load_results("cpu-quick")
    assert rs.device == "cpu"
    suites = {r.suite for r in rs.records}
    assert "attention" in suites
    assert any(r.status == "ok" and "latency" in r.metrics for r in rs.records)


def test_a_baseline_joins_several_runs_as_its_rounds(tmp_path, bdir):
    """Two runs of 3 rounds each: the baseline holds 6 round values per case, and compare
    reads them as the noise between runs."""
    runs = [standard_run(tmp_path / f"r{i}", seed=i) for i in range(2)]
    assert main(["baseline", "save", *map(str, runs), "--name", "joined"]) == 0
    doc = json.loads((bdir / "joined.json").read_text())
    assert doc["source"]["rounds"] == 6 and len(doc["cases"]) == 6
    assert all(len(c["metrics"]["latency"]["rounds"]) == 6 for c in doc["cases"])
    rs = load_results("joined")
    assert rs.rounds == 6
    other = standard_run(tmp_path / "other", seed=0, device_name="Another CPU")
    assert main(["baseline", "save", str(runs[0]), str(other), "--name", "mixed"]) == 2
