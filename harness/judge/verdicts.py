"""What a comparison is made of: one Row per (case, measurement) with its verdict, and the
Comparison that holds them (see :mod:`harness.judge.compare` for what each verdict means)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from ..declare.suite import BandViolation
from ..key import CaseKey, case_label
from .stats import CompareOptions

REGRESSIONS = ("slower", "worse", "out-of-band", "failed", "missing")
IMPROVEMENTS = ("faster", "better")
VERDICT_ORDER = ("failed", "slower", "worse", "out-of-band", "missing", "no-win", "noisy", "faster", "better",
                 "new", "removed", "same")


@dataclass(kw_only=True)
class Row:
    """One (case, measurement) comparison; built with keywords only."""

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
    violations: list[BandViolation] = field(default_factory=list)  # B's quality-band violations
    key: CaseKey | None = field(default=None, compare=False)  # the compared records' case key

    @property
    def regression(self) -> bool:
        return self.verdict in REGRESSIONS

    @property
    def case_label(self) -> str:
        """The variant with every param of the case, e.g. ``ddim[steps=10, eta=0.0]``."""
        return case_label(self.variant, self.params)

    def to_dict(self) -> dict[str, Any]:
        """The row's fields as the JSON and CSV output show them (the key's params are ``params``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "key"}


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
    # how the time rows were judged, where not by the rounds of two runs (``harness ab``: paired)
    time_rule: str | None = None

    def counts(self) -> dict[str, int]:
        out = {v: 0 for v in VERDICT_ORDER}
        for r in self.rows:
            out[r.verdict] = out.get(r.verdict, 0) + 1
        return {k: v for k, v in out.items() if v}

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.regression]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressions else 0
