"""A study on a real two-node Ray cluster (`--address`), each node in its own namespace.

Each node has one CPU and each trial needs one, so two trials run at once only if both
nodes take one: the Ray node ids stored with the trials must name both nodes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import study_helpers as helpers
from cluster_helpers import can_build_namespaces, ray_cluster

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_study_on_a_two_node_cluster_uses_both_nodes(tmp_path):
    reason = can_build_namespaces()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the cluster test must run under CI: {reason}")
        pytest.skip(reason)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    with ray_cluster(cpus_per_node=1) as cluster:
        proc = cluster.run_in_head(
            helpers.launch_command(
                url,
                "two-nodes",
                tmp_path / "ray",
                *("--address", cluster.address, "--norms", "none,l2", "--lr-points", "2"),
                *("--lr-min", "0.01", "--lr-max", "0.1", "--epochs", "3", "--batch-size", "16"),
                *("--cpus-per-trial", "1"),
            ),
            cwd=REPO,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "up to 2 at once" in proc.stdout
    rows = helpers.trials(url, "two-nodes")
    assert len(rows) == 4 and {r.state for r in rows} == {"COMPLETE"}
    assert len({r.node_id for r in rows}) == 2
    assert all(r.hostname and r.device_name.startswith("cpu") for r in rows)
