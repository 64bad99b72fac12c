"""Issue 21, item 4: every hole through which a real regression passed `harness compare` with
exit 0. One test per hole, on synthetic run folders and evidence (nothing is measured)."""

from __future__ import annotations

import json
import math

import pytest

from harness.cli import main
from harness.judge.compare import CompareOptions, Evidence, compare, judge, ratio_interval
from harness.results import Record, load_results, metric_value
from synthetic_runs import SUITE_META, ok_record, status_record, write_run

SAMPLES = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 1.01, 0.99, 1.0, 1.0]


def _meta(**metrics) -> dict:
    """The toy suite's declaration with extra metrics (name -> declaration)."""
    meta = json.loads(json.dumps(SUITE_META))
    meta["toy"]["metrics"].update(metrics)
    return meta


def _rounds(variant: str, values: list[float], n: int = 64, metric: str = "accuracy", **kw) -> list[Record]:
    """One record per round; ``metric`` takes the round's value from ``values``."""
    out = []
    for i, v in enumerate(values):
        rec = ok_record(variant, n, SAMPLES, **kw)
        if metric == "accuracy":
            rec.metrics["accuracy"] = metric_value(v, "", "higher", "quality")
        elif metric == "peak_memory":
            rec.metrics["peak_memory"] = metric_value(v, "MiB", "lower", "memory")
        else:
            rec.metrics[metric] = metric_value(v, "", "lower", "quality")
        if len(values) > 1:
            rec.info["round"] = i
        out.append(rec)
    return out


def _rows(c) -> dict:
    return {(r.variant, r.params.get("n"), r.metric): r for r in c.rows}


# ---------------------------------------------------------------------------------------- NaN/inf
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_in_one_round_of_b_is_worse(tmp_path, bad):
    """A finite in all 3 rounds, B NaN (or inf) in one of 3: the median of B's rounds is finite
    and equal to A's, but a round that turned non-finite is a regression."""
    a = write_run(tmp_path / "a", _rounds("base", [0.9, 0.9, 0.9]))
    b = write_run(tmp_path / "b", _rounds("base", [0.9, bad, 0.9]))
    c = compare(load_results(a), load_results(b))
    row = _rows(c)[("base", 64, "accuracy")]
    assert row.verdict == "worse", (row.verdict, row.note)
    assert "1 of 3 rounds" in row.note
    assert c.exit_code == 1
    # the same B against itself: non-finite on both sides is not news
    assert _rows(compare(load_results(b), load_results(b)))[("base", 64, "accuracy")].verdict == "same"


def test_nan_in_one_round_survives_a_baseline(tmp_path, monkeypatch):
    """Saved as a baseline (its rounds written as JSON) and read back, the NaN round still counts."""
    monkeypatch.setenv("HARNESS_BASELINES_DIR", str(tmp_path / "bl"))
    a = write_run(tmp_path / "a", _rounds("base", [0.9, 0.9, 0.9]))
    b = write_run(tmp_path / "b", _rounds("base", [0.9, math.nan, 0.9]))
    assert main(["baseline", "save", str(b), "--name", "nanny"]) == 0
    c = compare(load_results(a), load_results("nanny"))
    assert _rows(c)[("base", 64, "accuracy")].verdict == "worse"


# ---------------------------------------------------------------------------------------- quality
def test_quality_error_growing_5x_under_the_old_absolute_tolerance_is_worse(tmp_path):
    """A float32 error of 2e-7 growing to 1e-6 is 5x, past 2% and far past a few ulps."""
    meta = _meta(error={"unit": "", "better": "lower", "kind": "quality", "ratio": False})
    a = write_run(tmp_path / "a", _rounds("base", [2e-7], metric="error"), suites=meta)
    b = write_run(tmp_path / "b", _rounds("base", [1e-6], metric="error"), suites=meta)
    c = compare(load_results(a), load_results(b))
    assert _rows(c)[("base", 64, "error")].verdict == "worse"
    assert c.exit_code == 1
    assert judge(Evidence(2e-7, [2e-7]), Evidence(1e-6, [1e-6]), "lower", "quality", CompareOptions())[0] == "worse"


