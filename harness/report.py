"""A self-contained HTML report of one run: plots, tables, environment and comparison verdicts.

Per suite: one plot per metric against the swept param, a line per variant (log axes where
the values span a wide range, e.g. latency against seq_len), or grouped bars when no numeric
param is swept; a speed-quality view (latency against each quality metric, Pareto front
marked) where the suite has quality metrics; and the export tables. Then the environment the
run came from and, when asked, the comparison against another run or a baseline. Plots are
matplotlib PNGs embedded as base64, so the page is one file with no external resources.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from .results import ResultSet
from .export import HTML_STYLE, Table, build_tables, tables_html

MAX_FACETS = 6
REPORT_STYLE = HTML_STYLE + """
figure.plot{display:inline-block;margin:0.5em 1em 1em 0;vertical-align:top}
figure.plot figcaption{font-size:90%;color:#555}
table.kv td{border:1px solid #ddd;padding:2px 8px;text-align:left;font-family:monospace}
table.verdicts td,table.verdicts th{border:1px solid #ccc;padding:3px 8px}
table.verdicts{border-collapse:collapse}
tr.slower td,tr.worse td,tr.failed td{background:#fde0e0}
tr.faster td,tr.better td{background:#e0f5e0}
tr.noisy td{background:#fff6d8}
p.summary{font-weight:bold}
"""


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _spans(values: list[float], factor: float = 20.0) -> bool:
    pos = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return len(pos) >= 2 and max(pos) / min(pos) >= factor and len(pos) == len([v for v in values if v is not None])


def _figure(n_panels: int):
    from matplotlib.figure import Figure

    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(4.6 * cols, 3.4 * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


def _facet_title(names: list[str], key: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(names, key)) or "all"


def plot_table(t: Table) -> tuple[str, str] | None:
    """(base64 PNG, caption) for one (suite, metric) table, or None when it has no values."""
    values = [c.value for _, cells in t.rows for c in cells.values() if c.value is not None]
    if not values:
        return None
    label = f"{t.metric} [{t.unit}]" if t.unit else t.metric
    swept = [i for i, k in enumerate(t.row_params)
             if all(_numeric(r[i]) for r, _ in t.rows) and len({r[i] for r, _ in t.rows}) >= 2]
    if swept:
        xi = max(swept, key=lambda i: len({r[i] for r, _ in t.rows}))
        others = [i for i in range(len(t.row_params)) if i != xi]
        facets: dict[tuple, list] = {}
        for rkey, cells in t.rows:
            facets.setdefault(tuple(rkey[i] for i in others), []).append((rkey[xi], cells))
        keys = list(facets)[:MAX_FACETS]
        fig, axes = _figure(len(keys))
        xs_all = [x for k in keys for x, _ in facets[k]]
        for ax, fkey in zip(axes, keys):
            pts = sorted(facets[fkey], key=lambda p: p[0])
            for col in t.columns:
                xy = [(x, cells[col].value) for x, cells in pts if col in cells and cells[col].value is not None]
                if xy:
                    ax.plot([p[0] for p in xy], [p[1] for p in xy], marker="o", label=col)
            ax.set_xlabel(t.row_params[xi])
            ax.set_ylabel(label)
            ax.set_title(_facet_title([t.row_params[i] for i in others], fkey), fontsize=9)
            if _spans(xs_all, 4.0):
                ax.set_xscale("log", base=2)
            if _spans(values):
                ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
        axes[0].legend(fontsize=7)
        caption = f"{t.suite}: {label} against {t.row_params[xi]}, {t.better} is better"
    else:
        fig, axes = _figure(1)
        ax = axes[0]
        groups = [_facet_title(t.row_params, rkey) for rkey, _ in t.rows]
        width = 0.8 / max(1, len(t.columns))
        for j, col in enumerate(t.columns):
            ys = [cells[col].value if col in cells and cells[col].value is not None else math.nan for _, cells in t.rows]
            if all(math.isnan(y) for y in ys):
                continue
            ax.bar([i + j * width for i in range(len(groups))], ys, width, label=col)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
        ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=7)
        ax.set_ylabel(label)
        if _spans(values):
            ax.set_yscale("log")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
        caption = f"{t.suite}: {label} per variant, {t.better} is better"
    fig.suptitle(f"{t.suite}: {t.metric}", fontsize=11)
    return _png(fig), caption


def pareto_front(points: list[tuple[float, float]], quality_better: str) -> list[int]:
    """Indices of the points no other point beats in both latency (lower) and quality."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = False
        for j, (x2, y2) in enumerate(points):
            if j == i:
                continue
            q_ok = y2 <= y if quality_better == "lower" else y2 >= y
            q_strict = y2 < y if quality_better == "lower" else y2 > y
            if x2 <= x and q_ok and (x2 < x or q_strict):
                dominated = True
                break
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(latency: Table, quality: Table) -> tuple[str, str] | None:
    """Latency against a quality metric, one panel per grid point, the Pareto front joined."""
    panels = []
    for rkey, cells in latency.rows:
        qcells = dict(quality.rows).get(rkey, {})
        pts = [(col, cells[col].value, qcells[col].value) for col in latency.columns
               if col in cells and col in qcells and cells[col].value is not None and qcells[col].value is not None]
        if pts:
            panels.append((rkey, pts))
    if not panels:
        return None
    panels = panels[:MAX_FACETS]
    fig, axes = _figure(len(panels))
    for ax, (rkey, pts) in zip(axes, panels):
        for col, x, y in pts:
            ax.scatter([x], [y], label=col, s=30)
        front = pareto_front([(x, y) for _, x, y in pts], quality.better)
        ax.plot([pts[i][1] for i in front], [pts[i][2] for i in front], "k--", lw=1, label="Pareto front")
        ax.set_xlabel(f"latency [{latency.unit}]")
        ax.set_ylabel(f"{quality.metric} [{quality.unit}]" if quality.unit else quality.metric)
        if _spans([y for _, _, y in pts], 100.0):
            ax.set_yscale("log")
        if _spans([x for _, x, _ in pts]):
            ax.set_xscale("log")
        ax.set_title(_facet_title(latency.row_params, rkey), fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{latency.suite}: speed against {quality.metric}", fontsize=11)
    caption = (f"{latency.suite}: latency against {quality.metric} ({quality.better} is better); "
               "points on the dashed line are not beaten in both")
    return _png(fig), caption


def _figure_html(suite: str, kind: str, metric: str, plot: tuple[str, str] | None) -> str:
    if plot is None:
        return ""
    data, caption = plot
    return (f"<figure class='plot' data-suite='{html.escape(suite)}' data-kind='{kind}' data-metric='{html.escape(metric)}'>"
            f"<img alt='{html.escape(caption, quote=True)}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _kv_table(data: dict[str, Any]) -> str:
    rows = []
    for k, v in data.items():
        text = v if isinstance(v, str) else json.dumps(v, default=str)
        rows.append(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(text))}</td></tr>")
    return "<table class='kv'>" + "".join(rows) + "</table>"


def _verdict_table(rows, varying: list[str]) -> str:
    from .export import fmt_number

    head = ["verdict", "suite", "variant", *varying, "metric", "A", "B", "ratio", "p", "note"]
    parts = ["<table class='verdicts'><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
             + "</tr></thead><tbody>"]
    for r in rows:
        cells = [r.verdict, r.suite, r.variant, *[r.params.get(k, "") for k in varying],
                 f"{r.metric} [{r.unit}]" if r.unit else r.metric, fmt_number(r.a), fmt_number(r.b),
                 f"{r.ratio:.3f}x" if r.ratio is not None and math.isfinite(r.ratio) else "",
                 f"{r.noise:.1%}" if r.noise is not None else "", r.note]
        parts.append(f"<tr class='{r.verdict}'>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def comparison_html(comparison) -> str:
    """Summary, the rows that changed, and every row behind a disclosure."""
    from .compare import _varying_params, summary_line

    parts = [f"<p class='summary' data-exit-code='{comparison.exit_code}'>{html.escape(summary_line(comparison))}</p>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in comparison.notes]
    if comparison.rows:
        varying, fixed = _varying_params(comparison.rows)
        if fixed:
            parts.append("<p class='fixed'>Fixed: " + html.escape(", ".join(f"{k}={v}" for k, v in fixed.items())) + "</p>")
        changed = [r for r in comparison.rows if r.verdict != "same"]
        parts.append(_verdict_table(changed, varying) if changed else "<p>No row changed.</p>")
        parts.append(f"<details><summary>all {len(comparison.rows)} rows</summary>"
                     f"{_verdict_table(comparison.rows, varying)}</details>")
    return "\n".join(parts)


def build_report(rs: ResultSet, comparison=None, title: str | None = None) -> str:
    """The report page as one HTML string."""
    suites_meta = rs.suites_meta
    tables = build_tables(rs.records, suites_meta)
    title = title or f"harness report: {rs.label}"
    body = [f"<h1>{html.escape(title)}</h1>"]
    counts: dict[str, int] = {}
    for r in rs.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    body.append(f"<p>Device {html.escape(rs.describe_device())}; profile {html.escape(str(rs.meta.get('profile')))}; "
                f"{len(rs.records)} cases (" + html.escape(", ".join(f"{n} {s}" for s, n in sorted(counts.items()))) + ")</p>")
    from .compare import spread_notes

    body += [f"<p class='note'>{html.escape(n)}</p>" for n in spread_notes(rs, "this run")]
    if comparison is not None:
        body.append("<h2 id='comparison'>Comparison</h2>")
        body.append(comparison_html(comparison))
    for suite in dict.fromkeys(t.suite for t in tables):
        meta = suites_meta.get(suite, {})
        st = [t for t in tables if t.suite == suite]
        body.append(f"<section class='suite' data-suite='{html.escape(suite)}'><h2>{html.escape(suite)}</h2>")
        if meta.get("description"):
            body.append(f"<p>{html.escape(meta['description'])}</p>")
        for t in st:
            body.append(_figure_html(suite, "metric", t.metric, plot_table(t)))
        latency = next((t for t in st if t.metric == "latency"), None)
        for q in st:
            if latency is not None and q.kind == "quality":
                body.append(_figure_html(suite, "pareto", q.metric, plot_pareto(latency, q)))
        body.append("<h3>Tables</h3>")
        body.append(tables_html(st))
        body.append("</section>")
    body.append("<h2 id='environment'>Environment</h2>")
    body.append(_kv_table(rs.environment or {"environment": "not recorded"}))
    if rs.warnings:
        body.append("<h2>Warnings</h2>" + "".join(f"<p>{html.escape(w)}</p>" for w in rs.warnings))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{REPORT_STYLE}</style></head><body>"
            + "\n".join(b for b in body if b) + "</body></html>\n")


def write_report(rs: ResultSet, output: Path, comparison=None) -> Path:
    """Write the report page; returns its path."""
    text = build_report(rs, comparison)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    return output
