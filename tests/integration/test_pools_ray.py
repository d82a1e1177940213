"""Pools on Ray: every target its own supervised storage actor, the scrubber repairing a rotten replica
on schedule, the tier mover moving what the hot tier cannot hold, ``dw status`` showing it all, and a
slow S3 server (a real SeaweedFS, stopped with SIGSTOP) meeting the call deadline and the breaker.

One warehouse tree on the session's Ray cluster for the module.
"""
from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dwray.config import (
    BackendConfig,
    BreakerOptions,
    PlacementConfig,
    PluginOptions,
    PoolConfig,
    ResilienceOptions,
    RetryOptions,
    RuntimeConfig,
    ScrubConfig,
)
from dwray.errors import CircuitOpen, DwrayError
from tests.conftest import make_config
from tests.servers import SeaweedServer

BUCKET = "dwray-pools-ray"


def _wait(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.3)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def pools_on_ray(ray_session: Any, seaweedfs: SeaweedServer,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import ray

    from actors.attach import RayWarehouse
    from actors.bootstrap import release_data_dir, start_supervisor

    seaweedfs.create_bucket(BUCKET)
    suffix = uuid.uuid4().hex[:8]
    # File references: the storage actors resolve them in their own processes (Ray's workers
    # do not see environment variables this process sets after Ray started).
    secrets = tmp_path_factory.mktemp("pools-ray-secrets")
    for name, value in (("ak", seaweedfs.access_key), ("sk", seaweedfs.secret_key)):
        (secrets / name).write_text(value)
        (secrets / name).chmod(0o600)
    data = tmp_path_factory.mktemp("pools-ray") / "data"
    slow_s3 = PluginOptions(call_timeout=3.0, resilience=ResilienceOptions(
        breaker=BreakerOptions(window_size=4, minimum_calls=2, wait_in_open=2.0, half_open_calls=1),
        retry=RetryOptions(attempts=1)))
    config = make_config(data).model_copy(update={
        "runtime": RuntimeConfig(namespace=f"dwray-test-{uuid.uuid4().hex[:8]}", ping_interval=0.5,
                                 stage_placement="caller", standby_hosts=False),
        "backends": {"disk1": BackendConfig(kind="local"), "disk2": BackendConfig(kind="local"),
                     "hot": BackendConfig(kind="local"), "cold": BackendConfig(kind="local"),
                     "s3b": BackendConfig(kind="s3", bucket=BUCKET, endpoint=seaweedfs.endpoint,
                                          prefix=f"ray-{suffix}/", addressing_style="path",
                                          access_key=f"secret://file/{secrets / 'ak'}",
                                          secret_key=f"secret://file/{secrets / 'sk'}")},
        "pools": {"safe": PoolConfig(kind="mirror", members=["disk1", "disk2"]),
                  "aging": PoolConfig(kind="tiered", hot="hot", cold="cold", hot_max_bytes=150_000,
                                      move_interval=1.0)},
        "placement": PlacementConfig(default="safe", buckets={"logs": "aging", "remote": "s3b"}),
        "scrub": ScrubConfig(interval=2.0, rate=64 << 20, grace_seconds=3600),
        "plugins": {"storage:s3b": slow_s3}})
    supervisor = start_supervisor(config)
    warehouse = RayWarehouse(config, supervisor)
    try:
        yield warehouse
    finally:
        warehouse.close()
        ray.get(supervisor.stop.remote())
        ray.kill(supervisor)
        release_data_dir(config)


def test_each_target_is_a_supervised_actor_and_rows_record_it(pools_on_ray: Any) -> None:
    wh = pools_on_ray
    children = {child["id"]: child for child in wh.status()["children"]}
    for child_id in ("storage:local", "storage:safe", "storage:aging", "storage:s3b", "scrubber", "tier-mover"):
        assert children[child_id]["state"] == "running", children[child_id]
    body = os.urandom(70_000)
    for bucket in ("docs", "remote"):
        wh.create_bucket(bucket)
        wh.put(bucket, "k", body)
        assert wh.get(bucket, "k") == body
    assert wh.catalog.get_object("default", "docs", "k").placement.backend == "safe"
    assert wh.catalog.get_object("default", "remote", "k").placement.backend == "s3b"
    listed = seaweed_keys = wh.storages["s3b"].list_blobs("default/")
    assert len(list(listed)) == 1 and seaweed_keys is not None


def test_the_scrubber_repairs_a_rotten_replica_on_its_schedule(pools_on_ray: Any) -> None:
    from actors.handles import plugin_handle

    wh = pools_on_ray
    wh.create_bucket("scrubbed")
    body = os.urandom(200_000)
    wh.put("scrubbed", "k", body)
    data = wh.config.data_dir
    placement = wh.catalog.get_object("default", "scrubbed", "k").placement
    good = data / "backends" / "disk1" / placement.blob_id
    victim = data / "backends" / "disk2" / placement.blob_id
    os.chmod(victim, 0o600)
    raw = bytearray(victim.read_bytes())
    raw[1000] ^= 0xFF
    victim.write_bytes(bytes(raw))
    scrubber = plugin_handle(wh.config, wh.supervisor, "scrubber")

    def repaired() -> bool:
        status = scrubber.call("status", idempotent=True)
        return status["found"]["repaired"] >= 1 and victim.read_bytes() == good.read_bytes()

    _wait("the scrubber to repair the replica", repaired)
    assert wh.get("scrubbed", "k") == body
    from dwray.cli.status import _storage

    shown = _storage(wh.config, wh.supervisor)
    assert shown["targets"]["safe"]["kind"] == "mirror"
    assert set(shown["targets"]["safe"]["members"]) == {"disk1", "disk2"}
    assert shown["scrubber"]["rounds"] >= 1 and shown["last_scrub"]["totals"]["blobs"] >= 1
    # The gateway's /metrics page gathers the same, from the same actors.
    from prometheus_client.parser import text_string_to_metric_families

    from serve_apps.metrics import render
    from serve_apps.metrics_storage import gather_storage

    page = render({}, plugins=[], tenants={}, draining=False, storage=gather_storage(wh, scrubber))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(page.decode()) for s in family.samples}
    assert samples[("dwray_scrub_found_total", (("what", "repaired"),))] >= 1
    assert samples[("dwray_storage_member_up", (("member", "disk2"), ("target", "safe")))] == 1
    assert samples[("dwray_storage_blobs", (("target", "safe"),))] >= 2


