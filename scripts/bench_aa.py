"""How far the regression gate can be trusted on this machine: A/A pairs and a known slowdown.

Runs pairs of ``harness run`` (each with ``--rounds``) and ``harness compare A B`` between them,
as a nightly job would, under three conditions:

- ``quiet``: A/A pairs of a real suite (default ``attention``, quick profile) on the machine as
  it is;
- ``loaded``: the same while a background job the script starts (one CPU-bound process per
  core, each streaming through a 64 MiB array) competes for the cores; stopped afterwards;
- ``slowdown``: pairs of a small user suite whose work length is a param, B doing 10% more work
  in every case (set through an environment variable, so A and B plan the same cases);
- ``spin-aa``: A/A pairs of that user suite, with the rounds of the slowdown condition.

For each condition it prints the gate's failures (``harness compare`` exiting 1), the per-case
false-flag rate (A/A: any case judged slower, faster, worse, better or out of band) or the
detection rate (slowdown: cases judged slower), and the verdict counts. A benchmark, not a
test: it takes minutes and its numbers belong to the machine it ran on.

    python scripts/bench_aa.py --pairs 10                      # all three conditions
    python scripts/bench_aa.py --conditions slowdown --pairs 10
    python scripts/bench_aa.py --recompare OUT1 --recompare OUT2   # kept runs, today's compare
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

FLAGS = ("slower", "faster", "worse", "better", "out-of-band", "no-win")
SLOWDOWN_ENV = "AA_BENCH_EXTRA_WORK"

SPIN_SUITE = '''"""Work of a given length: a user suite for measuring the gate's detection rate."""
import os

import torch

from harness import Profile, Suite, Timing, Workload, variant

EXTRA = float(os.environ.get("{env}", "0"))


class Spin(Suite):
    name = "spin"
    description = "a Python loop and a chain of small tensor ops whose length is a param"
    grid = {{"length": [1, 2, 4]}}
    profiles = {{"quick": Profile()}}
    reference = "loop"
    timing = Timing(warmup_s=0.03, budget_s=0.15, rel_spread=0.01)

    @variant()
    def loop(self, state, params):
        n = int(20_000 * params["length"] * (1 + EXTRA))

        def fn():
            x = 0
            for i in range(n):
                x += i
            return x

        return Workload(fn, flops=0)

    @variant()
    def tensor(self, state, params):
        n = int(200 * params["length"] * (1 + EXTRA))
        t = torch.ones(256)

        def fn():
            y = t
            for _ in range(n):
                y = y * 1.0001
            return y

        return Workload(fn, flops=0)
