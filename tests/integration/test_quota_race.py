"""16 concurrent writers race a small quota: none can take usage past it together.

Threads against an in-process warehouse, and processes (Ray worker processes,
each a ``dwray.connect()`` client of the session's warehouse) against the Ray
warehouse. After the race: usage <= quota, usage equals what the object rows
hold (recounted), every write that was acknowledged is stored and readable, and
every other write got ``QuotaExceeded``.
"""
from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

from dwray.core.warehouse import Warehouse
from dwray.errors import QuotaExceeded
from tests.conftest import make_config

WRITERS = 16
PUTS_EACH = 4
SIZE = 1000
QUOTA = 10 * SIZE + SIZE // 2  # room for 10 objects and a half: exactly 10 writes can win


def write_many(wh: Any, bucket: str, writer: int, tenant: str | None = None) -> list[str]:
    """Each put's outcome: ``ok:<key>`` or the name of the error it got."""
    outcomes = []
    for number in range(PUTS_EACH):
        key = f"w{writer:02d}-{number}"
        try:
            wh.put(bucket, key, bytes([writer]) * SIZE, tenant=tenant)
            outcomes.append(f"ok:{key}")
        except QuotaExceeded as exc:
            assert "at most" in str(exc) and str(QUOTA) in str(exc)
            outcomes.append("QuotaExceeded")
    return outcomes


def check_outcome(wh: Any, bucket: str, outcomes: list[str], tenant: str | None = None) -> None:
    won = sorted(outcome[3:] for outcome in outcomes if outcome.startswith("ok:"))
    lost = [outcome for outcome in outcomes if not outcome.startswith("ok:")]
    assert len(won) + len(lost) == WRITERS * PUTS_EACH
    assert set(lost) == {"QuotaExceeded"}
    assert len(won) == QUOTA // SIZE  # the quota was reached, never passed
    quota = wh.quota(tenant=tenant, bucket=bucket)
    assert quota["usage"]["bytes"] <= QUOTA
    assert quota["usage"] == {"bytes": len(won) * SIZE, "objects": len(won)}
    recount = wh.catalog.recount_usage(tenant or wh._tenant(None).tenant)
    assert recount == {"bytes": len(won) * SIZE, "objects": len(won)}
    assert sorted(info.key for info in wh.iter_objects(bucket, tenant=tenant)) == won
    for key in won:  # every acknowledged write is stored
        assert wh.get(bucket, key, tenant=tenant) == bytes([int(key[1:3])]) * SIZE


def test_threads_race_a_small_quota(tmp_path: Path) -> None:
    with Warehouse(make_config(tmp_path / "data")) as wh:
        bucket = "race"
        wh.create_bucket(bucket)
        wh.set_quota(bucket=bucket, max_bytes=QUOTA)
        outcomes: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(WRITERS)

        def writer(number: int) -> None:
            start.wait()
            result = write_many(wh, bucket, number)
            with lock:
                outcomes.extend(result)

        threads = [threading.Thread(target=writer, args=(number,)) for number in range(WRITERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
        check_outcome(wh, bucket, outcomes)


def test_processes_race_a_small_quota_on_ray(ray_warehouse: Any) -> None:
    import ray

    tenant = f"t{uuid.uuid4().hex[:12]}"
    bucket = "race"
    wh = ray_warehouse.for_test(tenant, "actors")
    wh.create_bucket(bucket)
    wh.set_quota(max_bytes=QUOTA)  # a tenant quota this time
    config = ray_warehouse.config

    @ray.remote(num_cpus=0, max_retries=0)
    def process_writer(number: int) -> tuple[int, list[str]]:
        import os

        import dwray

        client = dwray.connect(config=config, start=False)
        try:
            return os.getpid(), write_many(client, bucket, number, tenant)
        finally:
            client.close()

    results = ray.get([process_writer.remote(number) for number in range(WRITERS)], timeout=300)
    assert len({pid for pid, _ in results}) > 1  # the writers ran in separate processes
    check_outcome(wh, bucket, [outcome for _, outcome_list in results for outcome in outcome_list], tenant)
