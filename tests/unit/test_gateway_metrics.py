"""Gateway metrics: real GatewayMetrics per replica, merged by render(), read back by prometheus_client's parser."""
from __future__ import annotations

import logging
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from dwray.errors import InvalidArgument
from serve_apps import metrics as metrics_module
from serve_apps.metrics import (
    ALLOWED_LABELS,
    DURATION_BUCKETS,
    OPERATIONS,
    GatewayMetrics,
    render,
)

PLUGINS: list[dict[str, Any]] = [
    {"id": "storage", "plugin": "local", "state": "running", "restarts": 2, "required": True},
    {"id": "compress", "plugin": "zstd", "state": "failed", "restarts": 5, "required": False},
    {"id": "vault", "plugin": "vault", "state": "hibernating", "restarts": 0, "required": False},
]
TENANTS = {"default": {"objects": 3, "bytes": 120}, "acme": {"objects": 0, "bytes": 0}}


def parse(text: bytes) -> dict[str, Metric]:
    families = list(text_string_to_metric_families(text.decode("utf-8")))
    names = [f.name for f in families]
    assert len(names) == len(set(names)), f"a family appears twice: {names}"
    return {f.name: f for f in families}


def value(family: Metric, sample_name: str, **labels: str) -> float:
    found = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    assert len(found) == 1, f"{sample_name}{labels}: {len(found)} samples in {family.samples}"
    return found[0]


@pytest.fixture
def two_replicas() -> tuple[GatewayMetrics, GatewayMetrics]:
    a, b = GatewayMetrics(), GatewayMetrics()
    a.observe("GetObject", 200, 0.003, 0, 1000)
    a.observe("GetObject", 200, 0.2, 0, 5000)
    a.observe("PutObject", 200, 1.5, 4096, 0)
    a.observe("GetObject", 404, 0.0005, 0, 250)
    a.rate_limited("tenant")
    a.auth_failed("SignatureDoesNotMatch")
    b.observe("ListObjectsV2", 200, 0.02, 0, 800)
    b.observe("../../etc/passwd AKIAEXAMPLE", 400, 0.001, 10, 20)
    b.rate_limited("key")
    b.rate_limited("key")
    b.auth_failed("InvalidAccessKeyId")
    b.auth_failed("x-amz-secret=abc")  # not an S3 code: counted as "other"
    b.begin()
    return a, b


@pytest.fixture
def page(two_replicas: tuple[GatewayMetrics, GatewayMetrics]) -> dict[str, Metric]:
    a, b = two_replicas
    text = render({"replica-a": a.exposition(), "replica-b": b.exposition()},
                  plugins=PLUGINS, tenants=TENANTS, draining=False)
    return parse(text)


def test_requests_are_counted_per_replica(page: dict[str, Metric]) -> None:
    requests = page["dwray_s3_requests"]
    assert requests.type == "counter"
    total = "dwray_s3_requests_total"
    assert value(requests, total, operation="GetObject", status="200", replica="replica-a") == 2
    assert value(requests, total, operation="GetObject", status="404", replica="replica-a") == 1
    assert value(requests, total, operation="PutObject", status="200", replica="replica-a") == 1
    assert value(requests, total, operation="ListObjectsV2", status="200", replica="replica-b") == 1
    assert sum(s.value for s in requests.samples) == 6
    # Counters keep their _created series, labelled by replica too.
    created = page["dwray_s3_requests_created"]
    assert {s.labels["replica"] for s in created.samples} == {"replica-a", "replica-b"}
    assert all(s.value > 1e9 for s in created.samples)


