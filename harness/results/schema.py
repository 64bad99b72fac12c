"""The Record schema (version 3): what one case produced, its typed metric values, and the JSON
encoding of both (non-finite numbers as strings, unknown types as text).

Schema 3 adds the case key (:class:`harness.key.CaseKey`) to every record; schema-2 records are
read too and get their key from the loader (:func:`harness.results.loader.split_keys`). Keys a
version does not know are ignored when reading, so later versions add optional fields freely.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..declare.suite import METRIC_KINDS
from ..key import CaseKey

SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (2, 3)  # 2: no "key"; the loader splits params by the run's suite grids
STATUSES = ("ok", "skipped", "failed", "oom", "timeout", "crashed")
FAILED_STATUSES = ("failed", "oom", "timeout", "crashed")


class ResultsError(Exception):
    """A run folder or records file is missing, corrupt or of another schema version."""



_STAT_FIELDS = ("median", "iqr", "min", "mean", "n", "ci_low", "ci_high", "samples")
_NUMERIC_FIELDS = ("value", "median", "iqr", "min", "mean", "ci_low", "ci_high")
# Non-finite numbers are stored as these strings (JSON has no NaN or infinity), exactly and
# distinctly; a missing value is null.
NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(x: float) -> float | str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Infinity" if x > 0 else "-Infinity"
    return x


def decode_float(x: Any) -> Any:
    """A stored number: the strings of :data:`NONFINITE` become floats; anything else is kept."""
    if isinstance(x, str) and x in NONFINITE:
        return NONFINITE[x]
    return x


@dataclass
class MetricValue:
    """One measured metric: value, unit, direction, kind, and optional statistics.

    Attributes are typed; :meth:`to_dict` gives the shape it has on disk (what JSON-minded code
    and pandas read). ``extra`` holds suite-specific fields (sample counts of a distance, bytes of
    a peak...).
    """

    value: float | None
    unit: str
    better: str
    kind: str
    median: float | None = None
    iqr: float | None = None
    min: float | None = None
    mean: float | None = None
    n: int | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    samples: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in METRIC_KINDS:
            raise ValueError(f"metric kind must be one of {', '.join(METRIC_KINDS)}, not {self.kind!r}")
        if self.better not in ("lower", "higher"):
            raise ValueError(f"metric direction must be 'lower' or 'higher', not {self.better!r}")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "unit": self.unit, "better": self.better, "kind": self.kind}
        for name in _STAT_FIELDS:
            v = getattr(self, name)
            if v is not None:
                out[name] = v
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MetricValue":
        if isinstance(data, MetricValue):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"a metric must be an object, not {type(data).__name__}")
        missing = [k for k in ("value", "unit", "better", "kind") if k not in data]
        if missing:
            raise ValueError(f"metric lacks {', '.join(missing)}")
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: (decode_float(v) if k in _NUMERIC_FIELDS else v) for k, v in data.items() if k in known}
        for name in _NUMERIC_FIELDS + ("n",):
            v = kw.get(name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"metric {name} must be a number, not {v!r}")
        if kw.get("samples") is not None:
            samples = kw["samples"]
            if not isinstance(samples, list):
                raise ValueError(f"metric samples must be a list of numbers, not {samples!r}"[:200])
            kw["samples"] = [decode_float(v) for v in samples]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in kw["samples"]):
                raise ValueError("metric samples must be a list of numbers")
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kw, extra=extra)

    @property
    def nonfinite(self) -> bool:
        """The value is NaN or infinite (not missing)."""
        return isinstance(self.value, (int, float)) and not math.isfinite(self.value)

    @property
    def finite_value(self) -> float | None:
        """The value as a finite float, or None (missing, NaN or infinite)."""
        try:
            f = float(self.value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None


WIDE_SPREAD = 0.10  # a number whose 95% CI half-width or round spread exceeds this is marked


def spread_warning(m: MetricValue) -> str:
    """Why a measured number is too uncertain to read at face value ("" when it is not): fewer
    samples than a 95% CI of the median needs, a CI or a spread between rounds wider than
    WIDE_SPREAD of the value. Values without statistics (quality metrics) are never marked."""
    from ..measure.stats import MIN_CI_SAMPLES

    v = m.finite_value
    if v is None or m.n is None:
        return ""
    if m.n < MIN_CI_SAMPLES:
        return f"{m.n} sample{'s' if m.n != 1 else ''}: too few for a 95% CI"
    if isinstance(m.ci_low, (int, float)) and isinstance(m.ci_high, (int, float)) and v:
        half = (m.ci_high - m.ci_low) / (2 * abs(v))
        if math.isfinite(half) and half > WIDE_SPREAD:
            return f"95% CI is +-{half:.0%} of the value"
    spread = m.extra.get("round_spread")
    if isinstance(spread, (int, float)) and spread > WIDE_SPREAD:
        return f"rounds spread +-{spread:.0%} around the value"
    return ""


def metric_value(value: float | None, unit: str, better: str, kind: str, **extra: Any) -> MetricValue:
    """A metric value with optional statistics (``median``, ``iqr``, ``n``, ``samples``...)."""
    return MetricValue.from_dict({"value": value, "unit": unit, "better": better, "kind": kind, **extra})


@dataclass
class Record:
    """What one case produced.

    ``key`` is the case's :class:`~harness.key.CaseKey` (made by the plan); ``params`` holds the
    same params merged, as readers of schema 2 knew them. A record made without a key (schema 2,
    or built by hand) gets one that counts every param as a grid param until the loader, which
    knows the suites' grids, splits it (:meth:`ResultSet.__post_init__`).
    """

    suite: str
    variant: str
    params: dict[str, Any]
    device: str
    status: str
    reason: str = ""
    metrics: dict[str, MetricValue] = field(default_factory=dict)
    run_id: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    key: CaseKey = None  # type: ignore[assignment]  # None: derived in __post_init__

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")
        if not isinstance(self.params, dict):
            raise ValueError(f"params must be an object, not {type(self.params).__name__}")
        if not isinstance(self.metrics, dict):
            raise ValueError(f"metrics must be an object, not {type(self.metrics).__name__}")
        self.metrics = {str(k): MetricValue.from_dict(v) for k, v in self.metrics.items()}
        self.key_given = self.key is not None
        if isinstance(self.key, Mapping):
            self.key = CaseKey.from_dict(self.key)
        elif self.key is None:
            self.key = CaseKey.split(self.suite, self.variant, self.params, self.params)
        elif not isinstance(self.key, CaseKey):
            raise ValueError(f"key must be an object, not {type(self.key).__name__}")

    def split_key(self, grid_names) -> None:
        """Give a record made without a key the split of its params by its suite's grid."""
        if not self.key_given:
            self.key = CaseKey.split(self.suite, self.variant, self.params, grid_names)
            self.key_given = True

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "key":
                continue
            data[f.name] = {k: m.to_dict() for k, m in self.metrics.items()} if f.name == "metrics" \
                else _copy(getattr(self, f.name))
            if f.name == "variant" and self.key_given:
                data["key"] = self.key.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(json_safe(self.to_dict()), sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        """A record from its JSON object; schema 2 (no ``key``) is read too, and keys this version
        does not know are ignored (later versions add optional fields)."""
        version = data.get("schema_version")
        if version not in READABLE_SCHEMA_VERSIONS:
            raise ResultsError(f"record of schema version {version!r}; this harness reads versions "
                               f"{', '.join(map(str, READABLE_SCHEMA_VERSIONS))} (run the suites again with this version)")
        known = {f for f in cls.__dataclass_fields__}
        missing = {"suite", "variant", "params", "device", "status"} - set(data)
        if missing:
            raise ResultsError(f"record lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in known})


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become "NaN"/"Infinity"/"-Infinity", tuples lists, numpy scalars
    Python numbers."""
    if isinstance(obj, MetricValue):
        obj = obj.to_dict()
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return encode_float(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)