'''

BURNER = """
import numpy as np
a = np.ones(8 * 1024 * 1024)
while True:
    a = a * 1.0000001 + 1e-9
"""


def harness_cmd() -> list[str]:
    return [sys.executable, "-m", "harness"]


def run_once(out: Path, suite: str, profile: str, rounds: int, threads: int, env: dict) -> float:
    t0 = time.perf_counter()
    cmd = harness_cmd() + ["run", suite, "--profile", profile, "--device", "cpu", "--rounds", str(rounds),
                           "--threads", str(threads), "--quiet", "--no-progress", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1) or not (out / "records.jsonl").is_file():
        raise SystemExit(f"bench_aa: harness run failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return time.perf_counter() - t0


def compare(a: Path, b: Path, env: dict) -> tuple[int, dict]:
    proc = subprocess.run(harness_cmd() + ["compare", str(a), str(b), "--format", "json"], env=env,
                          capture_output=True, text=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"bench_aa: harness compare failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc.returncode, json.loads(proc.stdout)


def case_verdicts(report: dict) -> dict[tuple, list[str]]:
    """Verdicts of each case (suite, variant, params) over its rows."""
    out: dict[tuple, list[str]] = {}
    for row in report["rows"]:
        key = (row["suite"], row["variant"], json.dumps(row["params"], sort_keys=True))
        out.setdefault(key, []).append(row["verdict"])
    return out


class Background:
    """One CPU-bound process per core, streaming through memory, until stopped."""

    def __init__(self, processes: int):
        self.procs = [subprocess.Popen([sys.executable, "-c", BURNER], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) for _ in range(processes)]

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()


def run_condition(name: str, args, work: Path) -> dict:
    env = dict(os.environ)
    suite = args.suite
    profile = args.profile
    rounds = args.rounds
    if name in ("slowdown", "spin-aa"):
        spin = work / "spin_suite.py"
        spin.write_text(SPIN_SUITE.format(env=SLOWDOWN_ENV))
        suite, profile, rounds = str(spin), "quick", args.spin_rounds
    background = Background(os.cpu_count() or 1) if name == "loaded" else None
    loads, seconds, pairs = [], [], []
    try:
        for i in range(args.pairs):
            a, b = work / f"{name}-{i}-a", work / f"{name}-{i}-b"
            env_a = {**env, SLOWDOWN_ENV: "0"}
            env_b = {**env, SLOWDOWN_ENV: str(args.slowdown if name == "slowdown" else 0)}
            seconds.append(run_once(a, suite, profile, rounds, args.threads, env_a))
            seconds.append(run_once(b, suite, profile, rounds, args.threads, env_b))
            loads.append(os.getloadavg()[0])
            pairs.append(judge_pair(a, b, env))
            print(f"bench_aa: {name} pair {i + 1}/{args.pairs}: exit {pairs[-1]['exit']}, "
                  f"{pairs[-1]['flagged']}/{pairs[-1]['cases']} cases flagged, load {loads[-1]:.1f}", file=sys.stderr)
    finally:
        if background is not None:
            background.stop()
    return summarize(name, suite, rounds, pairs, loads, seconds)


def judge_pair(a: Path, b: Path, env: dict) -> dict:
    """The gate's answer on one pair (compare's exit code) and its verdicts per case."""
    code, report = compare(a, b, env)
    per_case = case_verdicts(report)
    return {"exit": code, "cases": len(per_case),
            "flagged": sum(any(v in FLAGS for v in vs) for vs in per_case.values()),
            "slower": sum("slower" in vs for vs in per_case.values()),
            "counts": report["summary"]["counts"]}


def summarize(name: str, suite: str, rounds: int, pairs: list[dict], loads: list[float],
              seconds: list[float]) -> dict:
    counts: Counter = Counter()
    for p in pairs:
        counts.update(p["counts"])
    return {"condition": name, "suite": "spin (user suite)" if name in ("slowdown", "spin-aa") else suite,
            "rounds": rounds, "pairs": pairs,
            "gate_failures": sum(p["exit"] == 1 for p in pairs), "cases": sum(p["cases"] for p in pairs),
            "flagged": sum(p["flagged"] for p in pairs), "slower": sum(p["slower"] for p in pairs),
            "verdicts": dict(counts), "load_min": min(loads), "load_max": max(loads),
            "loads": loads, "seconds": seconds,
            "run_seconds_median": sorted(seconds)[len(seconds) // 2]}


def recompare(folder: Path) -> list[dict]:
    """The tables of an earlier ``--out`` folder, judged again by the current ``harness compare``
    (compare only reads run folders: the runs are kept, the verdicts come from today's code)."""
    try:
        earlier = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"bench_aa: {folder} holds no summary.json of an earlier run ({exc})")
    results = []
    for r in earlier:
        name = r["condition"]
        pairs = [judge_pair(folder / f"{name}-{i}-a", folder / f"{name}-{i}-b", dict(os.environ))
                 for i in range(len(r["pairs"]))]
        loads = r.get("loads") or [r["load_min"], r["load_max"]]
        seconds = r.get("seconds") or [r["run_seconds_median"]]
        results.append(summarize(name, r["suite"], r["rounds"], pairs, loads, seconds))
    return results


def table(results: list[dict], args) -> str:
    lines = [f"Machine: {os.cpu_count()} cores; {args.pairs} pairs per condition, "
             f"--threads {args.threads}; load = 1-minute load average after each pair (min-max).", "",
             "| condition | suite | rounds | pairs | gate failures | cases compared | cases flagged | rate | verdict rows "
             "| load | s per run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if r["condition"] == "slowdown":
            what = f"{r['slower']} slower"
            rate = f"detected {r['slower'] / max(1, r['cases']):.1%}"
            gate = f"{r['gate_failures']} of {len(r['pairs'])} (wanted: all)"
        else:
            what = f"{r['flagged']} flagged"
            rate = f"false flags {r['flagged'] / max(1, r['cases']):.2%}"
            gate = f"{r['gate_failures']} of {len(r['pairs'])}"
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['condition']} | {r['suite']} | {r['rounds']} | {len(r['pairs'])} | {gate} | {r['cases']} | {what} | "
                     f"{rate} | {verdicts} | {r['load_min']:.1f}-{r['load_max']:.1f} | {r['run_seconds_median']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--suite", default="attention")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per run of the real suite")
    ap.add_argument("--spin-rounds", type=int, default=21, help="rounds per run of the user suite")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--slowdown", type=float, default=0.10, help="extra work of B in the slowdown condition")
    ap.add_argument("--conditions", default="quiet,loaded,slowdown,spin-aa")
    ap.add_argument("--out", help="keep the run folders and the summary here (default: a temporary folder)")
    ap.add_argument("--recompare", metavar="DIR", action="append", type=Path,
                    help="measure nothing: judge the kept pairs of an earlier --out folder again (repeatable)")
    args = ap.parse_args(argv)
    if args.recompare:
        results = [r for folder in args.recompare for r in recompare(folder)]
        args.pairs = max(len(r["pairs"]) for r in results)
        print(table(results, args))
        return 0
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    bad = [c for c in conditions if c not in ("quiet", "loaded", "slowdown", "spin-aa")]
    if bad or args.pairs < 1:
        print(f"bench_aa: error: unknown condition {bad[0]!r}" if bad else "bench_aa: error: --pairs must be >= 1",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-aa-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = [run_condition(c, args, work) for c in conditions]
        (work / "summary.json").write_text(json.dumps(results, indent=2))
    print(table(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
