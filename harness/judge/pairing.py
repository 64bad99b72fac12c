"""Pairing two result sets: which cases and metrics of A and B belong together, whether their
devices may be compared, what differs in their environments, and the Comparison that holds a
verdict for every pair."""

from __future__ import annotations

import math
from fnmatch import fnmatchcase

from ..declare.suite import violations_text
from ..key import case_ident
from ..results import FAILED_STATUSES, ResultSet, ResultsError
from ..results.loader import stray_text
from .stats import CompareOptions, Evidence, judge, ratio_interval
from .verdicts import VERDICT_ORDER, Comparison, Row

# Rates the engine derives from the latency: one measurement, so no verdict of their own.
DERIVED_FROM_LATENCY = ("tflops", "throughput", "pct_of_peak")
# How bad a case's outcome is: a change to a higher rank is a regression (ok -> anything else,
# oom -> crashed); skipped is the mildest failure to measure, crashed the worst.
STATUS_RANK = {"ok": 0, "skipped": 1, "oom": 2, "failed": 3, "timeout": 3, "crashed": 4}
# Where the two sides' environments differ in these, timings may differ for that reason alone.
ENVIRONMENT_KEYS = (("torch", "torch"), ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("driver", "driver"),
                    ("gpu_name", "GPU"), ("device_name", "device"), ("cpu", "CPU"), ("torch_threads", "threads"),
                    ("precision", "precision state"), ("python", "Python"), ("torchvision_version", "torchvision"))


class CompareError(ResultsError):
    """The two result sets cannot be compared as asked (e.g. measured on different devices)."""


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


def environment_diff(a: ResultSet, b: ResultSet) -> list[tuple[str, str, str]]:
    """(what, in A, in B) for every environment fact that matters to timings and differs."""
    out = []
    for key, label in ENVIRONMENT_KEYS:
        va, vb = a.environment.get(key), b.environment.get(key)
        if key == "torch_threads":
            va = va if va is not None else a.meta.get("threads")
            vb = vb if vb is not None else b.meta.get("threads")
        if key == "precision" and isinstance(va, dict) and isinstance(vb, dict):
            for k in sorted(set(va) | set(vb)):
                if va.get(k) != vb.get(k):
                    out.append((f"precision: {k}", str(va.get(k)), str(vb.get(k))))
            continue
        if va is None and vb is None:
            continue
        if va != vb:
            out.append((label, "unknown" if va is None else str(va), "unknown" if vb is None else str(vb)))
    return out


def compare(a: ResultSet, b: ResultSet, options: CompareOptions | None = None) -> Comparison:
    """Compare B (new) against A (reference)."""
    options = options or CompareOptions()
    for rs, side in ((a, "A"), (b, "B")):
        if rs.duplicates:
            raise CompareError(f"{side} ({rs.label}) holds {stray_text(rs.duplicates, 'duplicate record')}: its "
                               f"folder was written twice, so which measurement counts is unknown")
    notes = check_devices(a, b, options.force)
    for name, meta_b in b.suites_meta.items():
        meta_a = a.suites_meta.get(name)
        if meta_a and meta_a.get("spec_hash") and meta_b.get("spec_hash") and meta_a["spec_hash"] != meta_b["spec_hash"]:
            notes.append(f"suite {name!r}: the workload changed between A and B (spec hash "
                         f"{meta_a['spec_hash']} -> {meta_b['spec_hash']}); ratios may compare different work")
    recs_a = {r.key: r for r in a.records}
    recs_b = {r.key: r for r in b.records}
    if not set(recs_a) & set(recs_b):
        raise CompareError(f"{a.label} and {b.label} have no case in common (suites "
                           f"{', '.join(sorted({r.suite for r in a.records}))} against "
                           f"{', '.join(sorted({r.suite for r in b.records}))}); nothing to compare")
    for rs, side in ((a, "A"), (b, "B")):
        if not rs.finished:
            notes.append(f"{side} ({rs.label}) is an unfinished run; the cases it lacks show as new or missing")
    if a.rounds == 1 and b.rounds == 1:
        notes.append("one round on each side: the noise between runs is unknown, so a time change needs "
                     f"{options.single_round_change:.0%} to count (harness run --rounds 3 measures it)")
    outside = [k for k in recs_a if k not in recs_b and not _in_selection(k, b)]
    if outside:
        notes.append(f"{len(outside)} case(s) of A are outside what B was asked to run (its suites, -k, --variant, "
                     f"--param or shard), so they are not compared: "
                     f"{', '.join(k.label for k in outside[:3])}{' ...' if len(outside) > 3 else ''}")
        recs_a = {k: r for k, r in recs_a.items() if k not in set(outside)}
    rows: list[Row] = []
    for key in list(recs_a) + [k for k in recs_b if k not in recs_a]:
        rows += _compare_case(recs_a.get(key), recs_b.get(key), a, b, options)
    notes += _acknowledge_missing(rows, options.allow_missing)
    suites_b = {r.suite for r in b.records}
    for suite in dict.fromkeys(r.suite for r in rows if r.verdict == "missing" and r.suite not in suites_b):
        notes.append(f"suite {suite!r} is not in B at all: its cases are missing; if B measured fewer suites "
                     f"on purpose, --allow-missing '{suite}/*' acknowledges it")
    sort_rows(rows)
    return Comparison(a_label=a.label, b_label=b.label, a_device=a.describe_device(), b_device=b.describe_device(),
                      rows=rows, notes=notes, options=options, environment_diff=environment_diff(a, b),
                      a_rounds=a.rounds, b_rounds=b.rounds)