def test_the_tier_mover_keeps_the_hot_tier_under_its_limit(pools_on_ray: Any) -> None:
    wh = pools_on_ray
    wh.create_bucket("logs")
    bodies = {f"day{n}": os.urandom(60_000) for n in range(5)}
    for key, body in bodies.items():
        wh.put("logs", key, body)
    status = _wait("blobs moved to the cold tier", lambda: (
        (s := wh.storages["aging"].pool_status())["tiers"].get("cold", {}).get("blobs", 0) >= 3 and s))
    assert status["tiers"]["hot"]["bytes"] <= 150_000
    for key, body in bodies.items():
        assert wh.get("logs", key) == body


def test_a_stalled_s3_server_meets_the_deadline_and_the_breaker(pools_on_ray: Any, seaweedfs: SeaweedServer) -> None:
    wh = pools_on_ray
    body = os.urandom(50_000)
    os.kill(seaweedfs.process.pid, __import__("signal").SIGSTOP)  # type: ignore[union-attr]
    try:
        failures = []
        for n in range(4):
            started = time.monotonic()
            with pytest.raises(DwrayError) as caught:
                wh.put("remote", f"stalled-{n}", body)
            failures.append((type(caught.value), time.monotonic() - started))
        # Each failed within the call's deadline (3 s, plus the time to give up on it), and once the
        # breaker opened the calls failed at once, without waiting for the server at all.
        assert all(seconds < 10 for _, seconds in failures), failures
        assert CircuitOpen in {kind for kind, _ in failures}, failures
        assert any(seconds < 1 for kind, seconds in failures if kind is CircuitOpen)
    finally:
        os.kill(seaweedfs.process.pid, __import__("signal").SIGCONT)  # type: ignore[union-attr]

    def works() -> bool:
        try:
            wh.put("remote", "after", body)
        except DwrayError:
            return False
        return True

    _wait("puts to succeed once the server answers again", works, timeout=90)
    assert wh.get("remote", "after") == body
    assert wh.get("remote", "k") is not None
    for n in range(4):
        with pytest.raises(DwrayError):
            wh.head("remote", f"stalled-{n}")
