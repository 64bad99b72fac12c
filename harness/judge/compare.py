"""Comparing two result sets (run folders or baselines): verdicts that hold between runs.

One row per case and measurement, with the value in A (the reference, usually a baseline),
the value in B (the new run), the ratio B/A with its interval, and a verdict:

- ``faster`` / ``slower`` for time (latency), ``better`` / ``worse`` for memory, quality and
  counts. The rates the engine derives from the latency (TFLOP/s, throughput, % of peak) are
  the same measurement: they get no verdict of their own, so a case has one speed verdict.
- ``noisy``: the change is past the threshold but the evidence cannot tell it from noise.
- ``same``: within the threshold (quality metrics within 1e-6 and memory within 1 MiB also).
- ``out-of-band``: B's quality left the band its suite declares (``Suite.bands``) while A's
  was inside it; ``no-win``: B is faster but outside its quality band, so the speed-up counts
  for nothing.
- ``new`` / ``missing``: only in B / only in A (or skipped on one side).
- ``failed``: measured in A, failed, ran out of memory, timed out or crashed in B.

``slower``, ``worse``, ``out-of-band`` and ``failed`` are regressions: the command exits 1.

How a time verdict is reached. Samples inside one run are not independent evidence between
runs: the machine drifts (load, clocks, caches) from one run to the next, and a test on the
samples of two runs measures the noise within a run and ignores the noise between them. So the
evidence is the rounds (``harness run --rounds R``: R passes over all cases, interleaved, so
drift hits every case alike), one value per round; a baseline keeps them. A change counts when

1. it is larger than the kind's threshold (5% for time by default), and
2. it is larger than the noise between rounds (the wider side's range of round values, or the
   median's within-run 95% CI where that is wider), and
3. the two sides' rounds do not overlap, and the rounds of the two sides closest to each other
   are more than the threshold apart (every round of B more than 5% slower than every round of
   A; from 5 rounds a side, leaving out each side's most extreme quarter of rounds), since a
   range of few rounds understates the noise between runs.

From ROBUST_ROUNDS (11) rounds a side the rule turns robust, since on a shared machine a
minority of rounds is caught in a slow state of the machine and a range is then as wide as
the worst of them: the change of the medians of the rounds must exceed 3 standard errors
(each side's spread from its interquartile range) and the middle halves of the two sides'
rounds must not overlap.

With one round on both sides the noise between runs is unknown: the change must then exceed
``single_round_change`` (25% by default) with the within-run CIs apart, else it is ``noisy``.
A record whose timing is not trustworthy (``valid`` false on the GPU, stopped by the time
budget before the median was stable, fewer samples than a 95% CI needs) is at most ``noisy``.

Memory, quality and count metrics are deterministic for a seeded suite: past the threshold,
their verdict stands unless their rounds overlap. Measured on synthetic rounds (log-normal
noise per round, 3000-20000 trials; tests/test_compare.py checks these): with 3 rounds a side
no A/A pair is flagged at 1% or 2% noise per round (0.03-0.1% of cases at 3%), and a 10%
slowdown is found in 99.5% of cases at 1% noise, 73% at 2% and 44% at 3%; with 5 rounds, 99%,
92% and 55%; with 11 rounds (the robust rule), 100%, 100% and 99.5%, with no A/A case flagged.
A noisier machine needs more rounds, and there a verdict of ``noisy`` is the honest answer.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..present.export import fmt_number
from ..measure.stats import MIN_CI_SAMPLES
from ..results.records import FAILED_STATUSES, ResultSet, ResultsError, json_safe
from ..declare.suite import METRIC_KINDS

REGRESSIONS = ("slower", "worse", "out-of-band", "failed")
IMPROVEMENTS = ("faster", "better")
VERDICT_ORDER = ("failed", "slower", "worse", "out-of-band", "no-win", "noisy", "faster", "better", "new",
                 "missing", "same")
KINDS = METRIC_KINDS
FORMATS = ("markdown", "json", "csv")
# Rates the engine derives from the latency: one measurement, so no verdict of their own.
DERIVED_FROM_LATENCY = ("tflops", "throughput", "pct_of_peak")
# From this many rounds a side (fewer give too loose a spread estimate on a machine whose
# state flips), time verdicts use the robust rule (medians, interquartile
# spreads) that tolerates a minority of rounds caught in a slow state of the machine.
ROBUST_ROUNDS = 11
ROBUST_Z = 3.0
# Where the two sides' environments differ in these, timings may differ for that reason alone.
ENVIRONMENT_KEYS = (("torch", "torch"), ("cuda", "CUDA"), ("cudnn", "cuDNN"), ("driver", "driver"),
                    ("gpu_name", "GPU"), ("device_name", "device"), ("cpu", "CPU"), ("torch_threads", "threads"),
                    ("precision", "precision state"), ("python", "Python"), ("torchvision_version", "torchvision"))


class CompareError(ResultsError):
    """The two result sets cannot be compared as asked (e.g. measured on different devices)."""


@dataclass
class CompareOptions:
    """Thresholds (relative change per metric kind) and the rules for single-round evidence."""

    thresholds: dict[str, float] = field(
        default_factory=lambda: {"time": 0.05, "rate": 0.05, "memory": 0.05, "quality": 0.02, "count": 0.0}
    )
    single_round_change: float = 0.25
    quality_atol: float = 1e-6
    # Peak memory differs between runs by allocator blocks and the lifetimes of small
    # temporaries even when every round of a run agrees (measured here: 0.45 -> 0.51 MiB for an
    # unchanged backward pass); a memory change within this many MiB is the same.
    memory_atol_mib: float = 1.0
    force: bool = False
    fail_on_missing: bool = False

    def __post_init__(self) -> None:
        for kind, value in self.thresholds.items():
            if kind not in KINDS:
                raise ValueError(f"unknown metric kind {kind!r} (use {', '.join(KINDS)})")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"threshold for {kind} must be a non-negative number, not {value!r}")
        if not (self.single_round_change >= 0 and math.isfinite(self.single_round_change)):
            raise ValueError(f"single-round change must be a non-negative number, not {self.single_round_change!r}")


@dataclass
class Row:
    """One (case, measurement) comparison."""

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
    verdict: str
    note: str = ""
    a_n: int | None = None
    b_n: int | None = None
    ratio_low: float | None = None  # the ratio's interval: from the rounds, else the medians' CIs
    ratio_high: float | None = None
    a_rounds: int = 1
    b_rounds: int = 1
    noise: float | None = None  # relative noise the change had to exceed (None: not estimated)
    a_in_band: bool = True
    b_in_band: bool = True
    violations: list[str] = field(default_factory=list)  # B's quality-band violations

    @property
    def regression(self) -> bool:
        return self.verdict in REGRESSIONS

    @property
    def case_label(self) -> str:
        """The variant with every param of the case, e.g. ``ddim[steps=10, eta=0.0]``."""
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.variant}[{inner}]" if inner else self.variant


@dataclass
class Comparison:
    a_label: str
    b_label: str
    a_device: str
    b_device: str
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    options: CompareOptions = field(default_factory=CompareOptions)
    environment_diff: list[tuple[str, str, str]] = field(default_factory=list)  # (what, A, B)
    a_rounds: int = 1
    b_rounds: int = 1

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


# --------------------------------------------------------------------------- evidence
@dataclass
class Evidence:
    """One side of one metric: its value, per-round values, within-run CI, and trust."""

    value: float | None
    rounds: list[float]
    ci: tuple[float, float] | None = None
    n: int | None = None
    untrusted: str = ""  # why the timing cannot carry a verdict ("" when it can)

    @classmethod
    def of(cls, m, record=None, kind: str = "quality") -> "Evidence":
        if m is None:
            return cls(None, [])
        value = m.finite_value
        rounds = [v for v in (m.extra.get("rounds") or []) if isinstance(v, (int, float)) and math.isfinite(v)]
        if not rounds and value is not None:
            rounds = [value]
        ci = None
        if m.ci_low is not None and m.ci_high is not None and all(
                isinstance(x, (int, float)) and math.isfinite(x) for x in (m.ci_low, m.ci_high)):
            ci = (float(m.ci_low), float(m.ci_high))
        why = ""
        if kind == "time" and record is not None:
            info = record.info
            if info.get("valid") is False:
                why = f"not valid: {info.get('valid_reason') or 'unverified'}"
            elif info.get("stopped_by") == "budget" and m.n is not None:
                why = "timing stopped on its budget before the median was stable"
            elif m.n is not None and m.n < MIN_CI_SAMPLES:
                why = f"{m.n} samples: too few for a 95% CI of the median"
        return cls(value, rounds, ci, m.n, why)


def _log_range(values: list[float]) -> float | None:
    pos = [v for v in values if v > 0]
    if len(pos) < 2 or len(pos) != len(values):
        return None
    return math.log(max(pos) / min(pos))


def _rel_ci(e: Evidence) -> float:
    if e.ci is None or not e.value or e.ci[0] <= 0:
        return 0.0
    return math.log(e.ci[1] / e.ci[0]) / 2


def ratio_interval(a: Evidence, b: Evidence) -> tuple[float | None, float | None]:
    """The range of B/A the evidence allows: from the rounds, else from the medians' CIs."""
    if len(a.rounds) > 1 or len(b.rounds) > 1:
        lo_a, hi_a, lo_b, hi_b = min(a.rounds), max(a.rounds), min(b.rounds), max(b.rounds)
    elif a.ci is not None and b.ci is not None:
        (lo_a, hi_a), (lo_b, hi_b) = a.ci, b.ci
    else:
        return None, None
    if lo_a <= 0 or hi_a <= 0:
        return None, None
    return lo_b / hi_a, hi_b / lo_a


