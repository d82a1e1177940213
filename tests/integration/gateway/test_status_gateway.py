"""``dw status`` of the session's gateway, from another process: the tree, its plugins, memory, the gateway."""
from __future__ import annotations

import json
import os
import subprocess

import ray

from tests.integration.gateway.conftest import GatewayUnderTest


def test_dw_status_shows_the_whole_warehouse_on_one_screen(gateway: GatewayUnderTest) -> None:
    env = {**os.environ, "DWRAY_RUNTIME__NAMESPACE": gateway.config.runtime.namespace}
    command = ["dw", "status", "--address", ray.get_runtime_context().gcs_address]
    result = subprocess.run([*command, "--json"], capture_output=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    report = json.loads(result.stdout)
    assert report["ready"] is True and report["readiness"] == [], report["readiness"]
    assert report["state"] == "running" and report["tree_restarts"] >= 0
    assert report["gateway"] == {"draining": False, "replicas": gateway.config.gateway.replicas}
    assert report["memory"]["level"] in ("normal", "warning") and report["memory"]["limit"] > 0
    children = {child["id"]: child for child in report["children"]}
    assert children["catalog"]["breaker"] in ("closed", "half_open") and children["catalog"]["state"] == "running"
    assert all(isinstance(child["standby"], bool) for child in children.values())

    human = subprocess.run(command, capture_output=True, env=env, timeout=120)
    assert human.returncode == 0, human.stderr.decode()[-2000:]
    text = human.stdout.decode()
    assert "running, ready" in text and "tree restarts:" in text and "last failure:" in text
    assert f"memory: {report['memory']['level']}" in text
    assert f"gateway: {gateway.config.gateway.replicas} replica(s) reporting" in text
    assert "breaker" in text and "standby" in text and "not ready because" not in text
