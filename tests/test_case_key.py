"""The case key: made once by the plan, carried by every record (schema 3), read by every reader;
schema-2 run folders written by the previous version still load, compare and report."""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.key import CaseKey, case_label, params_text
from harness.plan import plan_suite
from harness.results import Record, RecordWriter, load_results, read_records

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SCHEMA2 = DATA / "schema2"

# -------------------------------------------------------------------------- the key itself


def test_a_key_splits_params_keeps_their_order_and_is_a_dict_key():
    key = CaseKey.split("diffusion", "ddim", {"resolution": 32, "steps": 10, "eta": 0.0}, ["resolution"])
    assert key.variant_dict == {"steps": 10, "eta": 0.0} and key.grid_dict == {"resolution": 32}
    assert key.label == case_label("ddim", {"steps": 10, "eta": 0.0}) == "ddim[steps=10, eta=0.0]"
    assert case_label("ddim", {"steps": 10, "eta": 0.0}, sep=",") == "ddim[steps=10,eta=0.0]"
    same = CaseKey("diffusion", "ddim", (("eta", 0.0), ("steps", 10)), (("resolution", 32),))
    assert same == key and hash(same) == hash(key) and len({key, same}) == 1
    assert CaseKey.from_dict(json.loads(json.dumps(key.to_dict()))) == key
    assert sorted([CaseKey("s", "b"), CaseKey("s", "a")])[0].variant == "a"
    assert params_text({"b": 1, "a": object.__new__(object)}).startswith('{"a": "<object object')


def test_the_plan_makes_the_key_and_the_record_carries_it(tmp_path):
    from harness import Suite, Workload, variant

    class Keyed(Suite):
        name = "keyed"
        grid = {"n": [1, 2]}

        @variant(params={"k": [3]})
        def a(self, state, params):
            return Workload(lambda: None)

    cases = plan_suite(Keyed, "default", "cpu")
    assert [c.key.grid_dict for c in cases] == [{"n": 1}, {"n": 2}]
    assert all(c.key.variant_dict == {"k": 3} for c in cases)
    record = Record("keyed", "a", cases[0].params_dict, "cpu", "ok", key=cases[0].key)
    with RecordWriter(tmp_path) as w:
        w.write(record)
    line = json.loads((tmp_path / "records.jsonl").read_text())
    assert line["schema_version"] == 3
    assert line["key"] == {"suite": "keyed", "variant": "a", "variant_params": {"k": 3}, "grid_params": {"n": 1}}
    assert line["params"] == {"n": 1, "k": 3}
    (back,) = read_records(tmp_path)
    assert back.key == cases[0].key and back.key.variant_dict == {"k": 3}


def test_the_loader_tolerates_optional_keys_it_does_not_know(tmp_path):
    rec = {"suite": "s", "variant": "v", "key": {"suite": "s", "variant": "v", "variant_params": {},
                                                 "grid_params": {"n": 1}, "compile_mode": "eager"},
           "params": {"n": 1}, "device": "cpu", "status": "ok", "schema_version": 3,
           "pairing": {"side": "A"}, "bytes": 123}
    (tmp_path / "records.jsonl").write_text(json.dumps(rec) + "\n")
    (r,) = read_records(tmp_path)
    assert r.key.grid_dict == {"n": 1}


def test_a_schema2_baseline_is_migrated_by_its_suites_grid(tmp_path):
    doc = {"schema": "dl-harness-baseline", "schema_version": 2, "name": "old", "device": "cpu",
           "suites": {"s": {"grid": {"n": [1]}}}, "source": {"rounds": 1},
           "cases": [{"suite": "s", "variant": "v", "params": {"n": 1, "features": 16}, "status": "ok",
                      "metrics": {}}]}
    (tmp_path / "old.json").write_text(json.dumps(doc))
    (r,) = load_results(tmp_path / "old.json").records
    assert r.key.grid_dict == {"n": 1} and r.key.variant_dict == {"features": 16}


# -------------------------------------------------------------------------- one serialiser of params
# A json.dumps (or json.dump) call "serialises params" when the source text of its first argument
# names a params-bearing value: an identifier containing "params" (params, r.params,
# variant_params, params_dict...), the planned "cases" of a run, or a record's whole ".to_dict()".
# Hashes of other things are not params of a case and are not matched: a suite's declaration
# (spec hash, benchmark version: "parts"), artifact configs (artifacts.config_key), dataset and
# weights fingerprints (suites/common/detection_data.py, detectors.py), run.json and report
# documents ("doc", "data", "meta").
PARAMS_ARG = re.compile(r"params|\bplanned\b|\bcases\b|\.to_dict\(\)")