def sort_rows(rows: list[Row]) -> None:
    """Regressions first (VERDICT_ORDER), the largest change first within a verdict."""
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    rows.sort(key=lambda r: (order.get(r.verdict, len(order)), -abs(math.log(r.ratio)) if r.ratio and r.ratio > 0
                             and math.isfinite(r.ratio) else 0.0))


def _in_selection(key, b: ResultSet) -> bool:
    """Whether B, a run, was asked to run the case ``key``: its suite is among B's suites, and where B's
    request narrowed the plan (-k, --variant, --param, a shard) the case is in B's plan. A case of a
    suite B ran without a filter is in the selection: its absence is a removal, and fails as missing."""
    meta = b.meta or {}
    if b.kind != "run" or not isinstance(meta.get("suites"), dict):
        return True
    if key.suite not in meta["suites"]:
        return False
    narrowed = meta.get("pattern") or meta.get("variants") or meta.get("param_overrides") or meta.get("shard")
    if not narrowed or not isinstance(meta.get("cases"), list):
        return True
    planned = {case_ident(c.get("suite", ""), c.get("variant", ""), c.get("params") or {}) for c in meta["cases"]
               if isinstance(c, dict)}
    return key.ident in planned


def missing_names(row: Row) -> list[str]:
    """What an ``--allow-missing`` pattern is matched against for a row: ``suite/variant[params]``,
    ``suite/variant``, the metric, and ``suite/variant[params]:metric``."""
    label = f"{row.suite}/{row.case_label}"
    return [label, f"{row.suite}/{row.variant}", row.metric, f"{label}:{row.metric}"]


def _acknowledge_missing(rows: list[Row], patterns: tuple[str, ...]) -> list[str]:
    """Missing rows a pattern names become ``removed`` (no regression); a note for each pattern
    that named nothing (a typo would otherwise acknowledge nothing, silently)."""
    used: set[str] = set()
    for row in rows:
        if row.verdict != "missing":
            continue
        names = missing_names(row)
        # the literal label first: its brackets are a character class to fnmatch
        hit = next((p for p in patterns if p in names or any(fnmatchcase(n, p) for n in names)), None)
        if hit is not None:
            used.add(hit)
            row.verdict = "removed"
            row.note = f"{row.note}; acknowledged by --allow-missing {hit}".lstrip("; ")
    return [f"--allow-missing {p} matched no missing case or metric" for p in patterns if p not in used]


def _row(rec, metric: str, m, verdict: str, note: str = "", a: float | None = None, b: float | None = None) -> Row:
    """A row without evidence on both sides (a case or metric on one side only, failed or skipped)."""
    unit, better, kind = (m.unit, m.better, m.kind) if m is not None else ("", "lower", "quality")
    return Row(suite=rec.suite, variant=rec.variant, params=dict(rec.params), metric=metric, unit=unit,
               better=better, kind=kind, a=a, b=b, ratio=None, verdict=verdict, note=note, key=rec.key)


def _declared_atol(metric: str, suite: str, *sides: ResultSet) -> float | None:
    """The absolute tolerance the suite declares on the metric (``Metric.atol``), B's declaration first."""
    for rs in sides:
        value = ((rs.suites_meta.get(suite) or {}).get("metrics") or {}).get(metric, {}).get("atol")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
            return float(value)
    return None


def _judged_metrics(rec) -> list[str]:
    """The metrics that get a verdict: rates derived from the latency are left out when it is there."""
    names = list(rec.metrics)
    if "latency" in rec.metrics:
        names = [n for n in names if n not in DERIVED_FROM_LATENCY and
                 rec.metrics[n].extra.get("derived_from") != "latency"]
    return names


