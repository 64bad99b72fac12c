"""Comparing two result sets (run folders or baselines): verdicts that hold between runs.

One row per case and measurement, with the value in A (the reference, usually a baseline),
the value in B (the new run), the ratio B/A with its interval, and a verdict:

- ``faster`` / ``slower`` for time (latency), ``better`` / ``worse`` for memory, quality and
  counts. The rates the engine derives from the latency (TFLOP/s, throughput, % of peak) are
  the same measurement: they get no verdict of their own, so a case has one speed verdict.
- ``noisy``: the change is past the threshold but the evidence cannot tell it from noise.
- ``same``: within the threshold, or within the absolute floor of a memory metric (max(64 KiB,
  1% of A)) or a quality metric (4 ulps of the case's dtype at its scale, or the ``atol`` its
  suite declares).
- ``out-of-band``: B's quality left the band its suite declares (``Suite.bands``) while A's
  was inside it; ``no-win``: B is faster but outside its quality band, so the speed-up counts
  for nothing.
- ``new``: only in B (or failed or skipped in A); ``missing``: a case or metric only in A (or
  ok in A and skipped in B); ``removed``: missing, and acknowledged by a pattern of
  ``CompareOptions.allow_missing`` (``--allow-missing``).
- ``failed``: measured in A, failed, ran out of memory, timed out or crashed in B; or a failure
  for the worse (skipped < oom < failed, timeout < crashed: oom in A, crashed in B).
- ``worse`` (``slower`` for time) also when a round of B is NaN or infinite where every round
  of A was finite, whatever the medians say.

``slower``, ``worse``, ``out-of-band``, ``failed`` and ``missing`` are regressions: the command
exits 1.

How a time verdict is reached, and what it finds on synthetic noise: :mod:`harness.judge.stats`.
Which cases and metrics of A and B are paired, and the checks before comparing:
:mod:`harness.judge.pairing`. Rendering a comparison: :mod:`harness.present.compare_render`.

This module is the judge's public face: ``compare()`` and the names its callers use.
"""

from __future__ import annotations

from .pairing import (DERIVED_FROM_LATENCY, ENVIRONMENT_KEYS, CompareError, check_devices, compare, environment_diff,
                      spread_notes)
from .stats import (KINDS, ROBUST_ROUNDS, ROBUST_Z, TRIM_FROM_ROUNDS, CompareOptions, Evidence, absolute_floor, judge,
                    ratio_interval, trim_rounds)
from .verdicts import IMPROVEMENTS, REGRESSIONS, VERDICT_ORDER, Comparison, Row

__all__ = [
    "DERIVED_FROM_LATENCY",
    "ENVIRONMENT_KEYS",
    "IMPROVEMENTS",
    "KINDS",
    "REGRESSIONS",
    "ROBUST_ROUNDS",
    "ROBUST_Z",
    "TRIM_FROM_ROUNDS",
    "VERDICT_ORDER",
    "CompareError",
    "CompareOptions",
    "Comparison",
    "Evidence",
    "Row",
    "absolute_floor",
    "check_devices",
    "compare",
    "environment_diff",
    "judge",
    "ratio_interval",
    "spread_notes",
    "trim_rounds",
]
