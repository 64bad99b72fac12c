"""Result tables: records -> paper-style pivots -> Markdown, CSV, LaTeX, HTML or JSON.

A table is one (suite, metric): rows are the grid points, columns the variants (a variant's own
params, such as Performer's ``features``, become part of its column label), each cell the
value with its spread and the ratio to the suite's reference variant at the same grid point.
Numbers are never rounded in CSV and JSON; Markdown, LaTeX and HTML round for reading.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from .results import Record, json_safe

FORMATS = ("markdown", "csv", "latex", "html", "json")


@dataclass
class Cell:
    status: str
    value: float | None = None
    spread: float | None = None  # IQR relative to the median, for timed metrics
    n: int | None = None
    ratio: float | None = None
    reason: str = ""
    invalid: str = ""  # why the measurement is not valid (GPU clocks fell or it throttled), if so


@dataclass
class Table:
    suite: str
    metric: str
    unit: str
    better: str
    reference: str | None
    device: str
    row_params: list[str]
    fixed_params: dict[str, Any]
    columns: list[str]
    rows: list[tuple[tuple, dict[str, Cell]]] = field(default_factory=list)
    kind: str = "quality"

    def skipped_columns(self) -> dict[str, str]:
        """Columns in which every cell was skipped, with the (first) reason."""
        out = {}
        for col in self.columns:
            cells = [cells[col] for _, cells in self.rows if col in cells]
            if cells and all(c.status == "skipped" for c in cells):
                out[col] = cells[0].reason
        return out


def column_label(variant: str, vparams: dict[str, Any]) -> str:
    """A table column's name: the variant with its own params, e.g. ``performer[features=16]``."""
    if not vparams:
        return variant
    return variant + "[" + ",".join(f"{k}={v}" for k, v in vparams.items()) + "]"


def build_tables(
    records: Iterable[Record],
    suites_meta: dict[str, dict] | None = None,
    metric: str | None = None,
    suite: str | None = None,
) -> list[Table]:
    """One Table per (suite, metric) that some record reports (or only ``metric``)."""
    suites_meta = suites_meta or {}
    by_suite: dict[str, list[Record]] = {}
    for r in records:
        if suite and r.suite != suite:
            continue
        by_suite.setdefault(r.suite, []).append(r)
    tables: list[Table] = []
    for sname, recs in by_suite.items():
        meta = suites_meta.get(sname, {})
        common = set.intersection(*(set(r.params) for r in recs)) if recs else set()
        ordered_params = [k for k in recs[0].params if k in common]
        varying = [k for k in ordered_params if len({json.dumps(r.params[k], default=str) for r in recs}) > 1]
        fixed = {k: recs[0].params[k] for k in ordered_params if k not in varying}
        metric_units: dict[str, tuple[str, str, str]] = {}
        for r in recs:
            for name, m in r.metrics.items():
                metric_units.setdefault(name, (m.unit, m.better, m.kind))
        names = [metric] if metric else _metric_order(list(metric_units), meta)
        for mname in names:
            if mname not in metric_units:
                continue
            unit, better, kind = metric_units[mname]
            reference = meta.get("reference")
            if not meta.get("metrics", {}).get(mname, {}).get("ratio", True):
                reference = None
            table = Table(sname, mname, unit, better, reference, recs[0].device, varying, fixed, [], kind=kind)
            rows: dict[tuple, dict[str, Cell]] = {}
            ref_values: dict[tuple, float] = {}
            for r in recs:
                rkey = tuple(r.params[k] for k in varying)
                col = column_label(r.variant, {k: v for k, v in r.params.items() if k not in common})
                if col not in table.columns:
                    table.columns.append(col)
                m = r.metrics.get(mname)
                if r.status != "ok":
                    cell = Cell(r.status, reason=r.reason)
                elif m is None or m.value is None:
                    cell = Cell("n/a", reason="not reported for this variant")
                else:
                    spread = None
                    if m.median and m.iqr is not None:
                        spread = m.iqr / m.median
                    cell = Cell("ok", float(m.value), spread, m.n)
                    if r.info.get("valid") is False:
                        cell.invalid = str(r.info.get("valid_reason") or "not valid")
                    if r.variant == reference and col == reference:
                        ref_values[rkey] = float(m.value)
                rows.setdefault(rkey, {})[col] = cell
            for rkey, cells in rows.items():
                ref = ref_values.get(rkey)
                for cell in cells.values():
                    if cell.value is not None and ref not in (None, 0.0) and not math.isnan(ref):
                        cell.ratio = cell.value / ref
                table.rows.append((rkey, cells))
            table.rows.sort(key=lambda kv: tuple(_sort_key(v) for v in kv[0]))
            tables.append(table)
    return tables


