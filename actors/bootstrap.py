"""Start or find the warehouse's supervisor and its plugin tree on a Ray cluster.

The tree, in start order (stopped in reverse):
  settings         the running warehouse's config, for attaching clients
  catalog          the SQLite catalog (its file is its state)
  identity         tenants, access keys and admin-token hashes (SQLite)
  kms:local        key-encryption keys
  storage:<name>   the storage backend
  stage:frames:N   frame stage workers (unless stages run in the caller)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import ray

from actors.supervisor import create_supervisor
from dwray.config import DwrayConfig
from dwray.core.supervision import ChildSpec, SupervisorSpec

if TYPE_CHECKING:
    from dwray.core.gateway_files import GatewayFiles

__all__ = ["bootstrap_identity", "find_supervisor", "start_supervisor", "supervisor_spec", "warehouse_children"]


def _child(config: DwrayConfig, child_id: str, plugin: str, kind: str, plugin_config: dict[str, Any],
           *, required: bool = True) -> ChildSpec:
    options = config.plugin_options(child_id)
    return ChildSpec(
        id=child_id, plugin=plugin, kind=kind, config=plugin_config, required=required,
        num_cpus=options.num_cpus, memory=options.memory, max_concurrency=options.max_concurrency,
        memory_cap=options.memory_cap, node_id=options.node_id, node_labels=options.node_labels,
        resources=options.resources, call_timeout=options.call_timeout, method_timeouts=options.method_timeouts,
        env_vars=options.env_vars,
        handshake_timeout=config.runtime.handshake_timeout)


def warehouse_children(config: DwrayConfig) -> list[ChildSpec]:
    """The child specs of a warehouse with ``config``."""
    data_dir = config.data_dir.resolve()
    config = config.model_copy(update={"data_dir": data_dir})
    backend = config.storage.backend
    storage_config: dict[str, Any] = ({"root": str(config.blob_root.resolve())} if backend == "local"
                                      else {"max_bytes": config.storage.memory_max_bytes})
    children = [
        _child(config, "settings", "service.settings", "service",
               {"settings": config.model_dump(mode="json")}),
        _child(config, "catalog", "service.catalog", "service",
               {"path": str(config.catalog_path.resolve()), "synchronous": config.catalog.synchronous,
                "busy_timeout_ms": config.catalog.busy_timeout_ms}),
        _child(config, "identity", "service.identity", "service", {"path": str(config.identity_path.resolve())}),
        _child(config, "kms:local", "kms.local", "kms", {"path": str(config.keyring_path.resolve())}),
        _child(config, f"storage:{backend}", f"storage.{backend}", "storage", storage_config),
    ]
    if config.runtime.stage_placement == "actors":
        children += [_child(config, f"stage:frames:{n}", "stage.frames", "stage", {})
                     for n in range(config.runtime.stage_workers)]
    return children


def supervisor_spec(config: DwrayConfig) -> SupervisorSpec:
    runtime = config.runtime
    return SupervisorSpec(
        name=runtime.supervisor_name, strategy="one_for_one", max_restarts=runtime.max_restarts,
        period=runtime.restart_period, ping_interval=runtime.ping_interval, ping_timeout=runtime.ping_timeout,
        children=warehouse_children(config))


def find_supervisor(config: DwrayConfig) -> Any | None:
    """The running warehouse's supervisor, or ``None``."""
    try:
        return ray.get_actor(config.runtime.supervisor_name, namespace=config.runtime.namespace)
    except ValueError:
        return None


def start_supervisor(config: DwrayConfig, *, detached: bool = False) -> Any:
    """Create the supervisor, start the plugin tree, and return the supervisor's handle."""
    supervisor = create_supervisor(supervisor_spec(config), namespace=config.runtime.namespace, detached=detached)
    try:
        ray.get(supervisor.start.remote())
    except BaseException:
        ray.kill(supervisor)
        raise
    return supervisor


def bootstrap_identity(config: DwrayConfig, supervisor: Any, files: GatewayFiles) -> Any:
    """First start: the default tenant, its first access key and the admin token."""
    from actors.handles import PluginHandle
    from actors.remote_services import RemoteIdentity, RemoteKeyring
    from dwray.core.access_keys import AccessKeys

    runtime = config.runtime

    def handle(child_id: str) -> PluginHandle:
        return PluginHandle(child_id, supervisor=supervisor, namespace=runtime.namespace,
                            supervisor_name=runtime.supervisor_name)

    keys = AccessKeys(RemoteIdentity(handle("identity")), RemoteKeyring(handle("kms:local")))
    result = keys.bootstrap(config.default_tenant)
    if result is not None:
        files.write_admin_token(result.admin_token)
    elif files.read_admin_token() is None:
        # The token file was lost (a new data dir for the gateway files?): issue another.
        files.write_admin_token(keys.create_admin_token("replacement for a lost admin-token file"))
    return result
