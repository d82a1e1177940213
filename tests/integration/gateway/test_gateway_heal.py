"""The gateway heals: its coordinator killed (SIGKILL, or removed for good) and a replica killed with SIGKILL.

On the session's gateway: each test waits, boundedly, until the gateway is
whole again (its coordinator alive with every replica reporting, Serve's
replicas all running, readiness 200), so the tests after it find it healthy.
The PIDs come from the GCS actor table, the way an operator's ``kill -9``
would pick them.
"""
from __future__ import annotations

import os
import signal
from typing import Any

import ray
import requests
from prometheus_client.parser import text_string_to_metric_families

from actors.gateway_coordinator import DEFAULT_NAME, find_coordinator
from tests.helpers import wait_until
from tests.integration.gateway.clients import unique_bucket_name
from tests.integration.gateway.conftest import GatewayUnderTest

HEAL_SECONDS = 90  # a replica's restart attaches to the warehouse again; generous on a loaded 2-core machine


def alive_actors(**match: str) -> list[dict[str, Any]]:
    """Rows of the GCS actor table that are ALIVE and match every given field."""
    from ray._private import state as gcs_state

    rows = gcs_state.actors().values()
    return [row for row in rows if row["State"] == "ALIVE" and all(row.get(k) == v for k, v in match.items())]


def coordinator_pid(gateway: GatewayUnderTest) -> int:
    namespace = gateway.config.runtime.namespace
    handle = find_coordinator(namespace)
    assert handle is not None
    rows = alive_actors(Name=DEFAULT_NAME, ActorID=handle._actor_id.hex())
    assert len(rows) == 1, rows
    return int(rows[0]["Pid"])


def families(gateway: GatewayUnderTest) -> dict[str, list[Any]] | None:
    response = requests.get(f"{gateway.endpoint}/metrics", timeout=30)
    if response.status_code != 200:
        return None
    return {f.name: list(f.samples) for f in text_string_to_metric_families(response.text)}


def whole_again(gateway: GatewayUnderTest) -> bool:
    """Readiness 200 and /metrics built from every replica's report (so they reach the coordinator)."""
    try:
        if requests.get(f"{gateway.endpoint}/healthz/ready", timeout=10).status_code != 200:
            return False
        found = families(gateway)
    except requests.RequestException:
        return False
    return bool(found) and found["dwray_gateway_replicas"][0].value == gateway.config.gateway.replicas


def test_a_coordinator_killed_with_sigkill_is_restarted(gateway: GatewayUnderTest) -> None:
    before = coordinator_pid(gateway)
    os.kill(before, signal.SIGKILL)
    wait_until(lambda: whole_again(gateway) and coordinator_pid(gateway) != before, timeout=HEAL_SECONDS,
               interval=0.5, what="the coordinator restarted by Ray, with every replica reporting")
    # The resilience series are on the page: this replica's breakers and memory, the supervisor's state.
    found = families(gateway)
    assert found is not None
    breakers = {(s.labels["child"], s.labels["state"]): s.value for s in found["dwray_breaker_state"]}
    assert breakers[("catalog", "closed")] == 1 and breakers[("catalog", "open")] == 0
    in_flight = [s.value for s in found["dwray_bulkhead_in_flight"] if s.labels["child"] == "catalog"]
    assert len(in_flight) == gateway.config.gateway.replicas and min(in_flight) >= 0
    assert {s.labels["child"] for s in found["dwray_bulkhead_rejected"]} >= {"catalog"}
    levels = {s.labels["level"]: s.value for s in found["dwray_memory_level"]}
    assert sorted(levels) == ["critical", "normal", "warning"] and sum(levels.values()) == 1
    assert found["dwray_memory_limit_bytes"][0].value >= found["dwray_memory_used_bytes"][0].value > 0
    states = {s.labels["state"]: s.value for s in found["dwray_supervisor_state"]}
    assert states["running"] == 1
    assert [s.value for s in found["dwray_supervisor_tree_restarts"] if s.name.endswith("_total")] == [0]


def test_a_coordinator_removed_for_good_is_created_again(gateway: GatewayUnderTest, s3: Any) -> None:
    namespace = gateway.config.runtime.namespace
    old = find_coordinator(namespace)
    assert old is not None
    ray.kill(old)  # no restart: the replicas create it again

    def replaced() -> bool:
        new = find_coordinator(namespace)
        return new is not None and new._actor_id != old._actor_id and whole_again(gateway)

    wait_until(replaced, timeout=HEAL_SECONDS, interval=0.5, what="a new coordinator with every replica reporting")
    new = find_coordinator(namespace)
    assert ray.get(new.control.remote(), timeout=10)["draining"] is False
    bucket = unique_bucket_name()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="after", Body=b"still serving")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"still serving"


def test_a_replica_killed_with_sigkill_is_replaced(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    from ray import serve

    s3.put_object(Bucket=bucket, Key="before", Body=b"kept")
    replicas = [row for row in alive_actors() if str(row.get("ActorClassName", "")).startswith("ServeReplica:")
                and str(row.get("ActorClassName", "")).endswith(":gateway")]
    assert len(replicas) == gateway.config.gateway.replicas, replicas
    os.kill(int(replicas[0]["Pid"]), signal.SIGKILL)

    def serves() -> bool:
        try:
            return s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"kept"
        except Exception:  # noqa: BLE001 - refused or cut while Serve replaces the replica
            return False

    wait_until(serves, timeout=HEAL_SECONDS, interval=0.5, what="S3 served again after the replica was killed")

    def replaced() -> bool:
        app = serve.status().applications.get("dwray")
        if app is None or app.status != "RUNNING":
            return False
        running = [row for row in alive_actors() if str(row.get("ActorClassName", "")).endswith(":gateway")]
        # Readiness, not the replica count on /metrics: the killed replica's last report stays there
        # until it is older than the coordinator's max_age (30 s), by design.
        return len(running) == gateway.config.gateway.replicas and requests.get(
            f"{gateway.endpoint}/healthz/ready", timeout=10).status_code == 200

    wait_until(replaced, timeout=HEAL_SECONDS, interval=0.5, what="Serve's replacement replica running and ready")
    s3.put_object(Bucket=bucket, Key="after", Body=b"new")
    assert s3.get_object(Bucket=bucket, Key="after")["Body"].read() == b"new"
