"""Comparison on synthetic samples: error rates, directions, verdicts, formats, exit codes."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

from harness.cli import main
from harness.compare import CompareOptions, compare, judge, mann_whitney_p, render
from harness.results import load_results
from synthetic_runs import ok_record, standard_run, status_record, timing_samples, write_run

TRIALS = 2000


def _rates(n: int, spread: float, slowdown: float, seed: int, options: CompareOptions) -> float:
    """Fraction of trials in which B (slowed by ``slowdown``) is judged 'slower' than A."""
    rng = np.random.default_rng(seed)
    flagged = 0
    for _ in range(TRIALS):
        a = timing_samples(rng, n, 1.0, spread)
        b = timing_samples(rng, n, 1.0 + slowdown, spread)
        verdict, _ = judge(float(np.median(a)), float(np.median(b)), "lower", "time", options,
                           mann_whitney_p(a, b), True)
        flagged += verdict == "slower"
    return flagged / TRIALS


@pytest.mark.parametrize("spread, max_false_positive, min_detection", [(0.02, 0.005, 0.99), (0.05, 0.01, 0.95)])
def test_false_positive_and_detection_rates(spread, max_false_positive, min_detection, record_property):
    """A/A over many trials is rarely flagged; a 10% slowdown nearly always is (30 samples a side)."""
    options = CompareOptions()
    fp = _rates(30, spread, 0.0, seed=1, options=options)
    detect = _rates(30, spread, 0.10, seed=2, options=options)
    record_property(f"aa_false_positive_rate_spread{spread}", fp)
    record_property(f"detection_rate_10pct_spread{spread}", detect)
    print(f"spread {spread:.0%}: A/A false-positive rate {fp:.2%}, 10% slowdown detected {detect:.2%}")
    assert fp <= max_false_positive
    assert detect >= min_detection


def test_very_noisy_slowdown_is_noisy_not_slower():
    rng = np.random.default_rng(3)
    a = timing_samples(rng, 8, 1.0, 0.4)
    b = [x * 1.3 for x in timing_samples(rng, 8, 1.0, 0.4)]
    p = mann_whitney_p(a, b)
    verdict, _ = judge(float(np.median(a)), float(np.median(b)), "lower", "time", CompareOptions(), p, True)
    assert p > 0.01 and verdict in ("noisy", "same")


@pytest.mark.parametrize(
    "a, b, better, kind, expected",
    [
        (100.0, 90.0, "higher", "rate", "slower"),  # throughput drop
        (100.0, 112.0, "higher", "rate", "faster"),
        (0.90, 0.80, "higher", "quality", "worse"),  # mAP drop
        (0.80, 0.90, "higher", "quality", "better"),
        (0.10, 0.20, "lower", "quality", "worse"),  # error up
        (1e-7, 1.3e-7, "lower", "quality", "same"),  # within the absolute tolerance
        (10.0, 11.0, "lower", "memory", "worse"),
        (10.0, 10.2, "lower", "memory", "same"),
        (10.0, 11.0, "lower", "time", "slower"),  # no samples: the threshold decides
        (None, 1.0, "lower", "time", "new"),
        (1.0, None, "lower", "time", "missing"),
    ],
)
def test_directions_and_kinds(a, b, better, kind, expected):
    assert judge(a, b, better, kind, CompareOptions())[0] == expected


def test_slowdown_of_whole_run(tmp_path):
    a = load_results(str(standard_run(tmp_path / "a", seed=0)))
    b = load_results(str(standard_run(tmp_path / "b", seed=1, slow=0.10)))
    c = compare(a, b)
    by = {(r.variant, r.params["n"], r.metric): r.verdict for r in c.rows}
    assert all(by[(v, n, "latency")] == "slower" for v in ("base", "fast") for n in (64, 256, 1024))
    assert all(by[(v, n, "throughput")] == "slower" for v in ("base", "fast") for n in (64, 256, 1024))
    assert all(by[(v, n, "peak_memory")] == "same" for v in ("base", "fast") for n in (64, 256, 1024))
    assert c.exit_code == 1
    aa = compare(a, load_results(str(standard_run(tmp_path / "a2", seed=5))))
    assert aa.exit_code == 0, render(aa, "markdown")


def test_new_missing_failed(tmp_path):
    rng = np.random.default_rng(0)

    def rec(variant, n, **kw):
        return ok_record(variant, n, timing_samples(rng, 20, 1.0, 0.02), **kw)

    a = write_run(tmp_path / "a", [
        rec("base", 64), rec("base", 256), rec("base", 1024), rec("fast", 64),
        status_record("fast", 256, "failed", "ValueError: boom"),
        rec("fast", 1024),
    ])
    b = write_run(tmp_path / "b", [
        rec("base", 64, accuracy=None),  # metric gone
        status_record("base", 256, "oom", "CUDA out of memory"),  # worked before
        status_record("base", 1024, "skipped", "needs a CUDA device"),
        # fast n=64 missing entirely
        rec("fast", 256),  # failed before, works now
        rec("fast", 1024), rec("fast", 4096),  # a new case
    ])
    c = compare(load_results(str(a)), load_results(str(b)))
    by = {}
    for r in c.rows:
        by.setdefault((r.variant, r.params["n"]), {})[r.metric] = r.verdict
    assert by[("base", 64)]["accuracy"] == "missing"
    assert set(by[("base", 256)].values()) == {"failed"}
    assert set(by[("base", 1024)].values()) == {"missing"}
    assert set(by[("fast", 64)].values()) == {"missing"}
    assert set(by[("fast", 256)].values()) == {"new"}
    assert set(by[("fast", 4096)].values()) == {"new"}
    assert c.exit_code == 1  # the oom is a regression
    assert compare(load_results(str(a)), load_results(str(b)), CompareOptions(fail_on_missing=True)).regressions


def test_formats_and_exit_codes(tmp_path, capsys):
    a = standard_run(tmp_path / "a", seed=0)
    b = standard_run(tmp_path / "b", seed=1, slow=0.25)
    assert main(["compare", str(a), str(b), "--format", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["exit_code"] == 1 and data["rows"][0]["regression"]
    assert main(["compare", str(a), str(b), "--format", "csv"]) == 1
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {"verdict", "ratio", "p_value"} <= set(rows[0]) and float(rows[0]["ratio"]) > 1
    assert main(["compare", str(a), str(b), "--changes-only"]) == 1
    out = capsys.readouterr().out
    assert "#### toy" in out and "| **slower** | base |" in out and "| same |" not in out
    assert main(["compare", str(a), str(b), "--threshold", "time=0.5", "--threshold", "rate=0.5"]) == 0
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--threshold", "speed=0.1"]) == 2
    assert main(["compare", str(a), str(b), "--format", "yaml"]) == 2
    assert "harness: error:" in capsys.readouterr().err


def test_refuses_other_device_unless_forced(tmp_path, capsys):
    a = standard_run(tmp_path / "a", seed=0)
    b = standard_run(tmp_path / "b", seed=1, device="cuda", device_name="NVIDIA H100 80GB HBM3")
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "different devices" in err[0] and "--force" in err[0]
    assert main(["compare", str(a), str(b), "--force", "--format", "json"]) in (0, 1)
    assert "forced comparison across devices" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["missing", "corrupt", "truncated", "empty"])
def test_bad_run_folders_exit_2(tmp_path, capsys, damage):
    good = standard_run(tmp_path / "good", seed=0)
    bad = standard_run(tmp_path / "bad", seed=1)
    records = bad / "records.jsonl"
    text = records.read_text()
    if damage == "missing":
        bad = tmp_path / "nowhere"
    elif damage == "corrupt":
        lines = text.splitlines()
        lines[1] = lines[1][: len(lines[1]) // 2]
        records.write_text("\n".join(lines) + "\n")
    elif damage == "truncated":
        records.write_text(text[: len(text) - 40])
    else:
        records.write_text("")
    assert main(["compare", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: ")


def test_a_finite_quality_turning_into_nan_or_inf_is_a_regression(tmp_path):
    import math

    samples = [1.0, 1.01, 0.99, 1.02, 0.98]
    a = write_run(tmp_path / "a", [ok_record("base", 64, samples, accuracy=0.9),
                                   ok_record("fast", 64, samples, accuracy=0.8)])
    b = write_run(tmp_path / "b", [ok_record("base", 64, samples, accuracy=math.nan),
                                   ok_record("fast", 64, samples, accuracy=math.inf)])
    c = compare(load_results(a), load_results(b))
    rows = {(r.variant, r.metric): r for r in c.rows}
    assert rows[("base", "accuracy")].verdict == "worse" and rows[("base", "accuracy")].note == "B is nan (A was finite)"
    assert rows[("fast", "accuracy")].verdict == "worse" and "inf" in rows[("fast", "accuracy")].note
    assert c.exit_code == 1
    back = compare(load_results(b), load_results(b))
    assert {r.verdict for r in back.rows if r.metric == "accuracy"} == {"same"}
