"""Baselines: a run's summary kept under ``baselines/NAME.json`` to compare later runs against.

``harness baseline save`` writes into ``--dir``, else ``$HARNESS_BASELINES_DIR``, else the current
folder's ``baselines/``. A name is looked up in the folders of :func:`baseline_folders` (``--dir``,
``$HARNESS_BASELINES_DIR``, the current folder's ``baselines/``, the shipped ones); first hit wins.

A baseline holds, per case, the status and every metric with its value, unit, direction and
kind, the timing statistics (median, IQR, sample count) and the timing samples (at most
:data:`MAX_SAMPLES`, evenly spaced order statistics where there were more), plus the
environment fingerprint and the suites' declarations of the run it came from. It carries its
own schema version; :func:`harness.results.load_results` reads baselines and run folders alike.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..paths import baseline_folders, baselines_dir
from .loader import BASELINE_SCHEMA, BASELINE_SCHEMA_VERSION, ResultSet, load_results
from .schema import MetricValue, ResultsError
from .store import make_folder, remove_made_folder, write_json

MAX_SAMPLES = 101  # odd: the middle order statistic is the median
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

__all__ = ["MAX_SAMPLES", "BaselineFolder", "baseline_folders", "baseline_from_run", "baselines_dir", "check_name",
           "list_baselines", "load_results", "save_baseline", "searched_folders", "thin_samples"]


def thin_samples(samples: list[float], limit: int = MAX_SAMPLES) -> list[float]:
    """At most ``limit`` evenly spaced order statistics of ``samples`` (all when fewer)."""
    xs = sorted(float(s) for s in samples if s is not None)
    if len(xs) <= limit:
        return xs
    return [xs[round(i * (len(xs) - 1) / (limit - 1))] for i in range(limit)]


def _summarize_metric(metric: MetricValue) -> dict[str, Any]:
    out = metric.to_dict()
    samples = out.get("samples")
    if isinstance(samples, list):
        out["samples"] = thin_samples(samples)
        if len(out["samples"]) < len(samples):
            out["samples_thinned_from"] = len(samples)
    return out


def _runs(run_dirs, allow_unfinished: bool) -> ResultSet:
    """One result set from one or several run folders of the same plan on the same device: the
    rounds of all of them become the rounds of the baseline (its per-case noise between runs)."""
    dirs = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    runs = []
    for run_dir in dirs:
        path = Path(run_dir)
        if not path.is_dir():
            raise ResultsError(f"no such run folder: {run_dir}")
        run = load_results(path, strict=True)
        if not run.finished and not allow_unfinished:
            raise ResultsError(f"{run_dir} is an unfinished run ({run.warnings[-1] if run.warnings else 'not finished'}); "
                               "pass --force to save it anyway")
        runs.append(run)
    first = runs[0]
    if len(runs) == 1:
        return first
    for other in runs[1:]:
        if other.describe_device() != first.describe_device():
            raise ResultsError(f"cannot join runs of different devices into one baseline: {first.label} on "
                               f"{first.describe_device()}, {other.label} on {other.describe_device()}")
        if {r.key for r in other.records} != {r.key for r in first.records}:
            raise ResultsError(f"cannot join {first.label} and {other.label} into one baseline: they hold different cases")
    rounds = []
    offset = 0
    for run in runs:
        for r in run.round_records or run.records:
            copy = type(r).from_dict(r.to_dict())
            copy.info["round"] = offset + int(r.info.get("round", 0))
            rounds.append(copy)
        offset += run.rounds
    meta = {**first.meta, "rounds": offset, "joined_runs": [r.run_id for r in runs]}
    return ResultSet(first.label, "run", rounds, first.environment, meta, [w for r in runs for w in r.warnings],
                     first.folder)


def baseline_from_run(run_dir, name: str, allow_unfinished: bool = False) -> dict[str, Any]:
    """The baseline document of one run folder, or of several joined (their rounds together);
    ResultsError for a missing, corrupt or unfinished one."""
    run = _runs(run_dir, allow_unfinished)
    path = run.folder
    cases = [
        {
            "suite": r.suite,
            "variant": r.variant,
            "key": r.key.to_dict(),
            "params": r.params,
            "device": r.device,
            "status": r.status,
            "reason": r.reason,
            "metrics": {k: _summarize_metric(m) for k, m in r.metrics.items()},
            "info": {k: v for k, v in r.info.items() if k in ("valid", "valid_reason", "threads", "stopped_by",
                                                              "stopped_by_rounds", "rounds", "round_statuses")},
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
            "folder": str(path),
            "profile": run.meta.get("profile"),
            "argv": run.meta.get("argv"),
            "threads": run.meta.get("threads"),
            "rounds": run.rounds,
            "joined_runs": run.meta.get("joined_runs"),
            "finished": run.finished,
            "warnings": run.warnings,
        },
        "device": run.meta.get("device") or (run.records[0].device if run.records else None),
        "environment": run.environment,
        "suites": run.meta.get("suites", {}),
        "cases": cases,
    }


MAX_NAME = 100  # a file name, with ".json", stays far below the file systems' 255 bytes


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise ResultsError(f"bad baseline name {name!r}: use letters, digits, '.', '_' and '-'")
    if len(name) > MAX_NAME:
        raise ResultsError(f"bad baseline name {name[:20]!r}... ({len(name)} characters): use at most {MAX_NAME}")
    return name


def save_baseline(run_dir, name: str, folder: Path | None = None, force: bool = False) -> Path:
    """Write ``<folder>/NAME.json`` from a run folder (or several: a list); refuses to overwrite (or to save an
    unfinished run) unless ``force``."""
    check_name(name)
    try:
        folder = Path(folder) if folder else baselines_dir()
    except OSError as exc:  # the current folder was removed
        raise ResultsError(f"no baselines folder: the current folder is gone ({exc.strerror or exc}); pass --dir") from None
    if folder.exists() and not folder.is_dir():
        raise ResultsError(f"baselines folder {folder} is not a folder")
    path = folder / f"{name}.json"
    if path.exists() and not force:
        raise ResultsError(f"baseline {name!r} already exists at {path}; pass --force to replace it")
    doc = baseline_from_run(run_dir, name, allow_unfinished=force)
    made = None
    try:
        made = make_folder(folder)
        write_json(path, doc)  # whole or not at all: an existing baseline stays as it was
    except OSError as exc:  # a full disk, a read-only folder: one line, nothing left behind
        remove_made_folder(made)
        raise ResultsError(f"cannot write baseline {path}: {exc.strerror or exc}") from None
    return path


def list_baselines(folder: Path | None = None) -> list[str]:
    """The baseline names in one folder (default: where ``baseline save`` writes), sorted."""
    folder = Path(folder) if folder else baselines_dir()
    return sorted(p.stem for p in folder.glob("*.json") if p.is_file()) if folder.is_dir() else []


@dataclass(frozen=True)
class BaselineFolder:
    """One folder a baseline name is looked up in: where it comes from and the names it holds."""

    origin: str  # "--dir", "$HARNESS_BASELINES_DIR", "current folder", "shipped with the harness" (or several)
    path: Path
    exists: bool
    names: tuple[str, ...]


def searched_folders(explicit: Path | None = None) -> list[BaselineFolder]:
    """The folders a baseline name is looked up in, in order (first hit wins), with their baselines."""
    return [BaselineFolder(origin, path, path.is_dir(), tuple(list_baselines(path)))
            for origin, path in baseline_folders(explicit)]

