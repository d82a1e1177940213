"""Start or find the warehouse's supervisor and its plugin tree on a Ray cluster.

The tree, in start order (stopped in reverse):
  settings         the running warehouse's config, for attaching clients
  catalog          the SQLite catalog (its file is its state)
  identity         tenants, access keys and admin-token hashes (SQLite)
  audit            the audit log's one writer (when [audit] enabled)
  kms:<plugin>     key-encryption keys: kms:local (the sealed keyring) or kms:vault-transit
  storage:<name>   a storage target: [storage]'s backend (storage:local...), each pool, each
                   backend placed on directly ([placement]); a pool's members run in its actor
  stage:frames:N   frame stage workers (unless stages run in the caller)
  scrubber         verifies every blob on a schedule ([scrub] interval)
  tier-mover       moves blobs of tiered pools to their cold tier
  events           the message bus: outbox reader, queues, webhook and actor delivery ([events] enabled)
  housekeeper      expires abandoned multipart uploads and sweeps blobs ([sweeper] interval)

Beside the tree, not in it, runs the data dir's lock holder: it takes the data
dir's lock (``dwray.core.datadir_lock``) before any plugin opens a file there
and keeps it for as long as the supervisor lives. Plugins restart and the
supervisor may restart the whole tree, but the lock stays put, so an
in-process ``Warehouse`` (``dw`` commands, ``Warehouse.load``) is refused the
data dir for the whole time a Ray warehouse serves it, with no window between
a plugin's death and its restart.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.supervisor import create_supervisor
from dwray.config import DwrayConfig
from dwray.core.datadir_lock import DataDirLock, LockHolder, RayEndpoint
from dwray.core.plugin_trust import PluginTrust
from dwray.core.sandbox import sandbox_settings
from dwray.core.storage_setup import target_spec
from dwray.core.supervision import ChildSpec, SupervisorSpec
from dwray.errors import DwrayError
from dwray.secrets import resolver_settings

if TYPE_CHECKING:
    from dwray.core.gateway_files import GatewayFiles

__all__ = ["DataDirLockHolder", "bootstrap_identity", "find_supervisor", "lock_holder_name", "release_data_dir",
           "start_supervisor", "supervisor_spec", "warehouse_children"]

# How long the lock holder waits for the data dir's lock: a holder of a warehouse
# stopped a moment ago may still be exiting, and an in-process 'dw' command may be
# finishing. Then the start fails with DataDirInUse naming who has it.
LOCK_WAIT = 10.0
# How often the lock holder checks that its supervisor is still there.
WATCH_INTERVAL = 0.25


def _child(config: DwrayConfig, child_id: str, plugin: str, kind: str, plugin_config: dict[str, Any],
           *, required: bool = True) -> ChildSpec:
    options = config.plugin_options(child_id)
    return ChildSpec(
        id=child_id, plugin=plugin, kind=kind, config=plugin_config, required=required,
        num_cpus=options.num_cpus, memory=options.memory, max_concurrency=options.max_concurrency,
        memory_cap=options.memory_cap, node_id=options.node_id, node_labels=options.node_labels,
        resources=options.resources, call_timeout=options.call_timeout, method_timeouts=options.method_timeouts,
        env_vars=options.env_vars, sandbox=sandbox_settings(config, child_id),
        plugin_trust=PluginTrust.from_config(config.plugin_trust),
        handshake_timeout=config.runtime.handshake_timeout, resilience=options.resilience,
        standby=config.runtime.standby_hosts and _has_standby(child_id),
        tracing=config.tracing, logging=config.logging)


def _has_standby(child_id: str) -> bool:
    """The children on every request's path: a dead one is replaced by its pre-started standby."""
    return child_id == "catalog" or child_id.startswith(("storage:", "stage:"))


