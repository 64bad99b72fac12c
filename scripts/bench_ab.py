"""How well the paired gate (``harness ab``) sees real slowdowns, against the unpaired ``compare``.

In a temporary clone of this repository the script commits, on top of the checked-out commit
(the base), one change per size (+10%, +25%, +100% by default) that makes one variant of each
chosen suite slower by that fraction of its own time: the variant's operation, after it has
run, keeps its core busy for that fraction of the time it took (so the slowdown is exact by
construction, whatever the machine's state; the other variants are untouched). Default suites
and variants, chosen for their count of quick-profile cases on the CPU:

    attention/performer (16 of 88 cases), normalization/rmsnorm_plain (2 of 10),
    upsampling/pixel_shuffle (4 of 16)

Then, quiet and under a background load it starts and stops itself (one CPU-bound process per
core), it runs:

- ``harness ab BASE CHANGED`` for every change size, ``--repeats`` times: a slowed case is
  found when its time verdict is ``slower``; an untouched case is flagged when it is judged
  ``slower`` or ``faster``; the gate fails when ``ab`` exits 1;
- ``harness ab BASE BASE`` (A/A) ``--aa`` times, on ``--aa-suites``: the gate must not fail;
- the unpaired way, for the same pairs: ``harness run`` of each side (``--rounds``, one thread),
  then ``harness compare``;

and prints one table per way: detection of each change (cases whose A median is >= 50 us),
untouched cases flagged, A/A gate failures, and the wall time of ``ab`` against the two plain
runs of the same cases. A benchmark, not a test: it takes an hour or more, and its numbers
belong to the machine it ran on.

    python scripts/bench_ab.py                                   # everything (about 1-2 hours)
    python scripts/bench_ab.py --changes 100 --repeats 1 --aa 2 --conditions quiet --suites normalization
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_aa import Background  # noqa: E402  (the background load of the A/A benchmark)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SUITES = {"attention": "performer", "normalization": "rmsnorm_plain", "upsampling": "pixel_shuffle"}
MIN_MEDIAN_MS = 0.05  # detection is counted for cases at least this long (50 us)
# the installed harness, not the working folder's harness/ (a checkout of a side): '' leaves sys.path
HARNESS_MAIN = "import sys; sys.path.pop(0); from harness.cli import main; sys.exit(main(sys.argv[1:]))"

SLOWDOWN = '''

# --- bench_ab: variant {variant!r} of this suite does {pct}% more work per call ---------------
def _bench_ab_slow_down(cls, variant, fraction):
    import dataclasses
    import time as _time

    method_name = cls.variants()[variant].method_name
    method = getattr(cls, method_name)

    def slowed(self, state, params):
        workload = method(self, state, params)
        inner = workload.fn

        def fn():
            t0 = _time.perf_counter()
            out = inner()
            end = t0 + (_time.perf_counter() - t0) * (1.0 + fraction)
            while _time.perf_counter() < end:  # the core stays busy: work, not a sleep
                pass
            return out

        return dataclasses.replace(workload, fn=fn)

    setattr(cls, method_name, slowed)


_bench_ab_slow_down({cls}, {variant!r}, {fraction})
'''


def sh(*cmd: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"bench_ab: {' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done


def suite_class_name(path: Path, suite: str) -> str:
    """The class in ``path`` whose ``name`` is ``suite``."""
    code = (f"import sys; sys.path.insert(0, {str(path.parent.parent)!r})\n"
            f"from harness.declare.registry import discover\n"
            f"print(discover(extra=[{str(path)!r}], builtin=False).get({suite!r}).__qualname__)")
    return sh(sys.executable, "-c", code).stdout.strip().splitlines()[-1]


def make_repository(work: Path, suites: dict[str, str], changes: list[int]) -> tuple[Path, str, dict[int, str]]:
    """A clone of this checkout's HEAD and one commit per change size on top of it."""
    repo = work / "repo"
    sh("git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(repo))
    git = ("git", "-c", "user.email=bench@example.com", "-c", "user.name=bench")
    base = sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()
    commits = {}
    for pct in changes:
        sh("git", "checkout", "--quiet", "--detach", base, cwd=repo)
        for suite, variant in suites.items():
            path = repo / "suites" / f"{suite}.py"
            cls = suite_class_name(path, suite)
            path.write_text(path.read_text() + SLOWDOWN.format(variant=variant, pct=pct, cls=cls,
                                                               fraction=pct / 100.0))
        sh(*git, "commit", "--quiet", "-am", f"bench_ab: +{pct}% in {', '.join(f'{s}/{v}' for s, v in suites.items())}",
           cwd=repo)
        commits[pct] = sh("git", "rev-parse", "HEAD", cwd=repo).stdout.strip()
    sh("git", "checkout", "--quiet", "--detach", base, cwd=repo)
    return repo, base, commits


def harness(*args: str, cwd: Path, env: dict) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", HARNESS_MAIN, *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"bench_ab: harness {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-800:]}")
    return done.returncode, time.perf_counter() - t0, done.stderr


