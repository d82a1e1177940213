"""One writer per data dir on Ray: the plugin tree's lock holder, for as long as its supervisor lives."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.bootstrap import lock_holder_name, release_data_dir, start_supervisor
from dwray.config import DwrayConfig, RuntimeConfig
from dwray.core.datadir_lock import DataDirLock, LockHolder
from dwray.errors import DataDirInUse
from tests.helpers import wait_until


def config_for(data_dir: Path) -> DwrayConfig:
    return DwrayConfig(data_dir=data_dir, runtime=RuntimeConfig(
        namespace=f"dwray-lock-{uuid.uuid4().hex[:8]}", stage_workers=1, ping_interval=0.5))


def stop(config: DwrayConfig, supervisor: Any) -> None:
    ray.get(supervisor.stop.remote(), timeout=120)
    ray.kill(supervisor)
    release_data_dir(config)


def test_the_plugin_tree_holds_the_data_dir_until_its_supervisor_goes(ray_session: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = config_for(data_dir)
    supervisor = start_supervisor(config, started_by="the test")
    try:
        holder = DataDirLock(data_dir).holder()
        assert holder is not None and holder.started_by == "the test" and holder.pid == os.getpid()
        assert holder.ray is not None
        assert (holder.ray.namespace, holder.ray.supervisor) == (config.runtime.namespace,
                                                                 config.runtime.supervisor_name)
        assert holder.ray.address == ray.get_runtime_context().gcs_address
        assert holder.ray.lock_pid != os.getpid()
        with pytest.raises(DataDirInUse, match=f"in use by a Ray warehouse started by the test \\(pid {os.getpid()} "):
            DataDirLock(data_dir).acquire(LockHolder.this_process("an in-process Warehouse"), wait=0.2)

        # A plugin that dies and restarts leaves the lock where it is.
        def catalog_generation() -> int:
            children = ray.get(supervisor.status.remote())["children"]
            return next(child["generation"] for child in children if child["id"] == "catalog")

        before = catalog_generation()
        catalog = next(c for c in ray.get(supervisor.status.remote())["children"] if c["id"] == "catalog")
        ray.kill(ray.get_actor(catalog["actor"], namespace=config.runtime.namespace))
        wait_until(lambda: catalog_generation() > before and ray.get(supervisor.ready.remote())[0],
                   timeout=120, what="the catalog to be restarted", interval=0.2)
        assert DataDirLock(data_dir).holder() == holder
    finally:
        # Killed without a word to the holder: it sees its supervisor gone and lets go by itself.
        ray.get(supervisor.stop.remote(), timeout=120)
        ray.kill(supervisor)
    wait_until(lambda: DataDirLock(data_dir).holder() is None, timeout=30, what="the lock to be let go")
    wait_until(lambda: not _holder_alive(config), timeout=30, what="the lock holder to exit")

    # Started again on the same data dir; stopped the way 'dw up' stops: free at once.
    supervisor = start_supervisor(config, started_by="the test, again")
    assert DataDirLock(data_dir).holder().started_by == "the test, again"
    stop(config, supervisor)
    assert DataDirLock(data_dir).holder() is None


def test_a_ray_warehouse_is_refused_a_data_dir_open_in_process(ray_session: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = config_for(data_dir)
    with DataDirLock(data_dir).acquire(LockHolder.this_process("an in-process Warehouse")):
        started = time.monotonic()
        with pytest.raises(DataDirInUse, match=f"in use by an in-process Warehouse \\(pid {os.getpid()} "):
            start_supervisor(config)
        assert time.monotonic() - started < 180
    # Nothing was left behind: no supervisor, no holder, and the data dir is free.
    with pytest.raises(ValueError):
        ray.get_actor(config.runtime.supervisor_name, namespace=config.runtime.namespace)
    wait_until(lambda: not _holder_alive(config), timeout=30, what="the refused lock holder to go")
    assert DataDirLock(data_dir).holder() is None


def _holder_alive(config: DwrayConfig) -> bool:
    try:
        ray.get_actor(lock_holder_name(config), namespace=config.runtime.namespace)
    except ValueError:
        return False
    return True


def test_dwray_connect_holds_the_data_dir_until_closed(ray_session: Any, tmp_path: Path) -> None:
    import dwray
    from dwray.core.warehouse import Warehouse

    config = config_for(tmp_path / "data")
    owner = dwray.connect(config=config)
    try:
        owner.create_bucket("held")
        owner.put("held", "k", b"written through Ray")
        with pytest.raises(DataDirInUse, match=f"in use by a Ray warehouse started by dwray.connect\\(\\) "
                                               f"\\(pid {os.getpid()} "):
            Warehouse.load(tmp_path / "data")
    finally:
        owner.close()
    # Closing the warehouse it started gives the data dir back at once.
    with Warehouse(config) as wh:
        assert wh.get("held", "k") == b"written through Ray"