def _param_dumps() -> set[tuple[str, str]]:
    found = set()
    for top in ("harness", "suites"):
        for path in sorted((ROOT / top).rglob("*.py")):
            source = path.read_text()
            tree = ast.parse(source)
            rel = path.relative_to(ROOT).as_posix()

            def visit(node, scope):
                for child in ast.iter_child_nodes(node):
                    inner = scope
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        inner = f"{scope}.{child.name}" if scope else child.name
                    if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)
                            and child.func.attr in ("dumps", "dump") and isinstance(child.func.value, ast.Name)
                            and child.func.value.id == "json" and child.args
                            and PARAMS_ARG.search(ast.get_source_segment(source, child.args[0]) or "")):
                        found.add((rel, scope))
                    visit(child, inner)

            visit(tree, "")
    return found


def test_params_are_serialised_in_one_function_and_the_record_writer():
    found = _param_dumps()
    record_writer = {f for f in found if f[1] == "Record.to_json"}
    assert len(record_writer) == 1, found
    assert found - record_writer == {("harness/key.py", "params_text")}, found


# -------------------------------------------------------------------------- schema 2 run folders
@pytest.fixture()
def schema2(tmp_path):
    """Run folders written by the previous version (schema 2, 2 rounds each) and its compare output."""
    shutil.copytree(SCHEMA2, tmp_path / "schema2")
    return tmp_path / "schema2"


def test_schema2_run_folders_load_with_keys_from_their_suites(schema2):
    a = load_results(schema2 / "runA")
    assert a.rounds == 2 and len(a.round_records) == 2 * len(a.records)
    grid = set(a.suites_meta["activations"]["grid"])
    for r in a.records:
        assert set(r.key.grid_dict) == grid & set(r.params) and r.key.params == r.params


def test_rounds_are_runs_of_a_case_and_the_record_is_derived_once(schema2):
    from collections.abc import Mapping

    a = load_results(schema2 / "runA")
    assert len(a.cases) == len(a.records) and all(len(c.runs) == 2 for c in a.cases)
    case = a.cases[0]
    assert case.record is a.records[0] and case.record is case.record  # worked out once, kept
    assert case.record.key == case.key and [r.info["round"] for r in case.runs] == [0, 1]
    lat = case.record.metrics["latency"]
    assert lat.extra["rounds"] == [r.metrics["latency"].value for r in case.runs]
    assert not isinstance(lat, Mapping) and lat.to_dict()["unit"] == "ms"


def _verdicts(doc: dict) -> list[tuple]:
    return sorted((r["suite"], r["variant"], params_text(r["params"]), r["metric"], r["verdict"]) for r in doc["rows"])


def test_schema2_runs_compare_as_the_previous_version_did(schema2, capsys):
    capsys.readouterr()
    assert main(["compare", str(schema2 / "runA"), str(schema2 / "runB"), "--format", "json"]) == 0
    now = json.loads(capsys.readouterr().out)
    before = json.loads((schema2 / "cmp.json").read_text())
    # one deliberate change since: a timing stopped by its budget gets a verdict when the whole
    # interval of B/A clears the threshold (squared_relu forward+backward: B's rounds all 23% below
    # A's, 'noisy' before, 'faster' now); every other verdict is as the previous version gave it
    cleared = {(r["suite"], r["variant"], params_text(r["params"]), r["metric"]) for r in now["rows"]
               if "clears the threshold" in r["note"]}
    assert len(cleared) == 1
    assert [v for v in _verdicts(now) if v[:4] not in cleared] == [v for v in _verdicts(before) if v[:4] not in cleared]
    assert [v[4] for v in _verdicts(before) if v[:4] in cleared] == ["noisy"]
    assert [v[4] for v in _verdicts(now) if v[:4] in cleared] == ["faster"]


def test_schema2_runs_report_and_export(schema2, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(schema2 / "runB"), "--against", str(schema2 / "runA"), "-o", str(out)]) == 0
    assert "squared_relu" in out.read_text()
    capsys.readouterr()
    assert main(["export", str(schema2 / "runA"), "--format", "csv"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("suite,metric,unit,better,device,pass,relu,") and "squared_relu:ratio" in text


# -------------------------------------------------------------------------- asv histories
def test_every_suite_keeps_its_benchmark_version():
    """asv keys a benchmark's history on its version: a suite whose ``benchmark_version()`` moves
    starts a new, empty history. Refactoring the engine must not move any; a commit that
    deliberately changes what a suite measures updates ``tests/data/benchmark_versions.json`` in
    the same commit."""
    from harness.declare.registry import discover

    registry = discover()
    expected = json.loads((DATA / "benchmark_versions.json").read_text())
    assert {name: registry.get(name).benchmark_version() for name in registry.names()} == expected
