"""The running warehouse expires abandoned multipart uploads and sweeps their blobs by itself.

A tree of its own on the session's Ray cluster, with a housekeeping round every
second, uploads that expire after one second and no sweep grace: an upload
left incomplete is aborted by the housekeeper (its quota reservation released,
as a client's abort releases it), its part blobs are swept, and a completed
object next to it is untouched.
"""
from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dwray.config import LimitsConfig, RuntimeConfig, SweeperConfig
from tests.conftest import make_config

PART = 5 << 20  # the smallest part S3 allows but the last


@pytest.fixture(scope="module")
def busy_housekeeper(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    import ray

    from actors.attach import RayWarehouse
    from actors.bootstrap import release_data_dir, start_supervisor

    config = make_config(tmp_path_factory.mktemp("housekeeper") / "data").model_copy(update={
        "runtime": RuntimeConfig(namespace=f"dwray-test-{uuid.uuid4().hex[:8]}", ping_interval=0.5,
                                 stage_placement="caller"),
        "sweeper": SweeperConfig(interval=1.0, grace_seconds=0.0),
        "limits": LimitsConfig(multipart_upload_expiry=1.0)})
    supervisor = start_supervisor(config)
    warehouse = RayWarehouse(config, supervisor)
    try:
        yield warehouse
    finally:
        warehouse.close()
        ray.get(supervisor.stop.remote())
        ray.kill(supervisor)
        release_data_dir(config)


def _blobs(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def test_an_abandoned_upload_expires_and_its_blobs_are_swept_by_the_running_warehouse(busy_housekeeper: Any) -> None:
    wh = busy_housekeeper
    wh.create_bucket("hk-bucket")
    wh.set_quota(max_bytes=64 << 20)
    wh.put("hk-bucket", "kept", b"k" * 1000)
    blob_root = wh.config.blob_root
    kept_blobs = _blobs(blob_root)
    upload = wh.create_multipart_upload("hk-bucket", "abandoned").upload_id
    wh.upload_part("hk-bucket", "abandoned", upload, 1, b"p" * PART)
    assert _blobs(blob_root) > kept_blobs  # the part is stored
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        uploads = wh.list_multipart_uploads("hk-bucket").uploads
        if not uploads and _blobs(blob_root) == kept_blobs:
            break
        time.sleep(0.5)
    assert wh.list_multipart_uploads("hk-bucket").uploads == []
    assert _blobs(blob_root) == kept_blobs  # the part's blob is gone, the object's stays
    assert wh.get("hk-bucket", "kept") == b"k" * 1000
    usage = wh.quota()["usage"]
    assert usage["bytes"] == 1000  # the part's reservation was released
    status = {child["id"]: child for child in wh.status()["children"]}
    assert status["housekeeper"]["state"] == "running"
