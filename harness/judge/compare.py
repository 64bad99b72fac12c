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

How a time verdict is reached, and what it finds on synthetic noise: :mod:`harness.judge.stats`.
Which cases and metrics of A and B are paired, and the checks before comparing:
:mod:`harness.judge.pairing`. Rendering a comparison: :mod:`harness.present.compare_render`.

This module is the judge's public face: ``compare()`` and the names its callers use.
"""

from __future__ import annotations

from .pairing import (DERIVED_FROM_LATENCY, ENVIRONMENT_KEYS, CompareError, check_devices, compare, environment_diff,
                      spread_notes)
from .stats import KINDS, ROBUST_ROUNDS, ROBUST_Z, CompareOptions, Evidence, judge, ratio_interval
from .verdicts import IMPROVEMENTS, REGRESSIONS, VERDICT_ORDER, Comparison, Row

__all__ = [
    "DERIVED_FROM_LATENCY",
    "ENVIRONMENT_KEYS",
    "IMPROVEMENTS",
    "KINDS",
    "REGRESSIONS",
    "ROBUST_ROUNDS",
    "ROBUST_Z",
    "VERDICT_ORDER",
    "CompareError",
    "CompareOptions",
    "Comparison",
    "Evidence",
    "Row",
    "check_devices",
    "compare",
    "environment_diff",
    "judge",
    "ratio_interval",
    "spread_notes",
]
