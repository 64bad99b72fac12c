"""Synthetic run folders for the comparison, baseline and report tests (no measuring)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.results import ENVIRONMENT_FILE, RUN_FILE, Record, RecordWriter, metric_value, write_json

SUITE_META = {
    "toy": {
        "reference": "base",
        "description": "a synthetic suite",
        "spec_hash": "0123456789abcdef",
        "variants": ["base", "fast"],
        "grid": {"n": [64, 256, 1024]},
        "metrics": {
            "latency": {"unit": "ms", "better": "lower", "kind": "time", "ratio": True},
            "peak_memory": {"unit": "MiB", "better": "lower", "kind": "memory", "ratio": True},
            "throughput": {"unit": "items/s", "better": "higher", "kind": "rate", "ratio": True},
            "accuracy": {"unit": "", "better": "higher", "kind": "quality", "ratio": False},
        },
    }
}


def timing_samples(rng: np.random.Generator, n: int, median_ms: float, spread: float) -> list[float]:
    """Log-normal timing noise plus 10% outliers slowed by up to 50% (as on a shared machine)."""
    x = median_ms * np.exp(rng.normal(0.0, spread, n))
    out = rng.random(n) < 0.1
    x[out] *= 1.0 + rng.random(int(out.sum())) * 0.5
    return x.tolist()


def ok_record(variant: str, n: int, samples: list[float], memory: float = 10.0, accuracy: float | None = 0.9,
              items: float = 1000.0) -> Record:
    from harness.measure.stats import SampleStats

    st = SampleStats.of(samples)
    med = st.median
    metrics = {
        "latency": metric_value(med, "ms", "lower", "time", median=med, iqr=st.iqr, n=st.n, ci_low=st.ci_low,
                                ci_high=st.ci_high, samples=samples),
        "peak_memory": metric_value(memory, "MiB", "lower", "memory"),
        "throughput": metric_value(items / (med * 1e-3), "items/s", "higher", "rate", derived_from="latency"),
    }
    if accuracy is not None:
        metrics["accuracy"] = metric_value(accuracy, "", "higher", "quality")
    return Record(suite="toy", variant=variant, params={"n": n}, device="cpu", status="ok", metrics=metrics)


def status_record(variant: str, n: int, status: str, reason: str) -> Record:
    return Record(suite="toy", variant=variant, params={"n": n}, device="cpu", status=status, reason=reason)


def write_run(folder: Path, records: list[Record], device: str = "cpu", device_name: str = "Test CPU 9000",
              run_id: str | None = None, suites: dict | None = None, environment: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    run_id = run_id or folder.name
    for r in records:
        r.run_id = run_id
        r.device = device
    with RecordWriter(folder) as w:
        for r in records:
            w.write(r)
    write_json(folder / RUN_FILE, {"run_id": run_id, "profile": "quick", "device": device, "suites": suites or SUITE_META,
                                   "finished": True})
    write_json(folder / ENVIRONMENT_FILE, {"device": device, "device_name": device_name, "cpu": device_name,
                                           "torch": "2.x", "git": {"commit": "abc"}, **(environment or {})})
    return folder


def standard_run(folder: Path, seed: int = 0, slow: float = 0.0, spread: float = 0.03, rounds: int = 3,
                 round_noise: float = 0.01, **kw) -> Path:
    """Two variants over three sizes, ``rounds`` rounds (each shifted by log-normal
    ``round_noise``, as a machine drifts between passes); ``slow`` slows every latency."""
    rng = np.random.default_rng(seed)
    records = []
    for r in range(rounds):
        for n in (64, 256, 1024):
            for variant, base in (("base", 1.0), ("fast", 0.5)):
                drift = float(np.exp(rng.normal(0.0, round_noise)))
                samples = timing_samples(rng, 30, base * n / 64 * (1 + slow) * drift, spread)
                rec = ok_record(variant, n, samples, memory=n / 16)
                if rounds > 1:
                    rec.info["round"] = r
                records.append(rec)
    return write_run(folder, records, **kw)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


BANDED_META = {"toy": {**SUITE_META["toy"], "bands": [{"metric": "accuracy", "min_ratio": 0.95, "variants": ["fast"]}]}}


def troubled_run(folder: Path, seed: int = 0, troubled: bool = True, rounds: int = 3) -> Path:
    """The toy suite with a quality band on 'fast' (accuracy >= 0.95 x base's). With
    ``troubled``: fast at n=256 is 30% slower, fast at n=1024 falls out of its band (accuracy
    0.8 against base's 0.9), and base at n=64 fails; every other case as in a clean run."""
    rng = np.random.default_rng(seed)
    records = []
    for r in range(rounds):
        for n in (64, 256, 1024):
            for variant, base in (("base", 1.0), ("fast", 0.5)):
                drift = float(np.exp(rng.normal(0.0, 0.01)))
                slow = 1.3 if troubled and (variant, n) == ("fast", 256) else 1.0
                samples = timing_samples(rng, 30, base * n / 64 * slow * drift, 0.03)
                accuracy = 0.8 if troubled and (variant, n) == ("fast", 1024) else 0.9
                if troubled and (variant, n) == ("base", 64):
                    rec = status_record(variant, n, "failed", "RuntimeError: probe failure")
                else:
                    rec = ok_record(variant, n, samples, memory=n / 16, accuracy=accuracy)
                if rounds > 1:
                    rec.info["round"] = r
                records.append(rec)
    return write_run(folder, records, suites=BANDED_META)
