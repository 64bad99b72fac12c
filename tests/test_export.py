"""Exporters: paper-style pivots in Markdown, CSV, LaTeX, HTML and JSON."""

from __future__ import annotations

import csv
import io
import json

from harness.export import build_tables, render
from harness.results import Record, metric_value

META = {"s": {"reference": "base", "metrics": {"latency": {"unit": "ms", "better": "lower", "ratio": True},
                                                "err": {"unit": "", "better": "lower", "ratio": False}}}}


def rec(variant, n, value, status="ok", **params):
    metrics = {}
    if status == "ok":
        metrics = {"latency": metric_value(value, "ms", "lower", "time", median=value, iqr=value / 10, n=5),
                   "err": metric_value(value / 1000, "", "lower", "quality")}
    return Record("s", variant, {"n": n, "dtype": "float32", **params}, "cpu", status,
                  reason="needs a CUDA device" if status == "skipped" else ("boom" if status == "failed" else ""),
                  metrics=metrics)


RECORDS = [
    rec("base", 128, 2.0), rec("fast", 128, 1.0), rec("approx", 128, 0.5, features=16), rec("approx", 128, 0.8, features=64),
    rec("gpu", 128, 0, "skipped"),
    rec("base", 256, 8.0), rec("fast", 256, 3.0, "failed"), rec("approx", 256, 1.0, features=16),
    rec("approx", 256, 1.6, features=64), rec("gpu", 256, 0, "skipped"),
]


def test_pivot_rows_columns_and_ratios():
    (lat, err) = build_tables(RECORDS, META)
    assert (lat.metric, err.metric) == ("latency", "err")
    assert lat.row_params == ["n"] and lat.fixed_params == {"dtype": "float32"}
    assert lat.columns == ["base", "fast", "approx[features=16]", "approx[features=64]", "gpu"]
    (k1, c1), (k2, c2) = lat.rows
    assert (k1, k2) == ((128,), (256,))
    assert c1["fast"].ratio == 0.5 and c1["approx[features=64]"].ratio == 0.4
    assert c2["fast"].status == "failed" and c2["fast"].value is None
    assert c1["base"].spread == 0.1
    assert lat.skipped_columns() == {"gpu": "needs a CUDA device"}
    assert err.reference is None and c1["fast"].ratio is not None
    assert all(c.ratio is None for _, cells in err.rows for c in cells.values())


GOLDEN_MARKDOWN = """### s: latency [ms], lower is better; ratio to base; device cpu

Fixed: dtype=float32. Cells: median ±IQR/median (ratio to the reference).

| n | base | fast | approx[features=16] | approx[features=64] |
|---|---|---|---|---|
| 128 | 2 ±10.0% (1.00x) | 1 ±10.0% (0.50x) | 0.5 ±10.0% (0.25x) | 0.8 ±10.0% (0.40x) |
| 256 | 8 ±10.0% (1.00x) | failed | 1 ±10.0% (0.12x) | 1.6 ±10.0% (0.20x) |

Skipped: gpu (needs a CUDA device)
"""


def test_markdown_golden():
    assert render(build_tables(RECORDS, META, metric="latency"), "markdown") == GOLDEN_MARKDOWN


def test_csv_is_full_precision_and_wide():
    records = RECORDS + [rec("base", 512, 1 / 3)]
    text = render(build_tables(records, META, metric="latency"), "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["n"] for r in rows] == ["128", "256", "512"]
    assert rows[0]["fast"] == "1.0" and rows[0]["fast:ratio"] == "0.5" and rows[0]["fast:status"] == "ok"
    assert rows[1]["fast:status"] == "failed" and rows[1]["fast"] == ""
    assert float(rows[2]["base"]) == 1 / 3  # never rounded


def test_latex_is_a_booktabs_table():
    text = render(build_tables(RECORDS, META, metric="latency"), "latex")
    assert "\\begin{tabular}{lrrrr}" in text and "\\toprule" in text and "\\bottomrule" in text
    assert "approx[features=16]" in text
    assert "8 $\\pm$10.0\\% (1.00$\\times$)" in text
    assert "\\textit{failed}" in text


def test_html_page_holds_the_tables():
    text = render(build_tables(RECORDS, META), "html")
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("<table class='results'") == 2
    assert "<td class='failed' title='boom'>failed</td>" in text


def test_json_round_trips_values():
    data = json.loads(render(build_tables(RECORDS, META), "json"))
    assert [t["metric"] for t in data] == ["latency", "err"]
    cell = data[0]["rows"][0]["cells"]["approx[features=16]"]
    assert cell["value"] == 0.5 and cell["ratio"] == 0.25 and cell["status"] == "ok"


def test_a_measurement_that_is_not_valid_is_marked():
    throttled = rec("fast", 128, 1.0)
    throttled.info = {"valid": False, "valid_reason": "HW power brake slowdown during the timed window"}
    text = render(build_tables([rec("base", 128, 2.0), throttled], META, metric="latency"), "markdown")
    assert "| 1 ±10.0% (0.50x) † |" in text
    assert "† not valid: HW power brake slowdown during the timed window" in text
    assert "†" not in render(build_tables([rec("base", 128, 2.0)], META, metric="latency"), "markdown")
