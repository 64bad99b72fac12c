"""The HTML report: one self-contained page, summary first, then plots with spread, Pareto views
with the quality band, tables, verdicts and environment."""

from __future__ import annotations

import base64
import re

from harness.cli import main
from harness.present.report import pareto_front
from synthetic_runs import standard_run, troubled_run


def test_report_is_self_contained_with_plots_and_tables(tmp_path, capsys):
    run = standard_run(tmp_path / "run", seed=0)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script src" not in page
    assert "<link" not in page  # nothing loaded from elsewhere
    figures = re.findall(r'<figure class="plot" data-suite="toy" data-kind="(\w+)" data-metric="(\w+)"', page)
    assert ("metric", "latency") in figures and ("metric", "accuracy") in figures
    assert ("pareto", "accuracy") in figures  # the suite has a quality metric
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(figures)
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table class='results' data-suite='toy' data-metric='latency'>" in page
    assert "Test CPU 9000" in page  # the environment
    assert "Nothing needs attention" in page
    assert "shaded: range of rounds" in page  # the spread between the 3 rounds is drawn


def test_report_against_baseline_shows_verdicts_and_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_BASELINES_DIR", str(tmp_path / "b"))
    base = standard_run(tmp_path / "base", seed=0)
    assert main(["baseline", "save", str(base), "--name", "ref"]) == 0
    slow = standard_run(tmp_path / "slow", seed=1, slow=0.3)
    out = tmp_path / "r.html"
    assert main(["report", str(slow), "--against", "ref", "-o", str(out)]) == 1
    page = out.read_text()
    assert 'data-exit-code="1"' in page and "REGRESSION" in page
    assert '<tr class="slower" data-verdict="slower">' in page  # in the full verdict table
    assert '<details id="all-verdicts">' in page  # which is collapsed


def test_report_of_a_truncated_run_warns_instead_of_failing(tmp_path):
    run = standard_run(tmp_path / "run", seed=0)
    text = (run / "records.jsonl").read_text()
    (run / "records.jsonl").write_text(text[:-30])
    assert main(["report", str(run)]) == 0
    assert "truncated" in (run / "report.html").read_text()


def test_pareto_front():
    pts = [(1.0, 0.5), (2.0, 0.1), (3.0, 0.2), (0.5, 0.9)]  # (latency, error), lower error better
    assert pareto_front(pts, "lower") == [3, 0, 1]
    assert pareto_front([(1.0, 0.5), (2.0, 0.9)], "higher") == [0, 1]


def test_summary_lists_failures_band_violations_and_regressions_worst_first(tmp_path, monkeypatch):
    """One row per case, worst first: a failed case, then one out of its quality band, then one
    30% slower with the ratio's interval; the variant's and the swept params are shown."""
    from harness.judge.compare import compare
    from harness.present.report import summary_cases
    from harness.results import load_results

    a = load_results(troubled_run(tmp_path / "a", seed=0, troubled=False))
    b = load_results(troubled_run(tmp_path / "b", seed=1))
    cases = summary_cases(b, compare(a, b))
    assert [c.key for c in cases] == ["toy/base n=64", "toy/fast n=1024", "toy/fast n=256"]
    assert [c.verdicts for c in cases] == [["failed"], ["out-of-band"], ["slower"]]
    assert "RuntimeError: probe failure" in cases[0].notes[0]
    assert cases[1].metrics == ["accuracy"] and "0.855" in cases[1].notes[0]
    (change,) = cases[2].changes
    assert re.fullmatch(r"latency 1\.3\d\dx \[1\.\d{3}, 1\.\d{3}\]", change), change
    alone = summary_cases(b)  # without a comparison: the run's own failures and band violations
    assert [c.key for c in alone] == ["toy/base n=64", "toy/fast n=1024"]


def test_variant_params_are_part_of_the_case(tmp_path):
    from harness.key import CaseKey, case_label

    key = CaseKey.split("diffusion", "ddim", {"steps": 10, "eta": 0.0, "resolution": 32}, {"resolution"})
    assert case_label("ddim", key.variant_dict) == key.label == "ddim[steps=10, eta=0.0]"
    assert key.grid_dict == {"resolution": 32}


def test_band_limits_follow_the_reference():
    from harness.present.report import band_limits

    bands = [{"metric": "AP", "min_ratio": 0.75}, {"metric": "rel_error", "max": 1e-3, "variants": ["sdpa"]}]
    assert band_limits(bands, "AP", 0.4) == [("min", 0.75 * 0.4, "band min 0.75 x reference")]
    assert band_limits(bands, "AP", None) == []
    assert band_limits(bands, "rel_error", None) == [("max", 1e-3, "band max 0.001 (sdpa)")]
