"""Statistics of timing samples: median, IQR and a distribution-free CI of the median."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


CI_LEVEL = 0.95
EXACT_CI_MAX_N = 60  # exact binomial ranks up to here, the normal approximation above
# The fewest samples whose order statistics bound the median with CI_LEVEL coverage: with n
# samples [min, max] covers it with probability 1 - 2 * 0.5**n (n=5: 93.8%, n=6: 96.9%).
MIN_CI_SAMPLES = 6


def median_ci_ranks(n: int, level: float = CI_LEVEL) -> tuple[int, int, float]:
    """0-based ranks ``(lo, hi)`` of the distribution-free CI of the median, and its coverage.

    The interval [x_(lo), x_(hi)] of the sorted samples covers the true median with probability
    ``coverage`` (exact binomial for small n, normal approximation above EXACT_CI_MAX_N); the
    narrowest such interval with ``coverage >= level`` is chosen. With fewer than
    MIN_CI_SAMPLES samples no interval reaches 95%: the full range is returned with its (lower)
    coverage.
    """
    if n <= 0:
        return 0, 0, 0.0
    if n <= EXACT_CI_MAX_N:
        pmf = [math.comb(n, i) / 2.0**n for i in range(n + 1)]
        k, best = 0, 1.0 - 2 * pmf[0]  # k = number of order statistics cut from each end
        tail = pmf[0]
        for j in range(1, n // 2 + 1):
            tail += pmf[j]
            cov = 1.0 - 2 * tail
            if cov < level:
                break
            k, best = j, cov
        if n == 1:
            best = 0.0
        return k, n - 1 - k, best
    z = _z_of(level)
    half = z * math.sqrt(n) / 2.0
    lo = max(0, int(math.floor(n / 2.0 - half)))
    hi = min(n - 1, int(math.ceil(n / 2.0 + half)) - 1)
    return lo, max(lo, hi), level


def _z_of(level: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + level / 2.0)


def median_ci(samples: Sequence[float], level: float = CI_LEVEL) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics (see
    :func:`median_ci_ranks`); with few samples it is the full range, whose coverage is lower."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return (math.nan, math.nan)
    lo, hi, _ = median_ci_ranks(n, level)
    return (xs[lo], xs[hi])


@dataclass(frozen=True)
class SampleStats:
    """Summary of raw samples (kept alongside: statistics are computed from them)."""

    median: float
    iqr: float
    min: float
    mean: float
    n: int
    ci_low: float
    ci_high: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> "SampleStats":
        arr = np.asarray(samples, dtype=np.float64)
        if arr.size == 0:
            nan = float("nan")
            return cls(nan, nan, nan, nan, 0, nan, nan)
        q1, med, q3 = np.percentile(arr, [25, 50, 75])
        lo, hi = median_ci(arr.tolist())
        return cls(float(med), float(q3 - q1), float(arr.min()), float(arr.mean()), int(arr.size), float(lo), float(hi))

    @property
    def rel_ci(self) -> float:
        """Half-width of the median's CI relative to the median."""
        if not self.median or math.isnan(self.median):
            return math.inf
        return (self.ci_high - self.ci_low) / (2.0 * abs(self.median))

    @property
    def ci_coverage(self) -> float:
        """Probability that [ci_low, ci_high] covers the true median (below 95% with n < 6)."""
        return median_ci_ranks(self.n)[2]

    @property
    def rel_iqr(self) -> float:
        if not self.median or math.isnan(self.median):
            return math.inf
        return self.iqr / abs(self.median)
