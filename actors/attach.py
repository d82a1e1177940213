"""Find or start the warehouse on Ray, and the ``Warehouse`` built over its plugin actors.

``attach_or_start`` attaches to the warehouse running in the config's Ray
namespace (its supervisor, by name) or starts one; ``RayWarehouse`` is the core
``Warehouse`` whose catalog, keyring, storage and frame stages are the
supervised plugin actors, reached through the remote proxies.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import ray

from actors.bootstrap import find_supervisor, release_data_dir, start_supervisor
from actors.handles import PluginHandle, plugin_handle, running_config
from actors.remote_services import RemoteAudit, RemoteCatalog, RemoteKeyring
from actors.remote_storage import RayFrameEngine, RemoteBackend
from dwray.config import DwrayConfig, RuntimeConfig, load_config
from dwray.core.pipeline import ThreadFrameEngine
from dwray.core.storage_setup import target_spec
from dwray.core.warehouse import Warehouse
from dwray.errors import NotReady

__all__ = ["RayWarehouse", "attach_or_start", "join_ray", "leave_ray", "ray_running_locally"]

SUPERVISOR_TIMEOUT = 30.0  # status() and ready() answer from memory: longer means the supervisor is hung


class RayWarehouse(Warehouse):
    """A ``Warehouse`` whose parts are plugin actors supervised on a Ray cluster."""

    def __init__(self, config: DwrayConfig, supervisor: Any, *, owns_ray: bool = False,
                 owns_warehouse: bool = False) -> None:
        """``owns_warehouse``: this client started the warehouse (``close()`` stops it);
        ``owns_ray``: it also started the local Ray (``close()`` shuts it down)."""
        self.supervisor = supervisor
        self._owns_ray = owns_ray
        self._owns_warehouse = owns_warehouse
        runtime = config.runtime

        def handle(child_id: str) -> PluginHandle:
            return plugin_handle(config, supervisor, child_id)

        default = config.storage.backend
        storages = {target: RemoteBackend(handle(f"storage:{target}"), target, spec=target_spec(config, target))
                    for target in config.storage_targets if target != default}
        if runtime.stage_placement == "actors":
            engine: Any = RayFrameEngine([handle(f"stage:frames:{n}") for n in range(runtime.stage_workers)])
        else:
            engine = ThreadFrameEngine(config.worker_threads)
        audit = RemoteAudit(handle("audit")) if config.audit.enabled else None
        super().__init__(config, backend=RemoteBackend(handle(f"storage:{default}"), default), storages=storages,
                         catalog=RemoteCatalog(handle("catalog")), keyring=RemoteKeyring(handle(config.kms_child_id)),
                         engine=engine, audit=audit)

    def __repr__(self) -> str:
        return (f"RayWarehouse(namespace={self.config.runtime.namespace!r}, "
                f"backend={self.backend_name!r}, stages={self.config.runtime.stage_placement!r})")

    def status(self) -> dict[str, Any]:
        """The supervisor's plugin tree: state, generation, restarts, last failure of each plugin."""
        return ray.get(self.supervisor.status.remote(), timeout=SUPERVISOR_TIMEOUT)

    @property
    def dashboard_url(self) -> str | None:
        """Where Ray's dashboard shows this warehouse's actors, logs and metrics (None without one)."""
        return dashboard_url()

    def storage_path(self) -> Path | None:
        return self.config.blob_root if self.config.storage.backend == "local" else None

    def close(self) -> None:
        """Detach. A warehouse this client started is stopped (plugins in reverse order),
        and a Ray this client started is shut down; one it attached to keeps running."""
        if self._closed.is_set():
            return
        super().close()
        if self._owns_warehouse:
            try:
                ray.get(self.supervisor.stop.remote(), timeout=120)
            finally:
                ray.kill(self.supervisor)
                release_data_dir(self.config)
        if self._owns_ray:
            ray.shutdown()


