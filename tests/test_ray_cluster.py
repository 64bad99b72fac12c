"""A simulated two-node Ray cluster: one sweep, one run folder, both nodes' fingerprints.

Runs in a loopback-only network namespace (tests/netns.py).
"""

from __future__ import annotations

import json

import pytest

from netns import in_private_netns

pytest.importorskip("ray", reason="Ray is not installed (pip install 'dl-harness[ray]')")
pytestmark = pytest.mark.netns

from harness.cli import main  # noqa: E402
from harness.results import load_results  # noqa: E402

from test_ray import SPREAD_SUITE  # noqa: E402


@pytest.fixture(scope="module")
def two_nodes():
    if not in_private_netns():
        yield None
        return
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                            "include_dashboard": False})
    cluster.add_node(num_cpus=1, num_gpus=0)
    cluster.wait_for_nodes()
    yield cluster.address
    cluster.shutdown()


def test_cases_on_both_nodes_in_one_run_folder(two_nodes, write_suite, tmp_path, monkeypatch, capsys):
    path = write_suite("spread_suite", SPREAD_SUITE)
    monkeypatch.setenv("SPREAD_PREPARE_S", "1")
    out = tmp_path / "cluster"
    code = main(["run", str(path), "--executor", "ray", "--ray-address", two_nodes, "--variant", "matmul,tanh",
                 "--out", str(out), "--quiet"])
    assert code == 0
    env = json.loads((out / "environment.json").read_text())
    assert len(env["nodes"]) == 2
    for node in env["nodes"].values():
        assert node["python"] and node["torch"] and node["cpu"]  # each node's own fingerprint
    run = load_results(out)
    assert len(run.records) == 8 and all(r.status == "ok" for r in run.records)
    ran_on = {r.info["placement"]["node_id"] for r in run.records}
    assert ran_on == set(env["nodes"])
    for n in (8, 16, 24, 32):  # the variants of a point stay on one node
        assert len({r.info["placement"]["node_id"] for r in run.records if r.params["n"] == n}) == 1
    # compare treats the run as one device (the same CPU on both nodes) and says so
    assert main(["compare", str(out), str(out), "--format", "json"]) in (0, 1)
    assert "2 node(s)" in capsys.readouterr().out
