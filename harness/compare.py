"""Comparing two result sets (run folders or baselines): ratios, significance, verdicts, exit codes.

One row per (suite, variant, params, metric) with the value in A (the reference, usually a
baseline), the value in B (the new run), the ratio B/A, a p-value and a verdict:

- ``faster`` / ``slower`` for time and rate metrics (latency, throughput, TFLOP/s),
  ``better`` / ``worse`` for memory and quality metrics: the change is larger than the
  metric kind's threshold and, where both sides kept samples, significant (two-sided
  Mann-Whitney U on the raw timing samples, as asv does, below ``alpha``). Rate metrics are
  derived from the latency, so they take the latency's test.
- ``noisy``: the change is past the threshold but not significant.
- ``same``: within the threshold (quality metrics also within an absolute tolerance).
- ``new`` / ``missing``: only in B / only in A (or skipped on one side).
- ``failed``: measured in A, failed, ran out of memory, timed out or crashed in B.

The direction of each metric is honoured: a drop in throughput is ``slower``, a rise in
mAP is ``better``. ``slower``, ``worse`` and ``failed`` are regressions: the command exits 1.

Defaults (flags change them): 5% for time, rate and memory, 2% for quality (plus 1e-6
absolute), alpha 0.01. Measured on synthetic timing samples (30 a side, log-normal noise
plus 10% outliers slowed by up to 50%; tests/test_compare.py), over 2000 trials each: with
5% noise, A/A comparisons were flagged in 0% of trials and a 10% slowdown in 99%; with 2%
noise, 0% and 100%; with 10% noise, about 0.5% and 66% (the rest are ``noisy``): take more
samples (a longer timing budget) where noise is that large.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from .export import fmt_number
from .results import FAILED_STATUSES, ResultSet, ResultsError, json_safe
from .suite import METRIC_KINDS

REGRESSIONS = ("slower", "worse", "failed")
IMPROVEMENTS = ("faster", "better")
VERDICT_ORDER = ("failed", "slower", "worse", "noisy", "faster", "better", "new", "missing", "same")
KINDS = METRIC_KINDS
FORMATS = ("markdown", "json", "csv")


class CompareError(ResultsError):
    """The two result sets cannot be compared as asked (e.g. measured on different devices)."""


@dataclass
class CompareOptions:
    """Thresholds (relative change per metric kind), significance level and tolerances."""

    thresholds: dict[str, float] = field(
        default_factory=lambda: {"time": 0.05, "rate": 0.05, "memory": 0.05, "quality": 0.02, "count": 0.0}
    )
    alpha: float = 0.01
    quality_atol: float = 1e-6
    force: bool = False
    fail_on_missing: bool = False

    def __post_init__(self) -> None:
        for kind, value in self.thresholds.items():
            if kind not in KINDS:
                raise ValueError(f"unknown metric kind {kind!r} (use {', '.join(KINDS)})")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"threshold for {kind} must be a non-negative number, not {value!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be between 0 and 1, not {self.alpha!r}")


@dataclass
class Row:
    """One (suite, variant, params, metric) comparison."""

    suite: str
    variant: str
    params: dict[str, Any]
    metric: str
    unit: str
    better: str
    kind: str
    a: float | None
    b: float | None
    ratio: float | None
    p_value: float | None
    verdict: str
    note: str = ""
    a_n: int | None = None
    b_n: int | None = None

    @property
    def regression(self) -> bool:
        return self.verdict in REGRESSIONS


@dataclass
class Comparison:
    a_label: str
    b_label: str
    a_device: str
    b_device: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    options: CompareOptions = field(default_factory=CompareOptions)

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICT_ORDER}
        for r in self.rows:
            out[r.verdict] = out.get(r.verdict, 0) + 1
        return {k: v for k, v in out.items() if v}

    @property
    def regressions(self) -> list[Row]:
        rows = [r for r in self.rows if r.regression]
        if self.options.fail_on_missing:
            rows += [r for r in self.rows if r.verdict == "missing"]
        return rows

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0


# --------------------------------------------------------------------------- statistics
def mann_whitney_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value, or None with fewer than 3 samples a side."""
    if len(a) < 3 or len(b) < 3:
        return None
    from scipy.stats import mannwhitneyu

    if min(a) == max(a) == min(b) == max(b):
        return 1.0
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def judge(
    a: float | None,
    b: float | None,
    better: str,
    kind: str,
    options: CompareOptions,
    p_value: float | None = None,
    have_samples: bool = False,
) -> tuple[str, float | None]:
    """Verdict and ratio for one metric given both values and (optionally) a p-value."""
    if a is None and b is None:
        return "same", None
    if a is None:
        return "new", None
    if b is None:
        return "missing", None
    ratio = b / a if a != 0 else (1.0 if b == 0 else math.inf)
    if kind == "quality" and abs(b - a) <= options.quality_atol:
        return "same", ratio
    threshold = options.thresholds[kind]
    if a == 0 or b == 0 or (a < 0) != (b < 0):
        change = math.inf if a != b else 0.0  # no meaningful ratio; any change is past it
        worse = (b > a) if better == "lower" else (b < a)
    else:
        change = abs(math.log(ratio))
        worse = (ratio > 1) if better == "lower" else (ratio < 1)
        if a < 0:  # both negative: the ratio's sense flips
            worse = not worse
    if change <= math.log1p(threshold):
        return "same", ratio
    if have_samples and (p_value is None or p_value >= options.alpha):
        return "noisy", ratio
    words = ("slower", "faster") if kind in ("time", "rate") else ("worse", "better")
    return (words[0] if worse else words[1]), ratio


