"""Benchmark: one CPU sweep of 16 cases over Ray with 1 and with 2 workers.

Reports the sweep's wall-clock time with each, their ratio, and, per case, the ratio of the
median latency measured with 2 workers to that with 1 (spreading must not distort what each case
measures; on a machine with 2 cores, 2 workers share the cores with Ray itself). A script, not a
timed test. Starts Ray only in a loopback-only network namespace: it re-executes itself under
``unshare -n`` (root or user namespaces needed)::

    python scripts/bench_ray.py [--repeats 2] [--out results/bench-ray]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "HARNESS_BENCH_IN_NETNS"

SUITE = '''
import torch

from harness import Profile, Suite, Timing, Workload, variant


class RayBench(Suite):
    """Matrix products and a small MLP step at 8 sizes: 16 cases of ~1 s each on one thread."""

    name = "raybench"
    grid = {"n": [96, 128, 160, 192, 224, 256, 288, 320]}
    profiles = {"quick": Profile()}
    reference = "matmul"
    timing = Timing(warmup_s=0.1, budget_s=0.6, min_runs=10)

    def prepare(self, params, device):
        n = params["n"]
        return torch.randn(n, n), torch.nn.Sequential(torch.nn.Linear(n, 4 * n), torch.nn.GELU(), torch.nn.Linear(4 * n, n))

    @variant()
    def matmul(self, state, params):
        x, _ = state
        return Workload(lambda: x @ x @ x)

    @variant()
    def mlp(self, state, params):
        x, model = state
        return Workload(lambda: model(x))
'''


def _loopback_only() -> bool:
    return {name for _, name in socket.if_nameindex()} == {"lo"}


def sweep(workers: int, suite_path: Path, out: Path):
    import ray

    from harness.run.ray_executor import RayExecutor
    from harness.plan import plan_cases
    from harness.declare.registry import discover
    from harness.run.session import RunOptions, RunSession

    cls = discover(extra=[suite_path], builtin=False).get("raybench")
    cases = plan_cases([cls], "quick", "cpu")
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        options = RunOptions(device="cpu", profile="quick", threads=1, executor="ray")
        session = RunSession(out, cases, {"raybench": cls}, options,
                             executor=RayExecutor({"raybench": cls}, out.name, threads=1))
        t0 = time.perf_counter()
        session.run()
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return wall, {r.key: r.metrics["latency"].value for r in session.records if r.status == "ok"}, len(cases)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="sweeps per worker count, alternated (default 2)")
    p.add_argument("--out", help="keep the run folders here (default: a temporary folder)")
    args = p.parse_args()
    if os.environ.get(MARK) != "1":
        if not shutil.which("unshare"):
            print("bench_ray: needs unshare (util-linux) to run Ray in a loopback-only namespace", file=sys.stderr)
            return 2
        cmd = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, *sys.argv]
        env = {**os.environ, MARK: "1", "RAY_AUTH_MODE": "disabled",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        return subprocess.call(cmd, env=env)
    if not _loopback_only():
        print("bench_ray: the network namespace is not loopback-only; not starting Ray", file=sys.stderr)
        return 2
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-ray-"))
    base.mkdir(parents=True, exist_ok=True)
    suite_path = base / "raybench_suite.py"
    suite_path.write_text(SUITE)
    walls: dict[int, list[float]] = {1: [], 2: []}
    lat: dict[int, dict] = {1: {}, 2: {}}
    n_cases = 0
    for rep in range(args.repeats):
        for workers in (1, 2):
            wall, latencies, n_cases = sweep(workers, suite_path, base / f"w{workers}-r{rep}")
            walls[workers].append(wall)
            for key, ms in latencies.items():
                lat[workers].setdefault(key, []).append(ms)
            print(f"bench_ray: {workers} worker(s), repeat {rep + 1}: {wall:.1f} s wall", file=sys.stderr)
    med = {w: statistics.median(v) for w, v in walls.items()}
    ratios = sorted(statistics.median(lat[2][k]) / statistics.median(lat[1][k]) for k in lat[1] if k in lat[2])
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    print(f"\nRay sweep of {n_cases} CPU cases (1 torch thread per case), {args.repeats} sweep(s) per setting; "
          f"host {socket.gethostname()}, {os.cpu_count()} cores, shared with other jobs (noisy).\n")
    print("| workers | wall-clock, median [s] | all sweeps [s] |")
    print("|---|---|---|")
    for w in (1, 2):
        print(f"| {w} | {med[w]:.1f} | {', '.join(f'{x:.1f}' for x in walls[w])} |")
    print(f"\nWall-clock ratio 1 worker / 2 workers: {med[1] / med[2]:.2f}x")
    print(f"Per-case median latency, 2 workers / 1 worker, over {len(ratios)} cases: median {q[1]:.3f}x, "
          f"IQR {q[0]:.3f}-{q[2]:.3f}x, range {ratios[0]:.3f}-{ratios[-1]:.3f}x")
    print(f"Run folders: {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