@pytest.mark.parametrize("dtype, b, expected", [
    ("bfloat16", 0.975, "same"),  # 8 bits of mantissa: 4 ulps at 1.0 are 3.1%
    ("float32", 0.975, "worse"),  # 2.5% is past 2%
    (None, 0.975, "worse"),  # no dtype param: float32
    ("bfloat16", 0.95, "worse"),  # 5% is past both
    ("float16", 0.975, "worse"),  # 4 ulps at 1.0 are 0.4%
])
def test_quality_floor_is_a_few_ulps_of_the_cases_dtype(tmp_path, dtype, b, expected):
    a_recs, b_recs = _rounds("base", [1.0]), _rounds("base", [b])
    meta = _meta()
    if dtype is not None:
        for r in a_recs + b_recs:
            r.params["dtype"] = dtype
        meta["toy"]["grid"]["dtype"] = [dtype]
    c = compare(load_results(write_run(tmp_path / "a", a_recs, suites=meta)),
                load_results(write_run(tmp_path / "b", b_recs, suites=meta)))
    (row,) = [r for r in c.rows if r.metric == "accuracy"]
    assert row.verdict == expected, (row.verdict, row.note)


def test_the_dtype_table_matches_torch():
    import torch

    from harness.judge.stats import DTYPE_EPS

    for name, eps in DTYPE_EPS.items():
        assert eps == torch.finfo(getattr(torch, name)).eps, name


def test_a_suite_declared_atol_is_the_quality_floor(tmp_path):
    """A metric whose suite declares atol=1e-3: 1e-4 -> 5e-4 is within it, 1e-4 -> 2e-3 is not;
    ``Metric(atol=...)`` is how a suite declares it, and the run folder keeps it."""
    meta = _meta(error={"unit": "", "better": "lower", "kind": "quality", "ratio": False, "atol": 1e-3})
    a = write_run(tmp_path / "a", _rounds("base", [1e-4], metric="error"), suites=meta)
    for name, value, verdict in (("same", 5e-4, "same"), ("worse", 2e-3, "worse")):
        b = write_run(tmp_path / name, _rounds("base", [value], metric="error"), suites=meta)
        assert _rows(compare(load_results(a), load_results(b)))[("base", 64, "error")].verdict == verdict

    from harness import Metric, Suite, Workload, variant

    class AtolProbe(Suite):
        name = "atolprobe"
        grid = {"n": [1]}
        reference = "a"
        metrics = [Metric("error", "", "lower", "max abs error", atol=1e-3), Metric("score", "", "higher")]

        @variant()
        def a(self, state, params):
            return Workload(lambda: None, metrics={"error": 0.0, "score": 1.0})

    declared = AtolProbe.declaration()["metrics"]
    assert declared["error"]["atol"] == 1e-3 and "atol" not in declared["score"]
    with pytest.raises(Exception, match="atol"):
        Metric("error", "", atol=-1.0)


# ---------------------------------------------------------------------------------------- memory
@pytest.mark.parametrize("a, b, expected", [
    (0.13, 0.76, "worse"),  # 6x, but under the old 1 MiB
    (0.10, 0.104, "same"),  # 4 KiB: under the 64 KiB floor
    (0.45, 0.51, "same"),  # 61 KiB: allocator noise between runs
    (100.0, 100.9, "same"),  # 0.9%: under 1% of A
    (100.0, 106.0, "worse"),  # past 5%
    (10.0, 10.4, "same"),  # 4%: under 5%
])
def test_memory_change_is_five_percent_with_a_floor_of_64_kib(a, b, expected):
    assert judge(Evidence(a, [a]), Evidence(b, [b]), "lower", "memory", CompareOptions())[0] == expected


def test_memory_floor_is_one_percent_of_a_when_the_threshold_is_lower():
    """With --threshold memory=0, the floor alone decides: max(64 KiB, 1% of A)."""
    opts = CompareOptions(thresholds={**CompareOptions().thresholds, "memory": 0.0})
    assert judge(Evidence(100.0, [100.0]), Evidence(100.9, [100.9]), "lower", "memory", opts)[0] == "same"
    assert judge(Evidence(100.0, [100.0]), Evidence(101.1, [101.1]), "lower", "memory", opts)[0] == "worse"
    assert judge(Evidence(1.0, [1.0]), Evidence(1.07, [1.07]), "lower", "memory", opts)[0] == "worse"


