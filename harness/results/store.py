"""The append-only store of a run folder: ``records.jsonl`` written one flushed line per record,
read back line by line (a line cut short by a killed run is dropped with a warning), and the
folder's small JSON files written atomically."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .schema import Record, ResultsError, json_safe

RECORDS_FILE = "records.jsonl"
ENVIRONMENT_FILE = "environment.json"
RUN_FILE = "run.json"


# The fields of run.json and environment.json that the loader, resume, merge and the reports read,
# with their JSON types (any may be null); a folder whose file has another type is corrupt.
RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "state": str, "finished": bool, "pid": int, "n_cases": int, "rounds": int, "threads": int,
    "timeout_s": (int, float), "device": str, "profile": str, "pattern": str, "executor": str,
    "ray_address": str, "isolate": bool, "started_at": str, "finished_at": str, "threads_source": str,
    "argv": list, "cases": list, "variants": list, "load_failures": list,
    "suites": dict, "suite_locations": dict, "param_overrides": dict, "status_counts": dict,
}
ENVIRONMENT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "device": str, "cpu_count": int, "torch_threads": int, "git": dict, "precision": dict, "nodes": dict,
}
# Fields holding an object whose every value has one type.
_VALUE_TYPES = {"suites": dict, "suite_locations": list, "param_overrides": list, "nodes": dict, "cases": dict}


def check_fields(data: dict[str, Any], types: dict[str, Any], path: Path) -> dict[str, Any]:
    """``data`` when each field named in ``types`` has its type (or is null); ResultsError naming the
    file and the field otherwise."""
    for name, kind in types.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ResultsError(f"{path} is corrupt: {name} must be {_json_type(kind)}, not {_json_type(type(value))}")
        inner = _VALUE_TYPES.get(name)
        items = value.values() if isinstance(value, dict) else value
        if inner and any(not isinstance(v, inner) for v in items):
            raise ResultsError(f"{path} is corrupt: each entry of {name} must be {_json_type(inner)}")
    return data


def _json_type(kind) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true or false", int: "a whole number",
             float: "a number", type(None): "null"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return names.get(float if float in kinds else kinds[0], kinds[0].__name__)


class FolderBusy(ResultsError):
    """Another process is writing the run folder."""


class RunFolderLock:
    """An exclusive lock on a run folder, held by the one process that writes it (a run, its
    ``--resume``, a merge) until :meth:`release` or its end: ``flock`` on the folder itself, so no
    file is left behind and a killed writer's lock goes with it. A second writer gets
    :class:`FolderBusy` at once. Where the platform has no ``flock`` the lock is not taken."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:
            return
        self._fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.release()
            raise FolderBusy(f"run folder {self.folder} is being written by another harness process (a run, "
                             f"--resume or merge); wait for it to end") from None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:  # a lock nobody holds any more lets go of the folder
        self.release()

    def __enter__(self) -> "RunFolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class TruncatedRecordWarning(UserWarning):
    """The last line of a records file was cut short (the run was killed while writing)."""



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


def read_json(path: Path, types: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run folder's JSON object file ({} when there is none), its ``types`` checked
    (:func:`check_fields`); ResultsError with one line when it is not such an object."""
    if not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path} is corrupt: {exc}") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path} is corrupt: it must hold a JSON object, not {_json_type(type(data))}")
    return check_fields(data, types or {}, path)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = Path(str(path) + ".tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)

