"""The HTML report: one self-contained page with plots, Pareto view, tables, environment, verdicts."""

from __future__ import annotations

import base64
import re

from harness.cli import main
from harness.report import pareto_front
from synthetic_runs import standard_run


def test_report_is_self_contained_with_plots_and_tables(tmp_path, capsys):
    run = standard_run(tmp_path / "run", seed=0)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "<script" not in page
    figures = re.findall(r"<figure class='plot' data-suite='toy' data-kind='(\w+)' data-metric='(\w+)'>", page)
    assert ("metric", "latency") in figures and ("metric", "accuracy") in figures
    assert ("pareto", "accuracy") in figures  # the suite has a quality metric
    for data in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page):
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<table class='results' data-suite='toy' data-metric='latency'>" in page
    assert "Test CPU 9000" in page  # the environment


def test_report_against_baseline_shows_verdicts_and_exit_code(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_BASELINES_DIR", str(tmp_path / "b"))
    base = standard_run(tmp_path / "base", seed=0)
    assert main(["baseline", "save", str(base), "--name", "ref"]) == 0
    slow = standard_run(tmp_path / "slow", seed=1, slow=0.3)
    out = tmp_path / "r.html"
    assert main(["report", str(slow), "--against", "ref", "-o", str(out)]) == 1
    page = out.read_text()
    assert "data-exit-code='1'" in page and "REGRESSION" in page
    assert "<tr class='slower'>" in page


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