def judge(a: Evidence, b: Evidence, better: str, kind: str, options: CompareOptions) -> tuple[str, float | None, str, float | None]:
    """(verdict, ratio, note, noise) for one metric from both sides' evidence."""
    va, vb = a.value, b.value
    if va is None and vb is None:
        return "same", None, "", None
    if va is None:
        return "new", None, "", None
    if vb is None:
        return "missing", None, "", None
    ratio = vb / va if va != 0 else (1.0 if vb == 0 else math.inf)
    if kind == "quality" and abs(vb - va) <= options.quality_atol:
        return "same", ratio, "", None
    if kind == "memory" and abs(vb - va) <= options.memory_atol_mib:
        return "same", ratio, "", None
    threshold = math.log1p(options.thresholds[kind])
    if va == 0 or vb == 0 or (va < 0) != (vb < 0):
        change = math.inf if va != vb else 0.0  # no meaningful ratio; any change is past it
        worse = (vb > va) if better == "lower" else (vb < va)
    else:
        change = abs(math.log(ratio))
        worse = (ratio > 1) if better == "lower" else (ratio < 1)
        if va < 0:  # both negative: the ratio's sense flips
            worse = not worse
    words = ("slower", "faster") if kind in ("time", "rate") else ("worse", "better")
    word = words[0] if worse else words[1]
    if change <= threshold:
        return "same", ratio, "", None
    overlap = min(b.rounds) <= max(a.rounds) and min(a.rounds) <= max(b.rounds)
    several = len(a.rounds) > 1 or len(b.rounds) > 1
    if kind not in ("time", "rate"):  # deterministic for a seeded suite
        if several and overlap:
            return "noisy", ratio, "the rounds of A and B overlap", None
        return word, ratio, "", None
    untrusted = a.untrusted or b.untrusted
    if untrusted:
        side = "A" if a.untrusted else "B"
        return "noisy", ratio, f"{side}: {untrusted}", None
    if min(len(a.rounds), len(b.rounds)) >= ROBUST_ROUNDS and min(a.rounds + b.rounds) > 0:
        return _judge_many_rounds(a, b, ratio, change, threshold, word)
    spreads = [x for x in (_log_range(a.rounds), _log_range(b.rounds)) if x is not None]
    if not spreads:  # one round a side: the noise between runs is unknown
        apart = a.ci is not None and b.ci is not None and (b.ci[0] > a.ci[1] or a.ci[0] > b.ci[1])
        needed = max(threshold, math.log1p(options.single_round_change))
        if apart and change > needed:
            return word, ratio, "one round a side: judged by a change past the single-round limit", None
        return "noisy", ratio, (f"one round a side: the run-to-run noise is unknown and the change is within "
                                f"{options.single_round_change:.0%} (run with --rounds 3)"), None
    noise = max(spreads + [_rel_ci(a), _rel_ci(b)])
    if overlap:
        return "noisy", ratio, "the rounds of A and B overlap", math.expm1(noise)
    if change <= noise:
        return "noisy", ratio, f"the change is within the noise between rounds ({math.expm1(noise):.1%})", math.expm1(noise)
    # Few rounds understate the noise between runs by their range: the rounds of the two sides
    # closest to each other must also be more than the threshold apart (every round of B beyond
    # every round of A by the threshold; from 5 rounds a side, leaving out its most extreme
    # quarter), so a change that only just clears a narrow range stays noisy.
    if min(a.rounds + b.rounds) > 0:
        high, low = (sorted(b.rounds), sorted(a.rounds)) if vb > va else (sorted(a.rounds), sorted(b.rounds))
        gap = math.log(high[len(high) // 4] / low[-1 - len(low) // 4])
        if gap <= threshold:
            return "noisy", ratio, (f"the closest rounds of A and B are {math.expm1(gap):.1%} apart, within the "
                                    f"{options.thresholds[kind]:.0%} threshold"), math.expm1(noise)
    return word, ratio, "", math.expm1(noise)


def _judge_many_rounds(a: Evidence, b: Evidence, ratio: float, change: float, threshold: float,
                       word: str) -> tuple[str, float | None, str, float | None]:
    """ROBUST_ROUNDS or more rounds a side: robust to a minority of rounds caught in a slow machine state.

    The change of the medians of the rounds must exceed ROBUST_Z standard errors (each side's
    spread from its interquartile range, as a normal scale, the median's standard error
    1.2533 s / sqrt(R)), and the middle halves of the two sides' rounds must not overlap.
    """
    import numpy as np

    la, lb = np.log(a.rounds), np.log(b.rounds)
    qa, qb = np.quantile(la, [0.25, 0.75]), np.quantile(lb, [0.25, 0.75])
    sa, sb = (qa[1] - qa[0]) / 1.349, (qb[1] - qb[0]) / 1.349
    se = 1.2533 * math.sqrt(sa**2 / len(la) + sb**2 / len(lb))
    noise = max(ROBUST_Z * se, _rel_ci(a), _rel_ci(b))
    if qb[0] <= qa[1] and qa[0] <= qb[1]:
        return "noisy", ratio, "the middle halves of the rounds of A and B overlap", math.expm1(noise)
    if change <= noise:
        return "noisy", ratio, f"the change is within the noise between rounds ({math.expm1(noise):.1%})", math.expm1(noise)
    return word, ratio, "", math.expm1(noise)


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
    rows: list[Row] = []
    for key in list(recs_a) + [k for k in recs_b if k not in recs_a]:
        rows += _compare_case(recs_a.get(key), recs_b.get(key), a, b, options)
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    rows.sort(key=lambda r: (order.get(r.verdict, len(order)), -abs(math.log(r.ratio)) if r.ratio and r.ratio > 0
                             and math.isfinite(r.ratio) else 0.0))
    return Comparison(a.label, b.label, a.describe_device(), b.describe_device(), rows, notes, options,
                      environment_diff(a, b), a.rounds, b.rounds)


def _row(rec, metric: str, m, verdict: str, note: str = "", **kw) -> Row:
    unit, better, kind = (m.unit, m.better, m.kind) if m is not None else ("", "lower", "quality")
    return Row(rec.suite, rec.variant, dict(rec.params), metric, unit, better, kind,
               kw.get("a"), kw.get("b"), kw.get("ratio"), verdict, note, kw.get("a_n"), kw.get("b_n"))


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
                rows.append(_row(rb, "quality band", None, "out-of-band", "; ".join(violations)))
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
                         a=ra.metrics[name].finite_value) for name in _judged_metrics(ra)]
        if rb.status == "ok":
            return [_row(rb, name, rb.metrics[name], "new", f"A {ra.status}: {ra.reason}",
                         b=rb.metrics[name].finite_value) for name in _judged_metrics(rb)]
        if rb.status in FAILED_STATUSES and ra.status not in FAILED_STATUSES:
            return [_row(rb, "*", None, "failed", f"A {ra.status}, B {rb.status}: {rb.reason}")]
        return [_row(rb, "*", None, "same", f"{ra.status} in A, {rb.status} in B: {rb.reason}")]
    viol_a, viol_b = a.band_violations(ra), b.band_violations(rb)
    rows = []
    names = _judged_metrics(ra) + [n for n in _judged_metrics(rb) if n not in ra.metrics]
    for name in names:
        ma, mb = ra.metrics.get(name), rb.metrics.get(name)
        spec = mb or ma
        ea, eb = Evidence.of(ma, ra, spec.kind), Evidence.of(mb, rb, spec.kind)
        verdict, ratio, note, noise = judge(ea, eb, spec.better, spec.kind, options)
        if ea.value is not None and mb is not None and mb.nonfinite:  # a number turned into NaN or inf
            verdict = "slower" if spec.kind in ("time", "rate") else "worse"
            note = f"B is {mb.value} (A was finite)"
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
        mine = [v for v in viol_b if v.split(" ", 1)[0] == name]
        if mine and not any(v.split(" ", 1)[0] == name for v in viol_a):
            verdict, note = "out-of-band", "; ".join(mine)
        elif verdict == "faster" and viol_b:
            verdict, note = "no-win", "faster, but outside its quality band: " + "; ".join(viol_b)
        lo, hi = ratio_interval(ea, eb) if ea.value and eb.value else (None, None)
        rows.append(Row(rb.suite, rb.variant, dict(rb.params), name, spec.unit, spec.better, spec.kind, ea.value,
                        eb.value, ratio, verdict, note, ma.n if ma is not None else None,
                        mb.n if mb is not None else None, lo, hi, len(ea.rounds) or 1, len(eb.rounds) or 1, noise,
                        not viol_a, not viol_b, list(viol_b)))
    return rows


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


def ratio_text(ratio: float | None, low: float | None = None, high: float | None = None) -> str:
    """``1.318x [1.309, 1.332]``: a ratio B/A with its interval where it has a finite one."""
    if ratio is None:
        return ""
    if not math.isfinite(ratio):
        return "inf"
    text = f"{ratio:.3f}x"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


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
    out.append(f"Thresholds: {thr}; a time change must also exceed the noise between rounds (A: "
               f"{c.a_rounds} round(s), B: {c.b_rounds}), with the closest rounds of A and B apart by the "
               "threshold. Ratio = B/A [its interval].")
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
        "rows": [{**asdict(r), "regression": r.regression} for r in c.rows],
    }
    return json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n"


def to_csv(c: Comparison) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["verdict", "suite", "variant", "params", "metric", "unit", "better", "kind", "a", "b", "ratio",
            "ratio_low", "ratio_high", "noise", "a_rounds", "b_rounds", "a_n", "b_n", "note"]
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
