"""Statistics on numbers: the evidence of one side of one metric and the verdict it supports.

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
   A), since a range of few rounds understates the noise between runs.

Every one of these checks (and the ratio's interval) reads each side's rounds through
:func:`trim_rounds`: from 5 rounds a side, its lowest and its highest quarter of rounds (rounded
down: 1 round at each end of 5-7, 2 of 8-11) are left out, so one outlier round on either side
can neither hide a change (by widening the noise or making the rounds overlap) nor make one.
With 3 or 4 rounds nothing is left out.

From ROBUST_ROUNDS (11) rounds a side the rule turns robust, since on a shared machine a
minority of rounds is caught in a slow state of the machine and a range is then as wide as
the worst of them: the change of the medians of the rounds must exceed 3 standard errors
(each side's spread from its interquartile range) and the middle halves of the two sides'
rounds must not overlap (the quartiles are this rule's trimming).

With one round on both sides the noise between runs is unknown: the change must then exceed
``single_round_change`` (25% by default) with the within-run CIs apart, else it is ``noisy``.
A record whose timing is not trustworthy (``valid`` false on the GPU, stopped by the time
budget before the median was stable, fewer samples than a 95% CI needs) is at most ``noisy``,
except where sampling only stopped early and the whole interval of B/A (from the trimmed rounds,
else the medians' CIs) lies past the threshold (with one round a side, past the single-round
change): a 24x slowdown is ``slower`` whatever stopped the sampling.

Measured on synthetic rounds (log-normal noise per round, 3000-20000 trials;
tests/test_compare.py checks these): with 3 rounds a side no A/A pair is flagged at 1% or 2%
noise per round (0.03-0.1% of cases at 3%), and a 10% slowdown is found in 99.5% of cases at 1%
noise, 73% at 2% and 44% at 3%; with 5 rounds, 100%, 95% and 75% (0.1% of A/A cases flagged at
3%); with 11 rounds (the robust rule), 100%, 100% and 99.5%, with no A/A case flagged. A noisier
machine needs more rounds, and there a verdict of ``noisy`` is the honest answer.

Memory, quality and count metrics are deterministic for a seeded suite: past the threshold,
their verdict stands unless their (trimmed) rounds overlap. Below an absolute floor a change is
``same`` whatever its ratio (:func:`absolute_floor`). Memory: max(64 KiB, 1% of A), since
allocator blocks and small temporaries move a peak between runs; with the 5% threshold, B is
worse when B - A exceeds max(5% of A, 64 KiB, 1% of A) (0.13 -> 0.76 MiB is worse, 0.100 ->
0.104 MiB the same; the 1% floor decides only under a threshold below 1%). Quality: 4 ulps of
the case's dtype (its ``dtype`` param, else float32) at the larger of the two values, or the
``atol`` its suite declares on the Metric (or ``--quality-atol``), whichever is largest. A
round of B that is NaN or infinite where every round of A was finite is a regression whatever
the medians say (:mod:`harness.judge.pairing`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..declare.suite import METRIC_KINDS
from ..measure.stats import MIN_CI_SAMPLES
from ..results.schema import decode_float

KINDS = METRIC_KINDS
# From this many rounds a side (fewer give too loose a spread estimate on a machine whose
# state flips), time verdicts use the robust rule (medians, interquartile
# spreads) that tolerates a minority of rounds caught in a slow state of the machine.
ROBUST_ROUNDS = 11
ROBUST_Z = 3.0
# From this many rounds a side, every check leaves out each side's lowest and highest quarter
# of rounds (:func:`trim_rounds`). With 4, two rounds would be left to estimate the noise from.
TRIM_FROM_ROUNDS = 5
# Machine epsilon (torch.finfo(dtype).eps) of the dtypes a case's ``dtype`` param names; a
# quality change within QUALITY_ULPS of them at the metric's scale is rounding, not a change.
DTYPE_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7,
             "float8_e4m3fn": 2.0**-3, "float8_e5m2": 2.0**-2}
_DTYPE_ALIASES = {"double": "float64", "fp64": "float64", "float": "float32", "fp32": "float32",
                  "tf32": "float32", "half": "float16", "fp16": "float16", "bf16": "bfloat16"}
QUALITY_ULPS = 4
# Memory: a change within max(memory_atol_mib, this share of A) is the same, whatever its ratio.
MEMORY_FLOOR_OF_A = 0.01
# A memory metric's unit in MiB (the floor is in MiB); an unknown unit is taken as MiB.
_MIB_PER_UNIT = {"B": 2.0**-20, "bytes": 2.0**-20, "KiB": 2.0**-10, "MiB": 1.0, "GiB": 2.0**10,
                 "KB": 1e3 / 2**20, "MB": 1e6 / 2**20, "GB": 1e9 / 2**20}


def dtype_eps(dtype) -> float:
    """The machine epsilon of a dtype named like ``float16``, ``torch.bfloat16`` or ``bf16``
    (float32's when it is None or unknown)."""
    name = str(dtype).removeprefix("torch.").lower() if dtype is not None else "float32"
    return DTYPE_EPS.get(_DTYPE_ALIASES.get(name, name), DTYPE_EPS["float32"])


@dataclass
class CompareOptions:
    """Thresholds (relative change per metric kind) and the rules for single-round evidence."""

    thresholds: dict[str, float] = field(
        default_factory=lambda: {"time": 0.05, "rate": 0.05, "memory": 0.05, "quality": 0.02, "count": 0.0}
    )
    single_round_change: float = 0.25
    # An absolute change of a quality metric that is the same, for every quality metric; None:
    # QUALITY_ULPS of the case's dtype at the metric's scale, or the atol its suite declares.
    quality_atol: float | None = None
    # Peak memory differs between runs by allocator blocks and the lifetimes of small
    # temporaries even when every round of a run agrees (measured here: 0.45 -> 0.51 MiB for an
    # unchanged backward pass); a memory change within max(this many MiB (64 KiB), 1% of A) is
    # the same.
    memory_atol_mib: float = 1 / 16
    force: bool = False
    # Kept for old callers: a missing case or metric is a regression unless allow_missing names it.
    fail_on_missing: bool = False
    # fnmatch patterns acknowledging an intended removal: a case label ``suite/variant[params]``,
    # ``suite/variant``, a metric name or ``suite/variant[params]:metric``.
    allow_missing: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for kind, value in self.thresholds.items():
            if kind not in KINDS:
                raise ValueError(f"unknown metric kind {kind!r} (use {', '.join(KINDS)})")
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"threshold for {kind} must be a non-negative number, not {value!r}")
        if not (self.single_round_change >= 0 and math.isfinite(self.single_round_change)):
            raise ValueError(f"single-round change must be a non-negative number, not {self.single_round_change!r}")
        for name in ("quality_atol", "memory_atol_mib"):
            value = getattr(self, name)
            if value is None and name == "quality_atol":
                continue
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name.replace('_', '-')} must be a finite non-negative number, not {value!r}")
        if isinstance(self.allow_missing, str):
            self.allow_missing = (self.allow_missing,)
        self.allow_missing = tuple(self.allow_missing)
        for pattern in self.allow_missing:
            if not isinstance(pattern, str) or not pattern.strip():
                raise ValueError(f"--allow-missing needs a non-empty pattern, not {pattern!r}")


