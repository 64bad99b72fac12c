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
- **Measurement.** asv runs each ``track_`` at each param point in a process of its own (a
  fresh interpreter with asv's default launch method, a fork with ``--launch-method
  forkserver``), so nothing is measured there. The ``track_`` functions of a suite share asv's
  ``setup_cache``, one per suite module (:func:`cache_group`), which asv runs once per ``asv
  run`` (and commit and environment) in a fresh process and a working folder of its own:
  :func:`measure_group` measures every case of the module's suites in one run session
  (:mod:`harness.run.session`, as ``harness run`` does: device events on CUDA, never asv's host
  timer) into a complete run folder there, and returns each metric's asv value, or why it is
  n/a or failed, at each point. asv hands that value to every benchmark of the suite, whose
  ``setup`` only looks its value up: a case is measured once per asv run, whatever the number
  of metrics that read it. (asv keeps one value of a ``track_`` benchmark per run, a later
  round's replacing an earlier one, so more ``rounds`` would only read the same value again.)
  ``$HARNESS_ASV_DEVICE`` picks the device (default ``auto``), ``$HARNESS_ASV_THREADS`` the CPU
  threads; ``$HARNESS_ASV_TIMEOUT`` (default 600 s) is the limit per case, setup_cache's being
  that times the number of cases it measures.
- **Benchmark processes.** asv starts each benchmark in the folder holding setup_cache's
  pickled value (``cache.pickle``): there :func:`benchmark_classes` rebuilds the classes of that
  value's suites from the value (:func:`cached_classes`) instead of discovering the suites, so a
  benchmark process imports neither the suites nor torch.
- **Recorded runs.** With ``$HARNESS_ASV_RECORDS`` naming a run folder, nothing is measured:
  setup_cache takes every value from that run's record of the case (the median of its rounds),
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

Importing this module touches neither the GPU nor the disk, and no suite module imports this one.
"""

from __future__ import annotations

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
CACHE_FORMAT = "harness-asv-setup-cache/1"  # marks a setup_cache value made by this module


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
_LAID_OUT: dict[str, type] = {}  # suite name -> the Suite class benchmark_class laid out in this process
_SETUP_CACHES: dict[str, Any] = {}  # suite name -> its setup_cache function


def cache_group(cls) -> str:
    """The suites that share one asv ``setup_cache``: those of one module.

    asv runs a ``setup_cache`` once per key, ``<module name less its first part>:<line>``, and
    hands its value to every benchmark with that key. Each suite's ``setup_cache`` is the same
    function (one line) named into its suite's module, so the key is the suite's module
    (``suites.attention`` -> ``attention``), and it measures every suite of that module.
    """
    return ".".join(cls.__module__.split(".", 1)[1:])


def point_key(params) -> str:
    """The key of an asv param point (grid values and variant label) in setup_cache's tables."""
    return params_text([repr(p) for p in params])


def outcome(record, metric_name: str) -> tuple[str, Any]:
    """What asv records for ``metric_name`` of a case: ``("value", v)``, ``("skip", why)`` (n/a)
    or ``("fail", why)`` (the benchmark fails)."""
    if record.status == "skipped":
        return "skip", f"skipped: {record.reason}"
    if record.status != "ok":
        return "fail", f"{record.status}: {record.reason}"
    metric = record.metrics.get(metric_name)
    if metric is None or metric.value is None:
        return "skip", f"{record.variant} does not report {metric_name}"
    value = asv_value(metric.value, metric.better)
    if math.isnan(value):
        return "skip", f"{metric_name} = {metric.value!r} has no asv value"
    return "value", value


def _measure(classes: list, folder: Path) -> list:
    """One run session of every laid-out case of ``classes`` into the run folder ``folder``."""
    from .measure.environment import resolve_device
    from .run.request import RunRequest
    from .run.session import RunSession

    threads = os.environ.get(ENV_THREADS, "").strip()
    device = resolve_device(os.environ.get(ENV_DEVICE, "").strip() or "auto")
    request = RunRequest(device=device, profile=classes[0].__asv_layout__.profile,
                         threads=int(threads) if threads else None, argv=["asv"])
    cases = [replace(case, device=device) for cls in classes for case in cls.__asv_layout__.cases.values()]
    session = RunSession(folder, cases, {cls.suite_name(): cls for cls in classes}, request, run_id="asv")
    return session.run().records


def recorded(run_dir: str) -> list:
    """The records of the run folder ``run_dir`` (rounds aggregated: the median), measuring nothing."""
    from .results import load_results

    return load_results(run_dir).records


def measure_group(group: str) -> dict[str, Any]:
    """asv's ``setup_cache`` of the suites of one module (:func:`cache_group`).

    Measures every laid-out case of those suites in one run session, as ``harness run`` does,
    into a run folder under the working folder asv gives the group (or, with
    ``$HARNESS_ASV_RECORDS``, reads that run folder instead), and returns what every ``track_``
    of those suites reads: each metric's outcome at each param point, and the layout from which
    a benchmark process builds the classes without importing the suites (see
    :func:`benchmark_classes`). asv pickles the value into the group's folder and passes it to
    every benchmark of the group.
    """
    classes = [c for c in _LAID_OUT.values() if cache_group(c) == group and c.__asv_layout__.cases]
    run_dir = os.environ.get(ENV_RECORDS, "").strip()
    if run_dir:
        folder, missing = Path(run_dir), ("skip", f"not measured in the run {run_dir}")
        records = recorded(run_dir)
    else:
        folder, missing = Path.cwd() / CACHE_FOLDER / (group or "suites"), ("fail", "the run session left no record")
        records = _measure(classes, folder) if classes else []
    by_key = {r.key: r for r in records}
    outcomes: dict[str, dict] = {}
    layouts: list[dict] = []
    for cls in classes:
        lay = cls.__asv_layout__
        metrics = [m.name for m in cls.metric_specs().values()]
        table: dict[str, dict] = {m: {} for m in metrics}
        for point, case in lay.cases.items():
            record = by_key.get(case.key)
            for m in metrics:
                table[m][point_key(point)] = outcome(record, m) if record is not None else missing
        outcomes[cls.suite_name()] = table
        layouts.append({"suite": cls.suite_name(), "attr": _identifier(_name_prefix(cls)), "class": cls.__name__,
                        "prefix": _name_prefix(cls), "params": [list(v) for v in lay.params],
                        "param_names": list(lay.param_names), "metrics": metrics})
    return {"format": CACHE_FORMAT, "group": group, "dir": os.getcwd(), "run": str(folder),
            "outcomes": outcomes, "layouts": layouts}


def _make_setup_cache(cls):
    group = cache_group(cls)

    def setup_cache():
        """Measure every case of this module's suites once (see harness.asv_adapter.measure_group)."""
        return measure_group(group)

    # asv's key for it is '<this module less its first part>:<line>': one per suite module
    setup_cache.__module__ = cls.__module__
    # the source asv shows (and, without it, reads with inspect in every benchmark process)
    setup_cache.pretty_source = (f"# setup_cache: every case of the suites of module {cls.__module__!r} measured once, "
                                 "in one run session (harness.asv_adapter.measure_group)\n")
    return setup_cache


def _make_setup(suite: str, metric_name: str):
    def setup(cache, *params):
        """Take the metric's value at this point from setup_cache's measurement of the suite."""
        try:
            table = cache["outcomes"][suite][metric_name]
        except (KeyError, TypeError):
            raise RuntimeError(f"asv's setup_cache did not measure the suite {suite!r}") from None
        found = table.get(point_key(params))
        if found is None:
            raise NotImplementedError("not in the plan of this profile")
        kind, value = found
        if kind == "skip":
            raise NotImplementedError(value)
        if kind == "fail":
            raise RuntimeError(value)
        _CURRENT[(suite, metric_name, tuple(params))] = value

    return setup


def _make_track(suite: str, metric_name: str):
    def track(self, cache, *params):
        """Return the value measured by the harness engine in setup_cache (see harness.asv_adapter)."""
        return _CURRENT.pop((suite, metric_name, tuple(params)))

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


def _bare_track(suite: str, metric_name: str, prefix: str, params, param_names, timeout: float):
    """A ``track_<metric>`` function with what every asv process needs: name, params, set-up."""
    track = _make_track(suite, metric_name)
    fname = f"track_{_identifier(metric_name)}"
    track.__name__ = fname
    track.__qualname__ = f"{prefix.rsplit('.', 1)[-1]}.{fname}"
    track.benchmark_name = f"{prefix}.{fname}"
    track.params = [list(v) for v in params]
    track.param_names = list(param_names)
    track.timeout = timeout
    track.setup = _make_setup(suite, metric_name)
    track.setup.pretty_source = "# setup: the value at this point, from setup_cache's value\n"
    return fname, track


def _timeout() -> float:
    return float(os.environ.get(ENV_TIMEOUT, "").strip() or DEFAULT_TIMEOUT_S)


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
    _LAID_OUT[cls.suite_name()] = cls
    timeout = _timeout()
    setup_cache = _SETUP_CACHES[cls.suite_name()] = _make_setup_cache(cls)
    # the whole module's cases are measured in it: asv's timeout is per case (benchmark_classes
    # sums it over the module's suites)
    setup_cache.timeout = timeout * max(1, len(lay.cases))
    for metric in (cls.metric_specs().values() if lay.cases else ()):
        fname, track = _bare_track(cls.suite_name(), metric.name, prefix, lay.params, lay.param_names, timeout)
        inverted = metric.better == "higher"
        track.unit = (inverted_unit(metric.unit) if inverted else metric.unit) or "unitless"
        track.version = version
        track.setup_cache = setup_cache
        shown = f"1/{metric.name} (inverted: {metric.name} is higher-is-better)" if inverted else metric.name
        track.pretty_name = f"{cls.suite_name()}: {shown} [{track.unit}]"
        track.pretty_source = (
            f"# suite {cls.suite_name()!r}, metric {metric.name!r} [{metric.unit}], {metric.better} is better\n"
            f"# {metric.description}\n"
            f"# measured by the harness engine (harness.run.session.RunSession) in asv's setup_cache, "
            f"once per asv run for every metric of the case, profile {lay.profile!r}\n"
            + (f"# recorded as 1/value in {track.unit} so that lower is better in asv\n" if inverted else "")
        )
        namespace[fname] = track
    return type(cls.__name__, (), namespace)


def cached_classes(cache: Any) -> dict[str, type]:
    """Benchmark classes rebuilt from a setup_cache value (:func:`measure_group`), importing no suite.

    They hold what a benchmark process uses (names, params, ``setup``, a ``setup_cache`` so that
    asv passes the value on): every value is read from the value itself.
    """
    out: dict[str, type] = {}
    timeout = _timeout()

    def setup_cache():
        """Stands in for the suite's setup_cache, whose value asv has already made."""
        return cache

    setup_cache.pretty_source = "# setup_cache: its value, made by the suite's setup_cache\n"
    for lay in cache["layouts"]:
        namespace: dict[str, Any] = {"__doc__": f"asv benchmarks of the suite {lay['suite']!r} (from setup_cache)"}
        for metric in lay["metrics"]:
            fname, track = _bare_track(lay["suite"], metric, lay["prefix"], lay["params"], lay["param_names"], timeout)
            track.setup_cache = setup_cache
            track.pretty_source = f"# {lay['suite']}: {metric}, from setup_cache's value\n"
            namespace[fname] = track
        out[lay["attr"]] = type(lay["class"], (), namespace)
    return out


def _setup_cache_here() -> Any:
    """The value this module's setup_cache left in the working folder, if this is an asv
    benchmark process (asv runs them in the folder holding ``cache.pickle``), else None."""
    import pickle

    path = Path("cache.pickle")
    if not path.is_file():
        return None
    try:
        with path.open("rb") as fh:
            cache = pickle.load(fh)
    except Exception:  # not ours, or not readable here: discover the suites as usual
        return None
    return cache if isinstance(cache, dict) and cache.get("format") == CACHE_FORMAT else None


def benchmark_classes() -> dict[str, type]:
    """Benchmark classes of every suite under ``suites/``, keyed by a module attribute name.

    A suite file that fails to load becomes a benchmark that fails with the reason, so asv
    shows it rather than dropping it. In an asv benchmark process (run in the folder where
    this module's setup_cache left its value) the classes of that value's suites are rebuilt
    from it (:func:`cached_classes`): such a process only reads a value, and imports neither the
    suites nor torch.
    """
    cache = _setup_cache_here()
    if cache is not None:
        return cached_classes(cache)
    from .declare.registry import discover

    reg = discover()
    out: dict[str, type] = {}
    for name in reg.names():
        cls = reg.suites[name]
        out[_identifier(_name_prefix(cls))] = benchmark_class(cls)
    timeout, cases = _timeout(), {}
    for cls in _LAID_OUT.values():  # a module's setup_cache measures all its suites' cases
        cases[cache_group(cls)] = cases.get(cache_group(cls), 0) + len(cls.__asv_layout__.cases)
    for suite, cls in _LAID_OUT.items():
        _SETUP_CACHES[suite].timeout = timeout * max(1, cases[cache_group(cls)])
    for failure in reg.failures:
        stem = Path(failure.path).stem
        track = _make_failing_track(f"suite file {failure.path} failed to load: {failure.error}")
        track.__name__ = "track_latency"
        track.benchmark_name = f"{stem}.LoadFailure.track_latency"
        out[_identifier(f"{stem}_load_failure")] = type("LoadFailure", (), {"track_latency": track})
    return out