# --------------------------------------------------------------------------- comparing
def check_devices(a: ResultSet, b: ResultSet, force: bool) -> list[str]:
    """Refuse (CompareError) to compare different devices unless forced; notes otherwise."""
    same = a.device.split(":")[0] == b.device.split(":")[0] and a.device_name == b.device_name
    spread = spread_notes(a, "A") + spread_notes(b, "B")
    if same and not any(rs.environment.get("devices_differ") for rs in (a, b)):
        return spread
    text = f"A was measured on {a.describe_device()}, B on {b.describe_device()}"
    if not force:
        raise CompareError(f"refusing to compare results from different devices: {text}; pass --force to compare anyway")
    return [f"forced comparison across devices: {text}", *spread]


def spread_notes(rs: ResultSet, side: str) -> list[str]:
    """What to say about a run whose cases ran on several nodes or GPUs (``environment["nodes"]``)."""
    nodes = rs.environment.get("nodes") or {}
    if not nodes:
        return []
    n_gpus = sum(len(n.get("gpus") or {}) for n in nodes.values())
    where = f"{len(nodes)} node(s), {n_gpus} worker device(s)"
    if rs.environment.get("devices_differ"):
        return [f"{side}: cases ran on different devices ({rs.device_name[len('mixed: '):]}) over {where}; "
                "its cases do not share one device"]
    return [f"{side}: cases ran on {where}, all {rs.device_name}: treated as one device"]


def compare(a: ResultSet, b: ResultSet, options: CompareOptions | None = None) -> Comparison:
    """Compare B (new) against A (reference)."""
    options = options or CompareOptions()
    notes = check_devices(a, b, options.force)
    for name, meta_b in b.suites_meta.items():
        meta_a = a.suites_meta.get(name)
        if meta_a and meta_a.get("spec_hash") and meta_b.get("spec_hash") and meta_a["spec_hash"] != meta_b["spec_hash"]:
            notes.append(f"suite {name!r}: the workload changed between A and B (spec hash "
                         f"{meta_a['spec_hash']} -> {meta_b['spec_hash']}); ratios may compare different work")
    threads = [rs.environment.get("torch_threads") or rs.meta.get("threads") for rs in (a, b)]
    if a.device == "cpu" and None not in threads and threads[0] != threads[1]:
        notes.append(f"A ran with {threads[0]} CPU threads, B with {threads[1]}; timings compare different set-ups")
    recs_a = {r.key: r for r in a.records}
    recs_b = {r.key: r for r in b.records}
    if not set(recs_a) & set(recs_b):
        raise CompareError(f"{a.label} and {b.label} have no case in common (suites "
                           f"{', '.join(sorted({r.suite for r in a.records}))} against "
                           f"{', '.join(sorted({r.suite for r in b.records}))}); nothing to compare")
    for rs, side in ((a, "A"), (b, "B")):
        if not rs.finished:
            notes.append(f"{side} ({rs.label}) is an unfinished run; the cases it lacks show as new or missing")
    rows: list[Row] = []
    for key in list(recs_a) + [k for k in recs_b if k not in recs_a]:
        rows += _compare_case(recs_a.get(key), recs_b.get(key), options)
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    rows.sort(key=lambda r: order.get(r.verdict, len(order)))
    return Comparison(a.label, b.label, a.describe_device(), b.describe_device(), rows, notes, options)


