"""How long ``harness run`` takes as a whole process when the measuring itself is negligible.

Runs ``python -m harness run`` on a one-case user suite (a few microseconds of work, a
millisecond of timing budget) ``--repeat`` times for each checkout given, and prints the wall
time of the whole process (interpreter start, imports, fingerprint, plan, the case, writing the
run folder): median, interquartile range, min and max, in seconds. Each checkout runs first
through its own ``harness`` package (``PYTHONPATH`` points at it) with a cache folder of its
own; one process per checkout runs first and is not counted (it fills per-boot caches such as
the CPU description), and is printed separately. A benchmark, not a test: its numbers belong
to the machine it ran on.

    python scripts/bench_startup.py                                   # this checkout
    git worktree add /tmp/before <commit>
    python scripts/bench_startup.py --checkout /tmp/before --checkout .   # before and after
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = '''"""One trivial case: what is left of a run is its start-up and bookkeeping."""
from harness import Profile, Suite, Timing, Workload, variant


class Tiny(Suite):
    name = "tiny"
    description = "adds two numbers"
    grid = {"n": [1]}
    profiles = {"quick": Profile()}
    timing = Timing(warmup_s=0.0, budget_s=0.001, min_runs=1, max_runs=3)

    @variant()
    def add(self, state, params):
        return Workload(lambda: params["n"] + 1, flops=0)
'''


def commit_of(checkout: Path) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                           capture_output=True, text=True).stdout.strip()
    return (out.stdout.strip() or "?") + ("+dirty" if dirty else "")


def one_run(checkout: Path, suite: Path, work: Path, cache: Path, i: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout), "HARNESS_CACHE_DIR": str(cache)}
    out = work / f"run-{i}"
    cmd = [sys.executable, "-m", "harness", "run", str(suite), "--profile", "quick", "--device", "cpu",
           "--threads", "1", "--quiet", "--no-progress", "--out", str(out)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_startup: harness run in {checkout} exited {proc.returncode}: "
                         f"{proc.stderr.strip()[-400:]}")
    return elapsed


def quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4, method="inclusive") if len(xs) > 1 else [xs[0]] * 3
    return q[0], q[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", action="append", type=Path,
                    help="a checkout of the project (repeatable; default: this one)")
    ap.add_argument("--repeat", type=int, default=10, help="counted processes per checkout")
    args = ap.parse_args(argv)
    checkouts = [c.resolve() for c in (args.checkout or [Path(__file__).resolve().parent.parent])]
    for c in checkouts:
        if not (c / "harness" / "__init__.py").is_file():
            raise SystemExit(f"bench_startup: {c} is not a checkout of the project (no harness/ package)")
    if args.repeat < 1:
        raise SystemExit("bench_startup: --repeat must be at least 1")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        tmp = Path(tmp)
        suite = tmp / "tiny_suite.py"
        suite.write_text(SUITE)
        for k, checkout in enumerate(checkouts):
            work, cache = tmp / f"work-{k}", tmp / f"cache-{k}"
            work.mkdir()
            first = one_run(checkout, suite, work, cache, 0)
            times = []
            for i in range(args.repeat):
                times.append(one_run(checkout, suite, work, cache, i + 1))
            q1, q3 = quartiles(times)
            rows.append((str(checkout), commit_of(checkout), first, statistics.median(times), q3 - q1,
                         min(times), max(times), len(times)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"harness run start-up, whole process, one trivial case (load average {load:.1f}, "
          f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
    print()
    print("| checkout | commit | first run [s] | median [s] | IQR [s] | min [s] | max [s] | n |")
    print("|---|---|---|---|---|---|---|---|")
    for path, commit, first, med, iqr, lo, hi, n in rows:
        print(f"| {path} | {commit} | {first:.2f} | {med:.2f} | {iqr:.2f} | {lo:.2f} | {hi:.2f} | {n} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
