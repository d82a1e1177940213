"""Fixtures for plugin authors' and tenants' tests (the ``dwray`` pytest11 entry point).

Installed with dwray, so pytest loads it in every run of every project that has
dwray installed: it imports nothing but pytest at load time; Ray, Serve, boto3
and the warehouse are imported by the fixtures that use them.

``dwray_warehouse``
    an in-process ``Warehouse`` on a fresh data dir in the test's temporary
    folder (its master key too: ``XDG_CONFIG_HOME`` points there), closed after
    the test. No Ray.
``dwray_gateway``
    one real gateway for the session: the warehouse on Ray with the S3 gateway
    on Ray Serve, on a free loopback port, as ``dw up`` starts it. It reuses
    the session's Ray if one is already initialized in this process, else
    starts a local Ray of its own (never attaching to another on the machine).
    A ``DwrayGateway``: ``endpoint``, ``access_key_id``, ``secret_access_key``,
    ``region`` (and ``admin_token`` and ``data_dir``).
``dwray_s3_client``
    boto3's S3 client on that gateway, path-style addressing.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["DwrayGateway", "dwray_gateway", "dwray_s3_client", "dwray_warehouse"]


@dataclass(frozen=True)
class DwrayGateway:
    """A running gateway and the first access key it made. Secrets stay out of its repr."""

    endpoint: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    region: str = "us-east-1"
    admin_token: str = field(default="", repr=False)
    data_dir: Path | None = None


@pytest.fixture
def dwray_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An in-process ``dwray.core.warehouse.Warehouse`` on a fresh data dir, closed after the test."""
    from dwray.config import DwrayConfig
    from dwray.core.warehouse import Warehouse

    config_home = tmp_path / "dwray-config"
    config_home.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    warehouse = Warehouse(DwrayConfig(data_dir=tmp_path / "dwray-data"))
    try:
        yield warehouse
    finally:
        warehouse.close()


@pytest.fixture(scope="session")
def dwray_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DwrayGateway]:
    """A real gateway (Ray + Serve) for the whole session, on a free loopback port."""
    import ray

    from dwray.config import DwrayConfig, GatewayConfig, RuntimeConfig, ScrubConfig, SweeperConfig
    from dwray.core.ports import free_port
    from serve_apps.launch import start_gateway, stop_gateway

    root = tmp_path_factory.mktemp("dwray-gateway")
    config_home = root / "config"
    config_home.mkdir(mode=0o700)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CONFIG_HOME", str(config_home))  # the master key and audit signing key go here
        config = DwrayConfig(data_dir=root / "data", gateway=GatewayConfig(port=free_port()),
                             runtime=RuntimeConfig(namespace=f"dwray-test-{uuid.uuid4().hex[:8]}"),
                             sweeper=SweeperConfig(interval=0), scrub=ScrubConfig(interval=0))
        running = start_gateway(config, address=None if ray.is_initialized() else "local",
                                started_by="the dwray_gateway fixture")
    first = running.first_start
    try:
        if first is None:
            raise RuntimeError("the dwray_gateway fixture's fresh data dir made no first access key")
        yield DwrayGateway(endpoint=running.endpoint, access_key_id=first.access_key.access_key_id,
                           secret_access_key=first.access_key.secret_access_key, admin_token=first.admin_token,
                           data_dir=running.config.data_dir)
    finally:
        stop_gateway(running, timeout=10)


@pytest.fixture
def dwray_s3_client(dwray_gateway: DwrayGateway) -> Any:
    """boto3's S3 client on the session's ``dwray_gateway`` (path-style addressing)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=dwray_gateway.endpoint, aws_access_key_id=dwray_gateway.access_key_id,
                        aws_secret_access_key=dwray_gateway.secret_access_key, region_name=dwray_gateway.region,
                        config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}))
