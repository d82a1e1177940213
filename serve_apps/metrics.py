"""Gateway metrics: what one replica counts, and the one ``/metrics`` page for all.

Each gateway replica owns a :class:`GatewayMetrics` in its own
``CollectorRegistry`` (never the process-global one, which Ray and Serve also
use). Replicas send their exposition to the gateway coordinator actor; any
replica answering ``/metrics`` calls :func:`render` with every replica's latest
snapshot and the warehouse-wide facts (plugin states from the supervisor,
object counts per tenant, the draining flag) to build one exposition in which
every replica's sample carries a ``replica`` label.

Label values are kept to bounded sets so a client cannot grow the number of
series: operations are S3 operation names (anything else counts as
``unknown``), statuses are HTTP status codes, rate-limit scopes are ``tenant``,
``key`` or ``source`` (never the tenant's name, the key id or the address),
auth failures are S3 error codes. No label ever carries a key id, a secret or
a signature.

Who stores what is itself worth hiding from whoever can scrape: tenant names
appear (``dwray_tenant_objects{tenant=...}``) only when ``[gateway]
metrics_tenant_labels`` is on; otherwise the page has the warehouse's totals
(objects, bytes, tenants storing) and nothing per tenant. The counts come from
``Catalog.tenant_stats``, kept by the catalog as objects change, so a scrape
costs one row per tenant, not a scan of the objects.

Resilience, per replica (read from the process when the exposition is made,
so never stale): each plugin's circuit breaker state (one series per state,
1 for the current one), calls it refused, and its bulkhead's calls in flight
and rejections (:mod:`dwray.core.resilience`); the memory level (one series
per level) and the bytes used and the limit (:mod:`dwray.core.memory_pressure`).
Warehouse-wide, from the supervisor: its state, the tree's restarts, and the
worst breaker state any caller reported per plugin. The ``child`` label takes
the plugin tree's ids (the config's), ``state`` and ``level`` fixed sets.

Each replica's page also carries the calls its process made to plugins
(:mod:`actors.call_metrics`: calls by method and outcome, errors by kind,
latency). And in Ray every request, rate limit and authentication failure is
mirrored through ``ray.util.metrics``, and the warehouse-wide gauges are set
there each time the page is built (:mod:`serve_apps.metrics_ray`), so Ray's
metrics export port shows the same series prefixed ``ray_``.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from actors.call_metrics import PLUGIN_CALLS
from dwray.config_slo import LATENCY_THRESHOLDS
from dwray.errors import InvalidArgument
from dwray.s3.errors import STATUS as S3_ERROR_STATUS
from serve_apps.metrics_ray import RayGatewayMetrics
from serve_apps.metrics_storage import storage_families

__all__ = [
    "ALLOWED_LABELS",
    "BREAKER_STATES",
    "DURATION_BUCKETS",
    "OPERATIONS",
    "PLUGIN_STATES",
    "KEY_LOOKUP_SOURCES",
    "MEMORY_LEVELS",
    "RATE_LIMIT_SCOPES",
    "SUPERVISOR_STATES",
    "GatewayMetrics",
    "normalise_operation",
    "render",
]

logger = logging.getLogger(__name__)

# S3 operations the gateway serves, plus the gateway's own endpoints.
OPERATIONS: frozenset[str] = frozenset({
    "ListBuckets", "CreateBucket", "HeadBucket", "DeleteBucket",
    "GetBucketLocation", "GetBucketVersioning",
    "ListObjects", "ListObjectsV2",
    "PutObject", "GetObject", "HeadObject", "DeleteObject", "DeleteObjects", "CopyObject",
    "CreateMultipartUpload", "UploadPart", "UploadPartCopy", "CompleteMultipartUpload",
    "AbortMultipartUpload", "ListParts", "ListMultipartUploads",
    "admin", "health", "metrics", "unknown",
    # the gRPC methods (serve_apps.grpc_gateway.GRPC_OPERATIONS)
    "grpc.Put", "grpc.Get", "grpc.Head", "grpc.List", "grpc.Delete",
})
# "source": a source address whose requests keep failing authentication (see dwray.core.ratelimit).
RATE_LIMIT_SCOPES: frozenset[str] = frozenset({"tenant", "key", "source"})
# Where an access key's identity came from: this replica's cache (known or unknown key) or the identity service.
KEY_LOOKUP_SOURCES: frozenset[str] = frozenset({"cache", "service"})
# From 1 ms (a HEAD served from cache) to 60 s (a multi-GiB PUT); latency SLO thresholds are these bounds.
DURATION_BUCKETS: tuple[float, ...] = LATENCY_THRESHOLDS
# The supervisor's child states; states seen in the data are added to these.
PLUGIN_STATES: tuple[str, ...] = (
    "idle", "starting", "running", "restarting", "stopped", "terminated", "failed", "refused",
)
# The supervisor's own states; states seen in the data are added to these.
SUPERVISOR_STATES: tuple[str, ...] = (
    "idle", "starting", "running", "restarting", "failed", "stopping", "stopped",
)
# dwray.core.resilience.BREAKER_STATES and dwray.core.memory_pressure.LEVELS (not imported: this page
# must render whatever a replica of another version reported).
BREAKER_STATES: tuple[str, ...] = ("closed", "open", "half_open")
MEMORY_LEVELS: tuple[str, ...] = ("normal", "warning", "critical")
# Every label name the merged exposition may carry ("le" is the histogram's).
ALLOWED_LABELS: frozenset[str] = frozenset({
    "operation", "status", "le", "scope", "code", "replica", "child", "state", "tenant", "source", "level",
    "target", "tier", "member", "what", "kind", "method", "outcome", "error",
})
_OTHER_CODE = "other"
# Families render() adds itself; a replica's snapshot may not define them.
_WAREHOUSE_FAMILIES = frozenset({
    "dwray_plugin_restarts", "dwray_plugin_state", "dwray_tenant_objects",
    "dwray_tenant_bytes", "dwray_stored_objects", "dwray_stored_bytes", "dwray_storing_tenants",
    "dwray_gateway_draining", "dwray_gateway_replicas",
    "dwray_supervisor_state", "dwray_supervisor_tree_restarts", "dwray_plugin_breaker_state",
    "dwray_storage_blobs", "dwray_storage_bytes", "dwray_storage_tier_bytes", "dwray_storage_member_up",
    "dwray_storage_hints_pending", "dwray_storage_repairs", "dwray_storage_moves", "dwray_scrub_passes",
    "dwray_scrub_found", "dwray_scrub_running", "dwray_scrub_last_pass_timestamp_seconds",
    "dwray_scrub_last_pass_unrepairable",
})


# This process's mirror in Ray (nothing outside Ray): every replica's requests, and the tree gauges.
RAY_METRICS = RayGatewayMetrics(DURATION_BUCKETS)


def normalise_operation(operation: str) -> str:
    """``operation`` if it is one of :data:`OPERATIONS`, else ``"unknown"`` (keeps cardinality bounded)."""
    return operation if operation in OPERATIONS else "unknown"


class GatewayMetrics:
    """One replica's request metrics, in a registry of its own.

    ``guards`` and ``memory`` are read each time the exposition is made: the
    process's ``process_guards().snapshot`` and its memory monitor's ``status``
    (or ``None`` when memory pressure is off).
    """

    def __init__(self, *, guards: Callable[[], Mapping[str, Mapping[str, Any]]] | None = None,
                 memory: Callable[[], Mapping[str, Any] | None] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        if guards is not None or memory is not None:
            registry.register(_ProcessCollector(guards, memory))
        # The process's calls to plugins (actors.call_metrics), counted by its PluginHandles.
        registry.register(PLUGIN_CALLS)
        self._requests = Counter("dwray_s3_requests_total", "Requests by operation and HTTP status.",
                                 ["operation", "status"], registry=registry)
        self._duration = Histogram("dwray_s3_request_duration_seconds", "Request latency by operation.",
                                   ["operation"], buckets=DURATION_BUCKETS, registry=registry)
        self._received = Counter("dwray_s3_bytes_received_total", "Request body bytes received.",
                                 ["operation"], registry=registry)
        self._sent = Counter("dwray_s3_bytes_sent_total", "Response body bytes sent.",
                             ["operation"], registry=registry)
        self._rate_limited = Counter("dwray_rate_limited_total", "Requests refused by a rate limit (SlowDown).",
                                     ["scope"], registry=registry)
        self._in_flight_gauge = Gauge("dwray_requests_in_flight", "Requests being served now.",
                                      registry=registry)
        self._auth_failures = Counter("dwray_auth_failures_total", "Requests refused by authentication.",
                                      ["code"], registry=registry)
        self._key_lookups = Counter("dwray_access_key_lookups_total",
                                    "Access key lookups, answered by the replica's cache or the identity service.",
                                    ["source"], registry=registry)
        # The gauge has no public getter; the count is kept here for report().
        self._lock = threading.Lock()
        self._in_flight = 0

    def observe(self, operation: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Count one finished request."""
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise InvalidArgument(f"HTTP status must be an int from 100 to 599, got {status!r}")
        if seconds < 0:
            raise InvalidArgument(f"request duration must not be negative, got {seconds!r}")
        if bytes_in < 0 or bytes_out < 0:
            raise InvalidArgument(f"byte counts must not be negative, got in={bytes_in!r} out={bytes_out!r}")
        op = normalise_operation(operation)
        self._requests.labels(op, str(status)).inc()
        self._duration.labels(op).observe(seconds)
        self._received.labels(op).inc(bytes_in)
        self._sent.labels(op).inc(bytes_out)
        RAY_METRICS.observe(op, status, seconds, bytes_in, bytes_out)

    def rate_limited(self, scope: str) -> None:
        """Count one request refused by the ``"tenant"`` or ``"key"`` rate limit."""
        if scope not in RATE_LIMIT_SCOPES:
            raise InvalidArgument(f"rate limit scope must be one of {sorted(RATE_LIMIT_SCOPES)}, got {scope!r}")
        self._rate_limited.labels(scope).inc()
        RAY_METRICS.count("rate_limited", "scope", scope)

    def key_lookup(self, source: str) -> None:
        """Count one access key lookup answered from ``"cache"`` or by the identity ``"service"``."""
        if source not in KEY_LOOKUP_SOURCES:
            raise InvalidArgument(f"key lookup source must be one of {sorted(KEY_LOOKUP_SOURCES)}, got {source!r}")
        self._key_lookups.labels(source).inc()

    def auth_failed(self, code: str) -> None:
        """Count one authentication failure by its S3 error code (unknown codes count as ``other``)."""
        code = code if code in S3_ERROR_STATUS else _OTHER_CODE
        self._auth_failures.labels(code).inc()
        RAY_METRICS.count("auth_failures", "code", code)

    @property
    def in_flight(self) -> int:
        """Requests begun and not yet ended."""
        return self._in_flight

    def begin(self) -> None:
        """A request started (pair with :meth:`end`, e.g. when a streamed body finishes)."""
        with self._lock:
            self._in_flight += 1
            self._in_flight_gauge.set(self._in_flight)

    def end(self) -> None:
        """A request begun with :meth:`begin` finished."""
        with self._lock:
            if self._in_flight == 0:
                raise InvalidArgument("end() called with no request in flight")
            self._in_flight -= 1
            self._in_flight_gauge.set(self._in_flight)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Count the request in flight for the duration of the ``with`` block."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    def exposition(self) -> bytes:
        """This replica's metrics in the Prometheus text format."""
        return generate_latest(self.registry)


