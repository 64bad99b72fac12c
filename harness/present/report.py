"""A self-contained HTML report of one run, read top-down: what needs attention first.

The page opens with a summary: the cases (one row each) that failed, broke a quality band or,
against another run or a baseline, regressed, worst first, each with its variant params, its
swept params and the change with its interval; the verdict counts; and the environment facts
that differ between the two sides. Then, per suite: a line plot of each metric against the
swept param, one line per variant (log axes where the values span a wide range) with the
spread between rounds (else the within-run interval) drawn as a band; speed against each
quality metric, one panel per grid point, with the Pareto front and the declared quality
band; and the tables. The full verdict table is collapsed and filterable; the environment
closes the page. Plots are matplotlib PNGs embedded as base64 and the page's one script is
inline, so the report is a single file that works offline. The page is a Jinja2 template
(``harness/present/templates/report.html.j2``).
"""

from __future__ import annotations

import base64
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..declare.suite import violations_text
from ..judge.pairing import spread_notes
from ..judge.verdicts import REGRESSIONS
from ..results.store import write_output_file
from ..key import CaseKey, case_label, kv_text as _kv, params_text
from .export import HTML_STYLE, build_tables, tables_html
from .numbers import fmt_number, ratio_text
from ..results import FAILED_STATUSES, Record, ResultSet

MAX_FACETS = 6
# Order of the summary: a failed case first, then a broken band, then a slower or worse one.
SEVERITY = {"failed": 0, "out-of-band": 1, "slower": 2, "worse": 2, "no-win": 3}


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return _numeric(v) and math.isfinite(v)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _spans(values: list[float], factor: float = 20.0) -> bool:
    """Whether positive values span ``factor`` or more (a log axis reads them better)."""
    if not values or any(v is None or not v > 0 for v in values):
        return False
    return max(values) / min(values) >= factor


# --------------------------------------------------------------------------- summary
@dataclass
class SummaryCase:
    """One case that needs attention, with every reason it does."""

    suite: str
    variant: str
    variant_params: dict[str, Any]
    grid_params: dict[str, Any]
    verdicts: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)  # the metrics that changed or broke a band
    magnitude: float = 0.0  # the largest |log ratio| among its changes

    @classmethod
    def of(cls, key: CaseKey) -> "SummaryCase":
        return cls(key.suite, key.variant, key.variant_dict, key.grid_dict)

    @property
    def label(self) -> str:
        return case_label(self.variant, self.variant_params)

    @property
    def case_key(self) -> CaseKey:
        return CaseKey(self.suite, self.variant, self.variant_params, self.grid_params)

    @property
    def key(self) -> str:
        """``suite/variant[variant params] grid params``: what a reader (and a test) matches on."""
        grid = _kv(self.grid_params)
        return f"{self.suite}/{self.label}" + (f" {grid}" if grid else "")

    @property
    def severity(self) -> int:
        return min((SEVERITY.get(v, 9) for v in self.verdicts), default=9)

    def add(self, verdict: str, change: str = "", note: str = "", magnitude: float = 0.0, metric: str = "") -> None:
        for value, into in ((verdict, self.verdicts), (change, self.changes), (note, self.notes),
                            (metric, self.metrics)):
            if value and value not in into:
                into.append(value)
        self.magnitude = max(self.magnitude, magnitude)


def summary_cases(rs: ResultSet, comparison=None) -> list[SummaryCase]:
    """The cases of ``rs`` a reader must see first, worst first: regressions against the other
    side (slower, worse, out of band, failed, or faster outside the quality band), and every
    failed case and quality-band violation of the run itself."""
    cases: dict[CaseKey, SummaryCase] = {}

    def case(key: CaseKey) -> SummaryCase:
        if key not in cases:
            cases[key] = SummaryCase.of(key)
        return cases[key]

    if comparison is not None:
        for row in comparison.rows:
            if not (row.regression or row.verdict == "no-win"):
                continue
            change = ""
            magnitude = 0.0
            if row.metric not in ("*", "quality band") and row.ratio is not None:
                change = f"{row.metric} {ratio_text(row.ratio, row.ratio_low, row.ratio_high)}"
                if row.ratio > 0 and math.isfinite(row.ratio):
                    magnitude = abs(math.log(row.ratio))
                else:
                    magnitude = math.inf
            metric = row.metric if row.metric != "*" else ""
            if row.verdict in ("out-of-band", "no-win"):
                metric = ""
            case(row.key).add(row.verdict, change, row.note, magnitude, metric)
            for v in row.violations if row.verdict in ("out-of-band", "no-win") else ():
                case(row.key).add(row.verdict, metric=v.metric)
    for rec in rs.records:
        if rec.status in FAILED_STATUSES:
            c = case(rec.key)
            if "failed" not in c.verdicts:
                c.add("failed", note=f"{rec.status}: {rec.reason}".strip().rstrip(":"))
            continue
        violations = rs.band_violations(rec)
        if violations:
            c = case(rec.key)
            if "out-of-band" not in c.verdicts:
                c.add("out-of-band", note=violations_text(violations))
            for v in violations:
                c.add("out-of-band", metric=v.metric)
    return sorted(cases.values(), key=lambda c: (c.severity, -c.magnitude, c.key))


