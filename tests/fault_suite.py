"""The fault suite: variants that fail in every way a user's code can, and the helpers the fault
tests share (a marker on every process of a run, so a test can prove none is left behind).

Only the standard library and pytest are imported here, so the command-line fault tests
(tests/test_fault_items.py) run against any version of the engine, older ones included.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

FAULTS = '''
import ctypes
import math
import os
import signal
import subprocess
import time

import torch

from harness import Metric, Profile, Suite, Timing, Workload, variant


class Faults(Suite):
    """Variants that fail in every way a user's code can."""

    name = "faults"
    grid = {"n": [8]}
    profiles = {"quick": Profile(timing=Timing(warmup_s=0, budget_s=0.01, min_runs=3)), "default": Profile(),
                "nightly": Profile()}
    reference = "ok"
    metrics = [Metric("quality", "", "lower", "a quality number"),
               Metric("state_ok", "", "higher", "1 when torch's global state is the default"),
               Metric("process_ok", "", "higher", "1 when cwd, environment and stdout are the run's own")]

    def prepare(self, params, device):
        return torch.ones(params["n"], params["n"])

    def _ok(self, x):
        return Workload(lambda: x @ x, metrics={"quality": 0.5})

    @variant()
    def ok(self, x, params):
        return self._ok(x)

    @variant()
    def raises(self, x, params):
        def fn():
            raise ValueError("bad value in the operation")
        return Workload(fn)

    @variant()
    def oom_torch(self, x, params):
        def fn():
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return Workload(fn)

    @variant()
    def oom_cuda_message(self, x, params):
        def fn():
            raise RuntimeError("CUDA error: out of memory")
        return Workload(fn)

    @variant()
    def oom_cpu_allocator(self, x, params):
        return Workload(lambda: torch.empty(1 << 46, dtype=torch.uint8))  # 64 TiB: the CPU allocator refuses

    @variant()
    def hang_python(self, x, params):
        def fn():
            if os.environ.get("FAULTS_HANG_MARK"):  # the test waits for this before it kills the run
                open(os.environ["FAULTS_HANG_MARK"], "a").close()
            while True:
                time.sleep(0.01)
        return Workload(fn)

    @variant()
    def hang_c(self, x, params):
        def fn():  # one long C call with the alarm signal masked: only a kill stops it
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGINT})
            ctypes.CDLL(None).sleep(600)
        return Workload(fn)

    @variant()
    def segfault(self, x, params):
        return Workload(lambda: ctypes.string_at(0))

    @variant()
    def exits(self, x, params):
        return Workload(lambda: os._exit(3))

    @variant()
    def child_hangs(self, x, params):
        def fn():
            subprocess.Popen(["sleep", "600"])  # a process of the case's own, left running
            while True:
                time.sleep(0.01)
        return Workload(fn)

    @variant()
    def nan_quality(self, x, params):
        return Workload(lambda: x @ x, metrics={"quality": math.nan})

    @variant()
    def inf_quality(self, x, params):
        return Workload(lambda: x @ x, metrics={"quality": math.inf})

    @variant()
    def leaks(self, x, params):
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        torch.set_num_threads(1)
        return Workload(lambda: x @ x)

    @variant()
    def checks_state(self, x, params):
        ok = (torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()
              and torch.get_num_threads() == int(os.environ["FAULTS_THREADS"]))
        return Workload(lambda: x @ x, metrics={"state_ok": 1.0 if ok else 0.0})

    @variant()
    def changes_process(self, x, params):
        import io
        import sys

        os.chdir(os.environ["FAULTS_ELSEWHERE"])
        os.environ["FAULTS_LEAK"] = "1"
        sys.stdout = io.StringIO()
        return Workload(lambda: x @ x)

    @variant()
    def checks_process(self, x, params):
        import io
        import sys

        ok = (os.getcwd() == os.environ["FAULTS_CWD"] and "FAULTS_LEAK" not in os.environ
              and not isinstance(sys.stdout, io.StringIO))
        return Workload(lambda: x @ x, metrics={"process_ok": 1.0 if ok else 0.0})

    @variant()
    def ok_after(self, x, params):
        return self._ok(x)
'''


FAULT_RUN_THREADS = 2  # not 1: the ``leaks`` variant sets 1, which the next case must not see


@pytest.fixture
def tag(monkeypatch):
    """A marker in the environment of every process of this test's runs."""
    value = uuid.uuid4().hex
    monkeypatch.setenv("HARNESS_FAULT_TAG", value)
    # the runs below ask for FAULT_RUN_THREADS torch threads; a variant that changes the count
    # must not leak it into the next case
    monkeypatch.setenv("FAULTS_THREADS", str(FAULT_RUN_THREADS))
    yield value
    deadline = time.monotonic() + 10
    while True:
        left = tagged_processes(value)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not left, f"processes of the run left behind: {left}"


def tagged_processes(value: str) -> list[str]:
    found = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            if f"HARNESS_FAULT_TAG={value}".encode() in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().split(")")[-1].split()[0]
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ")[:80]
                # multiprocessing's resource tracker belongs to the process that started workers
                # (here: pytest itself) and ends with it, not with the run
                if state != "Z" and b"multiprocessing.resource_tracker" not in cmdline:
                    found.append(f"{proc.name}: {cmdline!r}")
        except OSError:
            continue
    return found

@pytest.fixture
def fault_file(write_suite) -> Path:
    """The fault suite written to a file of its own."""
    return write_suite("faults", FAULTS)


def harness_process(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "harness", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def wait_for_record(out: Path, variant: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = out / "running.json"
        try:
            if running.is_file() and json.loads(running.read_text())["variant"] == variant:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{variant} never started")


def wait_for_the_hang(mark: Path, p: subprocess.Popen, timeout: float = 300) -> None:
    """Return once the worker is inside the hanging case (it touched ``mark``)."""
    deadline = time.monotonic() + timeout
    while not mark.exists():
        if p.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"hang_python never started (exit {p.poll()}): {p.stderr.read()[-2000:]}")
        time.sleep(0.05)


def ended(p: subprocess.Popen, timeout: float = 300) -> tuple[str, str]:
    """The run's output once it ends; a run that does not end is killed and fails the test."""
    try:
        return p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.communicate()
        raise AssertionError(f"the run did not end within {timeout:g} s") from None