# -- one page for all replicas ---------------------------------------------------


def render(snapshots: Mapping[str, bytes], *, plugins: list[dict[str, Any]],
           tenants: Mapping[str, Mapping[str, int]], draining: bool, tenant_labels: bool = False,
           supervisor: Mapping[str, Any] | None = None, storage: Mapping[str, Any] | None = None) -> bytes:
    """Merge the replicas' expositions and add the warehouse-wide families.

    ``snapshots`` maps replica id to that replica's :meth:`GatewayMetrics.exposition`;
    ``plugins`` is the supervisor's ``status()["children"]``; ``tenants`` maps a
    tenant name to ``{"objects": n, "bytes": n}``: summed into totals always,
    and shown per tenant, names as labels, only with ``tenant_labels``;
    ``supervisor`` the whole ``status()`` (its state and tree restarts), when
    it answered; ``storage`` the storage targets' and the scrubber's status
    (``serve_apps.metrics_storage``). A
    snapshot that does not parse is left out (and logged) so one bad replica
    cannot take the page down.
    """
    families: list[Metric] = []
    merged, replicas = _merge_replicas(snapshots)
    families.extend(merged.values())
    families.extend(_plugin_families(plugins))
    if supervisor is not None:
        families.extend(_supervisor_families(supervisor, plugins))
    families.extend(_tenant_families(tenants, tenant_labels))
    _mirror_in_ray(plugins, supervisor, tenants)
    if storage is not None:
        families.extend(storage_families(storage))
    families.append(GaugeMetricFamily("dwray_gateway_draining", "1 while the gateway drains for shutdown.",
                                      value=1.0 if draining else 0.0))
    families.append(GaugeMetricFamily("dwray_gateway_replicas", "Gateway replicas whose metrics are on this page.",
                                      value=float(replicas)))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FixedCollector(families))
    return generate_latest(registry)