def _compare_case(ra, rb, a: ResultSet, b: ResultSet, options: CompareOptions) -> list[Row]:
    if ra is None or rb is None:
        rec = ra or rb
        verdict = "missing" if rb is None else "new"
        where = "B" if rb is None else "A"
        if not rec.metrics:
            return [_row(rec, "*", None, verdict, f"case not in {where}; {rec.status} {rec.reason}".strip())]
        rows = [_row(rec, name, rec.metrics[name], verdict, f"case not in {where}",
                     a=rec.metrics[name].finite_value if ra else None, b=rec.metrics[name].finite_value if rb else None)
                for name in _judged_metrics(rec)]
        if rb is not None:
            violations = b.band_violations(rb)
            if violations:
                rows.append(_row(rb, "quality band", None, "out-of-band", violations_text(violations)))
        return rows
    if ra.status == rb.status == "skipped":
        return []  # nothing measured on either side
    if ra.status != "ok" or rb.status != "ok":
        if ra.status == "ok" and rb.status in FAILED_STATUSES:
            return [_row(rb, name, ra.metrics[name], "failed", f"B {rb.status}: {rb.reason}",
                         a=ra.metrics[name].finite_value)
                    for name in _judged_metrics(ra)] or [_row(rb, "*", None, "failed", f"B {rb.status}: {rb.reason}")]
        if ra.status == "ok":  # skipped in B
            return [_row(rb, name, ra.metrics[name], "missing", f"B {rb.status}: {rb.reason}",
                         a=ra.metrics[name].finite_value)
                    for name in _judged_metrics(ra)] or [_row(rb, "*", None, "missing", f"B {rb.status}: {rb.reason}")]
        if rb.status == "ok":
            return [_row(rb, name, rb.metrics[name], "new", f"A {ra.status}: {ra.reason}",
                         b=rb.metrics[name].finite_value) for name in _judged_metrics(rb)]
        if STATUS_RANK[rb.status] > STATUS_RANK[ra.status]:  # a failure for the worse
            return [_row(rb, "*", None, "failed", f"worse status: {ra.status} in A, {rb.status} in B: {rb.reason}")]
        return [_row(rb, "*", None, "same", f"{ra.status} in A, {rb.status} in B: {rb.reason}")]
    viol_a, viol_b = a.band_violations(ra), b.band_violations(rb)
    rows = []
    names = _judged_metrics(ra) + [n for n in _judged_metrics(rb) if n not in ra.metrics]
    dtype = rb.params.get("dtype", ra.params.get("dtype"))
    for name in names:
        ma, mb = ra.metrics.get(name), rb.metrics.get(name)
        spec = mb or ma
        ea, eb = Evidence.of(ma, ra, spec.kind), Evidence.of(mb, rb, spec.kind)
        verdict, ratio, note, noise = judge(ea, eb, spec.better, spec.kind, options, dtype=dtype,
                                            atol=_declared_atol(name, rb.suite, b, a), unit=spec.unit)
        if ea.value is not None and mb is not None and mb.nonfinite:  # a number turned into NaN or inf
            verdict = "slower" if spec.kind in ("time", "rate") else "worse"
            note = f"B is {mb.value} (A was finite)"
        elif ea.value is not None and eb.nonfinite_rounds and ea.all_finite:  # some rounds turned NaN or inf
            verdict = "slower" if spec.kind in ("time", "rate") else "worse"
            total = eb.nonfinite_rounds + len(eb.rounds)
            note = f"B is NaN or infinite in {eb.nonfinite_rounds} of {total} rounds (A was finite in every round)"
        elif eb.value is not None and ma is not None and ma.nonfinite:
            verdict = "faster" if spec.kind in ("time", "rate") else "better"
            note = f"A was {ma.value}, B is finite"
        elif ma is not None and mb is not None and ma.nonfinite and mb.nonfinite:
            same = str(ma.value) == str(mb.value)
            verdict, note = ("same", f"{mb.value} on both sides") if same else ("worse", f"{ma.value} -> {mb.value}")
        elif verdict == "missing" and ma is not None and eb.value is None:
            note = "no value in B" if mb is not None else "metric not reported in B"
        elif verdict == "new" and ea.value is None and ma is not None:
            note = "no value in A"
        mine = [v for v in viol_b if v.metric == name]
        if mine and not any(v.metric == name for v in viol_a):
            verdict, note = "out-of-band", violations_text(mine)
        elif verdict == "faster" and viol_b:
            verdict, note = "no-win", "faster, but outside its quality band: " + violations_text(viol_b)
        lo, hi = ratio_interval(ea, eb) if ea.value and eb.value else (None, None)
        rows.append(Row(suite=rb.suite, variant=rb.variant, params=dict(rb.params), metric=name, unit=spec.unit,
                        better=spec.better, kind=spec.kind, a=ea.value, b=eb.value, ratio=ratio, verdict=verdict,
                        note=note, a_n=ma.n if ma is not None else None, b_n=mb.n if mb is not None else None,
                        ratio_low=lo, ratio_high=hi, a_rounds=len(ea.rounds) or 1, b_rounds=len(eb.rounds) or 1,
                        noise=noise, a_in_band=not viol_a, b_in_band=not viol_b, violations=list(viol_b),
                        key=rb.key))
    return rows
