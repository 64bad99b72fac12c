"""asv benchmarks built from suites: one class per suite, one ``track_<metric>`` per metric.

Suites know nothing of asv. When asv imports its benchmark package
(``benchmarks/asv_benchmarks/``), that package calls :func:`benchmark_classes`, which discovers the suites and builds, for each, a
new class holding one function ``track_<metric>`` per metric (the engine's latency,
peak_memory, tflops, throughput and the suite's own). Each function's ``benchmark_name`` is
``<suite module>.<Suite class>.track_<metric>`` (e.g. ``attention.Attention.track_latency``).

- **Params.** The grid of the profile named by ``$HARNESS_ASV_PROFILE`` (default ``quick``):
  one asv param per grid param, plus ``variant``, whose values are the variants with their own
  params folded in, as the export tables label them (``performer[features=16]``).
  ``$HARNESS_ASV_PARAM`` narrows the grid like ``harness run --param`` (``;`` between
  params, ``variant=a,b`` picks variants); ``$HARNESS_ASV_K`` filters like ``-k``. Points that
  are not in the plan, variants skipped here (a CUDA-only one on the CPU) and metrics a
  variant does not report are skipped in asv (shown as n/a), failures fail the benchmark.
- **Measurement.** A run session (:mod:`harness.run.session`) measures the case (device events on
  CUDA, never asv's host timer) into a complete run folder; ``$HARNESS_ASV_DEVICE`` picks the
  device (default ``auto``). A case is measured once per asv sample: the run folders live in
  the working folder that asv's ``setup_cache`` gives every benchmark of a run, and each
  ``track_`` function takes the oldest record it has not used yet, measuring a new one only
  when it has used them all.
- **Recorded runs.** With ``$HARNESS_ASV_RECORDS`` naming a run folder, nothing is measured:
  every benchmark takes its value from that run's record of the case (the median of its rounds),
  so ``asv run --python=same --set-commit-hash C`` records in asv's history exactly what the run
  measured; cases the run lacks are n/a. The nightly job does this.
- **Version.** ``Suite.benchmark_version()``: what is measured (declaration, inputs, metric
  definitions, the suite's ``inputs_version`` attribute), not how a variant does it: editing a
  variant keeps every graph's history and shows as a step in the edited variant's graph;
  changing the grid, the inputs or a metric starts a new history.
- **Direction.** asv takes lower as better. A higher-is-better metric (TFLOP/s, throughput,
  mAP) is given to asv as its reciprocal, ``1 / value``, with the reciprocal unit
  (``TFLOP/s`` -> ``s/TFLOP``, ``tokens/s`` -> ``s/tokens``): a drop in TFLOP/s is a rise in
  asv's graph and a regression in ``asv compare``, and ratios stay ratios (a 10% drop in
  throughput shows as a factor of 1.11), which a negated value would not give. A value of 0
  or below has no reciprocal and is reported as n/a.

Nothing here touches the GPU or the disk at import time, and no suite module imports this one.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .key import params_text

ENV_PROFILE = "HARNESS_ASV_PROFILE"
ENV_PARAM = "HARNESS_ASV_PARAM"
ENV_K = "HARNESS_ASV_K"
ENV_DEVICE = "HARNESS_ASV_DEVICE"
ENV_TIMEOUT = "HARNESS_ASV_TIMEOUT"
ENV_THREADS = "HARNESS_ASV_THREADS"
ENV_RECORDS = "HARNESS_ASV_RECORDS"
DEFAULT_PROFILE = "quick"
DEFAULT_TIMEOUT_S = 600.0
VARIANT_PARAM = "variant"
CACHE_FOLDER = "harness-asv-records"


@dataclass(frozen=True)
class Layout:
    """The asv view of one suite: param names, their values, and the Case at each point."""

    param_names: tuple[str, ...]
    params: tuple[tuple, ...]
    cases: dict  # (grid values..., variant label) -> plan.Case
    profile: str


def inverted_unit(unit: str) -> str:
    """The unit of ``1 / value``: ``TFLOP/s`` -> ``s/TFLOP``; ``""`` -> ``1/value``."""
    if unit.endswith("/s") and "/" not in unit[:-2]:
        return f"s/{unit[:-2]}"
    return f"1/({unit})" if unit else "1/value"


def asv_value(value: Any, better: str) -> float:
    """The number asv records: the value, or its reciprocal for higher-is-better metrics."""
    if value is None:
        return math.nan
    value = float(value)
    if math.isnan(value):
        return math.nan
    if better == "higher":
        return 1.0 / value if value > 0 else math.nan
    return value


def _env_overrides() -> tuple[dict[str, list[str]], list[str] | None]:
    """``$HARNESS_ASV_PARAM`` -> (param overrides, chosen variant names or None)."""
    from .plan import parse_param_overrides

    text = os.environ.get(ENV_PARAM, "").strip()
    items = [t for t in text.split(";") if t.strip()]
    overrides = parse_param_overrides(items)
    variants = overrides.pop(VARIANT_PARAM, None)
    return overrides, variants


def layout(cls) -> Layout:
    """Plan the suite for the asv profile and lay the cases out as asv params."""
    from .key import case_label
    from .plan import PlanError, plan_suite

    profile = os.environ.get(ENV_PROFILE, "").strip() or DEFAULT_PROFILE
    overrides, chosen = _env_overrides()
    pattern = os.environ.get(ENV_K, "").strip() or None
    if profile not in cls.profile_names():
        raise PlanError(f"suite {cls.suite_name()!r} has no profile {profile!r} (set by ${ENV_PROFILE})")
    # The device only fills Case.device here; the real one is chosen when a case runs.
    cases = plan_suite(cls, profile, "cpu", pattern, overrides)
    if chosen is not None:  # names of other suites' variants are ignored, as other params are
        cases = [c for c in cases if c.variant in chosen]
    grid_names = list(cls.grid)
    values: dict[str, list] = {k: [] for k in grid_names}
    labels: list[str] = []
    by_point: dict[tuple, Any] = {}
    for case in cases:
        p = case.params_dict
        for k in grid_names:
            if p[k] not in values[k]:
                values[k].append(p[k])
        label = case_label(case.variant, case.key.variant_dict, sep=",")
        if label not in labels:
            labels.append(label)
        by_point[tuple(p[k] for k in grid_names) + (label,)] = case
    names = tuple(grid_names) + (VARIANT_PARAM,)
    params = tuple(tuple(values[k]) for k in grid_names) + (tuple(labels),)
    return Layout(names, params, by_point, profile)


# --------------------------------------------------------------------------- measuring
_CURRENT: dict[tuple, float] = {}  # (suite, metric, params) -> value set by setup, read by track


def asv_setup_cache() -> dict[str, str]:
    """asv's setup_cache: runs once per asv run in a fresh folder shared by the benchmarks."""
    return {"dir": os.getcwd()}