def warehouse_children(config: DwrayConfig) -> list[ChildSpec]:
    """The child specs of a warehouse with ``config``."""
    data_dir = config.data_dir.resolve()
    config = config.model_copy(update={"data_dir": data_dir})
    children = [
        _child(config, "settings", "service.settings", "service",
               {"settings": config.model_dump(mode="json")}),
        _child(config, "catalog", "service.catalog", "service",
               {"path": str(config.catalog_path.resolve()), "synchronous": config.catalog.synchronous,
                "busy_timeout_ms": config.catalog.busy_timeout_ms}),
        _child(config, "identity", "service.identity", "service", {"path": str(config.identity_path.resolve())}),
        *_audit_children(config),
        _kms_child(config),
        *_storage_children(config),
    ]
    if config.runtime.stage_placement == "actors":
        children += [_child(config, f"stage:frames:{n}", "stage.frames", "stage", {})
                     for n in range(config.runtime.stage_workers)]
    settings = {"settings": config.model_dump(mode="json")}
    # Not required, like the housekeeper: the warehouse serves without them, and their rounds
    # catch and report their own failures.
    if config.scrub.interval > 0:
        children.append(_child(config, "scrubber", "service.scrubber", "service", settings, required=False))
    if any(pool.kind == "tiered" for pool in config.pools.values()):
        children.append(_child(config, "tier-mover", "service.tier-mover", "service", settings, required=False))
    if config.events.enabled:
        # Not required: the warehouse serves without the bus, and object and bucket events wait
        # in the catalog's outbox until it is back (``actors.event_bus``). Only the sections it reads,
        # so a reload restarts it only when one of them changed.
        bus_settings = {name: settings["settings"][name] for name in ("data_dir", "events", "runtime", "secrets",
                                                                     "keys")}
        bus_settings["audit"] = {"enabled": config.audit.enabled}  # it follows the audit log's checkpoints
        children.append(_child(config, "events", "service.events", "service",
                               {"settings": bus_settings, "path": str(data_dir / "events" / "bus.db")},
                               required=False))
    if config.sweeper.interval > 0:
        # Last: it works through the children above. Not required: the warehouse
        # serves without it, and its rounds catch and report their own failures.
        children.append(_child(config, "housekeeper", "service.housekeeper", "service",
                               {"settings": config.model_dump(mode="json")}, required=False))
    return children


def _storage_children(config: DwrayConfig) -> list[ChildSpec]:
    """A child per storage target. Its config is the target's spec: secret references only,
    resolved in the plugin's own actor with ``secret_settings``."""
    children = []
    for target in config.storage_targets:
        spec = target_spec(config, target)
        kind = spec.pop("kind")
        if kind not in ("local", "memory"):
            spec["secret_settings"] = resolver_settings(config)
        children.append(_child(config, f"storage:{target}", f"storage.{kind}", "storage", spec))
    return children


def _audit_children(config: DwrayConfig) -> list[ChildSpec]:
    """The audit log's writer, if enabled. Its paths are worked out here, where the warehouse
    is started (the signing key's default home is this process's $XDG_CONFIG_HOME)."""
    if not config.audit.enabled:
        return []
    from dwray.builtins.audit_service import AuditLogPlugin
    from dwray.core.audit import AuditLocations

    audit = config.audit
    return [_child(config, "audit", "service.audit", "service", AuditLogPlugin.config_of(
        AuditLocations.of(config), audit.checkpoint_every, audit.copy_every, audit.copy_interval))]


def _kms_child(config: DwrayConfig) -> ChildSpec:
    """The key service's child. It gets secret *references* only and resolves them in its own actor."""
    if config.kms.plugin == "vault-transit":
        kms = config.kms
        return _child(config, config.kms_child_id, "kms.vault-transit", "kms", {
            "address": kms.address, "token": kms.token, "mount": kms.mount, "key_prefix": kms.key_prefix,
            "namespace": kms.namespace, "ca_cert": str(kms.ca_cert) if kms.ca_cert else None,
            "timeout": kms.timeout, "secret_settings": resolver_settings(config)})
    return _child(config, config.kms_child_id, "kms.local", "kms", {
        "path": str(config.keyring_path.resolve()), "master": config.master_key_ref,
        # The default key file is made on first start; a configured reference must already exist.
        "create_master": config.keys.master is None, "secret_settings": resolver_settings(config)})


