"""Records and result sets: the Record schema, typed metric values, an append-only JSONL store,
and the one loader for run folders and baselines (-> :class:`ResultSet` -> pandas DataFrame).

A run folder holds ``records.jsonl`` (one Record per line, flushed as each case finishes),
``environment.json`` (where the run happened) and ``run.json`` (what was asked for, the suites'
declarations, and whether the run finished). :mod:`harness.run.session` writes run folders; this
module reads them, and baseline files too.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..paths import baselines_dir
from ..declare.suite import METRIC_KINDS, BandViolation, band_violations
from ..key import CaseKey, params_text

SCHEMA_VERSION = 3
READABLE_SCHEMA_VERSIONS = (2, 3)  # 2: no "key"; the loader splits params by the run's suite grids
STATUSES = ("ok", "skipped", "failed", "oom", "timeout", "crashed")
FAILED_STATUSES = ("failed", "oom", "timeout", "crashed")
RECORDS_FILE = "records.jsonl"
ENVIRONMENT_FILE = "environment.json"
RUN_FILE = "run.json"
BASELINE_SCHEMA = "dl-harness-baseline"
BASELINE_SCHEMA_VERSION = 3
READABLE_BASELINE_SCHEMA_VERSIONS = (2, 3)


class ResultsError(Exception):
    """A run folder or records file is missing, corrupt or of another schema version."""


class TruncatedRecordWarning(UserWarning):
    """The last line of a records file was cut short (the run was killed while writing)."""


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


@dataclass(eq=False)
class MetricValue(Mapping):
    """One measured metric: value, unit, direction, kind, and optional statistics.

    Attributes are typed; the value also reads as a mapping (``m["value"]``, ``m.get("n")``)
    with exactly the keys it has on disk, so JSON-minded code and pandas see the same shape.
    ``extra`` holds suite-specific fields (sample counts of a distance, bytes of a peak...).
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
        if isinstance(kw.get("samples"), list):
            kw["samples"] = [decode_float(v) for v in kw["samples"]]
        if kw["value"] is not None and not isinstance(kw["value"], (int, float)):
            raise ValueError(f"metric value must be a number, not {kw['value']!r}")
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

    # Mapping protocol: read access by the on-disk keys.
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())

    __hash__ = None  # type: ignore[assignment]  # mutable


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