def _point_folder(cache: dict | None, suite: str, params: tuple) -> Path:
    key = hashlib.sha1(params_text([repr(p) for p in params]).encode()).hexdigest()[:16]
    folder = Path(cache["dir"] if cache else os.getcwd()) / CACHE_FOLDER / suite / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _measure(cls, case, folder: Path) -> "Record":  # noqa: F821 - results.Record, imported lazily
    from .measure.environment import resolve_device
    from .run.request import RunRequest
    from .run.session import RunSession

    threads = os.environ.get(ENV_THREADS, "").strip()
    device = resolve_device(os.environ.get(ENV_DEVICE, "").strip() or "auto")
    request = RunRequest(device=device, profile=cls.__asv_layout__.profile, threads=int(threads) if threads else None,
                         argv=["asv"])
    session = RunSession(folder, [replace(case, device=device)], {cls.suite_name(): cls}, request, run_id="asv")
    (record,) = session.run().records
    return record


_RUN_RECORDS: dict[str, dict] = {}


def recorded(run_dir: str, case):
    """The record of ``case`` in the run folder ``run_dir`` (rounds aggregated), measuring nothing."""
    from .results import load_results

    if run_dir not in _RUN_RECORDS:
        _RUN_RECORDS[run_dir] = {r.key: r for r in load_results(run_dir).records}
    record = _RUN_RECORDS[run_dir].get(case.key)
    if record is None:
        raise NotImplementedError(f"not measured in the run {run_dir}")
    return record


def record_for(cls, case, cache: dict | None, params: tuple, metric: str):
    """The record this metric uses for this sample: the oldest it has not used, else a new one.

    With ``$HARNESS_ASV_RECORDS`` naming a run folder, the record is that run's (the nightly job
    records in asv what it has just measured, without measuring again).
    """
    from .results import load_results

    run_dir = os.environ.get(ENV_RECORDS, "").strip()
    if run_dir:
        return recorded(run_dir, case)
    point = _point_folder(cache, cls.suite_name(), params)
    used_path = point / f"{metric}.used"
    used = int(used_path.read_text()) if used_path.is_file() else 0
    measured = sorted((p for p in point.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))
    if used < len(measured):
        record = load_results(measured[used]).records[0]
    else:
        record = _measure(cls, case, point / str(len(measured)))
    used_path.write_text(str(used + 1))
    return record


