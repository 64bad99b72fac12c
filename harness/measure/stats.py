"""Statistics of timing samples: median, IQR and a distribution-free CI of the median."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np


def median_ci(samples: Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    For n samples the ranks n/2 -+ z*sqrt(n)/2 bound the median with the given coverage
    (normal approximation of the binomial); with few samples it is the full range.
    """
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return (math.nan, math.nan)
    half = z * math.sqrt(n) / 2.0
    lo = max(0, int(math.floor(n / 2.0 - half)))
    hi = min(n - 1, int(math.ceil(n / 2.0 + half)) - 1)
    return (xs[lo], xs[max(lo, hi)])


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
    def rel_iqr(self) -> float:
        if not self.median or math.isnan(self.median):
            return math.inf
        return self.iqr / abs(self.median)
