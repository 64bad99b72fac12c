"""Measured peaks of a machine (dense matmul TFLOP/s per dtype, copy bandwidth), kept per machine.

``harness doctor`` measures them and stores them in ``peaks.json`` under the harness cache
folder; a run reads them so a record can say what fraction of the measured peak it reached.
Peaks are measured, never looked up from a vendor sheet. A machine key names the host and the
device (the GPU's name, or the CPU model with its thread count, since a CPU peak depends on it).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import socket
from pathlib import Path
from typing import Any

PEAKS_FILE = "peaks.json"
SCHEMA = 1


def peaks_path() -> Path:
    from ..paths import cache_dir

    return cache_dir() / PEAKS_FILE


def machine_key(device_name: str, host: str | None = None, threads: int | None = None) -> str:
    """``host|device name`` (``|threads=N`` for a CPU)."""
    key = f"{host or socket.gethostname()}|{device_name}"
    return key if threads is None else f"{key}|threads={threads}"


def load_peaks(path: Path | None = None) -> dict[str, Any]:
    """Every stored machine's peaks; {} when the file is missing or unreadable."""
    path = path or peaks_path()
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return {}
    machines = data.get("machines")
    return machines if isinstance(machines, dict) else {}


def store_peaks(key: str, peaks: dict[str, Any], path: Path | None = None) -> Path:
    """Write (replace) one machine's peaks, keeping the others; atomic on POSIX."""
    path = Path(path or peaks_path())
    machines = load_peaks(path)
    machines[key] = {**peaks, "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"schema": SCHEMA, "machines": machines}, indent=1, sort_keys=True))
    tmp.replace(path)
    return path


def peak_for(key: str, dtype: str, path: Path | None = None) -> dict[str, Any] | None:
    """The measured matmul peak of ``dtype`` on machine ``key``: {tflops, dtype, key, measured_at}."""
    entry = load_peaks(path).get(key)
    if not entry:
        return None
    tflops = (entry.get("matmul_tflops") or {}).get(dtype)
    if not tflops:
        return None
    return {"tflops": float(tflops), "dtype": dtype, "machine": key, "measured_at": entry.get("measured_at")}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