# --------------------------------------------------------------------------- plots
@dataclass
class Point:
    x: Any
    value: float
    low: float | None
    high: float | None


def spread_of(m) -> tuple[float | None, float | None, str]:
    """(low, high, what) around a metric's value: the range of its rounds when it has several,
    else its within-run interval of the median; (None, None, "") when it has neither."""
    rounds = [v for v in (m.extra.get("rounds") or []) if _finite(v)]
    if len(rounds) >= 2:
        return min(rounds), max(rounds), "range of rounds"
    if _finite(m.ci_low) and _finite(m.ci_high):
        return float(m.ci_low), float(m.ci_high), "95% CI of the median"
    return None, None, ""


def _swept(records: list[Record]) -> str | None:
    """The numeric param with the most distinct values (at least two): the x axis."""
    names = list(dict.fromkeys(k for r in records for k in r.params))
    best, n_best = None, 1
    for k in names:
        values = [r.params.get(k) for r in records]
        if not all(_numeric(v) for v in values):
            continue
        n = len(set(values))
        if n > n_best:
            best, n_best = k, n
    return best


@dataclass
class Figure:
    kind: str  # "metric" or "pareto"
    metric: str
    png: str  # base64
    caption: str

    @property
    def width(self) -> int:
        """The image's width in pixels (from the PNG header), so the caption wraps under it."""
        return int.from_bytes(base64.b64decode(self.png[:32])[16:20], "big")


def _figure(n_panels: int, width: float = 4.3, height: float = 3.1):
    from matplotlib.figure import Figure as MplFigure

    cols = min(n_panels, 3)
    rows = math.ceil(n_panels / cols)
    fig = MplFigure(figsize=(width * cols, height * rows), layout="constrained")
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(n_panels)]
    return fig, axes


LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")


class Styles:
    """One colour per variant (in the suite's declared order) across every plot of a suite, and a
    line style and marker per setting of the variant's own params."""

    def __init__(self, meta: dict):
        from matplotlib import colormaps

        self.variants = list(meta.get("variants") or [])
        self.colors = colormaps["tab10"].colors
        self.seen: dict[str, list[str]] = {}

    def __call__(self, variant: str, label: str) -> dict[str, Any]:
        if variant not in self.variants:
            self.variants.append(variant)
        labels = self.seen.setdefault(variant, [])
        if label not in labels:
            labels.append(label)
        i, j = self.variants.index(variant), labels.index(label)
        return {"color": self.colors[i % len(self.colors)], "linestyle": LINESTYLES[j % len(LINESTYLES)],
                "marker": MARKERS[j % len(MARKERS)]}


def _facets(records: list[Record], meta: dict, x: str | None):
    """Group records by panel (grid params other than ``x``) and series (variant with its params
    other than ``x``)."""
    panels: dict[tuple, dict[str, list[Record]]] = {}
    for r in records:
        pkey = tuple((k, v) for k, v in r.key.grid_params if k != x)
        vp = {k: v for k, v in r.key.variant_params if k != x}
        panels.setdefault(pkey, {}).setdefault(case_label(r.variant, vp), []).append(r)
    return panels


def _panel_titles(keys: list[tuple]) -> tuple[dict[tuple, str], dict[str, Any]]:
    """Short panel titles (only the params that differ between panels) and the params that do not."""
    names = list(dict.fromkeys(k for key in keys for k, _ in key))
    varying = [n for n in names if len({params_text(dict(key).get(n)) for key in keys}) > 1]
    fixed = {n: dict(keys[0]).get(n) for n in names if n not in varying} if keys else {}
    return {key: _kv({n: dict(key).get(n) for n in varying}) for key in keys}, fixed