def _make_setup(cls, metric_name: str):
    def setup(cache, *params):
        """Measure the case (or reuse this sample's record) and keep the metric's asv value."""
        lay = cls.__asv_layout__
        case = lay.cases.get(tuple(params))
        if case is None:
            raise NotImplementedError("not in the plan of this profile")
        record = record_for(cls, case, cache, tuple(params), metric_name)
        if record.status == "skipped":
            raise NotImplementedError(f"skipped: {record.reason}")
        if record.status != "ok":
            raise RuntimeError(f"{record.status}: {record.reason}")
        metric = record.metrics.get(metric_name)
        if metric is None or metric.value is None:
            raise NotImplementedError(f"{record.variant} does not report {metric_name}")
        value = asv_value(metric.value, metric.better)
        if math.isnan(value):
            raise NotImplementedError(f"{metric_name} = {metric.value!r} has no asv value")
        _CURRENT[(cls.suite_name(), metric_name, tuple(params))] = value

    return setup


def _make_track(cls, metric_name: str):
    def track(self, cache, *params):
        """Return the value measured by the harness engine in setup (see harness.asv_adapter)."""
        return _CURRENT.pop((cls.suite_name(), metric_name, tuple(params)))

    return track


def _make_failing_track(error: str):
    def track(self):
        """This suite could not be laid out for asv; the benchmark fails with the reason."""
        raise RuntimeError(error)

    return track


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def _name_prefix(cls) -> str:
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def benchmark_class(cls) -> type:
    """A new asv benchmark class for a Suite subclass: one ``track_<metric>`` per metric."""
    prefix = _name_prefix(cls)
    namespace: dict[str, Any] = {"__doc__": f"asv benchmarks of the suite {cls.suite_name()!r}: {cls.description}"}
    try:
        lay = layout(cls)
        version = cls.benchmark_version()
    except Exception as exc:  # a broken declaration: asv shows the benchmark failing with the reason
        track = _make_failing_track(f"{type(exc).__name__}: {exc}")
        track.__name__ = "track_latency"
        track.benchmark_name = f"{prefix}.track_latency"
        namespace["track_latency"] = track
        return type(cls.__name__, (), namespace)
    cls.__asv_layout__ = lay
    timeout = float(os.environ.get(ENV_TIMEOUT, "").strip() or DEFAULT_TIMEOUT_S)
    for metric in (cls.metric_specs().values() if lay.cases else ()):
        track = _make_track(cls, metric.name)
        fname = f"track_{_identifier(metric.name)}"
        track.__name__ = fname
        track.__qualname__ = f"{cls.__qualname__}.{fname}"
        track.benchmark_name = f"{prefix}.{fname}"
        inverted = metric.better == "higher"
        track.params = [list(v) for v in lay.params]
        track.param_names = list(lay.param_names)
        track.unit = (inverted_unit(metric.unit) if inverted else metric.unit) or "unitless"
        track.version = version
        track.timeout = timeout
        track.setup_cache = asv_setup_cache
        track.setup = _make_setup(cls, metric.name)
        shown = f"1/{metric.name} (inverted: {metric.name} is higher-is-better)" if inverted else metric.name
        track.pretty_name = f"{cls.suite_name()}: {shown} [{track.unit}]"
        track.pretty_source = (
            f"# suite {cls.suite_name()!r}, metric {metric.name!r} [{metric.unit}], {metric.better} is better\n"
            f"# {metric.description}\n"
            f"# measured by the harness engine (harness.run.session.RunSession), profile {lay.profile!r}\n"
            + (f"# recorded as 1/value in {track.unit} so that lower is better in asv\n" if inverted else "")
        )
        namespace[fname] = track
    return type(cls.__name__, (), namespace)


def benchmark_classes() -> dict[str, type]:
    """Benchmark classes of every suite under ``suites/``, keyed by a module attribute name.

    A suite file that fails to load becomes a benchmark that fails with the reason, so asv
    shows it rather than dropping it.
    """
    from .declare.registry import discover

    reg = discover()
    out: dict[str, type] = {}
    for name in reg.names():
        cls = reg.suites[name]
        out[_identifier(_name_prefix(cls))] = benchmark_class(cls)
    for failure in reg.failures:
        stem = Path(failure.path).stem
        track = _make_failing_track(f"suite file {failure.path} failed to load: {failure.error}")
        track.__name__ = "track_latency"
        track.benchmark_name = f"{stem}.LoadFailure.track_latency"
        out[_identifier(f"{stem}_load_failure")] = type("LoadFailure", (), {"track_latency": track})
    return out
