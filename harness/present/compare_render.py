"""A comparison (:func:`harness.judge.compare.compare`) rendered as Markdown, JSON or CSV, and
the one-line summary the command prints."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from ..judge.verdicts import Comparison, Row
from ..key import params_text
from ..results import json_safe
from .numbers import fmt_number, ratio_text

FORMATS = ("markdown", "json", "csv")


def _varying_params(rows: list[Row]) -> tuple[list[str], dict[str, Any]]:
    names: list[str] = []
    for r in rows:
        for k in r.params:
            if k not in names:
                names.append(k)
    varying, fixed = [], {}
    for k in names:
        vals = {params_text(r.params.get(k)) for r in rows}
        if len(vals) > 1:
            varying.append(k)
        else:
            fixed[k] = rows[0].params.get(k)
    return varying, fixed


def summary_line(c: Comparison) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in c.counts().items()) or "no rows"
    status = f"REGRESSION ({len(c.regressions)} rows)" if c.regressions else "no regression"
    return f"{c.b_label} vs {c.a_label}: {counts}; {status}"


def environment_block(c: Comparison) -> list[str]:
    """Lines naming the environment facts that differ between A and B (empty when none)."""
    if not c.environment_diff:
        return []
    out = ["Environment differences (timings may differ for these alone):", ""]
    out.append("| | A | B |")
    out.append("|---|---|---|")
    for what, va, vb in c.environment_diff:
        out.append(f"| {what} | {va.replace('|', '/')} | {vb.replace('|', '/')} |")
    return out + [""]


def to_markdown(c: Comparison, changes_only: bool = False) -> str:
    rows = [r for r in c.rows if not (changes_only and r.verdict == "same")]
    out = [f"### Comparison: B = {c.b_label} on {c.b_device}; A = {c.a_label} on {c.a_device}", ""]
    out.append(summary_line(c))
    out.append("")
    out += environment_block(c)
    thr = ", ".join(f"{k} {v:.0%}" for k, v in c.options.thresholds.items())
    quality_floor = "the larger of 4 ulps of the case's dtype at its value and the suite's atol"
    if c.options.quality_atol is not None:
        quality_floor += f" (at least {c.options.quality_atol:g})"
    time_rule = c.time_rule or (
        f"a time change must also exceed the noise between rounds (A: {c.a_rounds} round(s), B: {c.b_rounds}), with "
        "the closest rounds of A and B apart by the threshold (from 5 rounds a side, each side's lowest and highest "
        "quarter left out)")
    out.append(f"Thresholds: {thr}; {time_rule}. A memory "
               f"change must also exceed max({c.options.memory_atol_mib * 1024:g} KiB, 1% of A); a quality change, "
               f"{quality_floor}. Missing cases and metrics are regressions unless --allow-missing names them. "
               "Ratio = B/A [its interval].")
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
        header = ["verdict", "variant"] + varying + ["metric", "A", "B", "ratio", "noise", "note"]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join("---" for _ in header) + "|")
        for r in srows:
            unit = f" {r.unit}" if r.unit else ""
            a = fmt_number(r.a) + unit if r.a is not None else ""
            b = fmt_number(r.b) + unit if r.b is not None else ""
            p = f"{r.noise:.1%}" if r.noise is not None else ""
            verdict = f"**{r.verdict}**" if r.regression else r.verdict
            vals = [verdict, r.variant] + [str(r.params.get(k, "")) for k in varying] + [
                r.metric, a, b, ratio_text(r.ratio, r.ratio_low, r.ratio_high), p, r.note.replace("|", "/")]
            out.append("| " + " | ".join(vals) + " |")
        out.append("")
    return "\n".join(out)


def to_json(c: Comparison) -> str:
    data = {
        "a": {"label": c.a_label, "device": c.a_device},
        "b": {"label": c.b_label, "device": c.b_device},
        "options": asdict(c.options),
        "rounds": {"a": c.a_rounds, "b": c.b_rounds},
        "environment_diff": [{"what": w, "a": va, "b": vb} for w, va, vb in c.environment_diff],
        "summary": {"counts": c.counts(), "regressions": len(c.regressions), "exit_code": c.exit_code},
        "notes": c.notes,
        "rows": [{**r.to_dict(), "violations": [v.describe() for v in r.violations], "regression": r.regression}
                 for r in c.rows],
    }
    return json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"


def to_csv(c: Comparison) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["verdict", "suite", "variant", "params", "metric", "unit", "better", "kind", "a", "b", "ratio",
            "ratio_low", "ratio_high", "noise", "a_rounds", "b_rounds", "a_n", "b_n", "note"]
    w.writerow(cols)
    for r in c.rows:
        d = r.to_dict()
        d["params"] = params_text(r.params)
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