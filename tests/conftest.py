"""Fixtures shared by every test: warehouses on real backends in temp folders."""
from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dwray.config import DwrayConfig, PipelineConfig, RuntimeConfig, ScrubConfig, StorageConfig, SweeperConfig
from dwray.core.warehouse import Warehouse

# The master key's default home is $XDG_CONFIG_HOME/dwray: the tests (and the
# Ray workers and dw processes they start, which inherit the environment) keep
# theirs in a folder of their own, never in the user's ~/.config.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="dwray-test-xdg-")

pytest_plugins = ["tests.servers", "tests.postgres_server", "tests.gateway_session"]

# Small frames so that every test crosses frame boundaries without big data.
TEST_FRAME_SIZE = 4096


def make_config(data_dir: Path, backend: str = "local", **pipeline: int) -> DwrayConfig:
    return DwrayConfig(
        data_dir=data_dir,
        storage=StorageConfig(backend=backend),  # type: ignore[arg-type]
        pipeline=PipelineConfig(frame_size=pipeline.pop("frame_size", TEST_FRAME_SIZE), **pipeline),
        # No housekeeper child: a tree starts faster without it, and it is tested where it is the
        # subject (test_housekeeper.py) and in the trees 'dw up' and the cluster script start.
        sweeper=SweeperConfig(interval=0),
        # Nor a scrubber: tested where it is the subject (tests/integration/test_pools_ray.py).
        scrub=ScrubConfig(interval=0),
        # No spare hosts either: each is a worker process started after every start of a tree. They
        # are tested where they are the subject (tests/chaos/test_ray_chaos.py, the session
        # gateway's kill storm in tests/integration/gateway/test_kill_storm.py).
        runtime=RuntimeConfig(standby_hosts=False),
    )


#: the warehouses an operator has: in process on each real backend, and on Ray (stages in actors or in the caller)
OPERATOR_VARIANTS = ["local", "memory", "ray", "ray-caller"]


@pytest.fixture(params=[*OPERATOR_VARIANTS, "gateway"])
def wh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The same warehouse behaviour, five ways: in process on each real backend, through
    ``dwray.connect()`` on Ray with stages in actors or in the caller, and as a tenant through
    ``dwray.connect(url=...)``: the session gateway's S3 protocol (``dwray.remote.GatewayWarehouse``).

    Tests of operator features (the catalog, tenants, keys, quotas, sweeping) take
    ``operator_wh`` instead: a tenant's client has none of them.
    """
    if request.param != "gateway":
        yield from _operator_warehouse(request, tmp_path)
        return
    from dwray.remote import GatewayWarehouse

    gateway = request.getfixturevalue("gateway")
    tenant = f"t{uuid.uuid4().hex[:12]}"
    access_key, secret_key = gateway.new_key(tenant)
    with GatewayWarehouse(gateway.endpoint, access_key, secret_key, region=gateway.region) as warehouse:
        yield warehouse
    # Bucket names are global and the next test may use the same ones: the tenant goes with them.
    gateway.shred(tenant)


@pytest.fixture(params=OPERATOR_VARIANTS)
def operator_wh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """The warehouse of ``wh`` without the gateway variant: for tests of what only an operator may do."""
    yield from _operator_warehouse(request, tmp_path)


def _operator_warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Warehouse]:
    """The in-process warehouse of ``request.param``'s backend, or (``ray*``) the session's Ray one.

    The Ray warehouse is shared by the session (starting a plugin tree costs
    seconds); each test gets a tenant of its own, so tests stay isolated, and
    its buckets are dropped afterwards: bucket names are global, and the next
    test may use the same ones.
    """
    if request.param.startswith("ray"):
        shared = request.getfixturevalue("ray_warehouse")
        placement = "caller" if request.param == "ray-caller" else "actors"
        tenant = f"t{uuid.uuid4().hex[:12]}"
        warehouse = shared.for_test(tenant, placement)
        yield warehouse
        catalog = warehouse.catalog
        for owner in catalog.quota_tenants():  # the test's tenant, and any it made (f"{tenant}-acme")
            if owner == tenant or owner.startswith(f"{tenant}-"):
                for bucket in catalog.list_buckets(owner):
                    catalog.drop_bucket(owner, bucket.name)
        return
    with Warehouse(make_config(tmp_path / "data", request.param)) as warehouse:
        yield warehouse


@pytest.fixture
def local_wh(tmp_path: Path) -> Iterator[Warehouse]:
    """A warehouse on the local disk backend."""
    with Warehouse(make_config(tmp_path / "data")) as warehouse:
        yield warehouse


@pytest.fixture(scope="session")
def ray_session() -> Iterator[object]:
    """The one local Ray cluster (2 CPUs) shared by every test that needs Ray.

    Its job runs Serve in HAProxy mode, as ``dw up`` does, for the gateway tests.
    """
    import os

    import ray

    from serve_apps.launch import RAY_SYSTEM_CONFIG, ingress_env, worker_env

    if not ray.is_initialized():
        env = {**ingress_env(), **worker_env()}
        os.environ.update(env)
        # The dashboard serves the state API (list_actors), which chaos tests use to find worker PIDs.
        ray.init(num_cpus=2, include_dashboard=True, configure_logging=False, log_to_driver=False,
                 runtime_env={"env_vars": env}, _system_config=RAY_SYSTEM_CONFIG)
    yield ray
    ray.shutdown()


class SharedRayWarehouse:
    """One supervised plugin tree on the session's Ray cluster, handed out per test."""

    def __init__(self, config: DwrayConfig) -> None:
        from actors.bootstrap import start_supervisor

        self.config = config
        self.supervisor = start_supervisor(config)

    def for_test(self, tenant: str, placement: str) -> Any:
        from actors.attach import RayWarehouse

        runtime = self.config.runtime.model_copy(update={"stage_placement": placement})
        config = self.config.model_copy(update={"default_tenant": tenant, "runtime": runtime})
        return RayWarehouse(config, self.supervisor, owns_ray=False)

    def stop(self) -> None:
        import ray

        ray.get(self.supervisor.stop.remote())
        ray.kill(self.supervisor)


@pytest.fixture(scope="session")
def ray_warehouse(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRayWarehouse]:
    """A warehouse started by ``actors.bootstrap`` in a namespace of its own."""
    from dwray.config import RuntimeConfig

    config = make_config(tmp_path_factory.mktemp("ray-warehouse") / "data")
    namespace = f"dwray-test-{uuid.uuid4().hex[:8]}"
    config = config.model_copy(update={"runtime": RuntimeConfig(namespace=namespace, ping_interval=0.5)})
    shared = SharedRayWarehouse(config)
    yield shared
    shared.stop()
