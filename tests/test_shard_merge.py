"""--shard I/N and harness merge: shards of one sweep merged equal the full run."""

from __future__ import annotations

import json
import sys

import pytest

from harness.cli import main
from harness.judge.compare import check_devices
from harness.measure.environment import merge_node
from harness.plan import PlanError, parse_shard, plan_cases, shard_cases
from harness.declare.registry import discover
from harness.results import ResultSet, load_results
from conftest import TOY_SUITE

SWEEP = ["--param", "n=8,16,24,32,40", "--variant", "ok,skips", "--quiet", "--no-progress"]


def _keys(folder):
    return sorted(r.key for r in load_results(folder).records)


def test_shards_partition_the_plan_by_grid_point(toy_suite_file):
    cls = discover(extra=[toy_suite_file], builtin=False).get("toy")
    cases = plan_cases([cls], "quick", "cpu", overrides={"n": ["8", "16", "24", "32", "40"]}, only_variants=["ok", "skips"])
    shards = [shard_cases(cases, i, 3) for i in (1, 2, 3)]
    assert sorted(c.label() for s in shards for c in s) == sorted(c.label() for c in cases)
    assert [len(s) for s in shards] == [4, 4, 2]
    for s in shards:  # every variant of a point is in the shard of the point
        points = {c.setup_key for c in s}
        assert all(c in s for c in cases if c.setup_key in points)
    assert shard_cases(cases, 2, 3) == shards[1]  # deterministic
    assert parse_shard("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(PlanError):
            parse_shard(bad)


@pytest.mark.slow
def test_merged_shards_equal_one_full_run(toy_suite_file, tmp_path, capsys):
    full = tmp_path / "full"
    assert main(["run", str(toy_suite_file), *SWEEP, "--out", str(full)]) == 0
    parts = []
    for i in (1, 2, 3):
        parts.append(tmp_path / f"shard{i}")
        assert main(["run", str(toy_suite_file), *SWEEP, "--shard", f"{i}/3", "--out", str(parts[-1])]) == 0
    merged = tmp_path / "merged"
    assert main(["merge", *map(str, reversed(parts)), "--out", str(merged)]) == 0
    assert "merged 3 runs" in capsys.readouterr().err
    assert _keys(merged) == _keys(full)
    meta = json.loads((merged / "run.json").read_text())
    full_meta = json.loads((full / "run.json").read_text())
    assert sorted(map(json.dumps, meta["cases"])) == sorted(map(json.dumps, full_meta["cases"]))
    assert meta["finished"] and meta["n_cases"] == 10 and [m["shard"] for m in meta["merged_from"]] == ["1/3", "2/3", "3/3"]
    env = json.loads((merged / "environment.json").read_text())
    assert len(env["nodes"]) == 1 and env["devices_differ"] is False  # all shards ran on this machine
    # the merged folder is an ordinary run: export and compare read it
    assert main(["export", str(merged), "--metric", "score"]) == 0
    assert main(["compare", str(full), str(merged), "--format", "json"]) in (0, 1)


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


@pytest.mark.slow
def test_overlapping_missing_or_inconsistent_shards_are_refused(toy_suite_file, write_suite, tmp_path, capsys):
    def run(name, *extra):
        assert main(["run", str(toy_suite_file), *SWEEP, *extra, "--out", str(tmp_path / name)]) == 0
        capsys.readouterr()
        return str(tmp_path / name)

    s1, s2 = run("s1", "--shard", "1/2"), run("s2", "--shard", "2/2")
    full = run("full")
    again = run("s1b", "--shard", "1/2")
    out = str(tmp_path / "m")
    assert "overlapping runs" in _one_line_error(capsys, ["merge", s1, again, "--out", out])
    assert "overlapping runs" in _one_line_error(capsys, ["merge", s1, full, "--out", out])
    assert "different numbers of shards" in _one_line_error(capsys, ["merge", s2, run("t3", "--shard", "3/3"),
                                                                      "--out", out])
    other = str(tmp_path / "other")
    assert main(["run", str(toy_suite_file), "--param", "n=16,32", "--variant", "ok,skips", "--quiet",
                 "--shard", "2/2", "--out", other]) == 0
    capsys.readouterr()
    assert "inconsistent runs" in _one_line_error(capsys, ["merge", s1, other, "--out", out])
    assert "at least two" in _one_line_error(capsys, ["merge", s1, "--out", out])
    toy2 = write_suite("toy2_suite", TOY_SUITE.replace('name = "toy"', 'name = "toy2"'))
    wholes = []
    for name, suite in (("whole_toy", toy_suite_file), ("whole_toy2", toy2)):  # same request, other suites
        wholes.append(str(tmp_path / name))
        assert main(["run", str(suite), "--variant", "ok", "--quiet", "--out", wholes[-1]]) == 0
    capsys.readouterr()
    assert "are whole runs, not shards" in _one_line_error(capsys, ["merge", *wholes, "--out", out])
    assert "no such run folder" in _one_line_error(capsys, ["merge", s1, str(tmp_path / "nope"), "--out", out])
    assert main(["merge", s1, s2, "--out", out]) == 0
    capsys.readouterr()
    assert "not empty" in _one_line_error(capsys, ["merge", s1, s2, "--out", out])
    assert "I/N" in _one_line_error(capsys, ["run", str(toy_suite_file), "--shard", "3/2", "--out", str(tmp_path / "x")])
    assert "holds no case" in _one_line_error(capsys, ["run", str(toy_suite_file), "--param", "n=8", "--shard", "2/2",
                                                       "--out", str(tmp_path / "y")])


def test_missing_shard_is_refused(toy_suite_file, tmp_path, capsys):
    runs = []
    for i in (1, 3):
        runs.append(str(tmp_path / f"s{i}"))
        assert main(["run", str(toy_suite_file), *SWEEP, "--shard", f"{i}/3", "--out", runs[-1]]) == 0
    capsys.readouterr()
    assert "missing shard(s) 2/3" in _one_line_error(capsys, ["merge", *runs, "--out", str(tmp_path / "m")])


def test_executor_ray_without_ray_names_the_extra(toy_suite_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    err = _one_line_error(capsys, ["run", str(toy_suite_file), "--executor", "ray", "--out", str(tmp_path / "r")])
    assert "pip install 'dl-harness[ray]'" in err
    assert not (tmp_path / "r").exists()
    assert "--executor ray" in _one_line_error(capsys, ["run", str(toy_suite_file), "--ray-address", "auto",
                                                        "--out", str(tmp_path / "r")])


def _spread_run(names_by_node: dict[str, list[str]], device="cuda") -> ResultSet:
    env = {"device": device, "device_name": "driver cpu"}
    for node, names in names_by_node.items():
        for i, name in enumerate(names):
            env = merge_node(env, node, {"host": node, "device_name": name},
                             {"host": node, "gpu_name": name, "gpu_uuid": f"GPU-{node}-{i}"})
    return ResultSet("run x", "run", [], env, {"device": device})


def test_a_run_on_identical_gpus_is_one_device_and_mixed_gpus_are_named():
    same = _spread_run({"a": ["NVIDIA H100", "NVIDIA H100"], "b": ["NVIDIA H100"]})
    assert same.device_name == "NVIDIA H100" and not same.environment["devices_differ"]
    assert check_devices(same, same, force=False) == [
        "A: cases ran on 2 node(s), 3 worker device(s), all NVIDIA H100: treated as one device",
        "B: cases ran on 2 node(s), 3 worker device(s), all NVIDIA H100: treated as one device"]
    mixed = _spread_run({"a": ["NVIDIA H100"], "b": ["NVIDIA A100"]})
    assert mixed.device_name == "mixed: NVIDIA A100, NVIDIA H100" and mixed.environment["devices_differ"]
    from harness.judge.compare import CompareError

    with pytest.raises(CompareError, match="different devices"):
        check_devices(same, mixed, force=False)
    notes = check_devices(mixed, mixed, force=True)
    assert any("ran on different devices (NVIDIA A100, NVIDIA H100)" in n for n in notes)