def mirror_tree_in_ray(tree: Mapping[str, Any] | None, tenants: Mapping[str, Mapping[str, int]]) -> None:
    """The warehouse-wide gauges (plugin states, restarts, breakers, supervisor, stored totals) into Ray,
    from the supervisor's ``status()`` and the catalog's ``tenant_stats()``: each replica does it on its
    own schedule, so Ray's metrics port stays current while nobody scrapes ``/metrics``."""
    _mirror_in_ray(list((tree or {}).get("children", [])), tree, tenants)


def _mirror_in_ray(plugins: list[dict[str, Any]], supervisor: Mapping[str, Any] | None,
                   tenants: Mapping[str, Mapping[str, int]]) -> None:
    """The warehouse-wide gauges into Ray too (called once the inputs were checked by the families)."""
    states = {
        "plugin": _with_seen(PLUGIN_STATES, [p.get("state") for p in plugins if isinstance(p, Mapping)]),
        "breaker": _with_seen(BREAKER_STATES, [p.get("breaker") for p in plugins if isinstance(p, Mapping)]),
        "supervisor": _with_seen(SUPERVISOR_STATES, [(supervisor or {}).get("state")]),
    }
    totals = {"objects": sum(t["objects"] for t in tenants.values()),
              "bytes": sum(t["bytes"] for t in tenants.values()), "tenants": len(tenants)}
    RAY_METRICS.record_tree(plugins, supervisor, totals, states)


