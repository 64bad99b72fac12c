"""Shared fixtures: a private cache folder, and writing small suite files for tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Generated weights and datasets go to a per-session folder, never the user's cache."""
    cache = tmp_path_factory.getbasetemp() / "harness-cache"
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(cache))


@pytest.fixture
def write_suite(tmp_path):
    """Write a suite file from source text (dedented) and return its path."""

    def write(name: str, source: str, folder: Path | None = None) -> Path:
        target = (folder or tmp_path) / f"{name}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(source))
        return target

    return write


TOY_SUITE = '''
import os
import time

import torch

from harness import Metric, Profile, Skip, Suite, Timing, Workload, variant


class Toy(Suite):
    """A toy suite whose variants succeed, raise, run out of memory, hang or die."""

    name = "toy"
    grid = {"n": [8, 16]}
    profiles = {"quick": Profile(grid={"n": [8]}, timing=Timing(warmup_s=0, budget_s=0.01, min_runs=3))}
    reference = "ok"
    metrics = [Metric("score", "points", "higher")]
    timing = Timing(warmup_s=0, budget_s=0.01, min_runs=3)

    def prepare(self, params, device):
        return torch.ones(params["n"], params["n"])

    @variant()
    def ok(self, state, params):
        return Workload(lambda: state @ state)

    @variant()
    def raises(self, state, params):
        def fn():
            raise ValueError("bad value in the operation")
        return Workload(fn)

    @variant()
    def oom(self, state, params):
        def fn():
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return Workload(fn)

    @variant()
    def hangs(self, state, params):
        return Workload(lambda: time.sleep(60))

    @variant()
    def dies(self, state, params):
        return Workload(lambda: os.kill(os.getpid(), 9))

    @variant(requires=("cuda",))
    def gpu_only(self, state, params):
        return Workload(lambda: state @ state)

    @variant()
    def skips(self, state, params):
        raise Skip("not meaningful at this size")

    def wants_output(self, variant):
        return variant == "ok"

    def evaluate(self, state, params, variant, output):
        return {"score": float(output.sum())}
'''


@pytest.fixture
def toy_suite_file(write_suite):
    return write_suite("toy_suite", TOY_SUITE)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    """Tests marked ``netns`` (they start Ray) run in a loopback-only network namespace."""
    if pyfuncitem.get_closest_marker("netns") is None:
        return None
    from netns import outcome_in_netns

    return outcome_in_netns(pyfuncitem)
