"""The one versioned loader: a run folder, a baseline file or a baseline name -> :class:`ResultSet`
(-> pandas DataFrame).

A run folder holds ``records.jsonl`` (one Record per line, flushed as each case finishes),
``environment.json`` (where the run happened) and ``run.json`` (what was asked for, the suites'
declarations, and whether the run finished). :mod:`harness.run.session` writes run folders; this
module reads them, and baseline files too. Records of schema 2 (and baselines of schema 2) carry
no case key: :func:`split_keys` gives them one from their suites' declared grids.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..declare.suite import BandViolation, band_violations
from ..key import case_ident, kv_text, params_text
from ..paths import baseline_folders
from .rounds import CaseRuns, group_runs
from .schema import SCHEMA_VERSION, Record, ResultsError
from .store import (ENVIRONMENT_FIELDS, ENVIRONMENT_FILE, RECORDS_FILE, RUN_FIELDS, RUN_FILE, TruncatedRecordWarning,
                    read_json, read_records)

BASELINE_SCHEMA = "dl-harness-baseline"
BASELINE_SCHEMA_VERSION = 3
READABLE_BASELINE_SCHEMA_VERSIONS = (2, 3)  # 2: cases without "key" (split by the baseline's "suites")


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
    # ``records`` then holds one record per case, derived from its runs (``cases``)
    round_records: list[Record] | None = None
    # records of a run folder that repeat a case and round already recorded (the folder was written
    # twice), and records of cases its plan does not hold; see :func:`stray_records`
    duplicates: list[Record] = field(default_factory=list)
    unplanned: list[Record] = field(default_factory=list)
    cases: list[CaseRuns] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        split_keys([*self.records, *(self.round_records or [])], self.suites_meta)
        if self.round_records is None:
            self.round_records = list(self.records)
            self.cases = group_runs(self.records)
            if len(self.cases) != len(self.records):
                self.records = [case.record for case in self.cases]
        else:
            self.cases = group_runs(self.round_records)
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
    folders = [folder for _, folder in baseline_folders(baselines)]
    for folder in folders:
        candidate = folder / f"{text}.json"
        if candidate.is_file():
            return load_baseline_file(candidate)
    from ..declare.registry import suggest

    names = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.json")})
    raise ResultsError(f"unknown baseline {text!r} (no run folder of that name either; looked in "
                       f"{', '.join(map(str, folders))}){suggest(text, names)}")


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
    meta = read_json(folder / RUN_FILE, RUN_FIELDS)
    notes = [str(w.message) for w in caught]
    if meta and not meta.get("finished", False):
        state = meta.get("state") or "unfinished"
        if state == "running" and not _pid_alive(meta.get("pid")):
            state = "unfinished (its process was killed or crashed; 'harness run --resume' continues it)"
        planned = meta.get("n_cases")
        of = f" of {planned} planned" if planned else ""
        notes.append(f"run {meta.get('run_id') or folder.name} is {state}: {len(records)} records{of}")
    run_id = meta.get("run_id") or folder.name
    duplicates, unplanned = stray_records(records, meta.get("cases"))
    if duplicates:
        notes.append(f"run {run_id} holds {stray_text(duplicates, 'duplicate record', ' of a case and round')}: "
                     f"the folder was written twice; compare refuses it")
    if unplanned:
        notes.append(f"run {run_id} holds {stray_text(unplanned, 'record', ' of cases not in its plan')}")
    return ResultSet(f"run {run_id}", "run", records, read_json(folder / ENVIRONMENT_FILE, ENVIRONMENT_FIELDS),
                     meta, notes, folder, duplicates=duplicates, unplanned=unplanned)


def stray_records(records: Iterable[Record], planned: Iterable[Mapping[str, Any]] | None
                  ) -> tuple[list[Record], list[Record]]:
    """(duplicates, unplanned) of a run folder's records: each record after the first of one case and
    round, and the records of cases not in ``planned`` (run.json's cases; None: not known)."""
    seen: set = set()
    duplicates: list[Record] = []
    for r in records:
        slot = (r.key, r.info.get("round"))
        if slot in seen:
            duplicates.append(r)
        seen.add(slot)
    if planned is None:
        return duplicates, []
    idents = {case_ident(c.get("suite"), c.get("variant"), c.get("params") or {}) for c in planned}
    return duplicates, [r for r in records if r.key.ident not in idents]


def stray_text(records: list[Record], noun: str, tail: str = "") -> str:
    """'2 records of cases not in its plan (toy/ok n=8, ...)': how many, and the first cases."""
    shown = sorted({f"{r.suite}/{r.key.label} {kv_text(r.key.grid_dict, ' ')}".strip() for r in records})
    more = ", ..." if len(shown) > 2 else ""
    return f"{len(records)} {noun}{'s' if len(records) != 1 else ''}{tail} ({', '.join(shown[:2])}{more})"


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