def dashboard_options(runtime: RuntimeConfig) -> dict[str, Any]:
    """``ray.init`` arguments for the dashboard of a Ray this process starts: on unless
    ``[runtime] dashboard = false``, and only ever on loopback (it has no authentication)."""
    if not runtime.dashboard:
        return {"include_dashboard": False}
    return {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": runtime.dashboard_port}


def dashboard_url() -> str | None:
    """The Ray dashboard's URL for the cluster this process is connected to, or None without one."""
    from ray._private.worker import get_dashboard_url  # the one place Ray keeps it for a driver

    try:
        address = get_dashboard_url()
    except Exception:  # noqa: BLE001 - not connected, or Ray started without it
        return None
    if not address:
        return None
    return address if "://" in address else f"http://{address}"


def dashboard_sign_in() -> str | None:
    """Where the dashboard's sign-in token is, when Ray's token authentication is on (else None).

    The dashboard has no users of its own: with token auth (Ray 2.60 turns it on for a local Ray)
    it asks for Ray's cluster token, which is the operator's credential."""
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    try:
        if not is_token_auth_enabled():
            return None
    except Exception:  # noqa: BLE001 - not connected: nothing to say
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "the token in $RAY_AUTH_TOKEN"
    return f"the token in {os.environ.get('RAY_AUTH_TOKEN_PATH') or Path.home() / '.ray' / 'auth_token'}"


def ray_running_locally() -> bool:
    from ray._private.services import find_gcs_addresses

    try:
        return bool(find_gcs_addresses())
    except Exception:  # noqa: BLE001 - any failure means "none found"
        return False


def attach_or_start(address: str | None = None, *, data_dir: str | Path | None = None,
                    config_path: str | Path | None = None, config: DwrayConfig | None = None,
                    stage_placement: str | None = None, start: bool = True) -> RayWarehouse:
    """What ``dwray.connect()`` does (its docstring explains the arguments)."""
    if config is None:
        config = load_config(config_path)
    if data_dir is not None:
        config = config.model_copy(update={"data_dir": Path(data_dir)})
    runtime = config.runtime
    owns_ray = False
    if not ray.is_initialized():
        # "local": a Ray of this client's own even when another runs on this machine.
        if address == "local" or (address is None and not os.environ.get("RAY_ADDRESS")
                                  and not ray_running_locally()):
            ray.init(address=address, namespace=runtime.namespace, configure_logging=False,
                     **dashboard_options(runtime))
            owns_ray = True
        else:
            ray.init(address=address, namespace=runtime.namespace, configure_logging=False)
    supervisor = find_supervisor(config)
    started = supervisor is None
    if started:
        if not start:
            raise NotReady(f"no warehouse runs in Ray namespace {runtime.namespace!r}")
        supervisor = start_supervisor(config, started_by="dwray.connect()")
    else:
        ready, reason = ray.get(supervisor.ready.remote(), timeout=SUPERVISOR_TIMEOUT)
        if not ready:
            raise NotReady(reason)
        config = running_config(config, supervisor)
    if stage_placement is not None:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(
            update={"stage_placement": stage_placement})})
    return RayWarehouse(config, supervisor, owns_ray=owns_ray, owns_warehouse=started)


def join_ray(address: str, namespace: str, *, token_auth: bool, serving: str) -> bool:
    """Join the Ray cluster at ``address`` as a driver; False if this process already has Ray.

    ``serving`` names what runs there, for the error when it cannot be reached.
    """
    if ray.is_initialized():
        return False
    if token_auth and "RAY_AUTH_MODE" not in os.environ:
        # Ray turns token auth on by itself only for a cluster it finds on its own,
        # never for an explicit address, and reads the mode once: set it, then have
        # Ray read its config again (as Ray does for a cluster it finds).
        from ray._raylet import Config

        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")
    # Not log_to_driver: the plugins' logs are the warehouse's, not this process's output.
    try:
        ray.init(address=address, namespace=namespace, configure_logging=False, log_to_driver=False,
                 logging_level="ERROR")
    except ConnectionError as error:
        raise NotReady(f"{serving} (Ray namespace {namespace!r} at {address}) cannot be reached: {error}") from None
    return True


def leave_ray() -> None:
    """Disconnect a driver that ``join_ray`` connected."""
    ray.shutdown()
