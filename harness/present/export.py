"""Result tables: records -> long pandas DataFrame -> pivots -> Markdown, CSV, LaTeX, HTML or JSON.

Two layouts, one pipeline. ``metric`` (the default, paper-style): one table per (suite, metric),
rows the swept params, columns the variants (a variant's own params, such as Performer's
``features``, become part of its column label), each cell the value with its spread and the
ratio to the suite's reference variant at the same grid point. ``suite``: one table per suite,
rows the swept params and the variant, columns the metrics with their units, each metric with
a ratio column to the reference variant. Either layout can pivot a variant's own params (DDIM's
``steps``) into rows, so that variants line up at equal values of them.

Numbers are never rounded in CSV and JSON; Markdown, LaTeX and HTML round for reading. A cell
can carry marks (a symbol and a footnote): :func:`cell_marks` decides them.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from ..declare.suite import violations_text
from ..key import case_label, params_text
from ..results import Record, ResultSet, json_safe, split_keys, spread_warning
from .numbers import fmt_number

FORMATS = ("markdown", "csv", "latex", "html", "json")
LAYOUTS = ("metric", "suite")


@dataclass(frozen=True)
class Mark:
    """A note on one cell: its symbol in the table and the footnote that explains it."""

    symbol: str
    title: str  # the footnote's heading, e.g. "not valid"
    detail: str  # why, for this cell
    latex: str = ""  # the symbol in LaTeX, where it differs


def cell_marks(results: ResultSet | None, record: Record, metric: str) -> list[Mark]:
    """The marks of one cell (``metric`` of ``record``), in the order they are shown.

    Every mark a table can show is decided here, from the result set (``None`` when only
    records are at hand), the record and the metric.
    """
    marks = []
    if record.info.get("valid") is False:
        marks.append(Mark("†", "not valid", str(record.info.get("valid_reason") or "no reason recorded"),
                          r"\textsuperscript{\dag}"))
    m = record.metrics.get(metric)
    wide = spread_warning(m) if m is not None and record.status == "ok" else ""
    if wide:
        marks.append(Mark("~", "spread too wide to read", wide, r"\textsuperscript{$\sim$}"))
    if results is not None:
        broken = [v for v in results.band_violations(record) if v.metric == metric]
        if broken:
            marks.append(Mark("§", "outside its quality band", violations_text(broken), r"\textsuperscript{\S}"))
    return marks


@dataclass
class Cell:
    status: str
    value: float | None = None
    spread: float | None = None  # IQR relative to the median, for timed metrics
    n: int | None = None
    ratio: float | None = None
    reason: str = ""
    marks: list[Mark] = field(default_factory=list)


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


# --------------------------------------------------------------------------- records -> long frame
def _sort_key(v: Any):
    return (0, v, "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0, str(v))


def _metric_order(names: list[str], meta: dict) -> list[str]:
    first = ["latency", "throughput", "peak_memory", "tflops"]
    declared = list(meta.get("metrics", {}))
    ordered = [n for n in first if n in names]
    ordered += [n for n in declared if n in names and n not in ordered]
    ordered += sorted(n for n in names if n not in ordered)
    return ordered


def _make_cell(results: ResultSet | None, r: Record, mname: str) -> Cell:
    m = r.metrics.get(mname)
    if r.status != "ok":
        return Cell(r.status, reason=r.reason)
    if m is None or m.value is None:
        return Cell("n/a", reason="not reported for this variant")
    spread = m.iqr / m.median if m.median and m.iqr is not None else None
    return Cell("ok", float(m.value), spread, m.n, marks=cell_marks(results, r, mname))


def cells_frame(records: Iterable[Record] | ResultSet, suites_meta: dict[str, dict] | None = None,
                metric: str | None = None, suite: str | None = None, pivot: Sequence[str] = ()):
    """Long DataFrame: one row per (record, metric of its suite), with the table's layout keys.

    Columns: suite, metric, unit, better, kind, device, reference, variant, column (the variant
    with its own params), row (the swept params' values), status, value, spread, n, ratio,
    cell (the :class:`Cell`); the swept and fixed params of each suite are in ``df.attrs``.
    ``pivot`` names variant params (e.g. DDIM's ``steps``) that become rows, after the swept
    params, instead of part of the column label; so variants line up at equal values of them
    (a variant without the param gets an empty value there). A ratio compares with the
    reference at the same row, or, where the reference has no such row, at the same grid point.
    """
    import pandas as pd

    results = records if isinstance(records, ResultSet) else None
    if results is not None:
        suites_meta = suites_meta if suites_meta is not None else results.suites_meta
        records = results.records
    suites_meta = suites_meta or {}
    records = list(records)
    split_keys(records, suites_meta)
    by_suite: dict[str, list[Record]] = {}
    for r in records:
        if suite is None or r.suite == suite:
            by_suite.setdefault(r.suite, []).append(r)
    rows = []
    layout: dict[str, dict] = {}
    for sname, recs in by_suite.items():
        meta = suites_meta.get(sname, {})
        common = set.intersection(*(set(r.key.grid_dict) for r in recs))
        ordered = [k for k, _ in recs[0].key.grid_params if k in common]
        varying = [k for k in ordered if len({params_text(r.params[k]) for r in recs}) > 1]
        pivots = [k for k in dict.fromkeys(pivot) if any(k in r.key.variant_dict for r in recs)]
        layout[sname] = {"row_params": varying + pivots,
                         "fixed": {k: recs[0].params[k] for k in ordered if k not in varying}}
        units: dict[str, tuple[str, str, str]] = {}
        for r in recs:
            for name, m in r.metrics.items():
                units.setdefault(name, (m.unit, m.better, m.kind))
        for mname in [metric] if metric else _metric_order(list(units), meta):
            if mname not in units:
                continue
            unit, better, kind = units[mname]
            reference = meta.get("reference")
            if not meta.get("metrics", {}).get(mname, {}).get("ratio", True):
                reference = None
            for r in recs:
                cell = _make_cell(results, r, mname)
                point = [r.params[k] for k in varying]
                row = point + [r.key.variant_dict.get(k) for k in pivots]
                own = {k: v for k, v in r.key.variant_params if k not in pivots}
                rows.append({"suite": sname, "metric": mname, "unit": unit, "better": better, "kind": kind,
                             "device": recs[0].device, "reference": reference, "variant": r.variant,
                             "column": case_label(r.variant, own, sep=","), "row": tuple(row),
                             "row_id": params_text(row), "grid_id": params_text(point),
                             "status": cell.status, "value": cell.value, "spread": cell.spread, "n": cell.n,
                             "cell": cell})
    df = pd.DataFrame(rows, columns=["suite", "metric", "unit", "better", "kind", "device", "reference", "variant",
                                     "column", "row", "row_id", "grid_id", "status", "value", "spread", "n", "cell"],
                      dtype=object)
    df["value"] = df["value"].astype(float)
    df["ratio"] = _ratios(df)
    for cell, ratio in zip(df["cell"], df["ratio"]):
        cell.ratio = None if pd.isna(ratio) else float(ratio)
    df.attrs["layout"] = layout
    return df


def _ratios(df):
    """Each value over the reference variant's value at the same (suite, metric, row), else at the
    same grid point (a pivoted param the reference does not have)."""
    import pandas as pd

    ref = df[(df["column"] == df["reference"]) & (df["status"] == "ok") & df["value"].notna()]
    ref = ref[ref["value"] != 0.0]
    found = pd.Series(float("nan"), index=df.index)
    for point in ("grid_id", "row_id"):  # the row's own reference value wins
        keys = ["suite", "metric", point]
        merged = df[keys].merge(ref.drop_duplicates(keys)[keys + ["value"]], on=keys, how="left")
        found = pd.Series(merged["value"].astype(float).to_numpy(), index=df.index).combine_first(found)
    return df["value"] / found


def build_tables(
    records: Iterable[Record] | ResultSet,
    suites_meta: dict[str, dict] | None = None,
    metric: str | None = None,
    suite: str | None = None,
    pivot: Sequence[str] = (),
) -> list[Table]:
    """One Table per (suite, metric) that some record reports (or only ``metric``).

    ``records`` may be a :class:`ResultSet`; its suites' declarations are used then, and
    :func:`cell_marks` sees it. ``pivot``: variant params shown as rows (see :func:`cells_frame`).
    """
    df = cells_frame(records, suites_meta, metric=metric, suite=suite, pivot=pivot)
    tables: list[Table] = []
    for (sname, mname), part in df.groupby(["suite", "metric"], sort=False):
        first = part.iloc[0]
        lay = df.attrs["layout"][sname]
        grid = part.pivot(index="row_id", columns="column", values="cell")
        columns = list(dict.fromkeys(part["column"]))
        row_of = dict(zip(part["row_id"], part["row"]))
        ids = sorted(grid.index, key=lambda k: tuple(_sort_key(v) for v in row_of[k]))
        table = Table(sname, mname, first["unit"], first["better"], first["reference"], first["device"],
                      lay["row_params"], lay["fixed"], columns, kind=first["kind"])
        for rid in ids:
            cells = grid.loc[rid]
            table.rows.append((row_of[rid], {c: cells[c] for c in columns if isinstance(cells[c], Cell)}))
        tables.append(table)
    return tables


# --------------------------------------------------------------------------- formatting
def _spread_parts(cell: Cell) -> tuple[str, int | None]:
    """(spread in %, or "" without one; n when a single sample makes the spread meaningless)."""
    if cell.n == 1:
        return "", 1
    if cell.spread is None or math.isnan(cell.spread):
        return "", None
    return f"{cell.spread * 100:.1f}", None


def cell_text(cell: Cell, with_ratio: bool = True) -> str:
    """Plain-text cell: ``median ±IQR/median% (ratio x) marks``; ``value (n=1)`` for one sample."""
    if cell.status != "ok":
        return cell.status
    return _cell_number(cell, with_ratio, "±{}%", "({:.2f}x)") + "".join(f" {m.symbol}" for m in cell.marks)


def _cell_number(cell: Cell, with_ratio: bool, spread_fmt: str, ratio_fmt: str) -> str:
    """An ok cell's value, spread (or ``(n=1)``) and ratio, with the format's own symbols."""
    text = fmt_number(cell.value)
    spread, single = _spread_parts(cell)
    text += " " + spread_fmt.format(spread) if spread else (" (n=1)" if single else "")
    if with_ratio and cell.ratio is not None:
        text += " " + ratio_fmt.format(cell.ratio)
    return text


def latex_escape(text: str) -> str:
    """Text for LaTeX, with the ten special characters escaped as pandas' ``escape="latex"`` does."""
    table = {"\\": r"\textbackslash ", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde ", "^": r"\textasciicircum "}
    return re.sub(r"[\\&%$#_{}~^]", lambda m: table[m.group()], text)


_LATEX_SYMBOLS = {"±": r"$\pm$", "×": r"$\times$", "†": r"\dag{}", "§": r"\S{}"}


def _latex_text(text: str) -> str:
    """Free text (captions, notes) for LaTeX: escaped, and the symbols the tables use spelled out."""
    return re.sub("[±×†§]", lambda m: _LATEX_SYMBOLS[m.group()], latex_escape(text))


def _cell_latex(cell: Cell, with_ratio: bool) -> str:
    if cell.status != "ok":
        return r"\textit{" + latex_escape(cell.status) + "}"
    text = _cell_number(cell, with_ratio, r"$\pm${}\%", r"({:.2f}$\times$)")
    return text + "".join(mark.latex or latex_escape(mark.symbol) for mark in cell.marks)


def _cell_html(cell: Cell, with_ratio: bool) -> str:
    text = html.escape(cell_text(cell, with_ratio))
    return f"<span title='{html.escape(cell.reason, quote=True)}'>{text}</span>" if cell.reason else text


class Ratio(float):
    """A ratio column's value in the ``suite`` layout."""

    def text(self) -> str:
        return f"{self:.2f}x"


def title(t: Table) -> str:
    unit = f" [{t.unit}]" if t.unit else ""
    ref = f"; ratio to {t.reference}" if t.reference else ""
    return f"{t.suite}: {t.metric}{unit}, {t.better} is better{ref}; device {t.device}"


def _fixed_text(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in fixed.items())


@dataclass
class Grid:
    """One rendered table: key columns, then value columns of :class:`Cell` or :class:`Ratio`.

    ``frame`` holds the keys (params, variant) as ordinary columns, so every format shows and
    escapes them the same way; ``meta`` leads each CSV line; ``notes`` follow the table.
    """

    title: str
    frame: Any  # pandas DataFrame
    keys: list[str]
    meta: dict[str, Any]
    fixed: dict[str, Any]
    with_ratio: bool
    notes: list[str]
    suite: str = ""
    metric: str = ""
    ratio_columns: list[str] = field(default_factory=list)

    @property
    def value_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in self.keys]

    def cells(self) -> Iterable[Cell]:
        for c in self.value_columns:
            yield from (v for v in self.frame[c] if isinstance(v, Cell))


def _notes(cells: Iterable[Cell], skipped: dict[str, str]) -> list[str]:
    notes = []
    if skipped:
        notes.append("Skipped: " + "; ".join(f"{c} ({why})" for c, why in skipped.items()))
    by_symbol: dict[tuple[str, str], set[str]] = {}
    for cell in cells:
        for mark in cell.marks:
            by_symbol.setdefault((mark.symbol, mark.title), set()).add(mark.detail)
    for (sym, head), details in by_symbol.items():
        shown = sorted(details)
        more = f"; and {len(shown) - 5} more" if len(shown) > 5 else ""
        notes.append(f"{sym} {head}: " + "; ".join(shown[:5]) + more)
    return notes


def metric_grids(tables: list[Table], hide_skipped: bool = True) -> list[Grid]:
    """The ``metric`` layout: one grid per (suite, metric), variants as columns."""
    import pandas as pd

    grids = []
    for t in tables:
        skipped = t.skipped_columns() if hide_skipped else {}
        cols = [c for c in t.columns if c not in skipped]
        data = [list(rkey) + [cells.get(c) for c in cols] for rkey, cells in t.rows]
        frame = pd.DataFrame(data, columns=t.row_params + cols, dtype=object)
        meta = {"suite": t.suite, "metric": t.metric, "unit": t.unit, "better": t.better, "device": t.device}
        grids.append(Grid(title(t), frame, list(t.row_params), meta, t.fixed_params, True,
                          _notes((c for _, cells in t.rows for c in cells.values()), skipped), t.suite, t.metric))
    return grids


def suite_grids(tables: list[Table], hide_skipped: bool = True) -> list[Grid]:
    """The ``suite`` layout: one grid per suite, rows (params, variant), metrics as columns."""
    import pandas as pd

    grids = []
    for suite in dict.fromkeys(t.suite for t in tables):
        st = [t for t in tables if t.suite == suite]
        skipped = {c: why for t in st for c, why in (t.skipped_columns() if hide_skipped else {}).items()
                   if all(c in t.skipped_columns() for t in st)}
        row_params = st[0].row_params
        long = []
        row_of: dict[str, tuple] = {}
        ratio_columns: list[str] = []
        for t in st:
            header = f"{t.metric} [{t.unit}]" if t.unit else t.metric
            for rkey, cells in t.rows:
                for col, cell in cells.items():
                    if col in skipped:
                        continue
                    rid = params_text(list(rkey))
                    long.append((rid, col, header, cell))
                    if t.reference:
                        ratio_columns.append(f"{t.metric} / {t.reference}")
                        long.append((rid, col, f"{t.metric} / {t.reference}",
                                     Ratio(cell.ratio) if cell.ratio is not None else None))
                    row_of[rid] = rkey
        df = pd.DataFrame(long, columns=["row_id", "variant", "header", "cell"])
        wide = df.pivot(index=["row_id", "variant"], columns="header", values="cell")
        variants = list(dict.fromkeys(df["variant"]))
        order = sorted(wide.index, key=lambda k: (tuple(_sort_key(v) for v in row_of[k[0]]), variants.index(k[1])))
        wide = wide.reindex(index=pd.MultiIndex.from_tuples(order), columns=list(dict.fromkeys(df["header"])))
        keys = row_params + ["variant"]
        frame = pd.DataFrame([list(row_of[rid]) + [var] + list(vals) for (rid, var), vals in
                              zip(wide.index, wide.itertuples(index=False))], columns=keys + list(wide.columns),
                             dtype=object)
        frame = frame.where(frame.notna(), None)
        device = st[0].device
        refs = sorted({t.reference for t in st if t.reference})
        ref = f"; ratios to {', '.join(refs)}" if refs else ""
        grids.append(Grid(f"{suite}: device {device}{ref}", frame, keys, {"suite": suite, "device": device},
                          st[0].fixed_params, False,
                          _notes((c for t in st for _, cells in t.rows for c in cells.values()), skipped), suite,
                          ratio_columns=list(dict.fromkeys(ratio_columns))))
    return grids


def grids(tables: list[Table], layout: str = "metric", hide_skipped: bool = True) -> list[Grid]:
    if layout == "metric":
        return metric_grids(tables, hide_skipped)
    if layout == "suite":
        return suite_grids(tables, hide_skipped)
    raise ValueError(f"unknown layout {layout!r} (choose from {', '.join(LAYOUTS)})")


def _display(grid: Grid, cell_fmt: Callable[[Cell, bool], str], ratio_fmt: Callable[[Ratio], str]):
    """The grid with every value column as text of one format (keys left as they are)."""
    def one(v: Any) -> str:
        if isinstance(v, Cell):
            return cell_fmt(v, grid.with_ratio)
        if isinstance(v, Ratio):
            return ratio_fmt(v)
        return ""

    frame = grid.frame.copy()
    for c in grid.value_columns:
        frame[c] = [one(v) for v in frame[c]]
    return frame


def _cells_caption(grid: Grid) -> str:
    spread = any(_spread_parts(c)[0] for c in grid.cells())
    how = "median ±IQR/median" if spread else "value"
    ref = " (ratio to the reference)" if grid.with_ratio and any(c.ratio is not None for c in grid.cells()) else ""
    return f"Fixed: {_fixed_text(grid.fixed)}. Cells: {how}{ref}."


def _markdown_table(frame, keys: list[str]) -> str:
    """A pipe table from a DataFrame of text: keys left-aligned, values right-aligned."""
    def esc(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|")

    header = [esc(c) for c in frame.columns] or ["(no params)"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if c in keys else "---:" for c in (list(frame.columns) or header)) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines)


def to_markdown(tables: list[Table], hide_skipped: bool = True, layout: str = "metric") -> str:
    out = []
    for g in grids(tables, layout, hide_skipped):
        out += [f"### {g.title}", ""]
        if g.fixed:
            out += [_cells_caption(g), ""]
        out.append(_markdown_table(_display(g, cell_text, Ratio.text), g.keys))
        for note in g.notes:
            out += ["", note]
        out.append("")
    return "\n".join(out)


def to_csv(tables: list[Table], layout: str = "metric") -> str:
    """Wide CSV at full precision: one line per grid row, value/spread/n/ratio/status per column."""
    import pandas as pd

    frames = []
    for g in grids(tables, layout, hide_skipped=False):
        rows = []
        for _, line in g.frame.iterrows():
            row: dict[str, Any] = dict(g.meta)
            row.update({k: line[k] for k in g.keys})
            for c in g.value_columns:
                if c in g.ratio_columns:
                    continue  # the same number is in the metric's :ratio column
                v = line[c]
                cell = v if isinstance(v, Cell) else None
                row[c] = cell.value if cell else None
                row[f"{c}:spread"] = cell.spread if cell else None
                row[f"{c}:n"] = cell.n if cell else None
                row[f"{c}:ratio"] = cell.ratio if cell else None
                row[f"{c}:status"] = cell.status if cell else None
            rows.append(row)
        frames.append(pd.DataFrame(rows, dtype=object))
    if not frames:
        return ""
    frame = pd.concat(frames, ignore_index=True, sort=False)
    frame = frame.map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else
                      (repr(float(v)) if isinstance(v, float) else v))
    return frame.to_csv(index=False, lineterminator="\n")


def to_latex(tables: list[Table], hide_skipped: bool = True, layout: str = "metric") -> str:
    """booktabs tables through ``Styler.to_latex``; every name escaped, values with their ratio."""
    out = []
    for g in grids(tables, layout, hide_skipped):
        frame = _display(g, _cell_latex, lambda r: f"{r:.2f}$\\times$")
        styler = frame.style.hide(axis="index")
        styler = styler.format_index(escape="latex", axis=1)
        if g.keys:
            styler = styler.format(escape="latex", subset=g.keys, na_rep="")
        caption = g.title
        if g.fixed:
            caption += ". " + _cells_caption(g)
        body = styler.to_latex(hrules=True, caption=_latex_text(caption), environment="table", position="t",
                               position_float="centering",
                               column_format="l" * len(g.keys) + "r" * len(g.value_columns))
        if g.notes:
            notes = "\n".join(r"\par\footnotesize " + _latex_text(n) for n in g.notes)
            body = body.replace("\\end{table}", notes + "\n\\end{table}")
        out.append(body)
    return "\n".join(out)


def tables_html(tables: list[Table], hide_skipped: bool = True, layout: str = "metric") -> str:
    """HTML fragments (no page around them), one <table class='results'> per grid."""
    from pandas.io.formats.style import Styler

    parts = []
    for g in grids(tables, layout, hide_skipped):
        parts.append(f"<h3>{html.escape(g.title)}</h3>")
        if g.fixed:
            parts.append(f"<p class='fixed'>{html.escape(_cells_caption(g))}</p>")
        frame = _display(g, _cell_html, Ratio.text)
        classes = g.frame.map(lambda v: v.status if isinstance(v, Cell) else "")
        uid = hashlib.sha1(g.title.encode()).hexdigest()[:8]
        styler = Styler(frame, cell_ids=False, uuid=uid).hide(axis="index").set_td_classes(classes)
        if g.keys:
            styler = styler.format(escape="html", subset=g.keys, na_rep="")
        styler = styler.format_index(escape="html", axis=1)
        attrs = f"class='results' data-suite='{html.escape(g.suite, quote=True)}'"
        if g.metric:
            attrs += f" data-metric='{html.escape(g.metric, quote=True)}'"
        table = styler.set_table_attributes(attrs).to_html()
        # Styler's id on the table and its empty <style> are of no use in a page with its own style sheet.
        table = re.sub(r'<style type="text/css">\s*</style>\s*', "", table)
        parts.append(table.replace(f'<table id="T_{uid}" ', "<table ", 1))
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in g.notes]
    return "\n".join(parts)


