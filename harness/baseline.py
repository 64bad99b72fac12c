"""Baselines: a run's summary kept under ``baselines/NAME.json`` to compare later runs against.

A baseline holds, per case, the status and every metric with its value, unit and direction,
the timing statistics (median, IQR, sample count) and the timing samples (at most
:data:`MAX_SAMPLES`, evenly spaced order statistics where there were more), plus the
environment fingerprint and the suites' declarations of the run it came from. It carries its
own schema version; a baseline of another version is refused with a clear message.

:func:`load_results` turns either a run folder or a baseline (by name or path) into a
:class:`ResultSet`, the one shape that comparison and reports read.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .paths import PROJECT_ROOT
from .registry import suggest
from .results import SCHEMA_VERSION, Record, ResultsError, TruncatedRecordWarning, json_safe, load_run, write_json

BASELINE_SCHEMA = "dl-harness-baseline"
BASELINE_SCHEMA_VERSION = 1
MAX_SAMPLES = 1000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ENV_BASELINES_DIR = "HARNESS_BASELINES_DIR"


@dataclass
class ResultSet:
    """Records plus where they were measured: a loaded run folder or baseline."""

    label: str
    kind: str  # "run" or "baseline"
    records: list[Record]
    environment: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def suites_meta(self) -> dict[str, dict]:
        return self.meta.get("suites", {}) or {}

    @property
    def device(self) -> str:
        return str(self.environment.get("device") or self.meta.get("device") or
                   (self.records[0].device if self.records else "unknown"))

    @property
    def device_name(self) -> str:
        return str(self.environment.get("gpu_name") or self.environment.get("device_name") or "unknown")

    def describe_device(self) -> str:
        return f"{self.device} ({self.device_name})"


def baselines_dir() -> Path:
    """``$HARNESS_BASELINES_DIR``, else the project's ``baselines/`` folder."""
    return Path(os.environ.get(ENV_BASELINES_DIR) or PROJECT_ROOT / "baselines")


def thin_samples(samples: list[float], limit: int = MAX_SAMPLES) -> list[float]:
    """At most ``limit`` evenly spaced order statistics of ``samples`` (all when fewer)."""
    xs = sorted(float(s) for s in samples if s is not None)
    if len(xs) <= limit:
        return xs
    return [xs[round(i * (len(xs) - 1) / (limit - 1))] for i in range(limit)]


def _summarize_metric(metric: dict[str, Any]) -> dict[str, Any]:
    out = dict(metric)
    samples = out.get("samples")
    if isinstance(samples, list):
        out["samples"] = thin_samples(samples)
        if len(out["samples"]) < len(samples):
            out["samples_thinned_from"] = len(samples)
    return out


def baseline_from_run(run_dir: str | Path, name: str) -> dict[str, Any]:
    """The baseline document of a run folder (ResultsError for a missing or corrupt one)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = load_run(run_dir)
    for w in caught:
        if issubclass(w.category, TruncatedRecordWarning):
            raise ResultsError(f"truncated records, not saved as a baseline: {w.message}")
    if not run.records:
        raise ResultsError(f"{run_dir} holds no records; nothing to save as a baseline")
    cases = [
        {
            "suite": r.suite,
            "variant": r.variant,
            "params": r.params,
            "device": r.device,
            "status": r.status,
            "reason": r.reason,
            "metrics": {k: _summarize_metric(m) for k, m in r.metrics.items()},
        }
        for r in run.records
    ]
    return {
        "schema": BASELINE_SCHEMA,
        "schema_version": BASELINE_SCHEMA_VERSION,
        "name": name,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": {
            "run_id": run.run_id,
            "folder": str(Path(run_dir)),
            "profile": run.meta.get("profile"),
            "argv": run.meta.get("argv"),
            "finished": run.meta.get("finished"),
            "warnings": [str(w.message) for w in caught],
        },
        "device": run.meta.get("device") or (run.records[0].device if run.records else None),
        "environment": run.environment,
        "suites": run.meta.get("suites", {}),
        "cases": cases,
    }


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ResultsError(f"bad baseline name {name!r}: use letters, digits, '.', '_' and '-'")
    return name


def save_baseline(run_dir: str | Path, name: str, folder: Path | None = None, force: bool = False) -> Path:
    """Write ``<folder>/NAME.json`` from a run folder; refuses to overwrite unless ``force``."""
    check_name(name)
    folder = Path(folder) if folder else baselines_dir()
    path = folder / f"{name}.json"
    if path.exists() and not force:
        raise ResultsError(f"baseline {name!r} already exists at {path}; pass --force to replace it")
    doc = baseline_from_run(run_dir, name)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    return path


def list_baselines(folder: Path | None = None) -> list[str]:
    folder = Path(folder) if folder else baselines_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


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
    if version != BASELINE_SCHEMA_VERSION:
        raise ResultsError(
            f"baseline {path} has schema version {version!r}; this harness reads version "
            f"{BASELINE_SCHEMA_VERSION} (save it again with 'harness baseline save')"
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
    meta = {"suites": doc.get("suites") or {}, "device": doc.get("device"),
            "profile": (doc.get("source") or {}).get("profile"), "run_id": doc.get("name")}
    return ResultSet(f"baseline {doc.get('name') or Path(path).stem}", "baseline", records,
                     doc.get("environment") or {}, meta)


def load_results(spec: str, folder: Path | None = None, strict: bool = True) -> ResultSet:
    """A run folder, a baseline file (``*.json``) or a baseline name -> ResultSet.

    ``strict``: a run whose records file was cut short (killed while writing) is refused,
    since comparing or saving it would judge a partial run; reports pass ``strict=False``.
    """
    path = Path(spec)
    if path.is_dir():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run = load_run(path)
        truncated = [w for w in caught if issubclass(w.category, TruncatedRecordWarning)]
        if strict and truncated:
            raise ResultsError(f"truncated records: {truncated[0].message}")
        if not run.records:
            raise ResultsError(f"{spec} holds no records")
        return ResultSet(f"run {run.run_id}", "run", run.records, run.environment, run.meta,
                         [str(w.message) for w in caught])
    if path.is_file():
        if path.suffix == ".json":
            return load_baseline_file(path)
        raise ResultsError(f"{spec} is neither a run folder nor a baseline file")
    if spec.endswith(".json") or os.sep in spec or spec.startswith("."):
        raise ResultsError(f"no such run folder or baseline file: {spec}")
    folder = Path(folder) if folder else baselines_dir()
    candidate = folder / f"{spec}.json"
    if candidate.is_file():
        return load_baseline_file(candidate)
    names = list_baselines(folder)
    raise ResultsError(f"unknown baseline {spec!r} (no run folder of that name either){suggest(spec, names)}")


def baseline_summary(rs: ResultSet) -> dict[str, Any]:
    """A short JSON-safe description of a result set (for reports and ``baseline list``)."""
    counts: dict[str, int] = {}
    for r in rs.records:
        counts[r.status] = counts.get(r.status, 0) + 1
    return json_safe({"label": rs.label, "device": rs.describe_device(), "cases": len(rs.records), "statuses": counts})
