"""Run a test module inside a private network namespace where only loopback exists.

Ray, started plainly, advertises the machine's own network address; on machines where only
loopback traffic is allowed every test that starts Ray must run where no other address exists.
A module marked ``pytest.mark.netns`` is run once, as a whole, by a child pytest under
``unshare -n sh -c 'ip link set lo up; exec ...'`` (needs root or user namespaces), with
``RAY_AUTH_MODE=disabled``; each test of the outer session then reports the outcome its twin
had in the child. Fixtures that start Ray must check :func:`in_private_netns` first.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

IN_NETNS = "HARNESS_TEST_IN_NETNS"
_cache: dict[str, dict[str, tuple[str, str]]] = {}


def in_private_netns() -> bool:
    """True in the child pytest, where the only network interface is loopback."""
    if os.environ.get(IN_NETNS) != "1":
        return False
    # the interfaces of this process's network namespace (/sys/class/net shows the mount's)
    interfaces = {name for _, name in socket.if_nameindex()}
    if interfaces != {"lo"}:
        raise RuntimeError(f"{IN_NETNS}=1 but the network namespace has {sorted(interfaces)}; refusing to start Ray")
    return True


def netns_unavailable() -> str | None:
    """Why a private network namespace cannot be made here, or None."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "needs unshare and ip (util-linux, iproute2) for a loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make a private network namespace (unshare -n: {probe.stderr.strip()[:120]})"
    return None


def loopback_only_command(argv: list[str]) -> list[str]:
    """``argv`` wrapped to run in a fresh network namespace with only loopback up."""
    return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *argv]


def _run_module(path: Path, basetemp: Path) -> dict[str, tuple[str, str]]:
    xml = basetemp / f"{path.stem}-netns.xml"
    env = {**os.environ, IN_NETNS: "1", "RAY_AUTH_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    cmd = loopback_only_command([sys.executable, "-m", "pytest", str(path), "-q", "-p", "no:cacheprovider",
                                 "-o", "addopts=", "--junitxml", str(xml), "--basetemp", str(basetemp / "inner")])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    if not xml.is_file():
        raise RuntimeError(f"the test module did not run in the namespace (exit {proc.returncode}): "
                           f"{(proc.stdout + proc.stderr)[-2000:]}")
    outcomes: dict[str, tuple[str, str]] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        outcome, text = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, text = "failed", (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag == "skipped":
                outcome, text = "skipped", child.get("message") or ""
        if outcome == "failed" or case.get("name") not in outcomes:
            outcomes[case.get("name")] = (outcome, text)
    return outcomes


def outcome_in_netns(item) -> bool | None:
    """For a ``netns`` test outside the namespace: the outcome of its twin in the child run."""
    if in_private_netns():
        return None  # this is the child: run the test body
    if os.environ.get(IN_NETNS) == "1":  # never nest
        pytest.fail("netns test in a child run that is not in a private namespace", pytrace=False)
    why = netns_unavailable()
    if why:
        pytest.skip(why)
    path = Path(str(item.fspath))
    if str(path) not in _cache:
        basetemp = item.config._tmp_path_factory.mktemp(f"netns-{path.stem}")
        _cache[str(path)] = _run_module(path, basetemp)
    outcome, text = _cache[str(path)].get(item.name, ("failed", "the test did not run in the namespace"))
    if outcome == "skipped":
        pytest.skip(text)
    if outcome == "failed":
        pytest.fail(f"in the loopback-only namespace: {text}", pytrace=False)
    return True