def supervisor_spec(config: DwrayConfig) -> SupervisorSpec:
    runtime = config.runtime
    return SupervisorSpec(
        name=runtime.supervisor_name, strategy="one_for_one", max_restarts=runtime.max_restarts,
        period=runtime.restart_period, ping_interval=runtime.ping_interval, ping_timeout=runtime.ping_timeout,
        memory=config.memory, tree_backoff_base=runtime.tree_backoff_base, tree_backoff_max=runtime.tree_backoff_max,
        max_tree_restarts=runtime.max_tree_restarts, standby_delay=runtime.standby_delay,
        defer_optional=runtime.defer_optional, tracing=config.tracing,
        logging=config.logging, children=warehouse_children(config))


def find_supervisor(config: DwrayConfig) -> Any | None:
    """The running warehouse's supervisor, or ``None``."""
    try:
        return ray.get_actor(config.runtime.supervisor_name, namespace=config.runtime.namespace)
    except ValueError:
        return None


def start_supervisor(config: DwrayConfig, *, detached: bool = False, started_by: str = "start_supervisor()",
                     on_created: Callable[[Any], None] | None = None) -> Any:
    """Create the supervisor, take the data dir's lock, start the plugin tree, and return the supervisor.

    ``started_by`` says how the warehouse was started (``"dw up"``, ``"dwray.connect()"``);
    a second opener of the data dir sees it in its ``DataDirInUse``. ``on_created`` is called
    with the supervisor once it exists and holds the lock, while its tree starts (``dw up``
    deploys the gateway's replicas then: they find it by name and wait for its children).
    """
    # The supervisor first: its name is what tells two racing starters apart
    # (the loser gets ValueError and attaches), before either touches the lock.
    supervisor = create_supervisor(supervisor_spec(config), namespace=config.runtime.namespace, detached=detached)
    holder = None
    try:
        holder = _hold_data_dir(config, detached=detached, started_by=started_by)
        try:
            started = supervisor.start.remote()
            if on_created is not None:
                on_created(supervisor)
            ray.get(started)
        except RayTaskError as error:
            # The tree refused to start (a plugin's handshake failed): its own error, not Ray's traceback.
            if isinstance(error.cause, DwrayError):
                raise error.cause from None
            raise
    except BaseException:
        ray.kill(supervisor)
        if holder is not None:
            _release(holder)
        raise
    return supervisor


def lock_holder_name(config: DwrayConfig) -> str:
    """The Ray name of the data dir's lock holder of the warehouse ``config`` names."""
    return f"{config.runtime.supervisor_name}:datadir-lock"


@ray.remote(num_cpus=0, max_concurrency=2, max_restarts=0, max_task_retries=0)
class DataDirLockHolder:
    """Holds a Ray warehouse's data dir lock for as long as its supervisor lives.

    Not a supervised plugin: plugins restart, and a lock that restarted with one
    would leave the data dir open to another writer between death and restart.
    It goes when it is released (the warehouse stops) or, should the supervisor
    be killed without that, when it finds the supervisor gone.
    """

    def __init__(self, data_dir: str) -> None:
        self._lock = DataDirLock(Path(data_dir))
        self._released = threading.Event()

    def acquire(self, holder: LockHolder, namespace: str, supervisor_name: str, wait: float) -> LockHolder:
        context = ray.get_runtime_context()
        # The cluster's workers run with the mode the cluster was started with.
        token_auth = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
        served = holder.served_by(RayEndpoint(context.gcs_address, namespace, supervisor_name, os.getpid(),
                                              token_auth))
        self._lock.acquire(served, wait=wait)
        return served

    def watch(self, supervisor_name: str, namespace: str, interval: float) -> None:
        """Until released, check that the supervisor is there; then let the lock go and exit."""
        while not self._released.wait(interval):
            try:
                ray.get_actor(supervisor_name, namespace=namespace)
            except ValueError:  # its name is gone: the supervisor is dead
                break
        self.release()
        ray.actor.exit_actor()

    def release(self) -> None:
        self._lock.release()
        self._released.set()