def metric_figure(suite: str, metric: str, records: list[Record], meta: dict, styles: Styles | None = None,
                  flagged: set[tuple] = frozenset()) -> Figure | None:
    """One metric against the swept param, a line per variant, the spread as a band (or error bars
    when nothing numeric is swept); a case in ``flagged`` (case keys) is ringed
    in red."""
    styles = styles or Styles(meta)
    recs = [r for r in records if r.status == "ok" and metric in r.metrics and _finite(r.metrics[metric].value)]
    if not recs:
        return None
    spec = recs[0].metrics[metric]
    label = f"{metric} [{spec.unit}]" if spec.unit else metric
    x = _swept(recs)
    panels = _facets(recs, meta, x)
    keys = list(panels)[:MAX_FACETS]
    values = [r.metrics[metric].value for r in recs]
    spread_kinds: set[str] = set()
    ringed = False
    titles, fixed = _panel_titles(list(panels))
    fig, axes = _figure(len(keys))
    for ax, pkey in zip(axes, keys):
        series = panels[pkey]
        for i, (name, srecs) in enumerate(series.items()):
            pts = []
            for r in srecs:
                low, high, what = spread_of(r.metrics[metric])
                if what:
                    spread_kinds.add(what)
                pts.append(Point(r.params.get(x) if x else name, float(r.metrics[metric].value), low, high))
            style = styles(srecs[0].variant, name)
            if x:
                order = sorted(range(len(pts)), key=lambda k: pts[k].x)
                pts, srecs = [pts[k] for k in order], [srecs[k] for k in order]
                ax.plot([p.x for p in pts], [p.value for p in pts], ms=4, label=name, **style)
                banded = [p for p in pts if p.low is not None]
                if banded:
                    ax.fill_between([p.x for p in banded], [p.low for p in banded], [p.high for p in banded],
                                    color=style["color"], alpha=0.2, lw=0)
                bad = [p for p, r in zip(pts, srecs) if r.key in flagged]
            else:
                p = pts[0]
                err = None
                if p.low is not None:
                    err = [[max(0.0, p.value - p.low)], [max(0.0, p.high - p.value)]]
                ax.bar([i], [p.value], yerr=err, capsize=3, label=name, color=style["color"])
                bad = [Point(i, p.value, None, None)] if srecs[0].key in flagged else []
            if bad:
                ringed = True
                ax.scatter([p.x for p in bad], [p.value for p in bad], s=140, facecolors="none",
                           edgecolors="#d00", linewidths=1.6, zorder=5)
        if x:
            ax.set_xlabel(x)
            xs_all = [r.params.get(x) for r in recs]
            if _spans(xs_all, 4.0):
                ax.set_xscale("log", base=2)
        else:
            ax.set_xticks(range(len(series)))
            ax.set_xticklabels(list(series), rotation=25, ha="right", fontsize=7)
        if _spans(values):
            ax.set_yscale("log")
        ax.set_ylabel(label)
        if titles[pkey]:
            ax.set_title(titles[pkey], fontsize=9)
        ax.grid(True, alpha=0.3)
    if x:  # bars carry their names on the axis
        axes[0].legend(fontsize=7)
    fig.suptitle(f"{suite}: {metric}", fontsize=11)
    against = f" against {x}" if x else " per variant"
    shown = f" (first {MAX_FACETS} of {len(panels)} panels)" if len(panels) > MAX_FACETS else ""
    spread = f"; shaded: {' or '.join(sorted(spread_kinds))}" if spread_kinds else ""
    rings = "; red rings: cases in the summary" if ringed else ""
    where = f"; {_kv(fixed)}" if fixed else ""
    caption = f"{suite}: {label}{against}, {spec.better} is better{where}{spread}{rings}{shown}"
    return Figure("metric", metric, _png(fig), caption)


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


def band_limits(bands: list[dict], metric: str, reference_value: float | None) -> list[tuple[str, float, str]]:
    """(side, limit, text) of each declared bound on ``metric``; ratio bounds need the reference's value."""
    out = []
    for band in bands:
        if band.get("metric") != metric:
            continue
        who = f" ({', '.join(band['variants'])})" if band.get("variants") else ""
        for key, side in (("max", "max"), ("min", "min")):
            if band.get(key) is not None:
                out.append((side, float(band[key]), f"band {side} {band[key]:g}{who}"))
        for key, side in (("max_ratio", "max"), ("min_ratio", "min")):
            if band.get(key) is not None and reference_value is not None:
                out.append((side, float(band[key]) * reference_value, f"band {side} {band[key]:g} x reference{who}"))
    return out


