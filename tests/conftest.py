"""Fixtures shared by every test: warehouses on real backends in temp folders."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.config import DwrayConfig, PipelineConfig, StorageConfig
from dwray.warehouse import Warehouse

# Small frames so that every test crosses frame boundaries without big data.
TEST_FRAME_SIZE = 4096


def make_config(data_dir: Path, backend: str = "local", **pipeline: int) -> DwrayConfig:
    return DwrayConfig(
        data_dir=data_dir,
        storage=StorageConfig(backend=backend),  # type: ignore[arg-type]
        pipeline=PipelineConfig(frame_size=pipeline.pop("frame_size", TEST_FRAME_SIZE), **pipeline),
    )


@pytest.fixture(params=["local", "memory"])
def wh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """A warehouse on each real backend; the core's behaviour tests run against every one."""
    with Warehouse(make_config(tmp_path / "data", request.param)) as warehouse:
        yield warehouse


@pytest.fixture
def local_wh(tmp_path: Path) -> Iterator[Warehouse]:
    """A warehouse on the local disk backend."""
    with Warehouse(make_config(tmp_path / "data")) as warehouse:
        yield warehouse


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    """The one local Ray cluster (2 CPUs) shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()
