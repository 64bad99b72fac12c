"""One conformance test over every registered suite: its quick profile runs on the CPU.

Every case gives a record; nothing fails; skipped cases say why; every metric carries its
unit and direction and is declared by the suite; the tables render.
"""

from __future__ import annotations

import pytest

from harness.present.export import build_tables, render
from harness.plan import plan_suite
from harness.declare.registry import discover
from harness.results import read_records
from harness.run.session import run_cases

pytestmark = pytest.mark.slow  # every suite's quick profile, minutes

REGISTRY = discover()


def test_every_suite_file_loads():
    assert not REGISTRY.failures, [(f.path, f.error) for f in REGISTRY.failures]


@pytest.mark.parametrize("name", REGISTRY.names())
def test_quick_profile_runs_on_cpu(name, tmp_path):
    cls = REGISTRY.get(name)
    assert {"quick", "default", "nightly"} <= set(cls.profile_names())
    cases = plan_suite(cls, "quick", "cpu")
    assert cases, "the quick profile has no cases"
    records = run_cases(cases, {name: cls}, tmp_path, run_id="conformance", progress=False)
    assert len(records) == len(cases) == len(read_records(tmp_path))
    specs = cls.metric_specs()
    for case, rec in zip(cases, records):
        assert (rec.suite, rec.variant, rec.params) == (case.suite, case.variant, case.params_dict)
        assert rec.status in ("ok", "skipped"), f"{case.label()}: {rec.status}: {rec.reason}\n{rec.info.get('traceback', '')}"
        unmet = cls.variants()[case.variant].unmet("cpu")
        if unmet:  # what a variant declares it needs decides, not a list in a test
            assert (rec.status, rec.reason) == ("skipped", unmet), case.label()
        if rec.status == "skipped":
            assert rec.reason, f"{case.label()} skipped without a reason"
            continue
        assert "latency" in rec.metrics and rec.metrics["latency"].samples
        for metric, value in rec.metrics.items():
            assert metric in specs, f"{metric} is not declared by {name}"
            assert value.unit == specs[metric].unit or metric == "throughput"
            assert value.better == specs[metric].better
    ok = [r for r in records if r.status == "ok"]
    assert ok, "no case of the quick profile ran on the CPU"
    meta = {name: {"reference": cls.reference,
                   "metrics": {n: {"unit": m.unit, "better": m.better, "ratio": m.ratio} for n, m in specs.items()}}}
    text = render(build_tables(records, meta), "markdown")
    assert f"### {name}: latency [ms]" in text
