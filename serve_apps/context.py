"""What one gateway replica holds: the warehouse, identities, limits, metrics and control state.

A replica attaches to the running warehouse (the supervisor named in the
config's namespace) and runs the trusted built-in frame stages on its own
threads, so object bytes go from the HTTP socket through the pipeline to the
storage actor without another hop. A background thread reports the replica's
metrics and in-flight count to the gateway coordinator and learns from it
whether the gateway is draining and whether access keys changed.

Access keys are cached by the replica, known and unknown alike: a known key
for ``KEY_CACHE_SECONDS``, an unknown one for ``UNKNOWN_KEY_CACHE_SECONDS``,
so a client repeating a made-up key id costs the identity service nothing
after its first try. Both caches are dropped when an admin change (a key
created or revoked) is made through any replica (the coordinator's epoch
reaches the others within ``REPORT_INTERVAL``); the short bound on unknown
keys covers keys created elsewhere (a driver's ``dwray.connect()``). Unknown
keys have a table of their own, so a flood of them cannot evict known keys.

The coordinator may be killed: Ray restarts it, and one removed for good is
created again by the first report that finds it gone
(:func:`actors.gateway_coordinator.ensure_coordinator`); the replica then
drops its key caches and, if it was draining, tells the new one. A replica's
drain is one way: once told, it stays draining until Serve removes it.

Hot reloads reach the replica through the same thread: every
``CONFIG_CHECK_SECONDS`` it asks the supervisor for its ``config_revision``
and, when that moved, reads the running config (the ``settings`` plugin's)
and takes its rate limits, auth-failure limits, log levels and tracing
(``apply_config``). The buckets of the old limiters are dropped with them: a
client starts from a full bucket under the new limits.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray

from actors.handles import DEFAULT_NAMESPACE, PluginHandle, plugin_handle
from actors.remote_services import RemoteIdentity
from dwray.config import DwrayConfig
from dwray.core.access_keys import AccessKeys
from dwray.core.identity import AdminTokenInfo
from dwray.core.ratelimit import AuthFailureLimiter, RateLimiter
from dwray.s3.auth import SigningIdentity, SigV4Verifier
from serve_apps.haproxy_hardening import ENV_HARDENED

__all__ = ["GatewayContext", "current", "install"]

log = logging.getLogger("dwray.gateway")

REPORT_INTERVAL = 0.5
REPORT_TIMEOUT = 5.0  # every call to the coordinator has this deadline
CONFIG_CHECK_SECONDS = 1.0  # how soon a reloaded config's limits reach the replica
TREE_METRICS_SECONDS = 10.0  # how often the tree's gauges go to Ray's metrics (its own report interval)
REQUIRED_CACHE_SECONDS = 30.0  # which plugins are required changes only with the config
KEY_CACHE_SECONDS = 30.0
UNKNOWN_KEY_CACHE_SECONDS = 5.0  # a repeated made-up key id costs no lookup; a key made elsewhere waits this long
MAX_CACHED_KEYS = 10_000
MAX_UNKNOWN_KEYS = 10_000
WORKER_THREADS = 32
BODY_THREADS = 256  # one per body in transfer; the deployment's max_ongoing_requests

_current: GatewayContext | None = None


def current() -> GatewayContext:
    """This replica's context (set when the replica starts)."""
    if _current is None:
        raise RuntimeError("the gateway replica has not started")
    return _current


def install(context: GatewayContext) -> None:
    global _current
    _current = context