def _sort_key(v: Any):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def _metric_order(names: list[str], meta: dict) -> list[str]:
    first = ["latency", "throughput", "peak_memory", "tflops"]
    declared = list(meta.get("metrics", {}))
    ordered = [n for n in first if n in names]
    ordered += [n for n in declared if n in names and n not in ordered]
    ordered += sorted(n for n in names if n not in ordered)
    return ordered


# --------------------------------------------------------------------------- formatting
def fmt_number(v: float | None) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    a = abs(v)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


def cell_text(cell: Cell, with_ratio: bool = True) -> str:
    if cell.status != "ok":
        return cell.status
    text = fmt_number(cell.value)
    if cell.spread is not None and not math.isnan(cell.spread):
        text += f" ±{cell.spread * 100:.1f}%"
    if with_ratio and cell.ratio is not None:
        text += f" ({cell.ratio:.2f}x)"
    if cell.invalid:
        text += " †"
    return text


def title(t: Table) -> str:
    unit = f" [{t.unit}]" if t.unit else ""
    ref = f"; ratio to {t.reference}" if t.reference else ""
    return f"{t.suite}: {t.metric}{unit}, {t.better} is better{ref}; device {t.device}"


def _visible_columns(t: Table, hide_skipped: bool) -> list[str]:
    skipped = t.skipped_columns() if hide_skipped else {}
    return [c for c in t.columns if c not in skipped]


def _fixed_text(t: Table) -> str:
    return ", ".join(f"{k}={v}" for k, v in t.fixed_params.items())