class RecordWriter:
    """Appends records to ``records.jsonl``, flushing and syncing each one to disk."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / RECORDS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, record: Record) -> None:
        self._fh.write(record.to_json() + "\n")
        self._fh.flush()
        try:
            os.fsync(self._fh.fileno())
        except OSError:
            pass

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_records(path: Path) -> list[Record]:
    """Read a records file. A truncated last line is reported with a warning and dropped."""
    path = Path(path)
    if path.is_dir():
        path = path / RECORDS_FILE
    if not path.is_file():
        raise ResultsError(f"no records file at {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultsError(f"cannot read {path}: {exc}") from None
    lines = text.split("\n")
    records: list[Record] = []
    last_index = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            if i == last_index and not text.endswith("\n"):
                warnings.warn(
                    f"{path}: last line {i + 1} is truncated (the run was killed while writing); it was skipped",
                    TruncatedRecordWarning,
                    stacklevel=2,
                )
                continue
            raise ResultsError(f"{path}: line {i + 1} is not valid JSON (corrupt records file)") from None
        if not isinstance(data, dict):
            raise ResultsError(f"{path}: line {i + 1} is not a record object")
        try:
            records.append(Record.from_dict(data))
        except (TypeError, ValueError) as exc:
            raise ResultsError(f"{path}: line {i + 1}: {exc}") from None
        except ResultsError as exc:
            raise ResultsError(f"{path}: line {i + 1}: {exc}") from None
    return records


def read_json(path: Path) -> dict[str, Any]:
    if not Path(path).is_file():
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path} is corrupt: {exc}") from None


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


@dataclass
class ResultSet:
    """Loaded results: the records of a run folder or a baseline, with where they were measured.

    The one shape that export, compare, report and ``baseline save`` read. ``finished`` is
    False for a run folder whose run was interrupted or is still running.
    """

    label: str
    kind: str  # "run" or "baseline"
    records: list[Record]
    environment: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    folder: Path | None = None
    # every record as stored: several per case when the run made several rounds (``--rounds``);
    # ``records`` then holds one aggregated record per case (see aggregate_rounds)
    round_records: list[Record] | None = None

    def __post_init__(self) -> None:
        split_keys([*self.records, *(self.round_records or [])], self.suites_meta)
        if self.round_records is None:
            self.round_records = list(self.records)
            keys = [r.key for r in self.records]
            if len(set(keys)) != len(keys):
                self.records = aggregate_rounds(self.records)
        self._bands_index: dict | None = None
        self._violations: dict[int, tuple] = {}  # id(record) -> (record, its band violations)

    @property
    def rounds(self) -> int:
        """Rounds per case: 1 unless the run (or the baseline's source) made several."""
        declared = self.meta.get("rounds")
        if isinstance(declared, int) and declared > 0:
            return declared
        return max((int(r.info.get("rounds", 1) or 1) for r in self.records), default=1)

    def band_violations(self, record: Record) -> list[BandViolation]:
        """The quality bands of its suite that ``record`` breaks (empty when within, or none declared),
        worked out once per record."""
        cached = self._violations.get(id(record))
        if cached is None or cached[0] is not record:
            cached = self._violations[id(record)] = (record, tuple(self._find_band_violations(record)))
        return list(cached[1])

    def _find_band_violations(self, record: Record) -> list[BandViolation]:
        meta = self.suites_meta.get(record.suite) or {}
        bands = meta.get("bands") or []
        if not bands or record.status != "ok":
            return []
        reference = meta.get("reference")
        if self._bands_index is None:
            self._bands_index = {}
            for r in self.records:
                if r.status == "ok" and r.variant == (self.suites_meta.get(r.suite) or {}).get("reference"):
                    self._bands_index[r.key.grid_ident] = r
        ref = self._bands_index.get(record.key.grid_ident)
        values = {n: m.finite_value for n, m in record.metrics.items()}
        ref_values = {n: m.finite_value for n, m in ref.metrics.items()} if ref is not None else None
        return band_violations(bands, record.variant, reference, values, ref_values)

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or (self.folder.name if self.folder else self.label))

    @property
    def suites_meta(self) -> dict[str, dict]:
        return self.meta.get("suites", {}) or {}

    @property
    def finished(self) -> bool:
        return bool(self.meta.get("finished", True))

    @property
    def device(self) -> str:
        return str(self.environment.get("device") or self.meta.get("device") or
                   (self.records[0].device if self.records else "unknown"))

    @property
    def device_name(self) -> str:
        return str(self.environment.get("gpu_name") or self.environment.get("device_name") or "unknown")

    def describe_device(self) -> str:
        return f"{self.device} ({self.device_name})"

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.records:
            counts[r.status] = counts.get(r.status, 0) + 1
        return counts

    def frame(self):
        """Long pandas DataFrame: one row per (record, metric)."""
        return records_frame(self.records)


def split_keys(records: Iterable[Record], suites_meta: Mapping[str, Any] | None) -> None:
    """Migration of records that carry no case key (schema 2, or made by hand): their grid params
    are those their suite declares (``suites[suite]["grid"]`` of run.json or the baseline); where a
    suite declares no grid, the params every record of the suite has."""
    pending: dict[str, list[Record]] = {}
    for r in records:
        if not r.key_given:
            pending.setdefault(r.suite, []).append(r)
    for suite, recs in pending.items():
        meta = (suites_meta or {}).get(suite) or {}
        grid = set(meta.get("grid") or {}) if "grid" in meta else set.intersection(*(set(r.params) for r in recs))
        for r in recs:
            r.split_key(grid)


def aggregate_rounds(records: list[Record]) -> list[Record]:
    """One record per case from a run of several rounds (records sharing a :attr:`Record.key`).

    A case that failed in any round keeps that failure (the first), its reason saying which
    round. Otherwise each metric's value is the median of its round values, which stay in the
    metric as ``rounds`` (per-round values, the between-round evidence compare uses), beside
    ``round_spread`` (half the range of the round values over their median); raw samples of all
    rounds are pooled, and the statistics (IQR, CI, n) come from the pool. ``info`` says how
    many rounds, whether every round was valid and how each stopped.
    """
    groups: dict[tuple, list[Record]] = {}
    for r in records:
        groups.setdefault(r.key, []).append(r)
    return [g[0] if len(g) == 1 else _aggregate_case(g) for g in groups.values()]


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
        per_round = [m.finite_value for m in ms]
        finite = sorted(v for v in per_round if v is not None)
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