class GatewayContext:
    """The parts of one replica, built once when it starts."""

    def __init__(self, config: DwrayConfig, supervisor: Any, coordinator: Any) -> None:
        from actors.attach import RayWarehouse
        from serve_apps.metrics import GatewayMetrics

        runtime = config.runtime.model_copy(update={"stage_placement": "caller"})
        self.config = config.model_copy(update={"runtime": runtime})
        self.supervisor = supervisor
        self.coordinator = coordinator
        self.replica_id = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.executor = ThreadPoolExecutor(max_workers=WORKER_THREADS, thread_name_prefix="dwray-gateway")
        self.body_executor = ThreadPoolExecutor(max_workers=BODY_THREADS, thread_name_prefix="dwray-body")
        self.warehouse = RayWarehouse(self.config, supervisor)
        self.identity = RemoteIdentity(self.handle("identity"))
        self.access_keys = AccessKeys(self.identity, self.warehouse.keyring)
        self.memory = _memory_monitor(config)
        self.metrics = GatewayMetrics(guards=self.guard_snapshot, memory=self.memory_status)
        gateway = config.gateway
        self.limiter = RateLimiter.from_config(config, gateway.replicas)
        self.auth_failures = AuthFailureLimiter.from_config(config, gateway.replicas)
        # HAProxy started through dwray-haproxy sets the client's address header; nothing else may be believed.
        self.forwarded_client = os.environ.get(ENV_HARDENED) == "1"
        self.verifier = SigV4Verifier(self.lookup_key, region=gateway.region, max_skew=gateway.max_clock_skew)
        self.draining = False
        self._required: tuple[float, frozenset[str] | None] = (float("-inf"), None)
        self._epoch: int | None = None
        self._keys: dict[str, tuple[float, SigningIdentity]] = {}
        self._unknown_keys: OrderedDict[str, float] = OrderedDict()
        self._generation = 0  # moves when caches are dropped; a lookup begun before must not be cached
        self._admin_tokens: dict[str, tuple[float, AdminTokenInfo | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._config_revision: int | None = None
        self._config_checked = time.monotonic()
        self._tree_mirrored = 0.0  # the first report round mirrors the tree into Ray
        self._reporter = threading.Thread(target=self._report_loop, name="dwray-gateway-report", daemon=True)
        self._reporter.start()

    def handle(self, child_id: str) -> PluginHandle:
        return plugin_handle(self.config, self.supervisor, child_id)

    # Health -----------------------------------------------------------------------

    def memory_status(self) -> dict[str, Any] | None:
        """This process's memory monitor's status (``None`` when memory pressure is off)."""
        return None if self.memory is None else self.memory.status()

    def guard_snapshot(self) -> dict[str, dict[str, Any]]:
        """This process's breakers and bulkheads for this warehouse's plugins, by child id.

        ``process_guards()`` names a guard ``child@namespace`` outside the default
        namespace (one process may call several warehouses); a replica serves one.
        """
        from dwray.core.resilience import process_guards

        namespace = self.config.runtime.namespace
        suffix = "" if namespace == DEFAULT_NAMESPACE else f"@{namespace}"
        found = {}
        for name, snapshot in process_guards().snapshot().items():
            child, at, where = name.partition("@")
            if (at + where) == suffix:
                found[child] = snapshot
        return found

    def required_children(self) -> frozenset[str] | None:
        """The ids of the required plugins (asked of the supervisor at most every 30 s); ``None``: unknown."""
        at, required = self._required
        if time.monotonic() - at < REQUIRED_CACHE_SECONDS:
            return required
        try:
            children = ray.get(self.supervisor.status.remote(), timeout=REPORT_TIMEOUT)["children"]
        except Exception:  # noqa: BLE001 - unknown: every plugin counts as required
            return required
        required = frozenset(c["id"] for c in children if c.get("required", True))
        self._required = (time.monotonic(), required)
        return required

    # Identities, cached -------------------------------------------------------------

    def lookup_key(self, access_key_id: str) -> SigningIdentity | None:
        """The signing identity of an access key (None: no such key), cached (see the module docstring)."""
        now = time.monotonic()
        with self._lock:
            cached = self._keys.get(access_key_id)
            unknown_since = self._unknown_keys.get(access_key_id)
            generation = self._generation
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            self.metrics.key_lookup("cache")
            return cached[1]
        if unknown_since is not None and now - unknown_since < UNKNOWN_KEY_CACHE_SECONDS:
            self.metrics.key_lookup("cache")
            return None
        self.metrics.key_lookup("service")
        resolved = self.access_keys.lookup(access_key_id)
        identity = None if resolved is None else SigningIdentity(
            resolved.access_key_id, resolved.secret_access_key, resolved.tenant, resolved.policy)
        with self._lock:
            if generation == self._generation:
                self._keys.pop(access_key_id, None)
                self._unknown_keys.pop(access_key_id, None)
                if identity is None:
                    self._unknown_keys[access_key_id] = now
                    while len(self._unknown_keys) > MAX_UNKNOWN_KEYS:  # the oldest go first
                        self._unknown_keys.popitem(last=False)
                else:
                    self._keys[access_key_id] = (now, identity)
                    while len(self._keys) > MAX_CACHED_KEYS:
                        self._keys.pop(next(iter(self._keys)))
        return identity

    def metrics_token_accepts(self, authorization: str | None) -> bool:
        """Whether ``Authorization: Bearer <token>`` carries the metrics token (``[gateway] metrics_token``).

        The reference is resolved here, in the replica, through the shared
        secret resolver: the current value and, after a rotation, the previous
        one for the grace period. Every accepted value is compared, in constant
        time, whichever matches.
        """
        from dwray.secrets import shared_resolver

        ref = self.config.gateway.metrics_token
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if ref is None or scheme.lower() != "bearer" or not token:
            return False
        matches = [value == token for value in shared_resolver(self.config).accepted(ref)]
        return any(matches)

    def find_admin_token(self, token: str) -> AdminTokenInfo | None:
        """The admin token ``token`` is (expired or not: the caller checks), or ``None``; cached like keys.

        The cache keeps the token's record, expiry included, so a cached token
        is refused the moment it expires; a revocation drops every replica's cache.
        """
        import hashlib

        digest = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            cached = self._admin_tokens.get(digest)
            generation = self._generation
        if cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        info = self.access_keys.find_admin_token(token)
        with self._lock:
            if generation == self._generation:
                if len(self._admin_tokens) > 1000:
                    self._admin_tokens.clear()
                self._admin_tokens[digest] = (now, info)
        return info

    def forget_identities(self) -> None:
        with self._lock:
            self._generation += 1
            self._keys.clear()
            self._unknown_keys.clear()
            self._admin_tokens.clear()

    def identities_changed(self) -> None:
        """After an admin change: drop this replica's caches and tell the others."""
        self.forget_identities()
        try:
            ray.get(self.coordinator.bump_epoch.remote(), timeout=REPORT_TIMEOUT)
        except Exception:  # noqa: BLE001 - others still expire their caches within 30 s
            log.warning("could not tell the coordinator that access keys changed")

    # Control ----------------------------------------------------------------------

    def _report_loop(self) -> None:
        while not self._stop.wait(REPORT_INTERVAL):
            self.report()
            if time.monotonic() - self._config_checked >= CONFIG_CHECK_SECONDS:
                self._config_checked = time.monotonic()
                self.check_config()
            if time.monotonic() - self._tree_mirrored >= TREE_METRICS_SECONDS:
                self._tree_mirrored = time.monotonic()
                self.mirror_tree_in_ray()

    def mirror_tree_in_ray(self) -> None:
        """The tree's gauges into Ray's metrics (``serve_apps.metrics.mirror_tree_in_ray``)."""
        from serve_apps.metrics import mirror_tree_in_ray

        try:
            tree = ray.get(self.supervisor.status.remote(), timeout=REPORT_TIMEOUT)
            mirror_tree_in_ray(tree, self.warehouse.catalog.tenant_stats())
        except Exception as exc:  # noqa: BLE001 - the next round tries again; /metrics has its own
            log.debug("the tree's metrics were not mirrored into Ray: %s", exc)

    def check_config(self) -> bool:
        """Take the running config if a reload was applied since the last look; whether it was taken."""
        from actors.handles import running_config

        try:
            revision = ray.get(self.supervisor.config_revision.remote(), timeout=REPORT_TIMEOUT)
            if self._config_revision is None:
                # The first look: the replica started with the running config (of this revision or later).
                self._config_revision = revision
                return False
            if revision == self._config_revision:
                return False
            config = running_config(self.config, self.supervisor)
        except Exception as error:  # noqa: BLE001 - tried again at the next check
            log.warning("could not check for a reloaded config (%s)", type(error).__name__)
            return False
        self.apply_config(config)
        self._config_revision = revision
        return True

    def apply_config(self, config: DwrayConfig) -> None:
        """Take what a reload may change in a replica: rate limits, auth-failure limits, logging, tracing."""
        gateway = self.config.gateway.model_copy(update={"rate_limit": config.gateway.rate_limit,
                                                         "auth_failures": config.gateway.auth_failures})
        self.config = self.config.model_copy(update={"gateway": gateway, "logging": config.logging,
                                                     "tracing": config.tracing})
        self.limiter = RateLimiter.from_config(self.config, gateway.replicas)
        self.auth_failures = AuthFailureLimiter.from_config(self.config, gateway.replicas)
        s3 = getattr(self, "s3", None)
        if s3 is not None:  # the S3 handler was built with the old limiters: it checks the new ones from now on
            s3.limiter, s3.auth_failures = self.limiter, self.auth_failures
        try:
            from dwray.core.telemetry import configure_telemetry

            configure_telemetry(config.tracing, config.logging, "gateway", config=config)
        except Exception as error:  # noqa: BLE001 - the limits are taken; spans and log levels stay as they were
            log.warning("the reloaded [tracing]/[logging] could not be applied here (%s)", type(error).__name__)
        log.info("replica %s took the reloaded config (rate limits, log levels)", self.replica_id)

    def report(self) -> None:
        """Send this replica's metrics and in-flight count; learn draining and the key epoch."""
        try:
            control = ray.get(self.coordinator.report.remote(
                self.replica_id, self.metrics.exposition(), self.metrics.in_flight), timeout=REPORT_TIMEOUT)
        except ray.exceptions.ActorDiedError:
            self._replace_coordinator()  # removed for good: the next report goes to the new one
            return
        except Exception:  # noqa: BLE001 - a missed report only delays what others see
            return
        if self.draining and not control.get("draining"):
            # A coordinator that started again since this replica was told to drain: tell it.
            self._tell_draining()
        self.draining = self.draining or bool(control.get("draining"))
        epoch = control.get("epoch")
        if self._epoch is not None and epoch != self._epoch:
            self.forget_identities()
        self._epoch = epoch

    def _replace_coordinator(self) -> None:
        from actors.gateway_coordinator import ensure_coordinator

        try:
            coordinator = ensure_coordinator(self.config.runtime.namespace)
        except Exception as error:  # noqa: BLE001 - tried again at the next report
            log.warning("the gateway coordinator is gone and could not be created again (%s)",
                        type(error).__name__)
            return
        log.warning("the gateway coordinator was gone; replica %s uses a new one", self.replica_id)
        self.coordinator = coordinator
        self._epoch = None
        self.forget_identities()  # an access key change made while it was gone reached nobody
        if self.draining:
            self._tell_draining()

    def _tell_draining(self) -> None:
        try:
            ray.get(self.coordinator.set_draining.remote(True), timeout=REPORT_TIMEOUT)
        except Exception:  # noqa: BLE001 - tried again at the next report
            log.warning("could not tell the gateway coordinator that this replica drains")

    def close(self) -> None:
        self._stop.set()
        try:
            ray.get(self.coordinator.forget.remote(self.replica_id), timeout=REPORT_TIMEOUT)
        except Exception:  # noqa: BLE001 - the coordinator drops stale replicas anyway
            pass
        self.warehouse.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.body_executor.shutdown(wait=False, cancel_futures=True)


def _memory_monitor(config: DwrayConfig) -> Any:
    """The process's shared memory monitor for ``[memory]`` (``None`` when it is off)."""
    from dwray.core.memory_pressure import shared_monitor

    return shared_monitor(config.memory)