def test_histograms_keep_buckets_sum_and_count_per_replica(page: dict[str, Metric]) -> None:
    duration = page["dwray_s3_request_duration_seconds"]
    assert duration.type == "histogram"
    name = "dwray_s3_request_duration_seconds"
    buckets = {float(s.labels["le"]): s.value for s in duration.samples
               if s.name == f"{name}_bucket" and s.labels["operation"] == "GetObject"
               and s.labels["replica"] == "replica-a"}
    assert sorted(buckets) == sorted([*DURATION_BUCKETS, float("inf")])
    # Observations 0.0005, 0.003 and 0.2 s, cumulative.
    assert buckets[0.001] == 1
    assert buckets[0.0025] == 1
    assert buckets[0.005] == 2
    assert buckets[0.1] == 2
    assert buckets[0.25] == 3
    assert buckets[float("inf")] == 3
    assert value(duration, f"{name}_count", operation="GetObject", replica="replica-a") == 3
    assert value(duration, f"{name}_sum", operation="GetObject", replica="replica-a") == pytest.approx(0.2035)
    assert value(duration, f"{name}_count", operation="PutObject", replica="replica-a") == 1
    assert value(duration, f"{name}_count", operation="ListObjectsV2", replica="replica-b") == 1
    # A histogram series of one replica never mixes with another's.
    assert not [s for s in duration.samples
                if s.labels["replica"] == "replica-b" and s.labels["operation"] == "GetObject"]


def test_bytes_rate_limits_auth_failures_and_in_flight(page: dict[str, Metric]) -> None:
    received, sent = page["dwray_s3_bytes_received"], page["dwray_s3_bytes_sent"]
    assert value(received, "dwray_s3_bytes_received_total", operation="PutObject", replica="replica-a") == 4096
    assert value(sent, "dwray_s3_bytes_sent_total", operation="GetObject", replica="replica-a") == 6250
    limited = page["dwray_rate_limited"]
    assert value(limited, "dwray_rate_limited_total", scope="tenant", replica="replica-a") == 1
    assert value(limited, "dwray_rate_limited_total", scope="key", replica="replica-b") == 2
    auth = page["dwray_auth_failures"]
    assert value(auth, "dwray_auth_failures_total", code="SignatureDoesNotMatch", replica="replica-a") == 1
    assert value(auth, "dwray_auth_failures_total", code="InvalidAccessKeyId", replica="replica-b") == 1
    assert value(auth, "dwray_auth_failures_total", code="other", replica="replica-b") == 1
    in_flight = page["dwray_requests_in_flight"]
    assert in_flight.type == "gauge"
    assert value(in_flight, "dwray_requests_in_flight", replica="replica-a") == 0
    assert value(in_flight, "dwray_requests_in_flight", replica="replica-b") == 1


def test_operation_labels_stay_in_the_bounded_set(page: dict[str, Metric]) -> None:
    operations = {s.labels["operation"] for f in page.values() for s in f.samples if "operation" in s.labels}
    assert operations <= OPERATIONS
    assert "unknown" in operations  # the path-like operation name was normalised
    requests = page["dwray_s3_requests"]
    assert value(requests, "dwray_s3_requests_total", operation="unknown", status="400", replica="replica-b") == 1


def test_only_allowed_label_names_appear(page: dict[str, Metric]) -> None:
    names = {label for f in page.values() for s in f.samples for label in s.labels}
    assert names <= ALLOWED_LABELS, names - ALLOWED_LABELS
    # Plugin child ids and method names ("secrets:local", "_secret") are names, not secrets.
    values = {v for f in page.values() for s in f.samples for k, v in s.labels.items()
              if k not in ("child", "kind", "method")}
    assert not [v for v in values if "AKIA" in v or "secret" in v or "/" in v]


def test_plugin_families(page: dict[str, Metric]) -> None:
    restarts = page["dwray_plugin_restarts"]
    assert restarts.type == "counter"
    assert value(restarts, "dwray_plugin_restarts_total", child="storage") == 2
    assert value(restarts, "dwray_plugin_restarts_total", child="compress") == 5
    assert value(restarts, "dwray_plugin_restarts_total", child="vault") == 0
    state = page["dwray_plugin_state"]
    assert state.type == "gauge"
    current = {s.labels["child"]: s.labels["state"] for s in state.samples if s.value == 1}
    assert current == {"storage": "running", "compress": "failed", "vault": "hibernating"}
    storage_states = {s.labels["state"] for s in state.samples if s.labels["child"] == "storage"}
    # Every supervisor state, plus the one only the data knows, has a series.
    assert {"starting", "running", "restarting", "stopped", "failed", "hibernating"} <= storage_states
    assert value(state, "dwray_plugin_state", child="storage", state="failed") == 0


