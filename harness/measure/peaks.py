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
    try:
        tmp.write_text(json.dumps({"schema": SCHEMA, "machines": machines}, indent=1, sort_keys=True))
        tmp.replace(path)
    except OSError as exc:  # a full disk: no temporary file left, the stored peaks as they were
        from ..paths import StoreWriteError

        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StoreWriteError(exc.errno, exc.strerror or str(exc), str(path)) from None
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


CPU_INFO_FILE = "cpuinfo-{boot}.json"
CPU_INFO_KEYS = ("brand_raw", "vendor_id_raw", "arch", "bits", "count", "family", "model", "stepping",
                 "hz_advertised_friendly", "l2_cache_size", "l3_cache_size", "flags")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return socket.gethostname()


def cpu_info() -> dict[str, Any]:
    """The CPU's model, vendor, family and feature flags, from py-cpuinfo.

    py-cpuinfo reads them in a child process (about a second), so the answer is kept in the
    harness cache per boot of the machine; a CPU does not change while it runs. Empty when
    py-cpuinfo cannot tell."""
    from ..paths import cache_dir

    try:
        path = cache_dir() / CPU_INFO_FILE.format(boot=_boot_id())
    except OSError:
        path = None
    if path is not None:
        try:
            cached = json.loads(path.read_text())
            if isinstance(cached, dict) and cached:
                return cached
        except (OSError, ValueError):
            pass
    try:
        import cpuinfo

        raw = cpuinfo.get_cpu_info()
    except Exception:
        return {}
    info = {k: raw[k] for k in CPU_INFO_KEYS if raw.get(k) not in (None, "", [])}
    if path is not None and info:
        try:
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(info, sort_keys=True))
            tmp.replace(path)
        except OSError:  # a cache: a full disk leaves no temporary file, and no error
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
    return info


def cpu_model(info: dict[str, Any] | None = None) -> str:
    """The CPU's brand string (py-cpuinfo's ``brand_raw``, from ``info`` when given, else
    :func:`cpu_info`), else what the platform module says."""
    brand = (cpu_info() if info is None else info).get("brand_raw")
    return str(brand) if brand else (platform.processor() or platform.machine())
