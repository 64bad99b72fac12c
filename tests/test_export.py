"""Exporters: paper-style pivots in Markdown, CSV, LaTeX, HTML and JSON."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.present.export import build_tables, latex_escape, render
from harness.results import Record, metric_value, read_records

META = {"s": {"reference": "base", "metrics": {"latency": {"unit": "ms", "better": "lower", "ratio": True},
                                                "err": {"unit": "", "better": "lower", "ratio": False}}}}


def rec(variant, n, value, status="ok", **params):
    metrics = {}
    if status == "ok":
        metrics = {"latency": metric_value(value, "ms", "lower", "time", median=value, iqr=value / 10, n=30),
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
|:---|---:|---:|---:|---:|
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
    assert rows[0]["fast:n"] == "30" and rows[0]["fast:spread"] == "0.1"
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
    assert text.count("<table class='results' data-suite='s' data-metric=") == 2
    assert "<td class=\"data row1 col2 failed\" ><span title='boom'>failed</span></td>" in text


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


def test_a_single_sample_shows_no_spread():
    one = Record("s", "base", {"n": 1}, "cpu", "ok",
                 metrics={"latency": metric_value(2.5, "ms", "lower", "time", median=2.5, iqr=0.0, n=1)})
    for layout in ("metric", "suite"):
        text = render(build_tables([one], META), "markdown", layout=layout)
        assert "2.5 (n=1)" in text and "±" not in text and "Cells: value" in text
    assert "2.5 (n=1)" in render(build_tables([one], META), "latex") and "pm" not in render(build_tables([one], META), "latex")


def test_suite_layout_has_metrics_as_columns_and_ratio_columns():
    text = render(build_tables(RECORDS, META), "markdown", layout="suite")
    assert "### s: device cpu; ratios to base" in text
    assert "| n | variant | latency [ms] | latency / base | err |" in text
    assert "| 128 | approx[features=64] | 0.8 ±10.0% | 0.40x | 8.000e-04 |" in text
    assert "| 256 | fast | failed |  | failed |" in text
    assert "Skipped: gpu (needs a CUDA device)" in text
    rows = list(csv.DictReader(io.StringIO(render(build_tables(RECORDS, META), "csv", layout="suite"))))
    assert [(r["n"], r["variant"]) for r in rows][:2] == [("128", "base"), ("128", "fast")]
    assert rows[3]["latency [ms]:ratio"] == "0.4" and rows[3]["err"] == "0.0008"
    assert "latency / base" not in rows[0]  # the ratio is in latency [ms]:ratio, not twice


def test_marks_have_one_source_and_reach_every_format(monkeypatch):
    from harness.present import export

    throttled = rec("fast", 128, 1.0)
    throttled.info = {"valid": False, "valid_reason": "clocks fell"}
    tables = build_tables([rec("base", 128, 2.0), throttled], META, metric="latency")
    assert "1 $\\pm$10.0\\% (0.50$\\times$)\\textsuperscript{\\dag}" in render(tables, "latex")
    assert "\\dag{} not valid: clocks fell" in render(tables, "latex")
    assert "† not valid: clocks fell" in render(tables, "html")
    assert json.loads(render(tables, "json"))[0]["rows"][0]["cells"]["fast"]["marks"] == [
        {"symbol": "†", "title": "not valid", "detail": "clocks fell"}]

    def marks(results, record, metric):  # a later mark plugs in here, e.g. spread too wide
        return [export.Mark("‡", "spread too wide", f"{record.variant}: {metric}")] if record.variant == "base" else []

    monkeypatch.setattr(export, "cell_marks", marks)
    text = render(build_tables([rec("base", 128, 2.0), rec("fast", 128, 1.0)], META, metric="latency"), "markdown")
    assert "| 2 ±10.0% (1.00x) ‡ |" in text and "‡ spread too wide: base: latency" in text


# Every LaTeX special character in a suite, variant, param name and param value.
SPECIAL = "a\\b^c~d_e&f%g#h$i{j}k"


def special_tables():
    meta = {SPECIAL: {"reference": "base_1", "metrics": {"latency": {"ratio": True}}}}
    records = []
    for variant, value in (("base_1", 2.0), ("50%_off&more", 1.0)):
        for size in ("x~y", "p^q"):
            records.append(Record(SPECIAL, variant, {"size#": size, "k{1}": "$v\\"}, "cpu", "ok", metrics={
                "latency": metric_value(value, "ms", "lower", "time", median=value, iqr=value / 10, n=30)}))
    records.append(Record(SPECIAL, "broken_one", {"size#": "x~y", "k{1}": "$v\\"}, "cpu", "failed", reason="50% & #1"))
    throttled = records[1]
    throttled.info = {"valid": False, "valid_reason": "clock_fell to 50% & ~"}
    return build_tables(records, meta)


GOLDEN_LATEX = Path(__file__).parent / "data" / "export_special.tex"


def test_latex_escapes_every_special_character_golden():
    text = render(special_tables(), "latex")
    assert text == GOLDEN_LATEX.read_text(encoding="utf-8")
    escaped = latex_escape(SPECIAL)
    assert escaped == ("a\\textbackslash b\\textasciicircum c\\textasciitilde d\\_e\\&f\\%g\\#h\\$i\\{j\\}k")
    assert escaped in text and "size\\#" in text and "50\\%\\_off\\&more" in text
    # the same escaping as pandas' Styler, which escapes the header and key cells
    import pandas as pd

    styled = pd.DataFrame({SPECIAL: [SPECIAL]}).style.hide(axis="index").format(escape="latex")
    assert styled.format_index(escape="latex", axis=1).to_latex().count(escaped) == 2


def _latex_document(body: str) -> str:
    return ("\\documentclass{article}\n\\IfFileExists{booktabs.sty}{\\usepackage{booktabs}}"
            "{\\newcommand\\toprule{\\hline}\\newcommand\\midrule{\\hline}\\newcommand\\bottomrule{\\hline}}\n"
            "\\begin{document}\n" + body + "\n\\end{document}\n")


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is not installed (Debian: apt-get install texlive-latex-base)")
def test_latex_with_special_characters_compiles(tmp_path):
    for layout in ("metric", "suite"):
        tex = tmp_path / f"{layout}.tex"
        tex.write_text(_latex_document(render(special_tables(), "latex", layout=layout)), encoding="utf-8")
        done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout[-3000:]
        assert (tmp_path / f"{layout}.pdf").stat().st_size > 0
        log = (tmp_path / f"{layout}.log").read_text(errors="replace")
        assert "Missing character" not in log and "Undefined control sequence" not in log


# --------------------------------------------------------------------------- pytest-benchmark, github-action-benchmark
def test_pytest_benchmark_stats_are_pytest_benchmarks_own():
    stats_mod = pytest.importorskip("pytest_benchmark.stats")
    import numpy as np

    from harness.present.integrations import benchmark_stats

    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 6, 7, 8, 30, 31):
        data = (rng.lognormal(-7, 0.2, n)).tolist()
        theirs = stats_mod.Stats()
        for v in data:
            theirs.update(v)
        mine = benchmark_stats(data)
        assert {k: mine[k] for k in theirs.fields} == theirs.as_dict()
        assert mine["data"] == data and mine["iterations"] == 1


def _export(capsys, *argv):
    from harness.cli import main

    code = main(["export", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def test_pytest_benchmark_export_round_trips_through_compare(tmp_path, capsys):
    from synthetic_runs import standard_run, status_record, write_run

    tool = Path(sys.executable).parent / "pytest-benchmark"
    if not tool.exists():
        pytest.skip("pytest-benchmark's command is not installed next to this Python (pip install -e .[dev])")
    first = standard_run(tmp_path / "first", seed=0)
    second = standard_run(tmp_path / "second", seed=1, slow=0.5)
    with open(second / "records.jsonl", "a", encoding="utf-8") as fh:  # a failed case is left out, and said so
        fh.write(status_record("fast", 4096, "oom", "CUDA out of memory").to_json() + "\n")
    storage = tmp_path / "storage"
    for run in (first, second):
        code, _, err = _export(capsys, run, "--format", "pytest-benchmark", "--storage", storage)
        assert code == 0 and "6 benchmarks written to" in err
    assert "1 case(s) without timing samples left out" in err and "fast[n=4096]: oom" in err
    files = sorted(p.relative_to(storage).as_posix() for p in storage.rglob("*.json"))
    assert [f.split("/")[1] for f in files] == ["0001_first.json", "0002_second.json"]

    doc = json.loads((storage / files[1]).read_text())
    assert set(doc) == {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    assert doc["commit_info"]["id"] == "abc" and doc["machine_info"]["processor"] == "Test CPU 9000"
    bench = next(b for b in doc["benchmarks"] if b["name"] == "base[n=256]")
    assert bench["group"] == "toy" and bench["params"] == {"variant": "base", "n": 256}
    peak = bench["extra_info"]["peak_memory"]
    assert {k: peak[k] for k in ("value", "unit", "better", "kind")} == {"value": 16.0, "unit": "MiB", "better": "lower",
                                                                       "kind": "memory"}
    assert peak["rounds"] == [16.0, 16.0, 16.0]  # the run made 3 rounds
    assert bench["extra_info"]["accuracy"]["value"] == 0.9 and "samples" not in bench["extra_info"]["harness_latency"]
    from harness.results import load_results

    samples_ms = next(r for r in load_results(second).records if r.variant == "base" and r.params == {"n": 256}
                      ).metrics["latency"].samples  # every round's samples, pooled
    assert bench["stats"]["data"] == [v * 1e-3 for v in samples_ms]  # seconds, from the raw samples
    assert bench["stats"]["median"] == pytest.approx(float(np.median(samples_ms)) * 1e-3)

    done = subprocess.run([str(tool), "--storage", f"file://{storage}", "compare", "--columns", "min,median,max",
                           "--group-by", "name"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for name in ("base[n=64]", "base[n=256]", "base[n=1024]", "fast[n=64]", "fast[n=256]", "fast[n=1024]"):
        assert f"benchmark '{name}': 2 tests" in out
        assert f"{name} (0001_first)" in out and f"{name} (0002_second)" in out
    # compare prints base[n=256]'s median of the second run in ms, with its ratio to the first
    median_ms = f"{bench['stats']['median'] * 1e3:,.4f}"
    line = next(ln for ln in out.splitlines() if ln.startswith("base[n=256] (0002_second)"))
    assert median_ms in line and "(1.0)" not in line


def test_github_action_benchmark_covers_time_memory_and_quality(tmp_path, capsys):
    from synthetic_runs import standard_run

    run = standard_run(tmp_path / "run", seed=0)
    code, out, err = _export(capsys, run, "--format", "github-action-benchmark", "--better", "lower")
    assert code == 0 and "12 entries for github-action-benchmark's tool 'customSmallerIsBetter'" in err
    lower = json.loads(out)
    assert {e["name"].rsplit("/", 1)[1] for e in lower} == {"latency", "peak_memory"}
    lat = next(e for e in lower if e["name"] == "toy/base[n=64]/latency")
    assert set(lat) == {"name", "unit", "value", "range", "extra"} and lat["unit"] == "ms"
    assert lat["range"].startswith("± ") and float(lat["range"][2:]) > 0
    assert "n: 90" in lat["extra"] and "rounds: 3" in lat["extra"] and "device: cpu (Test CPU 9000)" in lat["extra"]
    mem = next(e for e in lower if e["name"] == "toy/base[n=64]/peak_memory")
    assert mem["value"] == 4.0 and mem["unit"] == "MiB" and "range" not in mem

    code, out, err = _export(capsys, run, "--format", "github-action-benchmark", "--better", "higher")
    higher = json.loads(out)
    assert "customBiggerIsBetter" in err
    assert {e["name"].rsplit("/", 1)[1] for e in higher} == {"throughput", "accuracy"}
    acc = next(e for e in higher if e["name"] == "toy/fast[n=1024]/accuracy")
    assert acc["value"] == 0.9 and "kind: quality" in acc["extra"]

    code, _, err = _export(capsys, run, "--format", "github-action-benchmark")
    assert code == 2 and err.count("\n") == 1 and "needs --better lower" in err
    code, _, err = _export(capsys, run, "--format", "pytest-benchmrk")
    assert code == 2 and "did you mean 'pytest-benchmark'" in err
    code, _, err = _export(capsys, run, "--layout", "suites")
    assert code == 2 and "unknown layout 'suites' (did you mean 'suite'?)" in err


def test_export_layout_option(tmp_path, capsys):
    from synthetic_runs import standard_run

    code, out, _ = _export(capsys, standard_run(tmp_path / "run"), "--layout", "suite")
    assert code == 0 and "| n | variant | latency [ms] | latency / base | throughput [items/s] |" in out


def test_wide_spread_and_quality_band_marks(tmp_path):
    """A latency of 3 samples and one with a wide CI carry '~'; a variant outside its quality
    band carries '§' on that metric; each mark's footnote says why."""
    from harness.results import ResultSet

    def r(variant, n_samples, ci, err):
        m = {"latency": metric_value(1.0, "ms", "lower", "time", median=1.0, iqr=0.01, n=n_samples,
                                     ci_low=1 - ci, ci_high=1 + ci),
             "err": metric_value(err, "", "lower", "quality")}
        return Record("s", variant, {"n": 1}, "cpu", "ok", metrics=m)

    meta = {"s": {**META["s"], "grid": {"n": [1]}, "bands": [{"metric": "err", "max": 0.01}]}}
    rs = ResultSet("run x", "run", [r("base", 30, 0.01, 0.001), r("fast", 3, 0.01, 0.5), r("approx", 30, 0.3, 0.002)],
                   {"device": "cpu"}, {"suites": meta})
    text = render(build_tables(rs, meta), "markdown")
    assert "| 1 ±1.0% (1.00x) | 1 ±1.0% (1.00x) ~ | 1 ±1.0% (1.00x) ~ |" in text
    assert "~ spread too wide to read: 3 samples: too few for a 95% CI; 95% CI is +-30% of the value" in text
    assert "0.5 §" in text and "§ outside its quality band: err 0.5 outside the band (<= 0.01)" in text