def time_rows(report: dict) -> list[dict]:
    return [r for r in report["rows"] if r["metric"] == "latency"]


def tally(rows: list[dict], slowed: dict[str, str], gate: int, seconds: float) -> dict:
    """Per pair: slowed cases found (median >= 50 us), untouched cases flagged, the gate's exit."""
    out = Counter()
    for r in rows:
        is_slowed = slowed.get(r["suite"]) == r["variant"]
        if is_slowed:
            if r["a"] is not None and r["a"] >= MIN_MEDIAN_MS:
                out["slowed"] += 1
                out["found"] += r["verdict"] == "slower"
            else:
                out["slowed_short"] += 1
        else:
            out["untouched"] += 1
            out["flagged"] += r["verdict"] in ("slower", "faster")
    out["gate_failed"] += gate == 1
    out["pairs"] += 1
    out["seconds"] += seconds
    return dict(out)


def add(total: dict, part: dict) -> None:
    for k, v in part.items():
        total[k] = total.get(k, 0) + v


def run_ab(repo: Path, a: str, b: str, suites: list[str], out: Path, env: dict, threads: int) -> tuple[int, float, dict]:
    code, seconds, _ = harness("ab", a, b, *suites, "--device", "cpu", "--threads", str(threads), "--out", str(out),
                               "--quiet", "--no-progress", cwd=repo, env=env)
    return code, seconds, json.loads((out / "ab.json").read_text())["comparison"]


def run_unpaired(repo: Path, commit: str, suites: list[str], out: Path, env: dict, rounds: int, threads: int) -> float:
    """``harness run`` in a checkout of ``commit``, with its own engine and suites, as a nightly run
    of that commit would measure them."""
    tree = out.parent.parent / f"tree-{commit[:10]}"
    if not tree.is_dir():
        sh("git", "worktree", "add", "--quiet", "--detach", str(tree), commit, cwd=repo)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", "run", *suites, "--profile", "quick", "--device", "cpu",
                           "--rounds", str(rounds), "--threads", str(threads), "--quiet", "--no-progress",
                           "--allow-failures", "--out", str(out)], cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_ab: harness run at {commit[:10]} failed ({done.returncode}): {done.stderr[-800:]}")
    return time.perf_counter() - t0


def unpaired_pair(repo: Path, a: str, b: str, suites: list[str], folder: Path, env: dict, args
                  ) -> tuple[int, float, dict]:
    """The unpaired way: a plain run of each commit, one after the other, then ``harness compare``."""
    seconds = sum(run_unpaired(repo, commit, suites, folder / side, env, args.rounds, args.threads)
                  for side, commit in (("a", a), ("b", b)))
    code, _, _ = harness("compare", str(folder / "a"), str(folder / "b"), "--format", "json", "--output",
                         str(folder / "compare.json"), cwd=repo, env=env)
    return code, seconds, json.loads((folder / "compare.json").read_text())


