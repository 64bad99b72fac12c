"""Records and runs: the Record schema, an append-only JSONL store, loading into pandas.

A run folder holds ``records.jsonl`` (one Record per line, flushed as each case finishes),
``environment.json`` (where the run happened) and ``run.json`` (what was asked for).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

SCHEMA_VERSION = 1
STATUSES = ("ok", "skipped", "failed", "oom", "timeout", "crashed")
RECORDS_FILE = "records.jsonl"
ENVIRONMENT_FILE = "environment.json"
RUN_FILE = "run.json"


class ResultsError(Exception):
    """A run folder or records file is missing, corrupt or of another schema version."""


class TruncatedRecordWarning(UserWarning):
    """The last line of a records file was cut short (the run was killed while writing)."""


@dataclass
class Record:
    """What one case produced."""

    suite: str
    variant: str
    params: dict[str, Any]
    device: str
    status: str
    reason: str = ""
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    run_id: str = ""
    started_at: str = ""
    duration_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, not {self.status!r}")

    def to_json(self) -> str:
        return json.dumps(json_safe(asdict(self)), sort_keys=False, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ResultsError(f"record of schema version {version!r}; this harness reads version {SCHEMA_VERSION}")
        known = {f for f in cls.__dataclass_fields__}
        missing = {"suite", "variant", "params", "device", "status"} - set(data)
        if missing:
            raise ResultsError(f"record lacks {', '.join(sorted(missing))}")
        return cls(**{k: v for k, v in data.items() if k in known})


def metric_value(value: float, unit: str, better: str, **extra: Any) -> dict[str, Any]:
    """The stored form of one metric: value, unit, better, and optional statistics."""
    return {"value": value, "unit": unit, "better": better, **extra}


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become None, tuples lists, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
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
class Run:
    """A loaded run folder."""

    folder: Path
    records: list[Record]
    environment: dict[str, Any]
    meta: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.meta.get("run_id") or self.folder.name

    def frame(self):
        return records_frame(self.records)


def load_run(folder: str | Path) -> Run:
    """Load a run folder; ResultsError for a missing or corrupt one."""
    folder = Path(folder)
    if not folder.exists():
        raise ResultsError(f"no such run folder: {folder}")
    if not folder.is_dir():
        raise ResultsError(f"not a run folder: {folder}")
    if not (folder / RECORDS_FILE).is_file():
        raise ResultsError(f"{folder} is not a run folder (no {RECORDS_FILE})")
    records = read_records(folder / RECORDS_FILE)
    return Run(folder, records, read_json(folder / ENVIRONMENT_FILE), read_json(folder / RUN_FILE))


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
            "params": json.dumps(r.params, sort_keys=True),
            **{f"param.{k}": v for k, v in r.params.items()},
        }
        if not r.metrics:
            rows.append({**base, "metric": None})
            continue
        for name, m in r.metrics.items():
            rows.append(
                {
                    **base,
                    "metric": name,
                    "value": m.get("value"),
                    "unit": m.get("unit"),
                    "better": m.get("better"),
                    "median": m.get("median"),
                    "iqr": m.get("iqr"),
                    "n": m.get("n"),
                }
            )
    cols = ["suite", "variant", "device", "status", "reason", "run_id", "params", "metric", "value", "unit", "better", "median", "iqr", "n"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df.columns:
            df[c] = None
    return df