HTML_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table.results{border-collapse:collapse;margin:0.5em 0 1.5em}
table.results td,table.results th{border:1px solid #ccc;padding:3px 8px;text-align:right}
table.results th{background:#f3f3f3}
td.failed,td.oom,td.timeout,td.crashed{color:#b00}
td.skipped{color:#888}
"""


def to_html(tables: list[Table], hide_skipped: bool = True, layout: str = "metric") -> str:
    body = tables_html(tables, hide_skipped, layout)
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>harness results</title>"
        f"<style>{HTML_STYLE}</style></head><body>{body}</body></html>\n"
    )


def _cell_json(cell: Cell) -> dict[str, Any]:
    data = {k: v for k, v in vars(cell).items() if k != "marks"}
    data["marks"] = [{"symbol": m.symbol, "title": m.title, "detail": m.detail} for m in cell.marks]
    return data


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
                        "cells": {c: _cell_json(cell) for c, cell in cells.items()},
                    }
                    for rkey, cells in t.rows
                ],
            }
        )
    return json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"


def render(tables: list[Table], fmt: str, layout: str = "metric") -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}")
    if fmt == "markdown":
        return to_markdown(tables, layout=layout)
    if fmt == "csv":
        return to_csv(tables, layout=layout)
    if fmt == "latex":
        return to_latex(tables, layout=layout)
    if fmt == "html":
        return to_html(tables, layout=layout)
    if fmt == "json":
        return to_json(tables)
    raise ValueError(f"unknown format {fmt!r}")
