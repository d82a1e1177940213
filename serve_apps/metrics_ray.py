"""The gateway's metrics through ``ray.util.metrics``, for Ray's own metrics export port and dashboard.

The gateway's ``/metrics`` page (:mod:`serve_apps.metrics`) is what the
gateway's Prometheus scrapes; operators who watch Ray instead scrape each
node's metrics export port (``ray.nodes()[i]["MetricsExportPort"]``, ``ray
start --metrics-export-port``), where Ray's agent shows what every worker
recorded, prefixed ``ray_``. So each replica records its requests here too,
under the same names and labels as on the page (``ray_dwray_s3_requests_total``
is ``dwray_s3_requests_total``), and each time a replica builds the page it
sets the warehouse-wide gauges from the supervisor's status (plugin states,
restarts, breaker states, the supervisor's state) and the catalog's totals.

Per tenant counts never go to Ray: Ray's endpoint has no token and is seen by
whoever reaches a node, so only the totals do (the page shows per-tenant
gauges only with ``[gateway] metrics_tenant_labels``).

Outside Ray (unit tests, a driver that did not join) every method does
nothing: :func:`actors.call_metrics.ray_metric` makes no metric there.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from actors.call_metrics import ray_metric

__all__ = ["RayGatewayMetrics"]

_TREE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "plugin_state": ("dwray_plugin_state", ("child", "state")),
    "plugin_restarts": ("dwray_plugin_restarts", ("child",)),
    "breaker_state": ("dwray_plugin_breaker_state", ("child", "state")),
    "supervisor_state": ("dwray_supervisor_state", ("state",)),
    "tree_restarts": ("dwray_supervisor_tree_restarts", ()),
    "objects": ("dwray_stored_objects", ()),
    "bytes": ("dwray_stored_bytes", ()),
    "tenants": ("dwray_storing_tenants", ()),
}
_DESCRIPTIONS = {
    "dwray_plugin_state": "1 for the state each plugin child is in, 0 for the others.",
    "dwray_plugin_restarts": "Restarts of each supervised plugin child (the supervisor's count).",
    "dwray_plugin_breaker_state": "1 for the worst circuit breaker state any caller reported per plugin.",
    "dwray_supervisor_state": "1 for the state the supervisor is in, 0 for the others.",
    "dwray_supervisor_tree_restarts": "Restarts of the whole plugin tree after an escalation.",
    "dwray_stored_objects": "Objects stored (latest versions), all tenants.",
    "dwray_stored_bytes": "Bytes stored (object sizes), all tenants.",
    "dwray_storing_tenants": "Tenants that own a bucket.",
}


class RayGatewayMetrics:
    """One replica's mirror of its request metrics and of the warehouse-wide gauges in Ray."""

    def __init__(self, duration_buckets: Iterable[float]) -> None:
        self._buckets = list(duration_buckets)
        self._lock = threading.Lock()
        self._metrics: dict[str, Any] | None = None

    def _get(self) -> dict[str, Any] | None:
        if self._metrics is None:
            with self._lock:
                if self._metrics is None:
                    requests = ray_metric("Counter", "dwray_s3_requests_total", "Requests by operation and HTTP "
                                          "status.", ("operation", "status"))
                    if requests is None:
                        return None
                    made = {
                        "requests": requests,
                        "duration": ray_metric("Histogram", "dwray_s3_request_duration_seconds", "Request latency "
                                               "by operation.", ("operation",), boundaries=self._buckets),
                        "received": ray_metric("Counter", "dwray_s3_bytes_received_total", "Request body bytes "
                                               "received.", ("operation",)),
                        "sent": ray_metric("Counter", "dwray_s3_bytes_sent_total", "Response body bytes sent.",
                                           ("operation",)),
                        "rate_limited": ray_metric("Counter", "dwray_rate_limited_total", "Requests refused by a "
                                                   "rate limit (SlowDown).", ("scope",)),
                        "auth_failures": ray_metric("Counter", "dwray_auth_failures_total", "Requests refused by "
                                                    "authentication.", ("code",)),
                    }
                    for key, (name, tags) in _TREE_GAUGES.items():
                        made[key] = ray_metric("Gauge", name, _DESCRIPTIONS[name], tags)
                    self._metrics = made
        return self._metrics

    def observe(self, operation: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Mirror one finished request (already validated and normalised by ``GatewayMetrics``)."""
        metrics = self._get()
        if metrics is None:
            return
        metrics["requests"].inc(1.0, tags={"operation": operation, "status": str(status)})
        metrics["duration"].observe(seconds, tags={"operation": operation})
        if bytes_in:
            metrics["received"].inc(float(bytes_in), tags={"operation": operation})
        if bytes_out:
            metrics["sent"].inc(float(bytes_out), tags={"operation": operation})

    def count(self, what: str, label: str, value: str) -> None:
        """Mirror one ``rate_limited`` (``scope``) or ``auth_failures`` (``code``) event."""
        metrics = self._get()
        if metrics is not None:
            metrics[what].inc(1.0, tags={label: value})

    def record_tree(self, plugins: list[dict[str, Any]], supervisor: Mapping[str, Any] | None,
                    totals: Mapping[str, int], states: Mapping[str, Iterable[str]]) -> None:
        """Set the warehouse-wide gauges: the supervisor's ``status()`` and the catalog's totals.

        ``states`` names every state of ``plugin``, ``breaker`` and ``supervisor`` to write (0 or 1 each),
        as the page does, so an alert sees a state end rather than a series vanish.
        """
        metrics = self._get()
        if metrics is None:
            return
        for entry in plugins:
            child = entry.get("id") if isinstance(entry, Mapping) else None
            if not isinstance(child, str):
                continue
            for state in states["plugin"]:
                metrics["plugin_state"].set(1.0 if entry.get("state") == state else 0.0,
                                            tags={"child": child, "state": state})
            restarts = entry.get("restarts")
            if isinstance(restarts, int) and not isinstance(restarts, bool):
                metrics["plugin_restarts"].set(float(restarts), tags={"child": child})
            if "breaker" in entry:
                for state in states["breaker"]:
                    metrics["breaker_state"].set(1.0 if entry.get("breaker") == state else 0.0,
                                                 tags={"child": child, "state": state})
        if supervisor is not None:
            for state in states["supervisor"]:
                metrics["supervisor_state"].set(1.0 if supervisor.get("state") == state else 0.0,
                                                tags={"state": state})
            count = supervisor.get("tree_restarts")
            if isinstance(count, int) and not isinstance(count, bool):
                metrics["tree_restarts"].set(float(count))
        for key in ("objects", "bytes", "tenants"):
            metrics[key].set(float(totals[key]))