@dataclass
class Evidence:
    """One side of one metric: its value, per-round values, within-run CI, and trust."""

    value: float | None
    rounds: list[float]
    ci: tuple[float, float] | None = None
    n: int | None = None
    untrusted: str = ""  # why the timing cannot carry a verdict ("" when it can)
    nonfinite_rounds: int = 0  # rounds whose value was NaN or infinite (left out of ``rounds``)
    all_finite: bool = True  # every round (or the one value) was a finite number
    stopped_early: bool = False  # untrusted only because sampling stopped early (budget, few samples)

    @classmethod
    def of(cls, m, record=None, kind: str = "quality") -> "Evidence":
        if m is None:
            return cls(None, [])
        value = m.finite_value
        raw = [decode_float(v) for v in (m.extra.get("rounds") or [])]  # a baseline keeps NaN as "NaN"
        numbers = [v for v in raw if isinstance(v, (int, float)) and not isinstance(v, bool)]
        rounds = [float(v) for v in numbers if math.isfinite(v)]
        nonfinite = len(numbers) - len(rounds)
        all_finite = len(rounds) == len(raw) if raw else value is not None
        if not rounds and value is not None:
            rounds = [value]
        ci = None
        if m.ci_low is not None and m.ci_high is not None and all(
                isinstance(x, (int, float)) and math.isfinite(x) for x in (m.ci_low, m.ci_high)):
            ci = (float(m.ci_low), float(m.ci_high))
        why, early = "", False
        if kind == "time" and record is not None:
            info = record.info
            if info.get("valid") is False:
                why = f"not valid: {info.get('valid_reason') or 'unverified'}"
            elif info.get("stopped_by") == "budget" and m.n is not None:
                why, early = "timing stopped on its budget before the median was stable", True
            elif m.n is not None and m.n < MIN_CI_SAMPLES:
                why, early = f"{m.n} samples: too few for a 95% CI of the median", True
        return cls(value, rounds, ci, m.n, untrusted=why, nonfinite_rounds=nonfinite, all_finite=all_finite,
                   stopped_early=early)


def trim_rounds(values: list[float]) -> list[float]:
    """A side's rounds as every check reads them, sorted: from TRIM_FROM_ROUNDS (5) rounds, the
    lowest and the highest quarter left out (rounded down: 1 round at each end of 5-7, 2 of
    8-11), so that one outlier round neither widens the noise nor makes the two sides overlap."""
    ordered = sorted(values)
    drop = len(ordered) // 4 if len(ordered) >= TRIM_FROM_ROUNDS else 0
    return ordered[drop:len(ordered) - drop] if drop else ordered


def _log_range(values: list[float]) -> float | None:
    pos = [v for v in values if v > 0]
    if len(pos) < 2 or len(pos) != len(values):
        return None
    return math.log(max(pos) / min(pos))