class _FixedCollector(Collector):
    """Hands ``generate_latest`` families built beforehand, so the text is produced by prometheus_client."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _merge_replicas(snapshots: Mapping[str, bytes]) -> tuple[dict[tuple[str, str], Metric], int]:
    """The replicas' families merged by name, each sample labelled with its replica; and how many parsed."""
    merged: dict[tuple[str, str], Metric] = {}
    types: dict[str, str] = {}
    parsed_replicas = 0
    for replica in sorted(snapshots):
        try:
            parsed = list(text_string_to_metric_families(snapshots[replica].decode("utf-8")))
        except ValueError as exc:  # UnicodeDecodeError is a ValueError too
            logger.warning("metrics of replica %s do not parse and are left out: %s", replica, exc)
            continue
        parsed_replicas += 1
        for family in parsed:
            if family.name in _WAREHOUSE_FAMILIES:
                continue
            if types.setdefault(family.name, family.type) != family.type:
                # Only during a rolling upgrade that changed a metric's type.
                logger.warning("replica %s exports %s as %s, others as %s; left out",
                               replica, family.name, family.type, types[family.name])
                continue
            target = merged.get((family.name, family.type))
            if target is None:
                target = merged[(family.name, family.type)] = Metric(family.name, family.documentation, family.type)
            for sample in family.samples:
                target.samples.append(Sample(sample.name, {**sample.labels, "replica": replica},
                                             sample.value, sample.timestamp))
    return merged, parsed_replicas