def pareto_figure(suite: str, quality: str, records: list[Record], meta: dict,
                  styles: Styles | None = None) -> Figure | None:
    """Latency against a quality metric, one panel per grid point: the Pareto front dashed, the
    quality band as a line with the side outside it shaded."""
    styles = styles or Styles(meta)
    reference = meta.get("reference")
    panels: dict[tuple, list[Record]] = {}
    for r in records:
        m_l, m_q = r.metrics.get("latency"), r.metrics.get(quality)
        if r.status == "ok" and m_l is not None and m_q is not None and _finite(m_l.value) and _finite(m_q.value):
            panels.setdefault(r.key.grid_params, []).append(r)
    if not panels:
        return None
    keys = list(panels)[:MAX_FACETS]
    fig, axes = _figure(len(keys))
    better = next(iter(panels.values()))[0].metrics[quality].better
    unit = next(iter(panels.values()))[0].metrics[quality].unit
    bands = meta.get("bands") or []
    drew_band = False
    titles, fixed = _panel_titles(list(panels))
    for ax, pkey in zip(axes, keys):
        recs = panels[pkey]
        pts = [(r.metrics["latency"].value, r.metrics[quality].value) for r in recs]
        for r, (lx, qy) in zip(recs, pts):
            name = r.key.label
            style = styles(r.variant, name)
            ax.scatter([lx], [qy], s=30, label=name, color=style["color"], marker=style["marker"])
        front = pareto_front(pts, better)
        ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=1, label="Pareto front")
        ref = next((r.metrics[quality].value for r in recs if r.variant == reference), None)
        for side, limit, text in band_limits(bands, quality, ref):
            drew_band = True
            ax.axhline(limit, color="#c00", lw=1.2, label=text)
            lo, hi = ax.get_ylim()
            if side == "max":
                ax.axhspan(limit, max(hi, limit), color="#c00", alpha=0.08, lw=0)
            else:
                ax.axhspan(min(lo, limit), limit, color="#c00", alpha=0.08, lw=0)
        if _spans([y for _, y in pts], 100.0):
            ax.set_yscale("log")
        if _spans([x for x, _ in pts]):
            ax.set_xscale("log")
        ax.set_xlabel(f"latency [{recs[0].metrics['latency'].unit}]")
        ax.set_ylabel(f"{quality} [{unit}]" if unit else quality)
        if titles[pkey]:
            ax.set_title(titles[pkey], fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{suite}: speed against {quality}", fontsize=11)
    caption = (f"{suite}: latency against {quality} ({better} is better)" + (f"; {_kv(fixed)}" if fixed else "")
               + "; points on the dashed line are not beaten in both"
               + ("; red: the quality band, shaded outside it" if drew_band else ""))
    if len(panels) > MAX_FACETS:
        caption += f" (first {MAX_FACETS} of {len(panels)} grid points)"
    return Figure("pareto", quality, _png(fig), caption)


# --------------------------------------------------------------------------- page
@dataclass
class SuiteSection:
    name: str
    description: str
    figures: list[Figure]
    tables: str
    notes: list[str]


def suite_sections(rs: ResultSet, attention: list[SummaryCase] = ()) -> list[SuiteSection]:
    tables = build_tables(rs.records, rs.suites_meta)
    flagged = {(m, c.case_key) for c in attention for m in c.metrics}
    out = []
    for suite in dict.fromkeys(t.suite for t in tables):
        meta = rs.suites_meta.get(suite) or {}
        records = [r for r in rs.records if r.suite == suite]
        st = [t for t in tables if t.suite == suite]
        styles = Styles(meta)
        figures = [f for f in (metric_figure(suite, t.metric, records, meta, styles,
                                             {k for m, k in flagged if k.suite == suite and m == t.metric})
                               for t in st) if f is not None]
        if any(t.metric == "latency" for t in st):
            figures += [f for f in (pareto_figure(suite, t.metric, records, meta, styles)
                                    for t in st if t.kind == "quality") if f is not None]
        notes = []
        has_flops = any("tflops" in r.metrics for r in records)
        if has_flops and not any("pct_of_peak" in r.metrics for r in records):
            notes.append("% of peak: no measured peak for this machine (harness doctor measures and stores it)")
        out.append(SuiteSection(suite, meta.get("description") or "", figures, tables_html(st), notes))
    return out


def verdict_rows(rs: ResultSet, comparison) -> list[dict[str, Any]]:
    rows = []
    for r in comparison.rows:
        unit = f" {r.unit}" if r.unit else ""
        rows.append({
            "verdict": r.verdict, "suite": r.suite, "case": r.key.label, "grid": _kv(r.key.grid_dict),
            "metric": r.metric, "a": fmt_number(r.a) + unit if r.a is not None else "",
            "b": fmt_number(r.b) + unit if r.b is not None else "",
            "ratio": ratio_text(r.ratio, r.ratio_low, r.ratio_high),
            "noise": f"{r.noise:.1%}" if r.noise is not None else "", "note": r.note, "regression": r.regression,
        })
    return rows


def _environment_items(env: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), v if isinstance(v, str) else json.dumps(v, default=str)) for k, v in env.items()]