def test_memory_growing_6x_in_a_run_fails_the_gate(tmp_path):
    a = write_run(tmp_path / "a", _rounds("base", [0.13] * 3, metric="peak_memory"))
    b = write_run(tmp_path / "b", _rounds("base", [0.76] * 3, metric="peak_memory"))
    assert main(["compare", str(a), str(b)]) == 1


# ---------------------------------------------------------------------------------------- missing
def _missing_runs(tmp_path):
    a = write_run(tmp_path / "a", [ok_record("base", 64, SAMPLES), ok_record("fast", 64, SAMPLES),
                                   ok_record("base", 256, SAMPLES)])
    b = write_run(tmp_path / "b", [ok_record("base", 64, SAMPLES)])  # fast gone, base n=256 gone
    return a, b


def test_a_missing_case_fails_the_gate_by_default(tmp_path, capsys):
    a, b = _missing_runs(tmp_path)
    c = compare(load_results(a), load_results(b))
    assert {r.verdict for r in c.rows if r.variant == "fast"} == {"missing"}
    assert c.exit_code == 1
    assert main(["compare", str(a), str(b)]) == 1


def test_a_missing_metric_fails_the_gate_by_default(tmp_path):
    a = write_run(tmp_path / "a", [ok_record("base", 64, SAMPLES)])
    b = write_run(tmp_path / "b", [ok_record("base", 64, SAMPLES, accuracy=None)])
    c = compare(load_results(a), load_results(b))
    assert _rows(c)[("base", 64, "accuracy")].verdict == "missing"
    assert c.exit_code == 1
    ok = compare(load_results(a), load_results(b), CompareOptions(allow_missing=("accuracy",)))
    assert ok.exit_code == 0 and "--allow-missing" in _rows(ok)[("base", 64, "accuracy")].note


def test_a_case_skipped_in_b_that_was_ok_in_a_fails_the_gate(tmp_path):
    a = write_run(tmp_path / "a", [ok_record("base", 64, SAMPLES), ok_record("fast", 64, SAMPLES)])
    b = write_run(tmp_path / "b", [ok_record("base", 64, SAMPLES),
                                   status_record("fast", 64, "skipped", "needs a CUDA device")])
    assert compare(load_results(a), load_results(b)).exit_code == 1


