"""``dwray.connect()``: start an embedded warehouse, attach to a running one, and close."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

import dwray
from dwray.config import DwrayConfig, PipelineConfig, RuntimeConfig
from dwray.errors import NotReady


def config_for(tmp_path: Path, namespace: str, frame_size: int) -> DwrayConfig:
    return DwrayConfig(data_dir=tmp_path / "data", pipeline=PipelineConfig(frame_size=frame_size),
                       runtime=RuntimeConfig(namespace=namespace, stage_workers=1))


def test_start_attach_and_close(ray_session: Any, tmp_path: Path) -> None:
    namespace = f"dwray-connect-{uuid.uuid4().hex[:8]}"
    with pytest.raises(NotReady, match=namespace):
        dwray.connect(config=config_for(tmp_path, namespace, 4096), start=False)

    owner = dwray.connect(config=config_for(tmp_path, namespace, 4096))
    owner.create_bucket("shared")
    owner.put("shared", "a", b"x" * 10_000)
    # A second client attaches and takes the running warehouse's settings, not its own.
    attached = dwray.connect(config=config_for(tmp_path / "elsewhere", namespace, 1 << 20), start=False)
    assert attached.config.pipeline.frame_size == 4096
    assert attached.config.data_dir == (tmp_path / "data").resolve()
    assert attached.get("shared", "a") == b"x" * 10_000
    assert {c["id"] for c in attached.status()["children"]} >= {"catalog", "storage:local", "stage:frames:0"}
    attached.close()
    assert owner.get("shared", "a") == b"x" * 10_000  # detaching left the warehouse running

    owner.close()
    with pytest.raises(ValueError):
        ray.get_actor(owner.config.runtime.supervisor_name, namespace=namespace)
    assert ray.is_initialized()  # the tests' Ray was not this client's to shut down
    with pytest.raises(NotReady):
        dwray.connect(config=config_for(tmp_path, namespace, 4096), start=False)
