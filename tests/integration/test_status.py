"""``dw status``: the plugin tree of a running warehouse, read from another process."""
from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import ray


def dw_status(namespace: str, *args: str) -> subprocess.CompletedProcess:
    address = ray.get_runtime_context().gcs_address
    env = {**os.environ, "DWRAY_RUNTIME__NAMESPACE": namespace}
    return subprocess.run(["dw", "status", "--address", address, *args], capture_output=True, env=env,
                          timeout=120)


def test_status_shows_every_plugin(ray_warehouse: Any) -> None:
    namespace = ray_warehouse.config.runtime.namespace
    result = dw_status(namespace, "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["ready"] is True, report["reason"]
    children = {child["id"]: child for child in report["children"]}
    assert {"settings", "catalog", "kms:local", "storage:local", "stage:frames:0", "stage:frames:1"} <= set(children)
    for child in children.values():
        assert child["state"] == "running"
        assert child["generation"] >= 1 and child["restarts"] >= 0 and child["pid"]
    human = dw_status(namespace)
    assert human.returncode == 0
    text = human.stdout.decode()
    assert "ready" in text and "storage:local" in text and "stage:frames:1" in text


def test_status_without_a_warehouse_says_so(ray_session: Any) -> None:
    result = dw_status("dwray-nothing-here")
    assert result.returncode == 1
    message = result.stderr.decode()
    assert "no warehouse supervisor" in message and "dwray-nothing-here" in message
