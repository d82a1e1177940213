"""Per-plugin call metrics: calls, errors by kind and latency, counted by every caller.

A :class:`~actors.handles.PluginHandle` counts each call it makes (``call``,
and ``resolve`` for submitted ones) here, in the calling process: the gateway
replicas, drivers, plugin hosts calling each other. The figures go two ways:

- into ``prometheus_client`` metrics kept per process outside any registry,
  which the gateway's own page adds (:data:`PLUGIN_CALLS`, a collector a
  replica's registry takes in), so ``/metrics`` shows its replicas' calls;
- into ``ray.util.metrics`` when the process runs in Ray, so Ray's metrics
  export port on every node (and its dashboard) shows the calls of every
  process, workers and drivers alike. Ray prefixes the names with ``ray_``:
  ``ray_dwray_plugin_calls_total``.

Labels stay bounded: ``child`` is the plugin tree's ids (the config's),
``kind`` the child id up to its first ``:``, ``method`` the kernel's method
names (callers are dwray's code, never a client), ``outcome`` ``ok``,
``failure`` (the plugin broke: what its circuit breaker counts, see
``dwray.core.resilience.counts_as_failure``) or ``error`` (a dwray error it
answered, ``NotFound`` say, or a breaker or bulkhead that refused the call),
``error`` a dwray error's class name (anything else counts as ``other``).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from dwray.core.resilience import counts_as_failure
from dwray.errors import DwrayError

__all__ = ["CALL_BUCKETS", "PLUGIN_CALLS", "PluginCallMetrics", "ray_metric"]

# From 0.5 ms (a catalog lookup on the same node) to 60 s (a large blob on a slow backend).
CALL_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
_OTHER = "other"


def _error_kind(error: BaseException | None) -> str:
    if error is None:
        return ""
    return type(error).__name__ if isinstance(error, DwrayError) else _OTHER


def ray_metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...], **options: Any) -> Any:
    """A ``ray.util.metrics`` ``Counter``/``Gauge``/``Histogram``, or ``None`` when this process is not in Ray.

    Made only once Ray is initialised here: a metric made before has no core
    worker to record through.
    """
    import ray

    if not ray.is_initialized():
        return None
    from ray.util import metrics

    return getattr(metrics, kind)(name, description=description, tag_keys=tag_keys, **options)


class PluginCallMetrics(Collector):
    """This process's plugin calls: counted for the gateway page and, in Ray, for Ray's metrics."""

    _LABELS = ("child", "kind", "method", "outcome")

    def __init__(self) -> None:
        self._calls = Counter("dwray_plugin_calls_total", "Calls to each plugin from this process, by method and "
                              "outcome: ok, failure (the plugin broke) or error (a dwray error it answered, "
                              "or a guard that refused the call).", self._LABELS, registry=None)
        self._errors = Counter("dwray_plugin_call_errors_total", "Failed calls to each plugin from this process, "
                               "by error.", ("child", "kind", "error"), registry=None)
        self._duration = Histogram("dwray_plugin_call_duration_seconds", "Plugin call latency seen by the caller "
                                   "(waiting for a restart and retries included).", ("child", "kind"),
                                   buckets=CALL_BUCKETS, registry=None)
        self._lock = threading.Lock()
        self._ray: tuple[Any, Any, Any] | None = None

    def _ray_metrics(self) -> tuple[Any, Any, Any] | None:
        if self._ray is None:
            with self._lock:
                if self._ray is None:
                    calls = ray_metric("Counter", "dwray_plugin_calls_total", "Calls to each plugin, by method and "
                                       "outcome.", self._LABELS)
                    if calls is None:
                        return None  # not in Ray (yet): asked again at the next call
                    self._ray = (
                        calls,
                        ray_metric("Counter", "dwray_plugin_call_errors_total", "Failed calls to each plugin, "
                                   "by error.", ("child", "kind", "error")),
                        ray_metric("Histogram", "dwray_plugin_call_duration_seconds", "Plugin call latency seen "
                                   "by the caller.", ("child", "kind"), boundaries=list(CALL_BUCKETS)))
        return self._ray

    def observe(self, child: str, method: str, seconds: float, error: BaseException | None = None) -> None:
        """Count one call to ``child``'s ``method`` that took ``seconds`` and raised ``error`` (or not)."""
        kind = child.split(":", 1)[0]
        outcome = "ok" if error is None else "failure" if counts_as_failure(error) else "error"
        seconds = max(0.0, seconds)
        self._calls.labels(child, kind, method, outcome).inc()
        self._duration.labels(child, kind).observe(seconds)
        error_kind = _error_kind(error)
        if error is not None:
            self._errors.labels(child, kind, error_kind).inc()
        mirror = self._ray_metrics()
        if mirror is not None:
            calls, errors, duration = mirror
            calls.inc(1.0, tags={"child": child, "kind": kind, "method": method, "outcome": outcome})
            duration.observe(seconds, tags={"child": child, "kind": kind})
            if error is not None:
                errors.inc(1.0, tags={"child": child, "kind": kind, "error": error_kind})

    def describe(self) -> Iterable[Metric]:
        return []  # collected into each replica's own registry: no fixed names to check there

    def collect(self) -> Iterable[Metric]:
        for metric in (self._calls, self._errors, self._duration):
            yield from metric.collect()


# The process's one set: handles count into it, the gateway's replica registry collects it.
PLUGIN_CALLS = PluginCallMetrics()
