"""Rounds as runs of a case: a run of several rounds (``--rounds``) stores one record per case and
round; :class:`CaseRuns` holds a case's round records and derives the one record readers see
(values the median of the rounds, the rounds kept as evidence between runs)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable

from ..key import CaseKey
from .schema import FAILED_STATUSES, MetricValue, Record


@dataclass
class CaseRuns:
    """One case and its runs: the records its rounds made, in order (pyperf's Benchmark and its
    Runs). :attr:`record`, the case as one record, is worked out on first use and kept."""

    key: CaseKey
    runs: list[Record]

    @cached_property
    def record(self) -> Record:
        """The only run, or the runs aggregated (see :func:`aggregate_rounds`)."""
        return self.runs[0] if len(self.runs) == 1 else _aggregate_case(self.runs)


def group_runs(records: Iterable[Record]) -> list[CaseRuns]:
    """The records grouped by case (their :class:`~harness.key.CaseKey`), in first-seen order."""
    groups: dict[CaseKey, list[Record]] = {}
    for r in records:
        groups.setdefault(r.key, []).append(r)
    return [CaseRuns(key, runs) for key, runs in groups.items()]


def aggregate_rounds(records: list[Record]) -> list[Record]:
    """One record per case from a run of several rounds (records sharing a :attr:`Record.key`).

    A case that failed in any round keeps that failure (the first), its reason saying which
    round. Otherwise each metric's value is the median of its round values, which stay in the
    metric as ``rounds`` (per-round values, the between-round evidence compare uses), beside
    ``round_spread`` (half the range of the round values over their median); raw samples of all
    rounds are pooled, and the statistics (IQR, CI, n) come from the pool. ``info`` says how
    many rounds, whether every round was valid and how each stopped.
    """
    return [case.record for case in group_runs(records)]


def _aggregate_case(group: list[Record]) -> Record:
    from ..measure.stats import SampleStats

    n_rounds = len(group)
    first = group[0]
    statuses = [r.status for r in group]
    info = {**first.info, "rounds": n_rounds, "round_statuses": statuses}
    failed = [(i, r) for i, r in enumerate(group) if r.status in FAILED_STATUSES]
    if failed:
        i, r = failed[0]
        return Record(r.suite, r.variant, dict(r.params), r.device, r.status,
                      f"round {i + 1} of {n_rounds}: {r.reason}", dict(r.metrics), r.run_id, r.started_at,
                      sum(x.duration_s for x in group), {**r.info, "rounds": n_rounds, "round_statuses": statuses},
                      key=r.key)
    ok = [r for r in group if r.status == "ok"]
    if not ok:
        return first
    metrics: dict[str, MetricValue] = {}
    names = list(dict.fromkeys(n for r in ok for n in r.metrics))
    for name in names:
        ms = [r.metrics[name] for r in ok if name in r.metrics]
        base = ms[0]
        # a NaN or infinite round stays so (compare fails a round that turned non-finite)
        per_round = [float(m.value) if m.nonfinite else m.finite_value for m in ms]
        finite = sorted(v for v in per_round if v is not None and math.isfinite(v))
        extra = dict(base.extra)
        extra["rounds"] = per_round
        if not finite:
            metrics[name] = MetricValue.from_dict({**base.to_dict(), "rounds": per_round})
            continue
        mid = len(finite) // 2
        value = finite[mid] if len(finite) % 2 else (finite[mid - 1] + finite[mid]) / 2
        if len(finite) > 1 and value:
            extra["round_spread"] = (finite[-1] - finite[0]) / (2 * abs(value))
        kw: dict[str, Any] = {}
        if all(m.samples for m in ms):
            pooled = [x for m in ms for x in (m.samples or [])]
            st = SampleStats.of(pooled)
            kw = dict(samples=pooled, iqr=st.iqr, min=st.min, mean=st.mean, n=st.n, ci_low=st.ci_low,
                      ci_high=st.ci_high, median=value)
        elif base.median is not None:
            kw = dict(median=value, n=sum(int(m.n or 0) for m in ms) or None)
        metrics[name] = MetricValue(value, base.unit, base.better, base.kind, extra=extra,
                                    **{k: v for k, v in kw.items() if v is not None})
    info["valid"] = all(r.info.get("valid", True) for r in ok)
    reasons = [r.info.get("valid_reason") for r in ok if r.info.get("valid") is False]
    if reasons:
        info["valid_reason"] = "; ".join(dict.fromkeys(str(x) for x in reasons))
    stops = [r.info.get("stopped_by") for r in ok if r.info.get("stopped_by")]
    if stops:
        info["stopped_by_rounds"] = stops
        # the case stopped on its budget when most rounds did; a stray round does not decide
        info["stopped_by"] = "budget" if 2 * stops.count("budget") > len(stops) else "stable" if "stable" in stops \
            else stops[0]
    info.pop("round", None)
    return Record(first.suite, first.variant, dict(first.params), first.device, "ok", first.reason, metrics,
                  first.run_id, first.started_at, sum(r.duration_s for r in group), info, key=first.key)