def _hold_data_dir(config: DwrayConfig, *, detached: bool, started_by: str) -> Any:
    """Start the lock holder for ``config``'s data dir and take the lock (``DataDirInUse`` if taken)."""
    runtime = config.runtime
    options: dict[str, Any] = {"name": lock_holder_name(config), "namespace": runtime.namespace}
    if detached:
        options["lifetime"] = "detached"
    # The lock must be taken on the host whose disk holds the catalog, so the
    # holder goes where the catalog's plugin is placed; an unplaced catalog goes
    # where Ray puts it, so then prefer this node (the one 'dw up' runs on).
    placement = config.plugin_options("catalog")
    if placement.node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(placement.node_id, soft=False)
    if placement.node_labels:
        options["label_selector"] = dict(placement.node_labels)
    if placement.resources:
        options["resources"] = dict(placement.resources)
    if placement.node_id is None and not placement.node_labels and not placement.resources:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                        soft=True)
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            holder = DataDirLockHolder.options(**options).remote(str(config.data_dir.resolve()))
            break
        except ValueError:
            # The name is taken: the holder of a supervisor that died (ours was just
            # created, so no live one has this name) is letting go within its watch interval.
            if time.monotonic() >= deadline:
                raise
            time.sleep(WATCH_INTERVAL)
    try:
        # Beyond the lock's own wait: the time Ray takes to start a worker on a busy machine.
        ray.get(holder.acquire.remote(LockHolder.this_process(started_by), runtime.namespace,
                                      runtime.supervisor_name, LOCK_WAIT), timeout=LOCK_WAIT + 120)
    except RayTaskError as error:
        ray.kill(holder)
        if isinstance(error.cause, DwrayError):
            raise error.cause from None
        raise
    except BaseException:
        ray.kill(holder)
        raise
    holder.watch.remote(runtime.supervisor_name, runtime.namespace, WATCH_INTERVAL)
    return holder


def _release(holder: Any) -> None:
    """Let the lock go now (not when Ray gets round to killing the actor), then end the holder."""
    try:
        # A holder that already died holds nothing: the kernel dropped its lock.
        with contextlib.suppress(RayActorError):
            ray.get(holder.release.remote(), timeout=30)
    finally:
        ray.kill(holder)


def release_data_dir(config: DwrayConfig) -> None:
    """After the warehouse of ``config`` has stopped: give its data dir's lock back at once.

    Call it once the plugins have stopped (they had the files open). Without it the
    lock goes anyway once the supervisor is gone, a moment later.
    """
    try:
        holder = ray.get_actor(lock_holder_name(config), namespace=config.runtime.namespace)
    except ValueError:
        return
    _release(holder)


def bootstrap_identity(config: DwrayConfig, supervisor: Any, files: GatewayFiles) -> Any:
    """On every gateway start: the first start's tenant, key and admin token, or a fresh local token.

    Either way ``files.admin_token`` gets a new ``dw-up@<host>`` token that
    revokes the one this host's previous start left
    (``dwray.core.gateway_files.issue_local_admin_token``). Returns the first
    start's credentials (to be shown once), else ``None``.
    """
    from actors.handles import plugin_handle
    from actors.remote_services import RemoteIdentity, RemoteKeyring
    from dwray.core.access_keys import AccessKeys
    from dwray.core.gateway_files import issue_local_admin_token

    keys = AccessKeys(RemoteIdentity(plugin_handle(config, supervisor, "identity")),
                      RemoteKeyring(plugin_handle(config, supervisor, config.kms_child_id)))
    return issue_local_admin_token(keys, files, config.default_tenant)