def test_allow_missing_acknowledges_an_intended_removal(tmp_path, capsys):
    a, b = _missing_runs(tmp_path)
    # every missing case named: exit 0; by suite/variant and by the full label (brackets literal)
    assert main(["compare", str(a), str(b), "--allow-missing", "toy/fast", "--allow-missing", "toy/base[n=256]"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--allow-missing", "toy/f*", "--format", "json"]) == 1  # n=256 left
    data = json.loads(capsys.readouterr().out)
    verdicts = {(r["variant"], r["params"]["n"]): r["verdict"] for r in data["rows"] if r["metric"] == "latency"}
    assert verdicts[("fast", 64)] != "missing" and verdicts[("base", 256)] == "missing"
    # --fail-on-missing is still accepted (missing fails by default now)
    assert main(["compare", str(a), str(b), "--fail-on-missing"]) == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["compare", "--help"])
    assert done.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--allow-missing PATTERN" in help_text


# ---------------------------------------------------------------------------------------- status
@pytest.mark.parametrize("was, now, regression", [
    ("oom", "crashed", True),
    ("skipped", "oom", True),
    ("failed", "crashed", True),
    ("oom", "failed", True),
    ("crashed", "oom", False),
    ("timeout", "failed", False),
    ("failed", "skipped", False),
])
def test_a_status_change_for_the_worse_fails(tmp_path, was, now, regression):
    a = write_run(tmp_path / "a", [ok_record("base", 64, SAMPLES), status_record("fast", 64, was, "first")])
    b = write_run(tmp_path / "b", [ok_record("base", 64, SAMPLES), status_record("fast", 64, now, "second")])
    c = compare(load_results(a), load_results(b))
    (row,) = [r for r in c.rows if r.variant == "fast"]
    assert row.regression == regression, (row.verdict, row.note)
    assert c.exit_code == int(regression)
    assert was in row.note and now in row.note


# ---------------------------------------------------------------------------------------- trimming
OUTLIER_CASES = [
    ("A has one slow round", [1.0, 1.01, 0.99, 1.0, 3.5], [3.0, 3.02, 2.98, 3.01, 3.0]),
    ("B has one fast round", [1.0, 1.01, 0.99, 1.0, 1.0], [3.0, 3.02, 2.98, 3.01, 0.9]),
    ("A has one fast round", [1.0, 1.01, 0.99, 1.0, 0.2], [3.0, 3.02, 2.98, 3.01, 3.0]),
    ("B has one slow round", [1.0, 1.01, 0.99, 1.0, 1.0], [3.0, 3.02, 2.98, 3.01, 9.0]),
]


@pytest.mark.parametrize("why, ra, rb", OUTLIER_CASES, ids=[c[0] for c in OUTLIER_CASES])
def test_one_outlier_round_cannot_turn_a_3x_slowdown_into_noisy(why, ra, rb):
    """5 rounds a side: the extreme quarter (one round) of each side is left out in every check
    (overlap, noise between rounds, closest rounds, the ratio's interval)."""
    a = Evidence(sorted(ra)[2], ra, n=30)
    b = Evidence(sorted(rb)[2], rb, n=30)
    verdict, ratio, note, noise = judge(a, b, "lower", "time", CompareOptions())
    assert verdict == "slower", (verdict, note)
    lo, hi = ratio_interval(a, b)
    assert 2.5 < lo <= ratio <= hi < 3.5


def test_one_outlier_round_in_a_run_cannot_hide_a_3x_slowdown(tmp_path):
    def rounds(values):
        out = []
        for i, v in enumerate(values):
            rec = ok_record("base", 64, [v * s for s in SAMPLES])
            rec.info["round"] = i
            out.append(rec)
        return out

    a = write_run(tmp_path / "a", rounds([1.0, 1.01, 0.99, 1.0, 3.5]))
    b = write_run(tmp_path / "b", rounds([3.0, 3.02, 2.98, 3.01, 3.0]))
    c = compare(load_results(a), load_results(b))
    assert _rows(c)[("base", 64, "latency")].verdict == "slower"
    assert c.exit_code == 1


def test_cases_outside_what_b_was_asked_to_run_are_not_missing(tmp_path):
    """A run of fewer suites, or one narrowed by -k/--variant/--param, against a full baseline: the
    cases it was not asked for are named in a note, not failed; a case its selection holds still is."""
    import json

    a, b = _missing_runs(tmp_path)
    meta = json.loads((b / "run.json").read_text())
    narrowed = {**meta, "pattern": "base and n=64",
                "cases": [{"suite": r.suite, "variant": r.variant, "params": r.params}
                          for r in load_results(a).records if r.variant == "base" and r.params["n"] == 64]}
    (b / "run.json").write_text(json.dumps(narrowed))
    c = compare(load_results(a), load_results(b))
    assert c.exit_code == 0 and not [r for r in c.rows if r.verdict == "missing"]
    assert any("outside what B was asked to run" in n for n in c.notes)
    # the same selection that planned 'fast' but has no record of it: missing, a regression
    narrowed["cases"].append({"suite": "toy", "variant": "fast", "params": {"n": 64}})
    narrowed["pattern"] = "n=64"
    (b / "run.json").write_text(json.dumps(narrowed))
    c = compare(load_results(a), load_results(b))
    assert {r.verdict for r in c.rows if r.variant == "fast"} == {"missing"} and c.exit_code == 1


def test_a_timing_stopped_by_its_budget_still_gets_a_verdict_when_the_interval_clears_the_threshold(tmp_path):
    """A 24x slowdown whose rounds stopped on the time budget is slower, not noisy; a 6% change with
    the same stop stays noisy."""
    def run(folder, scale, rounds=3):
        records = []
        for r in range(rounds):
            rec = ok_record("base", 64, [x * scale * (1 + 0.01 * r) for x in SAMPLES])
            rec.info.update(stopped_by="budget", round=r)
            records.append(rec)
        return write_run(folder, records)

    a = run(tmp_path / "a", 1.0)
    c = compare(load_results(a), load_results(run(tmp_path / "b", 24.0)))
    row = _rows(c)[("base", 64, "latency")]
    assert row.verdict == "slower" and "clears the threshold" in row.note, row
    c = compare(load_results(a), load_results(run(tmp_path / "c", 1.06)))
    assert _rows(c)[("base", 64, "latency")].verdict == "noisy"
