"""A run in the formats other benchmark tools read: pytest-benchmark's JSON (``pytest
--benchmark-json``, read by ``pytest-benchmark compare``, github-action-benchmark's ``pytest``
tool and Bencher) and github-action-benchmark's custom JSON (``customSmallerIsBetter`` /
``customBiggerIsBetter``).

pytest-benchmark's statistics are computed here from the harness's raw timing samples, with
pytest-benchmark's own definitions (its quartiles, Tukey fences and outlier counts), in
seconds; every other metric of the case goes to ``extra_info``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from bisect import bisect_left, bisect_right
from importlib import metadata
from pathlib import Path
from typing import Any

from ..key import case_label, kv_text
from ..results import MetricValue, Record, ResultSet, json_safe

TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
INTEGRATION_FORMATS = ("pytest-benchmark", "github-action-benchmark")
GAB_TOOLS = {"lower": "customSmallerIsBetter", "higher": "customBiggerIsBetter"}


# --------------------------------------------------------------------------- pytest-benchmark statistics
def _quartiles(data: list[float]) -> tuple[float, float]:
    """Q1 and Q3 as pytest-benchmark computes them (Wikipedia's methods 2 and 3) on sorted data."""
    n = len(data)
    if n == 1:
        return data[0], data[0]
    if n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            q1 = 0.25 * data[k - 1] + 0.75 * data[k]
            q3 = 0.75 * data[3 * k] + 0.25 * data[3 * k + 1]
        else:
            q1 = 0.75 * data[k] + 0.25 * data[k + 1]
            q3 = 0.25 * data[3 * k + 1] + 0.75 * data[3 * k + 2]
        return q1, q3
    return statistics.median(data[: n // 2]), statistics.median(data[n // 2:])


def benchmark_stats(samples_s: list[float]) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` object for these durations (seconds, one per round)."""
    if not samples_s:
        raise ValueError("no samples")
    data = sorted(samples_s)
    n = len(data)
    mean = statistics.mean(samples_s)
    total = sum(samples_s)
    stddev = statistics.stdev(samples_s) if n > 1 else 0
    q1, q3 = _quartiles(data)
    iqr = q3 - q1
    low, high = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    iqr_outliers = sum(1 for v in samples_s if v < low or v > high)
    stddev_outliers = sum(1 for v in samples_s if v < mean - stddev or v > mean + stddev)
    return {
        "min": data[0],
        "max": data[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": n,
        "median": statistics.median(data),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_outliers,
        "stddev_outliers": stddev_outliers,
        "outliers": f"{stddev_outliers};{iqr_outliers}",
        "ld15iqr": data[0] if n == 1 else data[bisect_left(data, low)],
        "hd15iqr": data[bisect_right(data, high) - 1],
        "ops": n / total if total else 0,
        "total": total,
        "data": list(samples_s),
        "iterations": 1,
    }


# --------------------------------------------------------------------------- names
def case_name(r: Record, metric: str) -> str:
    """``variant[params]``, with ``:metric`` after the variant for a timed metric other than latency."""
    head = r.variant if metric == "latency" else f"{r.variant}:{metric}"
    return case_label(head, r.params, sep="-")


def _timed(m: MetricValue) -> bool:
    return m.kind == "time" and m.unit in TIME_UNITS and bool(m.samples)


def _metric_info(m: MetricValue) -> dict[str, Any]:
    return {k: v for k, v in m.to_dict().items() if k != "samples"}


# --------------------------------------------------------------------------- pytest-benchmark
def machine_info(rs: ResultSet) -> dict[str, Any]:
    """pytest-benchmark's ``machine_info`` from the run's environment, plus the harness's device."""
    env = rs.environment
    plat = str(env.get("platform") or "")
    python = str(env.get("python") or "")
    return {
        "node": env.get("host"),
        "processor": env.get("cpu"),
        "machine": env.get("machine"),
        "python_compiler": env.get("python_compiler"),
        "python_implementation": env.get("python_implementation"),
        "python_implementation_version": python or None,
        "python_version": python or None,
        "python_build": env.get("python_build"),
        "release": env.get("release"),
        "system": plat.split("-")[0] if plat else None,
        "cpu": {k: v for k, v in (("brand_raw", env.get("cpu")), ("vendor_id_raw", env.get("cpu_vendor")),
                                  ("count", env.get("cpu_count")), ("arch", env.get("machine")),
                                  ("flags", env.get("cpu_flags"))) if v is not None},
        "harness": {"device": rs.device, "device_name": rs.device_name, "torch": env.get("torch"),
                    "cuda": env.get("cuda"), "torch_threads": env.get("torch_threads"),
                    "gpu": env.get("gpu_name"), "profile": rs.meta.get("profile"), "run_id": rs.run_id},
    }


def machine_id(rs: ResultSet) -> str:
    """The storage folder name pytest-benchmark uses: ``<system>-<implementation>-<X.Y>-64bit``."""
    info = machine_info(rs)
    version = ".".join(str(info["python_version"] or "unknown").split(".")[:2])
    parts = [info["system"] or "unknown", info["python_implementation"] or "Python", version, "64bit"]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", "-".join(str(p) for p in parts))


def commit_info(rs: ResultSet) -> dict[str, Any]:
    git = rs.environment.get("git") or {}
    return {"id": git.get("commit") or "unknown", "time": git.get("time"), "author_time": git.get("author_time"),
            "dirty": bool(git.get("dirty")), "project": "dl-harness", "branch": git.get("branch") or "(unknown)"}


def pytest_benchmark_json(rs: ResultSet) -> tuple[dict[str, Any], list[str]]:
    """(the document, the cases left out with why): one benchmark per timed metric with samples."""
    benchmarks = []
    left_out = []
    for r in rs.records:
        timed = [name for name, m in r.metrics.items() if _timed(m)] if r.status == "ok" else []
        if not timed:
            why = r.status if r.status != "ok" else "no timing samples"
            left_out.append(f"{r.suite} {case_name(r, 'latency')}: {why}")
            continue
        others = {name: _metric_info(m) for name, m in r.metrics.items() if name not in timed}
        for name in timed:
            m = r.metrics[name]
            scale = TIME_UNITS[m.unit]
            stats = benchmark_stats([float(v) * scale for v in m.samples or []])
            benchmarks.append({
                "group": r.suite,
                "name": case_name(r, name),
                "fullname": f"{r.suite}::{case_name(r, name)}",
                "params": {"variant": r.variant, **r.params},
                "param": kv_text({"variant": r.variant, **r.params}, "-"),
                "extra_info": {"suite": r.suite, "variant": r.variant, "device": r.device, "metric": name,
                               "harness_" + name: _metric_info(m), **others,
                               **({"valid": r.info["valid"]} if "valid" in r.info else {})},
                "options": {"disable_gc": False, "timer": str(r.info.get("timer") or "harness"),
                            "min_rounds": stats["rounds"], "max_time": None, "min_time": None,
                            "warmup": r.info.get("warmup")},
                "stats": stats,
            })
    try:
        version = metadata.version("pytest-benchmark")
    except metadata.PackageNotFoundError:
        version = "unknown"
    doc = {
        "machine_info": machine_info(rs),
        "commit_info": commit_info(rs),
        "benchmarks": benchmarks,
        "datetime": rs.environment.get("timestamp") or rs.meta.get("started_at"),
        "version": version,
    }
    return json_safe(doc), left_out


def save_to_storage(doc: dict[str, Any], rs: ResultSet, storage: Path) -> Path:
    """Write ``doc`` as the next ``NNNN_<run-id>.json`` under ``storage/<machine-id>/``, the layout
    ``pytest-benchmark compare --storage`` reads."""
    from ..results.store import make_folder, remove_made_folder, write_file_atomic

    folder = Path(storage) / machine_id(rs)
    made = make_folder(folder)
    numbers = [int(p.name[:4]) for p in folder.glob("[0-9][0-9][0-9][0-9]_*.json")]
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", rs.run_id)
    path = folder / f"{max(numbers, default=0) + 1:04d}_{name}.json"
    try:  # whole or not at all (a full disk leaves no partial file)
        write_file_atomic(path, json.dumps(doc, indent=4, allow_nan=False) + "\n")
    except OSError:
        remove_made_folder(made)
        raise
    return path


# --------------------------------------------------------------------------- github-action-benchmark
def _range(m: MetricValue) -> str | None:
    """'± x' (the form github-action-benchmark parses): the samples' standard deviation, or half
    the confidence interval."""
    if m.samples and len(m.samples) > 1:
        return f"± {statistics.stdev(float(v) for v in m.samples):.6g}"
    if m.ci_low is not None and m.ci_high is not None and math.isfinite(m.ci_high - m.ci_low):
        return f"± {(m.ci_high - m.ci_low) / 2:.6g}"
    return None


def github_action_benchmark_json(rs: ResultSet, better: str) -> tuple[list[dict[str, Any]], str]:
    """(entries, tool name): every finite metric whose better direction is ``better``."""
    if better not in GAB_TOOLS:
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")
    out = []
    for r in rs.records:
        if r.status != "ok":
            continue
        for name, m in r.metrics.items():
            value = m.finite_value
            if m.better != better or value is None:
                continue
            extra = [f"suite: {r.suite}", f"variant: {r.variant}", f"kind: {m.kind}", f"device: {rs.describe_device()}",
                     f"run: {rs.run_id}"]
            if m.n is not None:
                extra.append(f"n: {m.n}")
            if len(m.extra.get("rounds") or []) > 1:
                extra.append(f"rounds: {len(m.extra['rounds'])}")
            if m.iqr is not None:
                extra.append(f"IQR: {m.iqr:.6g} {m.unit}".rstrip())
            if r.info.get("valid") is False:
                extra.append(f"not valid: {r.info.get('valid_reason') or 'no reason recorded'}")
            entry: dict[str, Any] = {"name": f"{r.suite}/{case_name(r, 'latency')}/{name}", "unit": m.unit,
                                     "value": value}
            spread = _range(m)
            if spread:
                entry["range"] = spread
            entry["extra"] = "\n".join(extra)
            out.append(entry)
    return out, GAB_TOOLS[better]