def test_tenant_and_gateway_families(page: dict[str, Metric]) -> None:
    # Without metrics_tenant_labels: totals only (tenant names are in tests/unit/test_metrics_hardening.py).
    assert "dwray_tenant_objects" not in page and "dwray_tenant_bytes" not in page
    assert value(page["dwray_stored_objects"], "dwray_stored_objects") == 3
    assert value(page["dwray_stored_bytes"], "dwray_stored_bytes") == 120
    assert value(page["dwray_storing_tenants"], "dwray_storing_tenants") == 2
    assert value(page["dwray_gateway_draining"], "dwray_gateway_draining") == 0
    assert value(page["dwray_gateway_replicas"], "dwray_gateway_replicas") == 2
    # Warehouse-wide families carry no replica label: they are counted once.
    for name in ("dwray_plugin_restarts", "dwray_plugin_state", "dwray_stored_objects", "dwray_gateway_draining"):
        assert all("replica" not in s.labels for s in page[name].samples)


def test_draining_flag_is_rendered() -> None:
    text = render({}, plugins=[], tenants={}, draining=True)
    page = parse(text)
    assert value(page["dwray_gateway_draining"], "dwray_gateway_draining") == 1
    assert value(page["dwray_gateway_replicas"], "dwray_gateway_replicas") == 0


def test_unparsable_snapshot_is_left_out(two_replicas: tuple[GatewayMetrics, GatewayMetrics],
                                         caplog: pytest.LogCaptureFixture) -> None:
    a, _ = two_replicas
    with caplog.at_level(logging.WARNING, logger=metrics_module.__name__):
        text = render({"good": a.exposition(), "broken": b"dwray_x{ not metrics", "binary": b"\xff\xfe"},
                      plugins=[], tenants={}, draining=False)
    page = parse(text)
    assert {s.labels["replica"] for s in page["dwray_s3_requests"].samples} == {"good"}
    assert value(page["dwray_gateway_replicas"], "dwray_gateway_replicas") == 1
    assert "broken" in caplog.text and "binary" in caplog.text


def test_a_replica_cannot_shadow_warehouse_families() -> None:
    forged = b"# TYPE dwray_gateway_draining gauge\ndwray_gateway_draining 1.0\n"
    page = parse(render({"r": forged}, plugins=[], tenants={}, draining=False))
    assert page["dwray_gateway_draining"].samples[0].value == 0
    assert len(page["dwray_gateway_draining"].samples) == 1


def test_metrics_live_in_their_own_registry() -> None:
    before = REGISTRY.get_sample_value("dwray_s3_requests_total", {"operation": "GetObject", "status": "200"})
    one, two = GatewayMetrics(), GatewayMetrics()  # no "Duplicated timeseries" between instances
    one.observe("GetObject", 200, 0.01, 0, 1)
    assert REGISTRY.get_sample_value("dwray_s3_requests_total", {"operation": "GetObject", "status": "200"}) == before
    assert b'dwray_s3_requests_total{operation="GetObject",status="200"} 1.0' in one.exposition()
    assert b"dwray_s3_requests_total{" not in two.exposition()


def test_in_flight_tracking() -> None:
    m = GatewayMetrics()
    with m.track():
        with m.track():
            assert m.in_flight == 2
        assert m.in_flight == 1
    assert m.in_flight == 0
    with pytest.raises(RuntimeError, match="boom"), m.track():
        raise RuntimeError("boom")
    assert m.in_flight == 0
    with pytest.raises(InvalidArgument, match="no request in flight"):
        m.end()