def _row(rec, metric: str, m, verdict: str, note: str = "", **kw) -> Row:
    unit, better, kind = (m.unit, m.better, m.kind) if m is not None else ("", "lower", "quality")
    return Row(rec.suite, rec.variant, dict(rec.params), metric, unit, better, kind,
               kw.get("a"), kw.get("b"), kw.get("ratio"), kw.get("p_value"), verdict, note,
               kw.get("a_n"), kw.get("b_n"))


def _compare_case(ra, rb, options: CompareOptions) -> list[Row]:
    if ra is None or rb is None:
        rec = ra or rb
        verdict = "missing" if rb is None else "new"
        where = "B" if rb is None else "A"
        if not rec.metrics:
            return [_row(rec, "*", None, verdict, f"case not in {where}; {rec.status} {rec.reason}".strip())]
        return [_row(rec, name, m, verdict, f"case not in {where}",
                     a=m.finite_value if ra else None, b=m.finite_value if rb else None)
                for name, m in rec.metrics.items()]
    if ra.status == rb.status == "skipped":
        return []  # nothing measured on either side
    if ra.status != "ok" or rb.status != "ok":
        if ra.status == "ok" and rb.status in FAILED_STATUSES:
            return [_row(rb, name, m, "failed", f"B {rb.status}: {rb.reason}", a=m.finite_value)
                    for name, m in ra.metrics.items()] or [_row(rb, "*", None, "failed", f"B {rb.status}: {rb.reason}")]
        if ra.status == "ok":  # skipped in B
            return [_row(rb, name, m, "missing", f"B {rb.status}: {rb.reason}", a=m.finite_value)
                    for name, m in ra.metrics.items()]
        if rb.status == "ok":
            return [_row(rb, name, m, "new", f"A {ra.status}: {ra.reason}", b=m.finite_value)
                    for name, m in rb.metrics.items()]
        if rb.status in FAILED_STATUSES and ra.status not in FAILED_STATUSES:
            return [_row(rb, "*", None, "failed", f"A {ra.status}, B {rb.status}: {rb.reason}")]
        return [_row(rb, "*", None, "same", f"{ra.status} in A, {rb.status} in B: {rb.reason}")]
    lat_p = _latency_p(ra, rb)
    rows = []
    for name in list(ra.metrics) + [n for n in rb.metrics if n not in ra.metrics]:
        ma, mb = ra.metrics.get(name), rb.metrics.get(name)
        spec = mb or ma
        unit, better, kind = spec.unit, spec.better, spec.kind
        va = ma.finite_value if ma is not None else None
        vb = mb.finite_value if mb is not None else None
        sa = (ma.samples if ma is not None else None) or []
        sb = (mb.samples if mb is not None else None) or []
        p = mann_whitney_p(sa, sb) if sa and sb else None
        if p is None and not (sa and sb) and kind == "rate":
            p = lat_p  # a rate is items or FLOPs over the latency: same evidence
        few = bool(sa and sb) and p is None  # too few samples for a test: the threshold decides
        verdict, ratio = judge(va, vb, better, kind, options, p, p is not None)
        note = "too few samples for a test" if few and verdict != "same" else ""
        if va is not None and mb is not None and mb.nonfinite:  # a number turned into NaN or inf
            verdict = "slower" if kind in ("time", "rate") else "worse"
            note = f"B is {mb.value} (A was finite)"
        elif vb is not None and ma is not None and ma.nonfinite:
            verdict = "faster" if kind in ("time", "rate") else "better"
            note = f"A was {ma.value}, B is finite"
        elif ma is not None and mb is not None and ma.nonfinite and mb.nonfinite:
            same = str(ma.value) == str(mb.value)
            verdict, note = ("same", f"{mb.value} on both sides") if same else ("worse", f"{ma.value} -> {mb.value}")
        elif verdict == "missing" and ma is not None and vb is None:
            note = "no value in B" if mb is not None else "metric not reported in B"
        elif verdict == "new" and va is None and ma is not None:
            note = "no value in A"
        rows.append(Row(rb.suite, rb.variant, dict(rb.params), name, unit, better, kind, va, vb, ratio, p,
                        verdict, note, ma.n if ma is not None else None, mb.n if mb is not None else None))
    return rows


