"""Helpers for tests of cache builds shared by several processes.

To prove that processes build an artifact once even when they all find it missing, a test holds
the artifact's build lock itself, starts the processes, waits until the kernel shows each of them
blocked on that lock (``/proc/locks``), and only then lets them go.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

WAIT_LIMIT_S = 120.0  # generous: process start-up (importing torch) on a busy machine


def flock_waiters(path: Path) -> int:
    """Number of processes blocked in ``flock`` on the file at ``path`` (Linux ``/proc/locks``)."""
    try:
        inode = os.stat(path).st_ino
    except FileNotFoundError:
        return 0
    count = 0
    with open("/proc/locks") as fh:
        for line in fh:
            fields = line.split()
            if "->" not in fields:
                continue
            ids = [f for f in fields if f.count(":") == 2]
            if ids and int(ids[0].rsplit(":", 1)[1]) == inode:
                count += 1
    return count


def wait_for_waiters(path: Path, n: int, procs: list[subprocess.Popen]) -> None:
    """Return once ``n`` processes wait on the lock at ``path``; fail if one exits or none come."""
    deadline = time.monotonic() + WAIT_LIMIT_S
    while flock_waiters(path) < n:
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"a process ended before waiting on {path.name}: rc {p.returncode}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{flock_waiters(path)} of {n} processes wait on {path.name}")
        time.sleep(0.02)


def start_python(script: str, n: int, env: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """Start ``n`` Python processes running ``script`` from the repository root."""
    root = Path(__file__).resolve().parent.parent
    full_env = {**os.environ, "PYTHONPATH": str(root), **(env or {})}
    return [subprocess.Popen([sys.executable, "-c", script], cwd=root, env=full_env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]


def json_lines(procs: list[subprocess.Popen]) -> list[list[dict]]:
    """Wait for every process; each one's stdout JSON lines (a failure shows its stderr)."""
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=WAIT_LIMIT_S * 3)
        assert p.returncode == 0, stderr
        out.append([json.loads(line) for line in stdout.splitlines() if line.startswith("{")])
    return out
