"""Declaring suites: the Suite base class, @variant, metrics, profiles and timing settings.

A suite is a question ("which attention variant?") written as data plus a few small
functions: a params grid, named profiles that pick sub-grids, a seeded ``prepare`` that builds
the inputs shared by every variant at one grid point, the variants themselves, the reference
variant that tables compare against, and the quality metrics the suite computes.

The engine measures speed, memory and FLOPs itself; a suite only says *what* to run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import inspect
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from ..measure.timing import Timing  # the timing settings a suite declares; defined where they are read

LOWER = "lower"
HIGHER = "higher"
PROFILE_NAMES = ("quick", "default", "nightly")

# What a metric measures. The kind picks comparison thresholds and verdict words
# (faster/slower for time and rate, better/worse otherwise); it is always declared, never
# guessed from a unit.
TIME, RATE, MEMORY, QUALITY, COUNT = "time", "rate", "memory", "quality", "count"
METRIC_KINDS = (TIME, RATE, MEMORY, QUALITY, COUNT)


class Skip(Exception):
    """Raised by a variant or setup to say this case cannot run here (becomes status ``skipped``)."""


class SuiteDefinitionError(Exception):
    """A suite class is declared inconsistently (unknown param in a profile, duplicate variant...)."""


@dataclass(frozen=True)
class Metric:
    """A named quantity with its unit, the direction that is better and its kind.

    ``kind`` is one of ``time``, ``rate``, ``memory``, ``quality`` (the default for a suite's
    own metrics) and ``count``.
    """

    name: str
    unit: str
    better: str = LOWER
    description: str = ""
    ratio: bool = True  # whether tables show the ratio to the reference variant
    kind: str = QUALITY
    # An absolute change that is no change (compare's floor for a quality metric), where a few
    # ulps of the case's dtype are too strict: e.g. an error that is itself a rounding error.
    atol: float | None = None

    def __post_init__(self) -> None:
        if self.atol is not None and (isinstance(self.atol, bool) or not isinstance(self.atol, (int, float))
                                      or not (self.atol >= 0 and math.isfinite(self.atol))):
            raise SuiteDefinitionError(
                f"metric {self.name!r}: atol must be a finite number of at least 0, not {self.atol!r}"
            )
        if self.better not in (LOWER, HIGHER):
            raise SuiteDefinitionError(
                f"metric {self.name!r}: better must be 'lower' or 'higher', not {self.better!r}"
            )
        if self.kind not in METRIC_KINDS:
            raise SuiteDefinitionError(
                f"metric {self.name!r}: kind must be one of {', '.join(METRIC_KINDS)}, not {self.kind!r}"
            )


# Metrics the engine itself measures for every case that returns a Workload.
LATENCY = Metric("latency", "ms", LOWER, "median device time of one call of the operation", kind=TIME)
PEAK_MEMORY = Metric("peak_memory", "MiB", LOWER, "peak tensor memory during the operation, above what was allocated before", kind=MEMORY)
TFLOPS = Metric("tflops", "TFLOP/s", HIGHER, "achieved floating-point rate", kind=RATE)
THROUGHPUT = Metric("throughput", "items/s", HIGHER, "items processed per second", kind=RATE)
HOST_LATENCY = Metric(
    "host_latency", "ms", LOWER,
    "host-inclusive time of one call: wall clock around back-to-back calls divided by their count (CUDA)",
    kind=TIME,
)
PCT_OF_PEAK = Metric(
    "pct_of_peak", "%", HIGHER, "achieved TFLOP/s as a percentage of this machine's measured matmul peak",
    ratio=False, kind=RATE,
)
ENGINE_METRICS = {m.name: m for m in (LATENCY, HOST_LATENCY, PEAK_MEMORY, TFLOPS, PCT_OF_PEAK, THROUGHPUT)}


@dataclass(frozen=True)
class Band:
    """The range a quality metric must stay in for a variant to count as a fair trade.

    ``max`` / ``min`` bound the value itself (``Band("rel_error", max=0.05)``); ``max_ratio`` /
    ``min_ratio`` bound it relative to the reference variant at the same grid point
    (``Band("AP", min_ratio=0.9)``: at least 90% of the reference's AP). ``variants`` limits the
    band to some variants (default: every variant but the reference). A variant outside its
    band is marked in tables, the report and compare, and compare counts its speed-up as no win.
    """

    metric: str
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None
    variants: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if all(v is None for v in (self.max, self.min, self.max_ratio, self.min_ratio)):
            raise SuiteDefinitionError(f"band on {self.metric!r} sets no bound (max, min, max_ratio or min_ratio)")
        if self.variants is not None:
            object.__setattr__(self, "variants", tuple(self.variants))

    def describe(self) -> str:
        parts = []
        if self.min is not None:
            parts.append(f"{self.metric} >= {self.min:g}")
        if self.max is not None:
            parts.append(f"{self.metric} <= {self.max:g}")
        if self.min_ratio is not None:
            parts.append(f"{self.metric} >= {self.min_ratio:g} x reference")
        if self.max_ratio is not None:
            parts.append(f"{self.metric} <= {self.max_ratio:g} x reference")
        return " and ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class BandViolation:
    """One bound of a quality band that a variant's value breaks.

    ``op`` is the bound's sense (``">="`` for a minimum, ``"<="`` for a maximum) and ``bound``
    the value it sets; for a bound relative to the reference variant, ``ratio`` is the declared
    factor and ``reference`` the reference's value at the same grid point (both None otherwise).
    """

    metric: str
    value: float
    op: str
    bound: float
    ratio: float | None = None
    reference: float | None = None

    def describe(self) -> str:
        """``rel_error 0.3 outside the band (<= 0.05)``: the text tables, compare and the report show."""
        why = f" ({self.ratio} x reference {self.reference:.4g})" if self.ratio is not None else ""
        return f"{self.metric} {self.value:.4g} outside the band ({self.op} {self.bound:.4g}{why})"

    def __str__(self) -> str:
        return self.describe()


def violations_text(violations: Iterable[BandViolation]) -> str:
    """The violations of one case as one line: their texts joined by ``; ``."""
    return "; ".join(v.describe() for v in violations)


def band_violations(bands: list[dict], variant: str, reference: str | None, values: Mapping[str, float | None],
                    reference_values: Mapping[str, float | None] | None) -> list[BandViolation]:
    """What a variant's quality values break of the declared bands (``Band.to_dict()`` form).

    ``values`` / ``reference_values`` map metric names to finite values (None: not measured).
    A bound that cannot be checked (no value, no reference) is not reported as broken.
    """
    out = []
    for band in bands:
        chosen = band.get("variants")
        if (chosen is not None and variant not in chosen) or (chosen is None and variant == reference):
            continue
        name = band["metric"]
        v = values.get(name)
        if v is None:
            continue
        ref = (reference_values or {}).get(name)
        # (breaks when the value is below it, bound, declared ratio or None)
        checks = [(True, band.get("min"), None), (False, band.get("max"), None)]
        if ref is not None:
            checks += [(True, None if band.get("min_ratio") is None else band["min_ratio"] * ref, band.get("min_ratio")),
                       (False, None if band.get("max_ratio") is None else band["max_ratio"] * ref, band.get("max_ratio"))]
        for is_min, bound, ratio in checks:
            if bound is None:
                continue
            if (is_min and v < bound) or (not is_min and v > bound):
                out.append(BandViolation(name, v, ">=" if is_min else "<=", bound, ratio,
                                         ref if ratio is not None else None))
    return out


@dataclass(frozen=True)
class Profile:
    """A named sub-grid of a suite: overrides for some params, optionally a subset of variants."""

    grid: Mapping[str, tuple] = field(default_factory=dict)
    variants: tuple[str, ...] | None = None
    timing: Timing | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "grid", {k: tuple(v) for k, v in dict(self.grid).items()})
        if self.variants is not None:
            object.__setattr__(self, "variants", tuple(self.variants))


@dataclass
class Workload:
    """What a variant hands the engine for one case.

    ``fn`` is the operation that is timed; building it (and everything captured by it) is not.
    ``flops`` is the floating-point work of one call (None: counted with FlopCounterMode,
    0 or negative: not reported). ``items`` is how many items one call processes (images,
    samples, tokens) for the throughput metric. ``output`` (a callable) returns what quality
    metrics look at; by default the result of one extra, untimed call of ``fn``.
    ``metrics`` are extra metric values the variant already knows (e.g. network evaluations).
    ``per_item_latency`` names a suite metric (unit ms) that receives the measured latency
    divided by ``items``, with its spread (e.g. ``latency_per_image`` of a batched sampler).
    ``before_sample`` runs before every timed call, outside the timed region (e.g. setting
    gradients to None so a backward pass does not accumulate into them). ``dtype`` names the
    matmul peak the achieved TFLOP/s is compared with (``float32``, ``tf32``, ``float16``,
    ``bfloat16``; default: the case's ``dtype`` param when it has one).
    """

    fn: Callable[[], Any]
    flops: float | None = None
    items: float | None = None
    items_unit: str = "items/s"
    per_item_latency: str | None = None
    output: Callable[[], Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    timing: Timing | None = None
    info: dict[str, Any] = field(default_factory=dict)
    before_sample: Callable[[], Any] | None = None
    dtype: str | None = None


@dataclass(frozen=True)
class VariantSpec:
    """One declared variant: the method that builds its Workload and what it needs."""

    name: str
    method_name: str
    requires: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    params: Mapping[str, tuple] = field(default_factory=dict)
    description: str = ""

    def unmet(self, device: str) -> str | None:
        """The reason this variant cannot run on ``device``, or None."""
        for req in self.requires:
            reason = _requirement_unmet(req, device)
            if reason:
                return reason
        for pkg in self.packages:
            if importlib.util.find_spec(pkg) is None:
                return f"needs the package {pkg!r}, which is not installed"
        return None


def _requirement_unmet(req: str, device: str) -> str | None:
    import torch

    if req == "cuda":
        if not device.startswith("cuda"):
            return "needs a CUDA device"
        return None
    if req.startswith("cuda>="):  # compute capability, e.g. cuda>=8.0
        if not device.startswith("cuda"):
            return "needs a CUDA device"
        want = tuple(int(x) for x in req[len("cuda>="):].split("."))
        have = torch.cuda.get_device_capability(torch.device(device))
        if tuple(have) < want:
            return f"needs compute capability {'.'.join(map(str, want))}, device has {have[0]}.{have[1]}"
        return None
    if req == "cpu":
        return None if device == "cpu" else "runs on the CPU only"
    if req.startswith("dtype:"):
        name = req.split(":", 1)[1]
        if name == "bfloat16" and device.startswith("cuda"):
            with torch.cuda.device(torch.device(device)):  # the check reads the current device
                if not torch.cuda.is_bf16_supported():
                    return "the CUDA device does not support bfloat16"
        return None
    raise SuiteDefinitionError(f"unknown requirement {req!r}")


def variant(
    name: str | None = None,
    *,
    requires: tuple[str, ...] | list[str] = (),
    packages: tuple[str, ...] | list[str] = (),
    params: Mapping[str, list | tuple] | None = None,
    description: str = "",
) -> Callable:
    """Mark a suite method as a variant.

    The method takes ``(self, state, params)`` and returns a :class:`Workload`; it may raise
    :class:`Skip`. ``requires`` names device needs (``cuda``, ``cuda>=8.0``, ``cpu``,
    ``dtype:bfloat16``), ``packages`` optional importable packages; unmet ones skip the case
    with the reason. ``params`` are variant-only axes (e.g. Performer's feature count).
    Where several variants differ only in one argument of a shared method, declare them as
    rows of a :func:`variant_table` instead.
    """

    def mark(fn: Callable) -> Callable:
        fn.__harness_variant__ = dict(
            name=name or fn.__name__,
            requires=tuple(requires),
            packages=tuple(packages),
            params={k: tuple(v) for k, v in (params or {}).items()},
            description=description or (inspect.getdoc(fn) or "").split("\n")[0],
        )
        return fn

    return mark


_NAME = object()  # a VariantRow's default arg: the row's own name


@dataclass(frozen=True)
class VariantRow:
    """One row of a :func:`variant_table`: a variant, and what the shared builder receives for it.

    ``arg`` (default: the row's ``name``) is passed to the builder as its fourth argument;
    ``requires``, ``packages``, ``params`` and ``description`` mean what they mean in
    :func:`variant`.
    """

    name: str
    arg: Any = _NAME
    requires: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    params: Mapping[str, tuple] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "requires", tuple(self.requires))
        object.__setattr__(self, "packages", tuple(self.packages))
        object.__setattr__(self, "params", {k: tuple(v) for k, v in dict(self.params).items()})

    @property
    def builder_arg(self) -> Any:
        return self.name if self.arg is _NAME else self.arg


def variant_table(*rows: VariantRow) -> Callable:
    """Mark a suite method as the shared builder of several variants, one per :class:`VariantRow`.

    The method takes ``(self, state, params, arg)``; each row becomes a variant whose method
    (named like the row) calls it with the row's ``arg``. The rows take the method's place in
    the suite's variant order (the order of tables and report columns)::

        @variant_table(
            VariantRow("relu", description="max(x, 0)"),
            VariantRow("gelu_tanh", requires=("cuda",), description="GELU's tanh approximation"),
        )
        def _activation(self, state, params, name):
            return operator_workload(ACTIVATIONS[name], state)
    """
    for r in rows:
        if not isinstance(r, VariantRow):
            raise SuiteDefinitionError(f"variant_table takes VariantRow objects, not {r!r}")

    def mark(fn: Callable) -> Callable:
        fn.__harness_variant_table__ = tuple(rows)
        return fn

    return mark


def _row_method(builder: str, row: VariantRow) -> Callable:
    """The variant method of one table row: the builder (looked up on the suite, so a subclass may
    override it) called with the row's argument."""
    arg = row.builder_arg

    def build(self: Any, state: Any, params: Mapping[str, Any]) -> Any:
        return getattr(self, builder)(state, params, arg)

    build.__name__ = build.__qualname__ = row.name
    build.__doc__ = row.description
    build.__harness_variant_row__ = row.name
    return build


def _declared_variants(klass: type) -> list[tuple[str, dict[str, Any], Callable | None]]:
    """The variants declared in ``klass``'s own body, in order: (method name, spec fields, method
    to create for a table row or None)."""
    out: list[tuple[str, dict[str, Any], Callable | None]] = []
    seen_rows: set[str] = set()
    for attr, value in list(vars(klass).items()):
        meta = getattr(value, "__harness_variant__", None)
        if meta is not None:
            out.append((attr, meta, None))
        for row in getattr(value, "__harness_variant_table__", ()):
            if row.name in seen_rows:
                raise SuiteDefinitionError(f"suite {klass.__name__}: variant {row.name!r} declared twice")
            existing = getattr(klass, row.name, None)
            if existing is not None and not hasattr(existing, "__harness_variant_row__"):
                raise SuiteDefinitionError(
                    f"suite {klass.__name__}: variant row {row.name!r} has the name of an attribute of the suite"
                )
            seen_rows.add(row.name)
            meta = dict(name=row.name, requires=row.requires, packages=row.packages, params=row.params,
                        description=row.description)
            out.append((row.name, meta, _row_method(attr, row)))
    return out


class Suite:
    """Base class of every suite. Subclass it in a file under ``suites/`` (or anywhere).

    Class attributes to set: ``name``, ``description``, ``grid`` (the params grid: param
    name -> list of values), ``profiles`` (name -> :class:`Profile`; ``quick``, ``default`` and
    ``nightly`` are expected), ``reference`` (the variant tables compare against), ``metrics``
    (the suite's own quality metrics), ``timing`` (defaults for the engine's timer).
    Methods: ``prepare(params, device)`` -> state shared by all variants at a grid point,
    ``evaluate(state, params, variant, output)`` -> quality metric values, and variants:
    methods marked with :func:`variant`, or, where variants differ only in one argument of a
    shared method, rows of a :func:`variant_table` (one :class:`VariantRow` per variant).
    """

    name: str = ""
    description: str = ""
    grid: dict[str, list] = {}
    profiles: dict[str, Profile] = {}
    reference: str | None = None
    metrics: list[Metric] = []
    bands: list[Band] = []  # quality bands variants must stay in (see Band)
    timing: Timing = Timing()
    # bump when the inputs change in a way benchmark_version() cannot see (data read from a file,
    # a helper that prepare() calls): a new version starts a new history in asv
    inputs_version: str = ""
    seed: int = 0  # seeds Python, NumPy and torch before prepare() and before each variant

    # Filled in by __init_subclass__.
    _variants: dict[str, VariantSpec] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        variants: dict[str, VariantSpec] = {}
        row_methods: dict[str, Callable] = {}
        for klass in reversed(cls.__mro__):
            for attr, meta, method in _declared_variants(klass):
                spec = VariantSpec(method_name=attr, **meta)
                if spec.name in variants and variants[spec.name].method_name != attr:
                    raise SuiteDefinitionError(f"suite {cls.__name__}: variant {spec.name!r} declared twice")
                variants[spec.name] = spec
                if method is not None and klass is cls:
                    row_methods[attr] = method
        for attr, method in row_methods.items():  # a table row's variant is called like any other
            setattr(cls, attr, method)
        cls._variants = variants

    # ----------------------------------------------------------------- introspection
    @classmethod
    def suite_name(cls) -> str:
        return cls.name or cls.__name__.lower()

    @classmethod
    def variants(cls) -> dict[str, VariantSpec]:
        return dict(cls._variants)

    @classmethod
    def metric_specs(cls) -> dict[str, Metric]:
        out = dict(ENGINE_METRICS)
        for m in cls.metrics:
            out[m.name] = m
        return out

    @classmethod
    def all_param_names(cls) -> list[str]:
        names = list(cls.grid)
        for spec in cls._variants.values():
            for k in spec.params:
                if k not in names:
                    names.append(k)
        return names

    @classmethod
    def validate(cls) -> None:
        """Check the declaration; raises SuiteDefinitionError with a clear message."""
        name = cls.suite_name()
        if not cls._variants:
            raise SuiteDefinitionError(f"suite {name!r} declares no variants")
        if not isinstance(cls.grid, dict):
            raise SuiteDefinitionError(f"suite {name!r}: grid must be a dict of param name -> list of values")
        for k, vals in cls.grid.items():
            if not isinstance(vals, (list, tuple)) or not vals:
                raise SuiteDefinitionError(f"suite {name!r}: param {k!r} needs a non-empty list of values")
        if cls.reference is not None and cls.reference not in cls._variants:
            raise SuiteDefinitionError(f"suite {name!r}: reference {cls.reference!r} is not a variant")
        metric_names = set(cls.metric_specs())
        for band in cls.bands:
            if not isinstance(band, Band):
                raise SuiteDefinitionError(f"suite {name!r}: bands must hold Band objects")
            if band.metric not in metric_names:
                raise SuiteDefinitionError(f"suite {name!r}: band on unknown metric {band.metric!r}")
            if (band.min_ratio is not None or band.max_ratio is not None) and cls.reference is None:
                raise SuiteDefinitionError(f"suite {name!r}: band {band.describe()!r} needs a reference variant")
            for v in band.variants or ():
                if v not in cls._variants:
                    raise SuiteDefinitionError(f"suite {name!r}: band on {band.metric!r} names unknown variant {v!r}")
        known = set(cls.all_param_names())
        for pname, prof in cls.profiles.items():
            if not isinstance(prof, Profile):
                raise SuiteDefinitionError(f"suite {name!r}: profile {pname!r} must be a Profile")
            for k in prof.grid:
                if k not in known:
                    raise SuiteDefinitionError(f"suite {name!r}: profile {pname!r} sets unknown param {k!r}")
            for v in prof.variants or ():
                if v not in cls._variants:
                    raise SuiteDefinitionError(f"suite {name!r}: profile {pname!r} names unknown variant {v!r}")

    @classmethod
    def declaration(cls) -> dict[str, Any]:
        """What a run folder records about this suite: reference, variants, grid, metrics."""
        return {
            "reference": cls.reference,
            "description": cls.description,
            "spec_hash": cls.spec_hash(),
            "benchmark_version": cls.benchmark_version(),
            "variants": list(cls._variants),
            "bands": [b.to_dict() for b in cls.bands],
            "grid": {k: list(v) for k, v in cls.grid.items()},
            "metrics": {
                n: {"unit": m.unit, "better": m.better, "kind": m.kind, "ratio": m.ratio, "description": m.description,
                    **({"atol": m.atol} if m.atol is not None else {})}
                for n, m in cls.metric_specs().items()
            },
        }

    @classmethod
    def profile(cls, name: str) -> Profile:
        if name in cls.profiles:
            return cls.profiles[name]
        if name == "default":
            return Profile()
        raise KeyError(name)

    @classmethod
    def profile_names(cls) -> list[str]:
        names = list(cls.profiles)
        if "default" not in names:
            names.insert(min(1, len(names)), "default")
        return names

    @classmethod
    def spec_hash(cls) -> str:
        """A hash of the workload's declaration and code: it changes when the workload does.

        Built from the params grid, profiles, variants and the source of the suite's methods
        with comments and docstrings removed, so editing a comment keeps the hash.
        """
        parts: dict[str, Any] = {
            "name": cls.suite_name(),
            "grid": {k: list(map(repr, v)) for k, v in cls.grid.items()},
            "profiles": {
                k: {"grid": {g: list(map(repr, v)) for g, v in p.grid.items()}, "variants": p.variants}
                for k, p in cls.profiles.items()
            },
            "variants": {
                n: {"requires": s.requires, "packages": s.packages, "params": {k: list(map(repr, v)) for k, v in s.params.items()}}
                for n, s in cls._variants.items()
            },
            "code": _code_fingerprint(cls),
        }
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def benchmark_version(cls) -> str:
        """A hash of what is measured, not of how a variant does it: asv's benchmark version.

        Built from the declaration (name, grid, profiles, variant names with their needs and
        params, metric units, directions and kinds, quality bands, timing settings, seed), the
        source of ``prepare`` and ``evaluate`` (comments and docstrings stripped) and the class
        attribute ``version``. Editing a variant, or a function only variants call, keeps it:
        that change is what a benchmark's history exists to show.
        """
        parts = {
            "name": cls.suite_name(),
            "grid": {k: list(map(repr, v)) for k, v in cls.grid.items()},
            "profiles": {
                k: {"grid": {g: list(map(repr, v)) for g, v in p.grid.items()}, "variants": p.variants,
                    "timing": repr(p.timing)}
                for k, p in cls.profiles.items()
            },
            "variants": {
                n: {"requires": s.requires, "packages": s.packages, "params": {k: list(map(repr, v)) for k, v in s.params.items()}}
                for n, s in cls._variants.items()
            },
            "metrics": {n: [m.unit, m.better, m.kind] for n, m in cls.metric_specs().items()},
            "bands": [b.to_dict() for b in cls.bands],
            "timing": repr(cls.timing),
            "seed": cls.seed,
            "inputs": [_method_fingerprint(cls, name) for name in ("prepare", "evaluate")],
            "version": cls.inputs_version,
        }
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # ----------------------------------------------------------------- to override
    def prepare(self, params: Mapping[str, Any], device: str) -> Any:
        """Build the inputs shared by every variant at one grid point (seeded)."""
        return None

    def evaluate(self, state: Any, params: Mapping[str, Any], variant: str, output: Any) -> dict[str, float]:
        """Quality metrics of one variant's output; an empty dict when none apply."""
        return {}

    def wants_output(self, variant: str) -> bool:
        """Whether ``evaluate`` needs the operation's output for this variant."""
        return type(self).evaluate is not Suite.evaluate


def _method_fingerprint(cls: type, name: str) -> str:
    """Source of the method ``name`` as ``cls`` resolves it, comments and docstrings stripped."""
    try:
        src = inspect.getsource(getattr(cls, name, None))
    except (OSError, TypeError):
        return ""
    return _source_fingerprint(inspect.cleandoc("\n" + src) if src.startswith((" ", "\t")) else src)


def _code_fingerprint(cls: type) -> str:
    """Source of the suite module with comments, docstrings and blank lines stripped."""
    try:
        module = inspect.getmodule(cls)
        src = inspect.getsource(module) if module is not None else inspect.getsource(cls)
    except (OSError, TypeError):
        return ""
    return _source_fingerprint(src)


def _source_fingerprint(src: str) -> str:
    """The syntax tree of ``src`` without comments and docstrings (the text itself if it does not parse)."""
    import ast

    try:
        tree = ast.parse(src)
    except SyntaxError:
        return src
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant
        ) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False)