def _latency_p(ra, rb) -> float | None:
    la, lb = ra.metrics.get("latency"), rb.metrics.get("latency")
    sa = (la.samples if la is not None else None) or []
    sb = (lb.samples if lb is not None else None) or []
    return mann_whitney_p(sa, sb) if sa and sb else None


# --------------------------------------------------------------------------- rendering
def _varying_params(rows: list[Row]) -> tuple[list[str], dict[str, Any]]:
    names: list[str] = []
    for r in rows:
        for k in r.params:
            if k not in names:
                names.append(k)
    varying, fixed = [], {}
    for k in names:
        vals = {json.dumps(r.params.get(k), default=str) for r in rows}
        if len(vals) > 1:
            varying.append(k)
        else:
            fixed[k] = rows[0].params.get(k)
    return varying, fixed


def summary_line(c: Comparison) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in c.counts().items()) or "no rows"
    status = f"REGRESSION ({len(c.regressions)} rows)" if c.regressions else "no regression"
    return f"{c.b_label} vs {c.a_label}: {counts}; {status}"


def _ratio_text(r: Row) -> str:
    if r.ratio is None or not math.isfinite(r.ratio):
        return "" if r.ratio is None else "inf"
    return f"{r.ratio:.3f}x"


def to_markdown(c: Comparison, changes_only: bool = False) -> str:
    rows = [r for r in c.rows if not (changes_only and r.verdict == "same")]
    out = [f"### Comparison: B = {c.b_label} on {c.b_device}; A = {c.a_label} on {c.a_device}", ""]
    out.append(summary_line(c))
    thr = ", ".join(f"{k} {v:.0%}" for k, v in c.options.thresholds.items())
    out.append("")
    out.append(f"Thresholds: {thr}; significance: Mann-Whitney U, alpha {c.options.alpha:g}. Ratio = B/A.")
    for n in c.notes:
        out.append(f"\nNote: {n}")
    out.append("")
    if not rows:
        out.append("(no row changed)" if c.rows else "(no rows)")
        return "\n".join(out) + "\n"
    suites = list(dict.fromkeys(r.suite for r in rows))
    for suite in suites:  # one table per suite: each has its own params
        srows = [r for r in rows if r.suite == suite]
        varying, fixed = _varying_params(srows)
        out.append(f"#### {suite}")
        out.append("")
        if fixed:
            out.append("Fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
            out.append("")
        header = ["verdict", "variant"] + varying + ["metric", "A", "B", "ratio", "p", "note"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for r in srows:
            unit = f" {r.unit}" if r.unit else ""
            a = fmt_number(r.a) + unit if r.a is not None else ""
            b = fmt_number(r.b) + unit if r.b is not None else ""
            p = f"{r.p_value:.2g}" if r.p_value is not None else ""
            verdict = f"**{r.verdict}**" if r.regression else r.verdict
            vals = [verdict, r.variant] + [str(r.params.get(k, "")) for k in varying] + [
                r.metric, a, b, _ratio_text(r), p, r.note.replace("|", "/")]
            out.append("| " + " | ".join(vals) + " |")
        out.append("")
    return "\n".join(out)


def to_json(c: Comparison) -> str:
    data = {
        "a": {"label": c.a_label, "device": c.a_device},
        "b": {"label": c.b_label, "device": c.b_device},
        "options": asdict(c.options),
        "summary": {"counts": c.counts(), "regressions": len(c.regressions), "exit_code": c.exit_code},
        "notes": c.notes,
        "rows": [{**asdict(r), "regression": r.regression} for r in c.rows],
    }
    return json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"


def to_csv(c: Comparison) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["verdict", "suite", "variant", "params", "metric", "unit", "better", "kind", "a", "b", "ratio",
            "p_value", "a_n", "b_n", "note"]
    w.writerow(cols)
    for r in c.rows:
        d = asdict(r)
        d["params"] = json.dumps(r.params, sort_keys=True, default=str)
        w.writerow(["" if d[k] is None else (repr(d[k]) if isinstance(d[k], float) else d[k]) for k in cols])
    return buf.getvalue()


def render(c: Comparison, fmt: str, changes_only: bool = False) -> str:
    if fmt == "markdown":
        return to_markdown(c, changes_only)
    if fmt == "json":
        return to_json(c)
    if fmt == "csv":
        return to_csv(c)
    raise ValueError(f"unknown format {fmt!r}")