def to_markdown(tables: list[Table], hide_skipped: bool = True) -> str:
    out = []
    for t in tables:
        cols = _visible_columns(t, hide_skipped)
        out.append(f"### {title(t)}")
        out.append("")
        if t.fixed_params:
            spread = any(c.spread is not None for _, cells in t.rows for c in cells.values())
            how = "median ±IQR/median" if spread else "value"
            ref = " (ratio to the reference)" if t.reference else ""
            out.append(f"Fixed: {_fixed_text(t)}. Cells: {how}{ref}.")
            out.append("")
        header = t.row_params + cols
        if not header:
            header = ["(no params)"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for rkey, cells in t.rows:
            vals = [str(v) for v in rkey] + [cell_text(cells[c]) if c in cells else "" for c in cols]
            out.append("| " + " | ".join(vals) + " |")
        skipped = t.skipped_columns() if hide_skipped else {}
        if skipped:
            out.append("")
            out.append("Skipped: " + "; ".join(f"{c} ({why})" for c, why in skipped.items()))
        invalid = sorted({c.invalid for _, cells in t.rows for c in cells.values() if c.invalid})
        if invalid:
            out.append("")
            out.append("† not valid: " + "; ".join(invalid))
        out.append("")
    return "\n".join(out)


def to_csv(tables: list[Table]) -> str:
    """Wide CSV at full precision: one line per (table, grid point), value/spread/ratio per variant."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    all_params: list[str] = []
    all_cols: list[str] = []
    for t in tables:
        for p in t.row_params:
            if p not in all_params:
                all_params.append(p)
        for c in t.columns:
            if c not in all_cols:
                all_cols.append(c)
    header = ["suite", "metric", "unit", "better", "device"] + all_params
    for c in all_cols:
        header += [c, f"{c}:spread", f"{c}:ratio", f"{c}:status"]
    writer.writerow(header)
    for t in tables:
        for rkey, cells in t.rows:
            pvals = dict(zip(t.row_params, rkey))
            row: list[Any] = [t.suite, t.metric, t.unit, t.better, t.device] + [pvals.get(p, "") for p in all_params]
            for c in all_cols:
                cell = cells.get(c)
                if cell is None:
                    row += ["", "", "", ""]
                else:
                    row += [_raw(cell.value), _raw(cell.spread), _raw(cell.ratio), cell.status]
            writer.writerow(row)
    return buf.getvalue()


def _raw(v: float | None) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else repr(float(v))


def _latex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
        s = s.replace(a, b)
    return s


def to_latex(tables: list[Table], hide_skipped: bool = True) -> str:
    """booktabs tables, one per (suite, metric); values with their ratio in parentheses."""
    out = []
    for t in tables:
        cols = _visible_columns(t, hide_skipped)
        header = t.row_params + cols
        out.append("\\begin{table}[t]")
        out.append("\\centering")
        out.append(f"\\caption{{{_latex_escape(title(t))}}}")
        out.append("\\begin{tabular}{" + "l" * len(t.row_params) + "r" * len(cols) + "}")
        out.append("\\toprule")
        out.append(" & ".join(_latex_escape(h) for h in header) + " \\\\")
        out.append("\\midrule")
        for rkey, cells in t.rows:
            vals = [_latex_escape(str(v)) for v in rkey]
            for c in cols:
                cell = cells.get(c)
                if cell is None:
                    vals.append("")
                elif cell.status != "ok":
                    vals.append("\\textit{" + _latex_escape(cell.status) + "}")
                else:
                    text = fmt_number(cell.value)
                    if cell.spread is not None:
                        text += f" $\\pm${cell.spread * 100:.1f}\\%"
                    if cell.ratio is not None:
                        text += f" ({cell.ratio:.2f}$\\times$)"
                    vals.append(text)
            out.append(" & ".join(vals) + " \\\\")
        out.append("\\bottomrule")
        out.append("\\end{tabular}")
        out.append("\\end{table}")
        out.append("")
    return "\n".join(out)


def tables_html(tables: list[Table], hide_skipped: bool = True) -> str:
    """HTML fragments (no page around them), one <table> per (suite, metric)."""
    parts = []
    for t in tables:
        cols = _visible_columns(t, hide_skipped)
        parts.append(f"<h3>{html.escape(title(t))}</h3>")
        if t.fixed_params:
            parts.append(f"<p class='fixed'>Fixed: {html.escape(_fixed_text(t))}</p>")
        parts.append(f"<table class='results' data-suite='{html.escape(t.suite)}' data-metric='{html.escape(t.metric)}'>")
        parts.append("<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in t.row_params + cols) + "</tr></thead><tbody>")
        for rkey, cells in t.rows:
            tds = [f"<td>{html.escape(str(v))}</td>" for v in rkey]
            for c in cols:
                cell = cells.get(c)
                cls = "" if cell is None else f" class='{cell.status}'"
                tip = "" if cell is None or not cell.reason else f" title='{html.escape(cell.reason, quote=True)}'"
                tds.append(f"<td{cls}{tip}>{html.escape(cell_text(cell)) if cell else ''}</td>")
            parts.append("<tr>" + "".join(tds) + "</tr>")
        parts.append("</tbody></table>")
        skipped = t.skipped_columns() if hide_skipped else {}
        if skipped:
            parts.append("<p class='skipped'>Skipped: " + html.escape("; ".join(f"{c} ({w})" for c, w in skipped.items())) + "</p>")
    return "\n".join(parts)


HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table.results{border-collapse:collapse;margin:0.5em 0 1.5em}
table.results td,table.results th{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.results th{background:#f3f3f3}
td.failed,td.oom,td.timeout,td.crashed{color:#b00}
td.skipped{color:#888}
"""


def to_html(tables: list[Table], hide_skipped: bool = True) -> str:
    body = tables_html(tables, hide_skipped)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>harness results</title>"
        f"<style>{HTML_STYLE}</style></head><body>{body}</body></html>\n"
    )


def to_json(tables: list[Table]) -> str:
    data = []
    for t in tables:
        data.append(
            {
                "suite": t.suite,
                "metric": t.metric,
                "unit": t.unit,
                "better": t.better,
                "reference": t.reference,
                "device": t.device,
                "fixed_params": t.fixed_params,
                "row_params": t.row_params,
                "columns": t.columns,
                "rows": [
                    {
                        "params": dict(zip(t.row_params, rkey)),
                        "cells": {c: {k: v for k, v in vars(cell).items()} for c, cell in cells.items()},
                    }
                    for rkey, cells in t.rows
                ],
            }
        )
    return json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"


def render(tables: list[Table], fmt: str) -> str:
    if fmt == "markdown":
        return to_markdown(tables)
    if fmt == "csv":
        return to_csv(tables)
    if fmt == "latex":
        return to_latex(tables)
    if fmt == "html":
        return to_html(tables)
    if fmt == "json":
        return to_json(tables)
    raise ValueError(f"unknown format {fmt!r}")