def load_results(spec: str | Path, strict: bool = True, baselines: Path | None = None) -> ResultSet:
    """A run folder, a baseline file (``*.json``) or a baseline name -> ResultSet.

    ``strict``: a run whose records file was cut short (killed while writing) is refused,
    since comparing or saving it would judge a partial run; reports pass ``strict=False``.
    """
    path = Path(spec)
    if path.is_dir():
        return _load_run_folder(path, strict)
    if path.is_file():
        if path.suffix == ".json":
            return load_baseline_file(path)
        raise ResultsError(f"{spec} is neither a run folder nor a baseline file")
    text = str(spec)
    if text.endswith(".json"):
        raise ResultsError(f"no such baseline file: {spec}")
    if os.sep in text or text.startswith("."):
        raise ResultsError(f"no such run folder: {spec}")
    folder = Path(baselines) if baselines else baselines_dir()
    candidate = folder / f"{text}.json"
    if candidate.is_file():
        return load_baseline_file(candidate)
    from ..declare.registry import suggest

    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    raise ResultsError(f"unknown baseline {text!r} (no run folder of that name either){suggest(text, names)}")


def _load_run_folder(folder: Path, strict: bool) -> ResultSet:
    if not (folder / RECORDS_FILE).is_file():
        raise ResultsError(f"{folder} is not a run folder (no {RECORDS_FILE})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = read_records(folder / RECORDS_FILE)
    truncated = [w for w in caught if issubclass(w.category, TruncatedRecordWarning)]
    if strict and truncated:
        raise ResultsError(f"truncated records: {truncated[0].message}")
    if not records:
        raise ResultsError(f"{folder} holds no records")
    meta = read_json(folder / RUN_FILE)
    notes = [str(w.message) for w in caught]
    if meta and not meta.get("finished", False):
        state = meta.get("state") or "unfinished"
        if state == "running" and not _pid_alive(meta.get("pid")):
            state = "unfinished (its process was killed or crashed; 'harness run --resume' continues it)"
        planned = meta.get("n_cases")
        of = f" of {planned} planned" if planned else ""
        notes.append(f"run {meta.get('run_id') or folder.name} is {state}: {len(records)} records{of}")
    return ResultSet(f"run {meta.get('run_id') or folder.name}", "run", records,
                     read_json(folder / ENVIRONMENT_FILE), meta, notes, folder)


def _pid_alive(pid: Any) -> bool:
    """Whether a process with this id exists (another than this one)."""
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load_baseline_file(path: Path) -> ResultSet:
    """Read and check one baseline file."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ResultsError(f"cannot read baseline {path}: {exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"baseline {path} is corrupt (not valid JSON: {exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != BASELINE_SCHEMA:
        raise ResultsError(f"{path} is not a harness baseline (no \"schema\": \"{BASELINE_SCHEMA}\")")
    version = doc.get("schema_version")
    if version not in READABLE_BASELINE_SCHEMA_VERSIONS:
        raise ResultsError(
            f"baseline {path} has schema version {version!r}; this harness reads versions "
            f"{', '.join(map(str, READABLE_BASELINE_SCHEMA_VERSIONS))} (save it again with 'harness baseline save')"
        )
    cases = doc.get("cases")
    if not isinstance(cases, list):
        raise ResultsError(f"baseline {path} is corrupt (no list of cases)")
    records = []
    for i, case in enumerate(cases):
        if not isinstance(case, dict):
            raise ResultsError(f"baseline {path}: case {i} is not an object")
        try:
            records.append(Record.from_dict({"device": doc.get("device") or "unknown", **case,
                                             "schema_version": SCHEMA_VERSION, "run_id": doc.get("name", "")}))
        except (TypeError, ValueError, ResultsError) as exc:
            raise ResultsError(f"baseline {path}: case {i}: {exc}") from None
    source = doc.get("source") or {}
    meta = {"suites": doc.get("suites") or {}, "device": doc.get("device"), "profile": source.get("profile"),
            "run_id": doc.get("name"), "finished": True, "threads": source.get("threads"),
            "rounds": source.get("rounds")}
    return ResultSet(f"baseline {doc.get('name') or Path(path).stem}", "baseline", records,
                     doc.get("environment") or {}, meta)


def records_frame(records: Iterable[Record]):
    """Long DataFrame: one row per (record, metric); records with no metrics get one row."""
    import pandas as pd

    rows = []
    for r in records:
        base = {
            "suite": r.suite,
            "variant": r.variant,
            "device": r.device,
            "status": r.status,
            "reason": r.reason,
            "run_id": r.run_id,
            "params": params_text(r.params),
            **{f"param.{k}": v for k, v in r.params.items()},
        }
        if not r.metrics:
            rows.append({**base, "metric": None})
            continue
        for name, m in r.metrics.items():
            rows.append({**base, "metric": name, "value": m.value, "unit": m.unit, "better": m.better,
                         "kind": m.kind, "median": m.median, "iqr": m.iqr, "n": m.n})
    cols = ["suite", "variant", "device", "status", "reason", "run_id", "params", "metric", "value", "unit",
            "better", "kind", "median", "iqr", "n"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df.columns:
            df[c] = None
    return df
