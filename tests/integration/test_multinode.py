"""The warehouse across two Ray nodes: storage pinned to node A, a driver task on node B.

The test process is the driver of the session's Ray, and a driver connects
to one cluster only, so the two-node ``ray.cluster_utils.Cluster`` runs in a
child process (``_multinode_driver.py``; its docstring describes the layout).
The child prints ``RESULT <json>`` and exits 0, or prints ``FAIL: <why>`` and
exits non-zero; this test checks both the exit and what the result reports.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration._multinode_driver import payloads

DRIVER = Path(__file__).with_name("_multinode_driver.py")
ROOT = Path(__file__).resolve().parents[2]


def test_storage_on_node_a_serves_a_driver_task_on_node_b(tmp_path: Path) -> None:
    # Nothing from this process's Ray may leak in (ray.init() sets RAY_AUTH_MODE in os.environ).
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("DWRAY_", "RAY_ADDRESS", "RAY_AUTH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "work")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=240, check=False)
    output = f"--- stdout\n{proc.stdout[-6000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, f"the multi-node driver failed ({proc.returncode}):\n{output}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, output
    result = json.loads(lines[0][len("RESULT "):])
    assert result["ok"] is True

    # The nodes were two, and every part ran where the config put it.
    node_a, node_b = result["node_a"], result["node_b"]
    assert node_a != node_b and len(node_a) == len(node_b) == 56
    assert result["address"].startswith("127.0.0.2:")  # loopback only
    assert result["task_node_id"] == node_b
    expected = {"storage:local": node_a, "catalog": node_a, "kms:local": node_a,
                "stage:frames:0": node_b, "stage:frames:1": node_b}
    assert result["placement"] == {child: {"status": node, "host": node} for child, node in expected.items()}

    # Every object came back byte for byte (the driver compared the bytes; here the digests).
    data = payloads()
    assert result["objects"] == {key: {"size": len(value), "sha256": hashlib.sha256(value).hexdigest()}
                                 for key, value in data.items()}
    assert result["ranges_ok"] is True
    assert "processes are gone" in proc.stdout