@pytest.mark.parametrize(("args", "message"), [
    (("GetObject", 99, 0.1, 0, 0), "HTTP status"),
    (("GetObject", "200", 0.1, 0, 0), "HTTP status"),
    (("GetObject", 200, -1.0, 0, 0), "duration"),
    (("GetObject", 200, 0.1, -5, 0), "byte counts"),
])
def test_observe_refuses_bad_values(args: tuple[Any, ...], message: str) -> None:
    m = GatewayMetrics()
    with pytest.raises(InvalidArgument, match=message):
        m.observe(*args)
    assert b"dwray_s3_requests_total{" not in m.exposition()


def test_rate_limit_scope_is_tenant_or_key() -> None:
    with pytest.raises(InvalidArgument, match="scope"):
        GatewayMetrics().rate_limited("acme-tenant")


@pytest.mark.parametrize(("plugins", "tenants", "message"), [
    ([{"id": "storage", "state": "running"}], {}, "plugin entry 0 needs 'restarts'"),
    ([{"id": "storage", "state": "running", "restarts": -1}], {}, "negative 'restarts'"),
    ([{"state": "running", "restarts": 1}], {}, "plugin entry 0 needs 'id'"),
    ([], {"default": {"objects": 3}}, "tenant 'default' needs 'bytes'"),
    ([], {"default": {"objects": "3", "bytes": 1}}, "needs 'objects'"),
])
def test_render_refuses_malformed_status(plugins: list[dict[str, Any]], tenants: dict[str, Any],
                                         message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        render({}, plugins=plugins, tenants=tenants, draining=False)



STORAGE = {
    "targets": {
        "local": {"kind": "local"},
        "safe": {"kind": "mirror", "blobs": 7, "bytes": 7000, "hints_pending": 2, "repairs": 1, "moves": 0,
                 "tiers": {}, "members": {"disk1": {"up": True, "last_error": None},
                                          "disk2": {"up": False, "last_error": "storage put failed"}}},
        "aging": {"kind": "tiered", "blobs": 3, "bytes": 300, "hints_pending": 0, "repairs": 0, "moves": 4,
                  "tiers": {"hot": {"blobs": 1, "bytes": 100}, "cold": {"blobs": 2, "bytes": 200}},
                  "members": {"hot": {"up": True}, "cold": {"up": True}}},
    },
    "scrubber": {"rounds": 3, "running": {"target": "safe", "cursor": "a", "bytes": 10},
                 "found": {"blobs": 30, "bytes": 9000, "corrupt": 2, "missing": 1, "repaired": 3, "orphans_removed": 0},
                 "last_pass": {"finished": 1700000000.0, "unrepairable": {"safe": ["t/b/x"]}}},
}


def test_storage_and_scrub_families() -> None:
    page = parse(render({}, plugins=[], tenants={}, draining=False, storage=STORAGE))
    assert value(page["dwray_storage_blobs"], "dwray_storage_blobs", target="safe") == 7
    assert value(page["dwray_storage_hints_pending"], "dwray_storage_hints_pending", target="safe") == 2
    assert value(page["dwray_storage_member_up"], "dwray_storage_member_up", target="safe", member="disk2") == 0
    assert value(page["dwray_storage_tier_bytes"], "dwray_storage_tier_bytes", target="aging", tier="cold") == 200
    assert value(page["dwray_storage_moves"], "dwray_storage_moves_total", target="aging") == 4
    # A plain backend keeps no index: it has no blob counts to show.
    assert all(s.labels.get("target") != "local" for f in page.values() for s in f.samples)
    assert value(page["dwray_scrub_passes"], "dwray_scrub_passes_total") == 3
    assert value(page["dwray_scrub_found"], "dwray_scrub_found_total", what="repaired") == 3
    assert value(page["dwray_scrub_running"], "dwray_scrub_running") == 1
    assert value(page["dwray_scrub_last_pass_unrepairable"], "dwray_scrub_last_pass_unrepairable") == 1
    names = {label for f in page.values() for s in f.samples for label in s.labels}
    assert names <= ALLOWED_LABELS
