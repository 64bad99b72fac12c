"""The Ray executor on a local Ray with two logical GPUs (CPU-only cases, fake GPU resources).

Runs in a loopback-only network namespace (tests/netns.py); one Ray instance for the module.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns import in_private_netns

pytest.importorskip("ray", reason="Ray is not installed (pip install 'dl-harness[ray]')")
pytestmark = pytest.mark.netns

from harness import run_suites  # noqa: E402
from harness.run.ray_executor import RayExecutor  # noqa: E402
from harness.plan import plan_cases  # noqa: E402
from harness.declare.registry import discover  # noqa: E402
from harness.results import load_results  # noqa: E402
from harness.run.session import RunOptions, RunSession  # noqa: E402

SPREAD_SUITE = '''
import os
import signal
import time

import torch

from harness import Metric, Profile, Suite, Timing, Workload, variant


class Spread(Suite):
    """Seeded data per grid point; a quality metric that depends on every bit of it."""

    name = "spread"
    grid = {"n": [8, 16, 24, 32]}
    profiles = {"quick": Profile()}
    reference = "matmul"
    metrics = [Metric("checksum", "1")]
    timing = Timing(warmup_s=0, budget_s=0.02, min_runs=3)

    def prepare(self, params, device):
        time.sleep(float(os.environ.get("SPREAD_PREPARE_S", "0.5")))  # so two points overlap in time
        return torch.randn(params["n"], params["n"])

    @variant()
    def matmul(self, state, params):
        return Workload(lambda: state @ state)

    @variant()
    def tanh(self, state, params):
        return Workload(lambda: torch.tanh(state) @ state)

    @variant()
    def dies(self, state, params):
        return Workload(lambda: os.kill(os.getpid(), signal.SIGKILL))

    @variant()
    def hangs(self, state, params):
        return Workload(lambda: time.sleep(120))

    @variant()
    def stuck(self, state, params):
        def fn():  # the worker's own alarm cannot end this one: the driver cancels the task
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(120)
        return Workload(fn)

    def wants_output(self, variant):
        return True

    def evaluate(self, state, params, variant, output):
        return {"checksum": float((output.double() * torch.arange(output.numel()).view_as(output)).sum())}
'''


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs and 2 logical GPUs, only in the loopback-only namespace."""
    if not in_private_netns():
        yield None
        return
    import ray

    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def spread(write_suite):
    path = write_suite("spread_suite", SPREAD_SUITE)
    return path, discover(extra=[path], builtin=False).get("spread")


def _session(cls, folder, variants, timeout_s=None, overrides=None, **executor_kw):
    cases = plan_cases([cls], "quick", "cpu", overrides=overrides, only_variants=variants)
    options = RunOptions(device="cpu", profile="quick", variants=variants, timeout_s=timeout_s, executor="ray")
    executor = RayExecutor({"spread": cls}, "t", gpus_per_task=1, **executor_kw)
    return RunSession(folder, cases, {"spread": cls}, options, executor=executor)


def test_points_spread_over_gpus_and_match_a_sequential_run(ray_local, spread, tmp_path):
    path, cls = spread
    variants = ["matmul", "tanh"]
    sequential = run_suites([cls], profile="quick", device="cpu", out=tmp_path / "seq", variants=variants)
    session = _session(cls, tmp_path / "ray", variants)
    spread_run = session.run()

    # same cases, bit-identical quality metrics
    seq = {r.key: r for r in sequential.records}
    par = {r.key: r for r in load_results(tmp_path / "ray").records}
    assert set(seq) == set(par) and len(par) == 8
    for key, record in par.items():
        assert record.status == "ok"
        assert record.metrics["checksum"].value == seq[key].metrics["checksum"].value
        assert record.metrics["checksum"].value.hex() == seq[key].metrics["checksum"].value.hex()

    # every variant of a point ran on one GPU, in one worker; the sweep used both GPUs
    by_point: dict[int, set] = {}
    for r in spread_run.records:
        where = r.info["placement"]
        by_point.setdefault(r.params["n"], set()).add((where["cuda_visible_devices"], where["worker_pid"]))
    assert all(len(v) == 1 for v in by_point.values()), by_point
    used = {next(iter(v))[0] for v in by_point.values()}
    assert used == {"0", "1"}

    # the run folder says where it ran: one node, two GPUs, one device
    env = json.loads((tmp_path / "ray" / "environment.json").read_text())
    (node,) = env["nodes"].values()
    assert set(node["gpus"]) == {"0", "1"} and env["devices_differ"] is False
    meta = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert meta["state"] == "finished" and meta["executor"] == "ray"


def test_crash_and_hangs_become_records_and_the_sweep_goes_on(ray_local, spread, tmp_path):
    path, cls = spread
    variants = ["matmul", "dies", "hangs", "stuck", "tanh"]
    os.environ["SPREAD_PREPARE_S"] = "0"
    try:
        # two points (one per CPU) and a limit far above a healthy case's time even on a loaded
        # machine, where each replaced worker imports torch again
        session = _session(cls, tmp_path / "faults", variants, timeout_s=15, overrides={"n": [8, 16]},
                           kill_grace_s=2)
        session.run()
    finally:
        os.environ.pop("SPREAD_PREPARE_S")
    statuses = {(r.params["n"], r.variant): r.status for r in session.records}
    why = {f"{r.variant} n={r.params['n']}": f"{r.status}: {r.reason}" for r in session.records}  # shown on failure
    assert len(statuses) == len(session.records) == 10
    for n in (8, 16):
        assert statuses[(n, "matmul")] == statuses[(n, "tanh")] == "ok", why
        assert statuses[(n, "dies")] == "crashed"
        assert statuses[(n, "hangs")] == "timeout"  # the worker's alarm
        assert statuses[(n, "stuck")] == "timeout"  # cancelled by the driver
    stuck = next(r for r in session.records if r.variant == "stuck")
    assert "cancelled" in stuck.reason


def test_killed_driver_then_resume_finishes_the_sweep(ray_local, spread, tmp_path):
    path, cls = spread
    out = tmp_path / "killed"
    env = {**os.environ, "SPREAD_PREPARE_S": "1.5", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    argv = [sys.executable, "-m", "harness", "run", str(path), "--executor", "ray", "--ray-address", ray_local,
            "--variant", "matmul,tanh", "--out", str(out), "--quiet", "--no-progress"]
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and driver.poll() is None:
        if records.is_file() and len(records.read_text().splitlines()) >= 2:
            break
        time.sleep(0.1)
    assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    done_before = len(records.read_text().splitlines())
    assert 2 <= done_before < 8

    resumed = subprocess.run([sys.executable, "-m", "harness", "run", "--resume", str(out), "--quiet",
                              "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    run = load_results(out)
    assert run.finished and len(run.records) == 8
    assert len({r.key for r in run.records}) == 8
    assert all(r.status == "ok" for r in run.records)