def bench(args, work: Path) -> dict:
    suites = {s: DEFAULT_SUITES.get(s, "") for s in args.suites.split(",")}
    if args.variants:
        for item in args.variants.split(","):
            s, _, v = item.partition("/")
            suites[s] = v
    missing = [s for s, v in suites.items() if not v]
    if missing:
        raise SystemExit(f"bench_ab: name the variant to slow in {', '.join(missing)} (--variants SUITE/VARIANT)")
    changes = [int(c) for c in args.changes.split(",")]
    repo, base, commits = make_repository(work, suites, changes)
    env = {**os.environ, "HARNESS_CACHE_DIR": str(work / "cache")}
    names = list(suites)
    results: dict = {"suites": suites, "base": base, "conditions": {}}
    for condition in args.conditions.split(","):
        load = Background(os.cpu_count() or 2) if condition == "loaded" else None
        try:
            cond: dict = {"paired": {}, "unpaired": {}, "aa": {}, "aa_unpaired": {}}
            for pct, commit in commits.items():
                for rep in range(args.repeats):
                    folder = work / condition / f"ab-{pct}-{rep}"
                    code, seconds, report = run_ab(repo, base, commit, names, folder, env, args.threads)
                    add(cond["paired"].setdefault(pct, {}), tally(time_rows(report), suites, code, seconds))
                    if args.unpaired:
                        code, seconds, report = unpaired_pair(repo, base, commit, names,
                                                              work / condition / f"plain-{pct}-{rep}", env, args)
                        add(cond["unpaired"].setdefault(pct, {}), tally(time_rows(report), suites, code, seconds))
                    print(f"bench_ab: {condition} +{pct}% #{rep + 1}: {cond['paired'][pct]}", file=sys.stderr, flush=True)
            aa_suites = args.aa_suites.split(",")
            for rep in range(args.aa):
                folder = work / condition / f"aa-{rep}"
                code, seconds, report = run_ab(repo, base, base, aa_suites, folder, env, args.threads)
                add(cond["aa"], tally(time_rows(report), {}, code, seconds))
                if args.unpaired and rep < args.aa_unpaired:
                    code, seconds, report = unpaired_pair(repo, base, base, aa_suites,
                                                          work / condition / f"aa-plain-{rep}", env, args)
                    add(cond["aa_unpaired"], tally(time_rows(report), {}, code, seconds))
            print(f"bench_ab: {condition} A/A: {cond['aa']}", file=sys.stderr, flush=True)
        finally:
            if load is not None:
                load.stop()
        results["conditions"][condition] = cond
    return results


def pct(n: int, d: int) -> str:
    return f"{n}/{d} ({100.0 * n / d:.0f}%)" if d else "n/a"


def table(results: dict, way: str, aa_key: str) -> str:
    lines = ["| condition | change | slowed cases found (>= 50 us) | untouched flagged | gate failed | "
             "wall time per pair |", "|---|---|---|---|---|---|"]
    for condition, cond in results["conditions"].items():
        for change, t in cond[way].items():
            lines.append(f"| {condition} | +{change}% | {pct(t.get('found', 0), t.get('slowed', 0))} | "
                         f"{pct(t.get('flagged', 0), t.get('untouched', 0))} | "
                         f"{pct(t.get('gate_failed', 0), t.get('pairs', 0))} | "
                         f"{t.get('seconds', 0) / max(1, t.get('pairs', 1)):.0f} s |")
        aa = cond.get(aa_key) or {}
        if aa:
            lines.append(f"| {condition} | A/A | - | {pct(aa.get('flagged', 0), aa.get('untouched', 0))} | "
                         f"{pct(aa.get('gate_failed', 0), aa.get('pairs', 0))} | "
                         f"{aa.get('seconds', 0) / max(1, aa.get('pairs', 1)):.0f} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suites", default=",".join(DEFAULT_SUITES), help="suites whose variant is slowed")
    ap.add_argument("--variants", default="", help="SUITE/VARIANT,... to slow (default: the built-in choice)")
    ap.add_argument("--changes", default="10,25,100", help="slowdowns in percent")
    ap.add_argument("--repeats", type=int, default=2, help="pairs per change and condition")
    ap.add_argument("--aa", type=int, default=20, help="A/A ab runs per condition")
    ap.add_argument("--aa-suites", default="normalization,upsampling", help="suites of the A/A runs")
    ap.add_argument("--aa-unpaired", type=int, default=5, help="A/A pairs of plain runs per condition")
    ap.add_argument("--conditions", default="quiet,loaded")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of each plain run (the nightly default)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-unpaired", dest="unpaired", action="store_false", help="leave out the plain runs")
    ap.add_argument("--out", help="keep everything here (default: a temporary folder)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_ab-") as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        results = bench(args, work)
        (work / "bench_ab.json").write_text(json.dumps(results, indent=2))
        print(f"\nharness ab (paired), suites {results['suites']}, {args.threads} thread(s):\n")
        print(table(results, "paired", "aa"))
        if args.unpaired:
            print(f"\nharness run --rounds {args.rounds} twice, then harness compare (unpaired), same pairs:\n")
            print(table(results, "unpaired", "aa_unpaired"))
        print(f"\nbench_ab: {time.perf_counter() - t0:.0f} s in all; machine: {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
