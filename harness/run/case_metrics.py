"""A case's metric values: its workload's measurement as the engine's metrics, plus the suite's own.

:func:`harness.measure.workload.measure_workload` measures numbers; here they become the
record's metric values, each with the unit, direction and kind its :class:`Metric` declares,
and the suite's quality metrics are evaluated on the workload's output.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from ..declare.suite import HOST_LATENCY, LATENCY, PCT_OF_PEAK, PEAK_MEMORY, TFLOPS, THROUGHPUT, Metric, Suite
from ..measure.timing import spread_fields
from ..measure.workload import WorkloadMeasurement
from ..plan import Case
from ..results import MetricValue, metric_value

MIB = 1024.0 * 1024.0


def value_of(metric: Metric, value: float | None, **extra: Any) -> MetricValue:
    """``value`` with ``metric``'s unit, direction and kind (and statistics in ``extra``)."""
    return metric_value(value, metric.unit, metric.better, metric.kind, **extra)


def case_metrics(measured: WorkloadMeasurement, workload, suite: Suite, case: Case, state: Any) -> dict:
    """The metric values of one measured case (engine metrics first, then the suite's)."""
    stats = measured.stats
    metrics = {LATENCY.name: value_of(LATENCY, stats.median, **spread_fields(stats), samples=measured.samples_ms)}
    if measured.host is not None:
        hs = measured.host.stats
        metrics[HOST_LATENCY.name] = value_of(HOST_LATENCY, hs.median, **spread_fields(hs),
                                              samples=measured.host.per_call_ms, calls_per_batch=measured.host.calls)
    metrics[PEAK_MEMORY.name] = value_of(PEAK_MEMORY, measured.peak_bytes / MIB, bytes=measured.peak_bytes)
    if measured.flops:
        achieved = measured.flops / (stats.median * 1e-3) / 1e12
        metrics[TFLOPS.name] = value_of(TFLOPS, achieved, derived_from="latency")
        if measured.peak is not None:
            metrics[PCT_OF_PEAK.name] = value_of(PCT_OF_PEAK, 100.0 * achieved / measured.peak["tflops"],
                                                 derived_from="latency")
    if workload.items:
        metrics[THROUGHPUT.name] = value_of(dataclasses.replace(THROUGHPUT, unit=workload.items_unit),
                                            workload.items / (stats.median * 1e-3), derived_from="latency")
    specs = suite.metric_specs()
    extra = dict(workload.metrics)
    if workload.per_item_latency and workload.items:
        per = workload.items
        extra[workload.per_item_latency] = {
            "value": stats.median / per, "median": stats.median / per, "iqr": stats.iqr / per, "n": stats.n,
            "items": per, "samples": [ms / per for ms in measured.samples_ms], "derived_from": "latency",
        }
    if suite.wants_output(case.variant):
        output = workload.output() if workload.output is not None else measured.output
        extra.update(suite.evaluate(state, case.params_dict, case.variant, output) or {})
    measured.output = None  # the probe's output may hold device memory
    for name, value in extra.items():
        if name not in specs:
            raise KeyError(f"suite {case.suite!r} reported metric {name!r}, which it does not declare")
        if isinstance(value, dict):  # value plus extra fields (e.g. number of samples)
            metrics[name] = value_of(specs[name], value.pop("value"), **value)
        else:
            metrics[name] = value_of(specs[name], float(value) if value is not None else math.nan)
    return metrics