def _rel_ci(e: Evidence) -> float:
    if e.ci is None or not e.value or e.ci[0] <= 0:
        return 0.0
    return math.log(e.ci[1] / e.ci[0]) / 2


def _clears_threshold(a: Evidence, b: Evidence, threshold: float, options: CompareOptions) -> str:
    """The interval of B/A as text when all of it lies past the threshold ('' otherwise): a
    verdict whatever stopped the sampling. With one round a side (the noise between runs unknown)
    its near end must also pass the single-round change."""
    lo, hi = ratio_interval(a, b)
    if lo is None or hi is None or lo <= 0 or not (math.isfinite(lo) and math.isfinite(hi)):
        return ""
    near = min(abs(math.log(lo)), abs(math.log(hi)))
    if (lo > 1.0) != (hi > 1.0) or lo == 1.0 or hi == 1.0:
        return ""
    needed = threshold if (len(a.rounds) > 1 or len(b.rounds) > 1) else max(
        threshold, math.log1p(options.single_round_change))
    return f"[{lo:.3g}, {hi:.3g}]" if near > needed else ""


def ratio_interval(a: Evidence, b: Evidence) -> tuple[float | None, float | None]:
    """The range of B/A the evidence allows: from the (trimmed) rounds, else from the medians' CIs."""
    if len(a.rounds) > 1 or len(b.rounds) > 1:
        ta, tb = trim_rounds(a.rounds), trim_rounds(b.rounds)
        lo_a, hi_a, lo_b, hi_b = min(ta), max(ta), min(tb), max(tb)
    elif a.ci is not None and b.ci is not None:
        (lo_a, hi_a), (lo_b, hi_b) = a.ci, b.ci
    else:
        return None, None
    if lo_a <= 0 or hi_a <= 0:
        return None, None
    return lo_b / hi_a, hi_b / lo_a


def absolute_floor(a: float, b: float, kind: str, options: CompareOptions, dtype=None, atol: float | None = None,
                   unit: str = "MiB") -> float:
    """The absolute change within which a memory or quality metric is the same (0 for others)."""
    if kind == "memory":
        per_mib = _MIB_PER_UNIT.get(unit, 1.0)
        return max(options.memory_atol_mib / per_mib, MEMORY_FLOOR_OF_A * abs(a))
    if kind == "quality":
        ulps = QUALITY_ULPS * dtype_eps(dtype) * max(abs(a), abs(b))
        return max(ulps, atol or 0.0, options.quality_atol or 0.0)
    return 0.0


def judge(a: Evidence, b: Evidence, better: str, kind: str, options: CompareOptions, *, dtype=None,
          atol: float | None = None, unit: str = "MiB") -> tuple[str, float | None, str, float | None]:
    """(verdict, ratio, note, noise) for one metric from both sides' evidence.

    ``dtype`` (the case's, for the ulps of a quality metric), ``atol`` (the absolute tolerance
    its suite declares) and ``unit`` (a memory metric's) set the floor of :func:`absolute_floor`.
    """
    va, vb = a.value, b.value
    if va is None and vb is None:
        return "same", None, "", None
    if va is None:
        return "new", None, "", None
    if vb is None:
        return "missing", None, "", None
    ratio = vb / va if va != 0 else (1.0 if vb == 0 else math.inf)
    if kind in ("quality", "memory") and abs(vb - va) <= absolute_floor(va, vb, kind, options, dtype, atol, unit):
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
    ta, tb = trim_rounds(a.rounds), trim_rounds(b.rounds)  # every check below reads these
    overlap = min(tb) <= max(ta) and min(ta) <= max(tb)
    several = len(a.rounds) > 1 or len(b.rounds) > 1
    if kind not in ("time", "rate"):  # deterministic for a seeded suite
        if several and overlap:
            return "noisy", ratio, "the rounds of A and B overlap", None
        return word, ratio, "", None
    untrusted = a.untrusted or b.untrusted
    if untrusted:
        side = "A" if a.untrusted else "B"
        cleared = _clears_threshold(a, b, threshold, options) if all(
            e.stopped_early or not e.untrusted for e in (a, b)) else None
        if cleared:  # sampling stopped early, but the interval of B/A lies past the threshold anyway
            return word, ratio, f"{side}: {untrusted}, but the interval of B/A {cleared} clears the threshold", None
        return "noisy", ratio, f"{side}: {untrusted}", None
    if min(len(a.rounds), len(b.rounds)) >= ROBUST_ROUNDS and min(a.rounds + b.rounds) > 0:
        return _judge_many_rounds(a, b, ratio, change, threshold, word)
    spreads = [x for x in (_log_range(ta), _log_range(tb)) if x is not None]
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
    # closest to each other must also be more than the threshold apart (every kept round of B
    # beyond every kept round of A by the threshold), so a change that only just clears a
    # narrow range stays noisy.
    if min(ta + tb) > 0:
        high, low = (tb, ta) if vb > va else (ta, tb)
        gap = math.log(min(high) / max(low))
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

