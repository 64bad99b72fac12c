"""The append-only store of a run folder: ``records.jsonl`` written one flushed line per record,
read back line by line (a line cut short by a killed run is dropped with a warning), and the
folder's small JSON files written atomically."""

from __future__ import annotations

import errno
import json
import os
import warnings
from pathlib import Path
from typing import Any

from .schema import Record, ResultsError, json_safe
from ..paths import StoreWriteError

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
    "pin": bool,
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


def _write_error(exc: OSError, path: Path) -> StoreWriteError:
    return StoreWriteError(exc.errno or errno.EIO, exc.strerror or str(exc), str(path))


# fsync is refused by some file systems and special files; the data is written all the same
_FSYNC_UNSUPPORTED = {errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)}


def _fsync(fd: int) -> None:
    """``os.fsync``; a failure to store the data (ENOSPC, EIO, EDQUOT) raises, a file system that
    cannot sync at all does not."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_UNSUPPORTED:
            raise


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a full disk takes part of it, then raises)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


class RecordWriter:
    """Appends records to ``records.jsonl``, flushing and syncing each one to disk.

    A record that cannot be written whole (disk full, at the write or at the sync) is cut off
    again, so the file always ends with a complete line, and :class:`StoreWriteError` is raised."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / RECORDS_FILE
        self._fd: int | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise _write_error(exc, self.path) from None

    def write(self, record: Record) -> None:
        if self._fd is None:
            raise ValueError("write to a closed RecordWriter")
        data = (record.to_json() + "\n").encode("utf-8")
        size = os.fstat(self._fd).st_size
        try:
            _write_all(self._fd, data)
            _fsync(self._fd)
        except OSError as exc:
            try:  # back to the last complete line: a cut line must never stay in the file
                os.ftruncate(self._fd, size)
            except OSError:
                pass
            raise _write_error(exc, self.path) from None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:  # every record was synced as it was written
                pass

    def __enter__(self) -> "RecordWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
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


def make_folder(folder: Path) -> Path | None:
    """``mkdir -p folder``; returns the outermost folder this call made (None when ``folder`` was
    there), so that :func:`remove_made_folder` can take back exactly what was made."""
    folder = Path(folder)
    made = None
    for p in (folder, *folder.parents):
        if p.exists():
            break
        made = p
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        remove_made_folder(made)
        raise
    return made


def remove_made_folder(made: Path | None) -> None:
    """Remove a folder :func:`make_folder` made, and what is in it (never one that was there before)."""
    if made is not None:
        import shutil

        shutil.rmtree(made, ignore_errors=True)


def write_file_atomic(path: Path, data: bytes | str) -> None:
    """Replace ``path`` with ``data``, whole or not at all: written to ``path.tmp``, synced, renamed
    over ``path``. When a step fails (disk full at the write, the sync or the rename) the
    temporary file is removed, ``path`` is as it was, and :class:`StoreWriteError` is raised."""
    path = Path(path)
    tmp = Path(str(path) + ".tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            _write_all(fd, payload)
            _fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _write_error(exc, path) from None


def write_output_file(path: Path, text: str) -> None:
    """A command's output file (a report, an export): a target that is not a regular file (a pipe,
    a device) is written through, never renamed over; any other is replaced whole or not at all
    (:func:`write_file_atomic`), through a symbolic link onto the file it names."""
    path = Path(path)
    if path.exists() and not path.is_file():
        path.write_text(text, encoding="utf-8")
        return
    write_file_atomic(path.resolve(), text)


def overwrite_json_in_place(path: Path, data: dict[str, Any]) -> bool:
    """Rewrite the JSON file ``path`` over its own bytes, needing no new disk space: the compact
    form of ``data``, padded with blanks to the old length, written where the old text was. For
    marking a run folder's ``run.json`` on a full disk, where :func:`write_json` cannot make its
    temporary file. Only when the new text fits the old file; True when written. When the write
    fails the old bytes are put back, so the file is never left cut short."""
    text = json.dumps(json_safe(data), sort_keys=True, separators=(",", ":")).encode("utf-8") + b"\n"
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return False
    try:
        old = os.pread(fd, os.fstat(fd).st_size + 1, 0)
        if len(text) > len(old):
            return False
        try:
            _pwrite_all(fd, text + b" " * (len(old) - len(text)), 0)  # trailing blanks are valid JSON
            _fsync(fd)
        except OSError:
            try:
                _pwrite_all(fd, old, 0)
            except OSError:
                pass
            return False
        try:
            os.ftruncate(fd, len(text))  # drop the blanks; a shorter file needs no space
        except OSError:
            pass
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def write_json(path: Path, data: dict[str, Any], *, in_place_fallback: bool = False) -> None:
    """Write a run folder's JSON file atomically (:func:`write_file_atomic`). With
    ``in_place_fallback``, when that fails (disk full), the existing file is rewritten over its
    own bytes (:func:`overwrite_json_in_place`) if the new text fits; else StoreWriteError and
    the file as it was."""
    text = json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n"
    try:
        write_file_atomic(path, text)
    except StoreWriteError:
        if in_place_fallback and overwrite_json_in_place(Path(path), data):
            return
        raise
