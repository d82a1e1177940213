"""dwray's metrics on Ray's own metrics export port (what Ray's dashboard and a Ray Prometheus scrape).

A driver's plugin calls (``actors.call_metrics``, counted by its PluginHandles) and a worker's gateway
metrics (``serve_apps.metrics``: requests, and the tree's gauges set when a page is built) recorded
through ``ray.util.metrics`` appear on the node's metrics export port as ``ray_dwray_*`` series, read
back with prometheus_client's parser.
"""
from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from actors.call_metrics import PLUGIN_CALLS
from actors.handles import plugin_handle
from dwray.errors import InvalidArgument
from tests.helpers import wait_until

# Ray's core workers send their metrics to the node's agent every 10 s (metrics_report_interval_ms).
RAY_REPORT_WAIT = 90.0


def _export_port(ray: Any) -> int:
    node = ray._private.worker.global_worker.node
    port = node.metrics_export_port
    assert isinstance(port, int) and port > 0, f"no metrics export port on the session's node: {port!r}"
    return port


def _samples(ray: Any) -> list[Any]:
    text = requests.get(f"http://127.0.0.1:{_export_port(ray)}/metrics", timeout=10).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples
            if sample.name.startswith("ray_dwray_")]


def _find(ray: Any, name: str, **labels: str) -> list[Any]:
    return [s for s in _samples(ray) if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


def _local(name: str, **labels: str) -> float:
    return sum(s.value for family in PLUGIN_CALLS.collect() for s in family.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_a_drivers_plugin_calls_reach_rays_metrics_port(ray_warehouse: Any) -> None:
    import ray

    tenant = f"t{uuid.uuid4().hex[:12]}"
    warehouse = ray_warehouse.for_test(tenant, "caller")
    bucket = f"m-{uuid.uuid4().hex[:12]}"
    before = _local("dwray_plugin_calls_total", child="catalog", outcome="ok")
    warehouse.create_bucket(bucket)
    try:
        warehouse.put(bucket, "a", b"x" * 1000)
        with pytest.raises(InvalidArgument, match="no public method"):
            plugin_handle(ray_warehouse.config, ray_warehouse.supervisor, "catalog").call("no_such_method")
        # In this process: ok calls, and the error the catalog's host answered counted as "error", not "failure".
        assert _local("dwray_plugin_calls_total", child="catalog", outcome="ok") > before
        assert _local("dwray_plugin_calls_total", child="catalog", method="no_such_method", outcome="error") >= 1
        assert _local("dwray_plugin_call_errors_total", child="catalog", error="InvalidArgument") >= 1
        assert _local("dwray_plugin_calls_total", child="catalog", outcome="failure") == 0
        assert _local("dwray_plugin_call_duration_seconds_count", child="catalog", kind="catalog") > before

        wait_until(lambda: _find(ray, "ray_dwray_plugin_calls_total", child="catalog", kind="catalog", outcome="ok"),
                   timeout=RAY_REPORT_WAIT, interval=2.0, what="ray_dwray_plugin_calls_total on Ray's port")
        wait_until(lambda: _find(ray, "ray_dwray_plugin_call_errors_total", child="catalog",
                                 error="InvalidArgument"),
                   timeout=RAY_REPORT_WAIT, interval=2.0, what="ray_dwray_plugin_call_errors_total")
        buckets = _find(ray, "ray_dwray_plugin_call_duration_seconds_bucket", child="catalog")
        assert buckets and max(s.value for s in buckets if s.labels["le"] == "+Inf") >= 2
    finally:
        warehouse.delete(bucket, "a")
        warehouse.delete_bucket(bucket)


def test_a_workers_gateway_metrics_and_tree_gauges_reach_rays_metrics_port(ray_session: Any) -> None:
    import ray

    @ray.remote(num_cpus=0)
    class Replica:
        """Stands for a gateway replica: the same GatewayMetrics and render() in a Ray worker."""

        def serve(self, marker: str) -> None:
            from serve_apps.metrics import GatewayMetrics, render

            metrics = GatewayMetrics()
            metrics.observe("PutObject", 200, 0.02, 4096, 0)
            metrics.observe("PutObject", 503, 0.3, 10, 0)
            metrics.rate_limited("tenant")
            metrics.auth_failed("SignatureDoesNotMatch")
            plugins = [{"id": f"catalog-{marker}", "state": "running", "restarts": 3, "breaker": "open"},
                       {"id": f"kms-{marker}", "state": "restarting", "restarts": 1}]
            render({"r": metrics.exposition()}, plugins=plugins, tenants={"acme": {"objects": 2, "bytes": 7}},
                   draining=False, supervisor={"state": "running", "tree_restarts": 2, "children": plugins})

    marker = uuid.uuid4().hex[:8]
    replica = Replica.remote()
    try:
        ray.get(replica.serve.remote(marker), timeout=60)
        wait_until(lambda: _find(ray, "ray_dwray_s3_requests_total", operation="PutObject", status="503"),
                   timeout=RAY_REPORT_WAIT, interval=2.0, what="ray_dwray_s3_requests_total on Ray's port")
        wait_until(lambda: _find(ray, "ray_dwray_plugin_restarts", child=f"catalog-{marker}"),
                   timeout=RAY_REPORT_WAIT, interval=2.0, what="ray_dwray_plugin_restarts on Ray's port")
        assert [s.value for s in _find(ray, "ray_dwray_plugin_restarts", child=f"catalog-{marker}")] == [3.0]
        state = {s.labels["state"]: s.value for s in _find(ray, "ray_dwray_plugin_state", child=f"kms-{marker}")}
        assert state["restarting"] == 1.0 and state["running"] == 0.0
        breaker = {s.labels["state"]: s.value
                   for s in _find(ray, "ray_dwray_plugin_breaker_state", child=f"catalog-{marker}")}
        assert breaker == {"closed": 0.0, "open": 1.0, "half_open": 0.0}
        assert _find(ray, "ray_dwray_s3_request_duration_seconds_bucket", operation="PutObject", le="0.5")
        assert _find(ray, "ray_dwray_rate_limited_total", scope="tenant")
        assert _find(ray, "ray_dwray_auth_failures_total", code="SignatureDoesNotMatch")
        assert _find(ray, "ray_dwray_supervisor_tree_restarts")
        # Totals only: a tenant's name never reaches Ray's unauthenticated endpoint.
        assert _find(ray, "ray_dwray_stored_bytes")
        assert not [s for s in _samples(ray) if "acme" in s.labels.values()]
    finally:
        ray.kill(replica)


def test_outcomes_and_error_kinds() -> None:
    """ok, failure (what the breaker counts: the plugin broke) and error (an answer, or a guard refusing)."""
    from actors.call_metrics import PluginCallMetrics
    from dwray.errors import CircuitOpen, PluginTimeout

    calls = PluginCallMetrics()
    calls.observe("storage:local", "get", 0.002)
    calls.observe("storage:local", "get", 5.0, PluginTimeout("storage:local", "get", 5.0))
    calls.observe("storage:local", "get", 0.0, CircuitOpen("storage:local", "the breaker is open"))
    calls.observe("storage:local", "put", 0.1, RuntimeError("a bug"))
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in calls.collect()
               for s in family.samples}
    base = (("child", "storage:local"), ("kind", "storage"))

    def calls_of(method: str, outcome: str) -> float:
        key = tuple(sorted((*base, ("method", method), ("outcome", outcome))))
        return samples.get(("dwray_plugin_calls_total", key), 0.0)

    assert (calls_of("get", "ok"), calls_of("get", "failure"), calls_of("get", "error")) == (1.0, 1.0, 1.0)
    assert calls_of("put", "failure") == 1.0  # not a dwray error: a crash in the callee
    errors = {dict(k)["error"]: v for (name, k), v in samples.items() if name == "dwray_plugin_call_errors_total"}
    assert errors == {"PluginTimeout": 1.0, "CircuitOpen": 1.0, "other": 1.0}
    assert samples[("dwray_plugin_call_duration_seconds_count", base)] == 4.0