def _template():
    import jinja2

    loader = jinja2.PackageLoader("harness.present", "templates")
    env = jinja2.Environment(loader=loader, autoescape=jinja2.select_autoescape(["html", "j2"]),
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template("report.html.j2")


REPORT_STYLE = HTML_STYLE + """
body{max-width:1320px;margin:1em auto;padding:0 1em;line-height:1.35}
h1{font-size:1.5em;margin:0.2em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:2px;margin-top:1.6em}
p.run{color:#444;margin:0.2em 0 0.8em}
.chips span{display:inline-block;padding:2px 9px;margin:0 4px 4px 0;border-radius:10px;background:#eee;font-size:90%}
.chips .regression{background:#f8c9c9;font-weight:bold}.chips .good{background:#cdeccd}
.chips .noisy{background:#fff0b8}
p.status{font-weight:bold;font-size:1.1em;margin:0.4em 0}
p.status.bad{color:#a00}p.status.good{color:#070}
table.attention,table.verdicts,table.kv{border-collapse:collapse;margin:0.4em 0 1em}
table.attention td,table.attention th,table.verdicts td,table.verdicts th,table.kv td,table.kv th
{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
table.attention th,table.verdicts th,table.kv th{background:#f3f3f3}
td.v-failed,td.v-slower,td.v-worse,td.v-out-of-band{color:#a00;font-weight:bold}
td.v-no-win{color:#a60;font-weight:bold}
tr.failed td,tr.slower td,tr.worse td,tr.out-of-band td{background:#fdecec}
tr.faster td,tr.better td{background:#e8f6e8}
tr.noisy td,tr.no-win td{background:#fff8df}
table.kv td{font-family:monospace;font-size:90%;max-width:60em;word-break:break-all}
figure.plot{display:inline-block;margin:0.4em 1em 1em 0;vertical-align:top;max-width:100%}
figure.plot img{width:100%;height:auto}
figure.plot figcaption{font-size:88%;color:#555}
details{margin:0.5em 0}details>summary{cursor:pointer;font-weight:bold}
.filter{margin:0.5em 0}.filter input{width:22em}
p.note{color:#665;font-size:92%}
nav.toc a{margin-right:0.8em}
"""


def build_report(rs: ResultSet, comparison=None, title: str | None = None) -> str:
    """The report page as one HTML string."""
    from markupsafe import Markup

    counts: dict[str, int] = {}
    for r in rs.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    attention = summary_cases(rs, comparison)
    sections = suite_sections(rs, attention)
    verdicts = None
    if comparison is not None:
        verdicts = {
            "a": comparison.a_label, "b": comparison.b_label, "a_device": comparison.a_device,
            "b_device": comparison.b_device, "counts": comparison.counts(), "exit_code": comparison.exit_code,
            "regressions": len(comparison.regressions), "notes": comparison.notes,
            "environment_diff": comparison.environment_diff, "rows": verdict_rows(rs, comparison),
            "a_rounds": comparison.a_rounds, "b_rounds": comparison.b_rounds,
            "thresholds": ", ".join(f"{k} {v:.0%}" for k, v in comparison.options.thresholds.items()),
        }
    for s in sections:
        s.tables = Markup(s.tables)
    return _template().render(
        title=title or f"harness report: {rs.label}",
        style=Markup(REPORT_STYLE),
        run={"label": rs.label, "device": rs.describe_device(), "profile": rs.meta.get("profile"),
             "cases": len(rs.records), "statuses": sorted(counts.items()), "rounds": rs.rounds,
             "commit": ((rs.environment or {}).get("git") or {}).get("commit")},
        attention=attention,
        comparison=verdicts,
        spread_notes=spread_notes(rs, "this run"),
        sections=sections,
        environment=_environment_items(rs.environment or {"environment": "not recorded"}),
        warnings=list(rs.warnings),
        regression_verdicts=REGRESSIONS,
    )


def write_report(rs: ResultSet, output: Path, comparison=None) -> Path:
    """Write the report page; returns its path."""
    text = build_report(rs, comparison)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_output_file(output, text)  # a pipe or device written through; a file whole or not at all
    return output
