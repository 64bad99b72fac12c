"""The verdict of a paired measurement: one ratio per round, judged on the distribution of ratios.

``harness ab`` measures the two sides of a case in the same window: in every round each side
runs two short batches, in the order A B B A (the next round B A A B), so a drift of the
machine that is linear over the round weighs on both sides alike. A side's value in a round is
the mean of its two batches' values (each the lower decile of the batch's per-call times: the
calls the machine did not interrupt), and the round's paired ratio is B / A.

The verdict is on the ratios: their median and its distribution-free confidence interval (the
order statistics a sign test gives, :func:`harness.measure.stats.median_ci`), against the
threshold ``t`` (5% for time by default):

- ``slower``: the median's 99% interval lies above 1 and the median is above ``1 + t`` (99%, not
  95%: the verdict is looked at after 10, 15, 20... rounds, and every look could raise a false
  alarm; at 10 rounds this asks every ratio to be above 1, at 15 all but two);
- ``faster``: the mirror image (the 99% interval below 1, the median below ``1 / (1 + t)``);
- ``same``: the interval lies inside ``[1 / (1 + t), 1 + t]`` (a change, if any, is smaller
  than the threshold);
- ``noisy``: none of these yet (or fewer than 6 rounds, where no interval has 95% coverage). Sampling goes on, round by round, until one of the three holds
  or the case's budget is spent; an interval that excludes the threshold is a verdict whatever
  stopped the sampling.

Unpaired rounds cannot do this: a machine's slow and fast states last seconds to minutes and
land on one side; paired batches a few milliseconds apart see the same state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from .stats import MIN_CI_SAMPLES, median_ci, median_ci_ranks

BATCH_QUANTILE = 0.1  # a batch's value: this quantile of its per-call times
DEFAULT_THRESHOLD = 0.05
# A change is called on a 99% interval: the verdict is looked at several times as rounds are added
# (harness.run.ab), and each look is a chance for a false alarm.
CHANGE_LEVEL = 0.99
VERDICTS = ("slower", "faster", "same", "noisy")


def batch_value(samples_ms: Sequence[float]) -> float:
    """The lower decile of a batch's per-call times (the median of a batch of one or two)."""
    xs = sorted(x for x in samples_ms if math.isfinite(x))
    if not xs:
        return math.nan
    if len(xs) <= 2:
        return xs[0] if len(xs) == 1 else (xs[0] + xs[1]) / 2
    pos = BATCH_QUANTILE * (len(xs) - 1)
    lo = int(math.floor(pos))
    frac = pos - lo
    return xs[lo] + (xs[min(lo + 1, len(xs) - 1)] - xs[lo]) * frac


@dataclass
class PairedRounds:
    """The rounds of one paired case: each side's value per round, and what they say."""

    a: list[float] = field(default_factory=list)
    b: list[float] = field(default_factory=list)

    def add(self, a_value: float, b_value: float) -> None:
        self.a.append(a_value)
        self.b.append(b_value)

    @property
    def ratios(self) -> list[float]:
        return [b / a for a, b in zip(self.a, self.b) if a > 0 and math.isfinite(a) and math.isfinite(b)]

    def summary(self, threshold: float = DEFAULT_THRESHOLD) -> "PairedVerdict":
        return paired_verdict(self.ratios, threshold)


@dataclass(frozen=True)
class PairedVerdict:
    verdict: str
    ratio: float | None  # median of the paired ratios (B / A)
    low: float | None  # its distribution-free 95% CI
    high: float | None
    rounds: int
    coverage: float  # the interval's real coverage (below 95% with fewer than 6 rounds)

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "ratio": self.ratio, "ratio_low": self.low, "ratio_high": self.high,
                "rounds": self.rounds, "coverage": self.coverage}


def paired_verdict(ratios: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> PairedVerdict:
    """The verdict of paired ratios B / A (see the module's docstring)."""
    rs = [r for r in ratios if math.isfinite(r) and r > 0]
    n = len(rs)
    if n == 0:
        return PairedVerdict("noisy", None, None, None, 0, 0.0)
    xs = sorted(rs)
    mid = n // 2
    median = xs[mid] if n % 2 else (xs[mid - 1] + xs[mid]) / 2
    low, high = median_ci(xs)
    coverage = median_ci_ranks(n)[2]
    strict_low, strict_high = median_ci(xs, CHANGE_LEVEL)
    up, down = 1.0 + threshold, 1.0 / (1.0 + threshold)
    if n < MIN_CI_SAMPLES:  # no interval has 95% coverage yet
        verdict = "noisy"
    elif strict_low > 1.0 and median > up:
        verdict = "slower"
    elif strict_high < 1.0 and median < down:
        verdict = "faster"
    elif low >= down and high <= up:
        verdict = "same"
    else:
        verdict = "noisy"
    return PairedVerdict(verdict, median, low, high, n, coverage)