def test_pivot_puts_a_variant_param_into_the_rows():
    (lat,) = build_tables(RECORDS, META, metric="latency", pivot=["features"])
    assert lat.row_params == ["n", "features"] and lat.columns == ["base", "fast", "approx", "gpu"]
    assert [k for k, _ in lat.rows] == [(128, 16), (128, 64), (128, None), (256, 16), (256, 64), (256, None)]
    rows = dict(lat.rows)
    assert set(rows[(128, 16)]) == {"approx"} and rows[(128, 16)]["approx"].ratio == 0.25
    assert rows[(256, 64)]["approx"].ratio == 0.2  # the reference has no features: its grid point counts
    assert rows[(128, None)]["fast"].ratio == 0.5 and rows[(128, None)]["base"].ratio == 1.0
    markdown = render([lat], "markdown")
    assert "| n | features | base | fast | approx |" in markdown and "| 128 | 16 |  |  | 0.5 ±10.0% (0.25x) |" in markdown
    # a swept param is a row already: pivoting it changes nothing
    plain = render(build_tables(RECORDS, META, metric="latency"), "markdown")
    assert render(build_tables(RECORDS, META, metric="latency", pivot=["n"]), "markdown") == plain
    # a reference with the pivoted param is compared at the same row
    steps = [rec("base", 128, 4.0, steps=10), rec("base", 128, 8.0, steps=20),
             rec("fast", 128, 1.0, steps=10), rec("fast", 128, 1.0, steps=20)]
    (lat,) = build_tables(steps, META, metric="latency", pivot=["steps"])
    assert lat.columns == ["base", "fast"] and [k for k, _ in lat.rows] == [(10,), (20,)]
    assert [cells["fast"].ratio for _, cells in lat.rows] == [0.25, 0.125]


def test_export_pivot_option(tmp_path, capsys):
    from synthetic_runs import standard_run

    run = standard_run(tmp_path / "run")
    code, out, _ = _export(capsys, run, "--pivot", "n", "--layout", "suite")
    assert code == 0 and "| n | variant | latency [ms] |" in out
    code, _, err = _export(capsys, run, "--pivot", "m")
    assert code == 2 and err.count("\n") == 1 and "no case of the run has the param 'm' to pivot (choose from 'n')" in err
    code, _, err = _export(capsys, run, "--pivot", "n", "--format", "pytest-benchmark")
    assert code == 2 and err.count("\n") == 1 and "--pivot shapes tables" in err