def _field(entry: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = entry.get(name) if isinstance(entry, Mapping) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidArgument(f"{where} needs {name!r} as {kind.__name__}, got {value!r}")
    if kind is int and value < 0:
        raise InvalidArgument(f"{where} has a negative {name!r}: {value}")
    return value


def _plugin_families(plugins: list[dict[str, Any]]) -> list[Metric]:
    restarts = Metric("dwray_plugin_restarts", "Restarts of each supervised plugin child.", "counter")
    state = GaugeMetricFamily("dwray_plugin_state", "1 for the state each plugin child is in, 0 for the others.",
                              labels=["child", "state"])
    children = [(_field(p, "id", str, f"plugin entry {i}"), _field(p, "state", str, f"plugin entry {i}"),
                 _field(p, "restarts", int, f"plugin entry {i}")) for i, p in enumerate(plugins)]
    # Every known state gets a series (0 or 1) so alerts see a state end, not just vanish.
    states = list(PLUGIN_STATES) + sorted({s for _, s, _ in children} - set(PLUGIN_STATES))
    for child, current, count in children:
        restarts.add_sample("dwray_plugin_restarts_total", {"child": child}, float(count))
        for name in states:
            state.add_metric([child, name], 1.0 if name == current else 0.0)
    return [restarts, state]


def _one_hot(family: GaugeMetricFamily, labels: list[str], states: Iterable[str], current: Any) -> None:
    for state in states:
        family.add_metric([*labels, state], 1.0 if state == current else 0.0)


def _with_seen(known: tuple[str, ...], seen: Iterable[Any]) -> list[str]:
    """``known`` plus any other state seen (strings only), so a new state shows rather than vanishes."""
    return list(known) + sorted({s for s in seen if isinstance(s, str)} - set(known))


def _supervisor_families(tree: Mapping[str, Any], plugins: list[dict[str, Any]]) -> list[Metric]:
    state = GaugeMetricFamily("dwray_supervisor_state", "1 for the state the supervisor is in, 0 for the others.",
                              labels=["state"])
    _one_hot(state, [], _with_seen(SUPERVISOR_STATES, [tree.get("state")]), tree.get("state"))
    restarts = CounterMetricFamily("dwray_supervisor_tree_restarts",
                                   "Restarts of the whole plugin tree after an escalation.")
    count = tree.get("tree_restarts")
    restarts.add_metric([], float(count) if isinstance(count, int) and not isinstance(count, bool) else 0.0)
    breakers = GaugeMetricFamily("dwray_plugin_breaker_state", "1 for the worst circuit breaker state any caller "
                                 "reported for each plugin, 0 for the others.", labels=["child", "state"])
    reported = [(p.get("id"), p.get("breaker")) for p in plugins if isinstance(p, Mapping) and "breaker" in p]
    states = _with_seen(BREAKER_STATES, [b for _, b in reported])
    for child, current in reported:
        if isinstance(child, str):
            _one_hot(breakers, [child], states, current)
    return [state, restarts, breakers]


class _ProcessCollector(Collector):
    """This replica's breakers, bulkheads and memory, read from the process at each exposition."""

    def __init__(self, guards: Callable[[], Mapping[str, Mapping[str, Any]]] | None,
                 memory: Callable[[], Mapping[str, Any] | None] | None) -> None:
        self._guards = guards
        self._memory = memory

    def describe(self) -> Iterable[Metric]:
        return []  # no fixed names to check for clashes: the registry is the replica's own

    def collect(self) -> Iterable[Metric]:
        families: list[Metric] = []
        if self._guards is not None:
            families.extend(_guard_families(self._guards()))
        if self._memory is not None:
            families.extend(_memory_families(self._memory()))
        return families


def _guard_families(guards: Mapping[str, Mapping[str, Any]]) -> list[Metric]:
    state = GaugeMetricFamily("dwray_breaker_state", "1 for the state of this replica's circuit breaker for each "
                              "plugin, 0 for the others.", labels=["child", "state"])
    refused = CounterMetricFamily("dwray_breaker_not_permitted", "Calls this replica's breaker refused, per plugin.",
                                  labels=["child"])
    in_flight = GaugeMetricFamily("dwray_bulkhead_in_flight", "Calls in flight to each plugin from this replica.",
                                  labels=["child"])
    rejected = CounterMetricFamily("dwray_bulkhead_rejected", "Calls the bulkhead refused (too many in flight), "
                                   "per plugin.", labels=["child"])
    states = _with_seen(BREAKER_STATES, [g.get("state") for g in guards.values()])
    for child in sorted(guards):
        guard = guards[child]
        _one_hot(state, [child], states, guard.get("state"))
        refused.add_metric([child], float(guard.get("not_permitted") or 0))
        in_flight.add_metric([child], float(guard.get("in_flight") or 0))
        rejected.add_metric([child], float(guard.get("rejected") or 0))
    return [state, refused, in_flight, rejected]


def _memory_families(memory: Mapping[str, Any] | None) -> list[Metric]:
    if not memory:
        return []
    level = GaugeMetricFamily("dwray_memory_level", "1 for the memory pressure level of this replica's node "
                              "(its cgroup where limited), 0 for the others.", labels=["level"])
    _one_hot(level, [], _with_seen(MEMORY_LEVELS, [memory.get("level")]), memory.get("level"))
    families: list[Metric] = [level]
    for key, name, text in (("used", "dwray_memory_used_bytes", "Memory in use, as the pressure monitor reads it."),
                            ("limit", "dwray_memory_limit_bytes", "The memory limit the pressure levels apply to.")):
        value = memory.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            families.append(GaugeMetricFamily(name, text, value=float(value)))
    return families


def _tenant_families(tenants: Mapping[str, Mapping[str, int]], labelled: bool) -> list[Metric]:
    counts: list[tuple[str, int, int]] = []
    for tenant in sorted(tenants):
        if not isinstance(tenant, str) or not tenant:
            raise InvalidArgument(f"tenant names must be non-empty strings, got {tenant!r}")
        where = f"tenant {tenant!r}"
        counts.append((tenant, _field(tenants[tenant], "objects", int, where),
                       _field(tenants[tenant], "bytes", int, where)))
    families: list[Metric] = [
        GaugeMetricFamily("dwray_stored_objects", "Objects stored (latest versions), all tenants.",
                          value=float(sum(objects for _, objects, _ in counts))),
        GaugeMetricFamily("dwray_stored_bytes", "Bytes stored (object sizes), all tenants.",
                          value=float(sum(size for _, _, size in counts))),
        GaugeMetricFamily("dwray_storing_tenants", "Tenants that own a bucket.", value=float(len(counts))),
    ]
    if labelled:
        objects = GaugeMetricFamily("dwray_tenant_objects", "Objects stored per tenant.", labels=["tenant"])
        size = GaugeMetricFamily("dwray_tenant_bytes", "Bytes stored per tenant (object sizes).", labels=["tenant"])
        for tenant, count, stored in counts:
            objects.add_metric([tenant], float(count))
            size.add_metric([tenant], float(stored))
        families += [objects, size]
    return families
