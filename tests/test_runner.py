"""Failures are data: every outcome of a case becomes a record and the run goes on."""

from __future__ import annotations

import pytest

from harness.plan import plan_suite
from harness.declare.registry import discover
from harness.results import read_records
from harness.run.session import run_cases


def toy(path):
    reg = discover(extra=[path], builtin=False)
    return reg.get("toy")


def cases_for(cls, *variants):
    """The quick-profile cases of the named variants, in the order named (repeats allowed)."""
    by_name = {c.variant: c for c in plan_suite(cls, "quick", "cpu")}
    return [by_name[v] for v in variants]


def by_variant(records):
    return {r.variant: r for r in records}


def test_in_process_statuses(toy_suite_file, tmp_path):
    cls = toy(toy_suite_file)
    cases = cases_for(cls, "ok", "raises", "oom", "gpu_only", "skips", "hangs")
    records = run_cases(cases, {"toy": cls}, tmp_path / "run", run_id="t", timeout_s=2.0, progress=False)
    rec = by_variant(records)
    assert rec["ok"].status == "ok"
    assert rec["ok"].metrics["score"].to_dict() == {"value": 8.0 * 8 * 8, "unit": "points", "better": "higher",
                                             "kind": "quality"}
    assert rec["ok"].metrics["latency"].unit == "ms" and rec["ok"].metrics["latency"].n >= 3
    assert rec["ok"].metrics["tflops"].value > 0
    assert rec["raises"].status == "failed"
    assert rec["raises"].reason == "ValueError: bad value in the operation"
    assert "Traceback" in rec["raises"].info["traceback"]
    assert rec["oom"].status == "oom"
    assert "out of memory" in rec["oom"].reason
    assert rec["gpu_only"].status == "skipped" and rec["gpu_only"].reason == "needs a CUDA device"
    assert rec["skips"].status == "skipped" and rec["skips"].reason == "not meaningful at this size"
    assert rec["hangs"].status == "timeout"
    # every record reached the disk, in order
    assert [r.variant for r in read_records(tmp_path / "run")] == [c.variant for c in cases]


@pytest.mark.slow
def test_isolated_statuses_timeout_and_killed_worker(toy_suite_file, tmp_path):
    cls = toy(toy_suite_file)
    cases = cases_for(cls, "ok", "dies", "raises", "hangs", "oom", "ok")
    records = run_cases(cases, {"toy": cls}, tmp_path / "run", run_id="t", isolate=True, timeout_s=5.0,
                        progress=False)
    statuses = [r.status for r in records]
    assert statuses == ["ok", "crashed", "failed", "timeout", "oom", "ok"]
    assert "SIGKILL" in records[1].reason
    assert "worker killed" in records[3].reason
    assert len(read_records(tmp_path / "run")) == 6


def test_prepare_failure_is_reported_for_every_variant(write_suite, tmp_path):
    path = write_suite("badprep", '''
        from harness import Suite, Workload, variant

        class BadPrep(Suite):
            name = "badprep"
            grid = {"n": [1]}

            def prepare(self, params, device):
                raise KeyError("missing input")

            @variant()
            def a(self, state, params):
                return Workload(lambda: None)

            @variant()
            def b(self, state, params):
                return Workload(lambda: None)
        ''')
    cls = discover(extra=[path], builtin=False).get("badprep")
    records = run_cases(plan_suite(cls, "default", "cpu"), {"badprep": cls}, None, progress=False)
    assert [(r.status, r.reason) for r in records] == [("failed", "KeyError: 'missing input'")] * 2


def test_undeclared_metric_is_a_failure(write_suite):
    path = write_suite("undeclared", '''
        from harness import Suite, Workload, variant

        class Undeclared(Suite):
            name = "undeclared"
            grid = {"n": [1]}

            @variant()
            def a(self, state, params):
                return Workload(lambda: 1, flops=0, metrics={"mystery": 1.0})
        ''')
    cls = discover(extra=[path], builtin=False).get("undeclared")
    (record,) = run_cases(plan_suite(cls, "default", "cpu"), {"undeclared": cls}, None, progress=False)
    assert record.status == "failed"
    assert "does not declare" in record.reason


@pytest.mark.parametrize("pattern,expected", [
    ("ok", ["ok"]),
    ("toy/r*", ["raises"]),
    ("oom or skips", ["oom", "skips"]),
    ("n=8 and not ok and not oom", ["raises", "hangs", "dies", "gpu_only", "skips"]),
])
def test_k_pattern_selects_cases(toy_suite_file, pattern, expected):
    cls = toy(toy_suite_file)
    assert [c.variant for c in plan_suite(cls, "quick", "cpu", pattern)] == expected


def test_per_item_latency_is_the_measured_latency_divided_by_items(write_suite):
    path = write_suite("peritem", '''
        from harness import Metric, Suite, Workload, variant

        class PerItem(Suite):
            name = "peritem"
            grid = {"n": [1]}
            metrics = [Metric("latency_per_image", "ms", "lower")]

            @variant()
            def a(self, state, params):
                return Workload(lambda: sum(range(1000)), flops=0, items=8, per_item_latency="latency_per_image")
        ''')
    cls = discover(extra=[path], builtin=False).get("peritem")
    (record,) = run_cases(plan_suite(cls, "default", "cpu"), {"peritem": cls}, None, progress=False)
    lat, per = record.metrics["latency"], record.metrics["latency_per_image"]
    assert per.value == lat.median / 8 and per.iqr == lat.iqr / 8 and per.n == lat.n
    assert per.samples == [s / 8 for s in lat.samples] and per.unit == "ms"


MOVER = '''
import io
import os
import signal
import sys

import torch

from harness import Profile, Suite, Timing, Workload, variant


class Mover(Suite):
    name = "mover"
    grid = {"n": [4]}
    profiles = {"quick": Profile(timing=Timing(warmup_s=0, budget_s=0.005, min_runs=2))}

    def prepare(self, params, device):
        return torch.ones(params["n"])

    @variant()
    def moves(self, x, params):
        os.chdir(os.environ["MOVER_ELSEWHERE"])
        os.environ["MOVER_LEAK"] = "1"
        del os.environ["MOVER_KEEP"]
        sys.stdout = io.StringIO()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        return Workload(lambda: x + 1)
'''


def test_a_case_puts_back_cwd_environment_streams_and_signal_mask(write_suite, tmp_path, monkeypatch):
    import os
    import signal
    import sys

    from harness.run.executors import CaseExecutor

    cls = discover(extra=[write_suite("mover", MOVER)], builtin=False).get("mover")
    monkeypatch.setenv("MOVER_ELSEWHERE", str(tmp_path))
    monkeypatch.setenv("MOVER_KEEP", "kept")
    before = (os.getcwd(), sys.stdout, signal.pthread_sigmask(signal.SIG_BLOCK, []))
    record = CaseExecutor({"mover": cls}).run(cases_for(cls, "moves")[0], timeout_s=30)
    assert record.status == "ok", record.reason
    assert set(record.info["restored_process_state"]) == {"cwd", "environ", "streams", "signal_mask"}
    assert (os.getcwd(), sys.stdout, signal.pthread_sigmask(signal.SIG_BLOCK, [])) == before
    assert "MOVER_LEAK" not in os.environ and os.environ["MOVER_KEEP"] == "kept"
