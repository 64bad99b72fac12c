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

