"""End-to-end tracing: one PUT (or GET) through the plugin actors is one OpenTelemetry trace.

Every actor call carries the caller's trace context (``actors.handles``), and
each plugin host runs the call in a span ``<child id>.<method>``. With
``DWRAY_TRACE_MEMORY=1`` in a host's environment the host keeps its finished
spans in memory (``PluginHost.finished_spans()``); the driver keeps its own
(the test's root span and the warehouse's ``dwray.<operation>`` spans) with the
SDK's ``InMemorySpanExporter`` added to this process's provider
(``dwray.core.telemetry.add_span_processor``). The test joins both sides.

The variable reaches every child through the config (``[plugins.<kind>]
env_vars``), as a user would set it.
"""
from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import ray
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.attach import RayWarehouse
from actors.bootstrap import supervisor_spec
from actors.supervisor import create_supervisor
from dwray.config import (
    AuditConfig,
    DwrayConfig,
    PipelineConfig,
    PluginOptions,
    RuntimeConfig,
    ScrubConfig,
    StorageConfig,
    SweeperConfig,
)
from dwray.config_events import EventsConfig
from dwray.core.telemetry import add_span_processor, remove_span_processor

FRAME_SIZE = 1 << 20
BATCH = 8 << 20  # actors.remote_storage.BATCH_BYTES: plaintext per seal_batch call
BIG = 3 * BATCH + 5 * FRAME_SIZE + 12345  # four batches: three full ones and a short last one
CHILDREN = ("settings", "catalog", "identity", "kms:local", "storage:local", "stage:frames:0", "stage:frames:1")
DATA_CHILDREN = ("catalog", "kms:local", "storage:local", "stage:frames:0", "stage:frames:1")


def hex_trace(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


def hex_span(span: Any) -> str:
    return format(span.get_span_context().span_id, "016x")


@dataclass
class TracedTree:
    config: DwrayConfig
    supervisor: Any
    hosts: dict[str, Any]
    tracer: Any
    exporter: InMemorySpanExporter

    def warehouse(self) -> RayWarehouse:
        return RayWarehouse(self.config, self.supervisor, owns_ray=False)

    def host_spans(self) -> dict[str, list[dict[str, Any]]]:
        refs = {child: host.finished_spans.remote() for child, host in self.hosts.items()}
        return {child: ray.get(ref, timeout=30) for child, ref in refs.items()}


@pytest.fixture(scope="module")
def traced(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedTree]:
    """A plugin tree of its own (unique namespace) whose hosts keep their spans in memory."""
    namespace = f"dwray-trace-{uuid.uuid4().hex[:8]}"
    config = DwrayConfig(
        data_dir=tmp_path_factory.mktemp("tracing") / "data",
        storage=StorageConfig(backend="local"),
        pipeline=PipelineConfig(frame_size=FRAME_SIZE),
        runtime=RuntimeConfig(namespace=namespace, ping_interval=0.5),
        plugins={kind: PluginOptions(env_vars={"DWRAY_TRACE_MEMORY": "1"})
                 for kind in ("settings", "catalog", "identity", "kms", "storage", "stage")},
        # The audit log's, the housekeeper's, the scrubber's and the bus's children are not this test's subject.
        default_tenant="tracer", audit=AuditConfig(enabled=False), sweeper=SweeperConfig(interval=0),
        scrub=ScrubConfig(interval=0), events=EventsConfig(enabled=False))
    spec = supervisor_spec(config)
    assert tuple(spec.order) == CHILDREN
    assert all(child.env_vars == {"DWRAY_TRACE_MEMORY": "1"} for child in spec.children)
    supervisor = create_supervisor(spec, namespace=namespace)
    try:
        ray.get(supervisor.start.remote(), timeout=120)
        hosts = {child: ray.get(supervisor.handle.remote(child), timeout=30)[0] for child in CHILDREN}
        exporter = InMemorySpanExporter()
        processor = SimpleSpanProcessor(exporter)
        add_span_processor(processor)  # the process's provider: the warehouse's spans are kept too
        try:
            yield TracedTree(config, supervisor, hosts, trace.get_tracer("dwray.tests.tracing"), exporter)
        finally:
            remove_span_processor(processor)
    finally:
        try:
            ray.get(supervisor.stop.remote(), timeout=60)
        finally:
            ray.kill(supervisor)


def new_spans(before: dict[str, list[dict[str, Any]]],
              after: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Spans the hosts finished between two snapshots, each tagged with the host it came from."""
    spans = []
    for child, finished in after.items():
        for span in finished[len(before[child]):]:
            spans.append({**span, "host": child})
    return spans


def driver_spans(exporter: InMemorySpanExporter, root: Any) -> list[dict[str, Any]]:
    """The spans this process finished in ``root``'s trace, but ``root`` (the warehouse's ``dwray.*`` spans)."""
    return [{**_span_dict(span), "host": "driver"} for span in exporter.get_finished_spans()
            if span.context.trace_id == root.get_span_context().trace_id
            and span.context.span_id != root.get_span_context().span_id]


def _span_dict(span: Any) -> dict[str, Any]:
    return {"name": span.name, "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent_span_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
            "attributes": dict(span.attributes or {}), "status": span.status.status_code.name}


def assert_one_trace(root: Any, spans: list[dict[str, Any]], driver: list[dict[str, Any]]) -> None:
    """Every span is in ``root``'s trace and its parents lead up to ``root`` (through the driver's spans)."""
    spans = spans + driver
    trace_id, root_id = hex_trace(root), hex_span(root)
    strays = [(s["host"], s["name"], s["trace_id"], s["parent_span_id"]) for s in spans
              if s["trace_id"] != trace_id]
    assert not strays, f"calls made outside the driver's trace {trace_id} (no context propagated): {strays}"
    by_id = {s["span_id"]: s for s in spans}
    assert len(by_id) == len(spans), "span ids repeat"
    for span in spans:
        seen, parent = set(), span["parent_span_id"]
        while parent != root_id:
            assert parent is not None, f"{span['name']} does not chain up to the driver's span {root.name!r}"
            assert parent in by_id and parent not in seen, \
                f"{span['name']}: parent {parent} is neither a known span nor {root.name!r}"
            seen.add(parent)
            parent = by_id[parent]["parent_span_id"]


def check_host_span(span: dict[str, Any]) -> None:
    child, method = span["name"].rsplit(".", 1)
    assert child == span["host"], f"span {span['name']} finished in host {span['host']}"
    assert span["attributes"]["dwray.child"] == child
    assert span["attributes"]["dwray.method"] == method
    assert span["attributes"]["dwray.generation"] == 1
    assert span["status"] == "UNSET", span


def payload(size: int) -> bytes:
    block = os.urandom(1 << 16)  # incompressible: the sealed batches stay as large as the plaintext
    return (block * (size // len(block) + 1))[:size]


def test_one_put_is_one_trace_with_a_span_per_stage_and_backend_call(traced: TracedTree) -> None:
    wh = traced.warehouse()
    wh.create_bucket("traced")
    data = payload(BIG)
    before = traced.host_spans()
    with traced.tracer.start_as_current_span("put") as root:
        info = wh.put("traced", "big.bin", data)
    spans = new_spans(before, traced.host_spans())
    assert info.size == len(data)

    assert root.parent is None
    assert_one_trace(root, spans, driver_spans(traced.exporter, root))
    for span in spans:
        check_host_span(span)
    names = Counter(s["name"] for s in spans)
    batches = -(-BIG // BATCH)
    # Frame stages: one seal_batch per batch, spread over both stage workers.
    seals = {name: n for name, n in names.items() if name.endswith(".seal_batch")}
    assert sum(seals.values()) == batches
    assert set(seals) == {"stage:frames:0.seal_batch", "stage:frames:1.seal_batch"}, seals
    # Storage: an upload session with one append per batch, no single-shot put.
    assert names["storage:local.begin_upload"] == 1
    assert names["storage:local.append"] == batches
    assert names["storage:local.finish_upload"] == 1
    assert names["storage:local.put_blob"] == 0
    # The bucket key is wrapped once by the KMS (the bucket's first write here); the row is
    # committed once (group commit of one).
    assert names["kms:local.wrap_many"] == 1
    assert names["catalog.commit_many"] == 1
    # Nothing else happened in the hosts during the put but the bucket lookup and the first KEK use.
    expected = {*seals, "storage:local.begin_upload", "storage:local.append", "storage:local.finish_upload",
                "kms:local.wrap_many", "catalog.commit_many", "catalog.get_bucket", "kms:local.ensure"}
    assert set(names) <= expected, set(names) - expected
    assert not [s for s in spans if s["host"] == "settings"]
    # The spans of the upload come in the order the data path needs them: begin, appends, finish,
    # and the commit only after the blob was finished (hosts record spans as they end).
    storage = [s["name"].rsplit(".", 1)[1] for s in spans if s["host"] == "storage:local"]
    assert storage[0] == "begin_upload" and storage[-1] == "finish_upload"
    # The driver's side of the trace: the span it opened and, under it, the warehouse's.
    driver = [s for s in traced.exporter.get_finished_spans() if s.context.trace_id == root.context.trace_id]
    assert [s.name for s in driver] == ["dwray.put", "put"]
    assert driver[0].parent.span_id == root.context.span_id

    # A put that fits in one batch is a single put_blob of the sealed records.
    before = traced.host_spans()
    with traced.tracer.start_as_current_span("one-batch put") as medium:
        wh.put("traced", "medium.bin", payload(2 * FRAME_SIZE))
    spans = new_spans(before, traced.host_spans())
    assert_one_trace(medium, spans, driver_spans(traced.exporter, medium))
    names = Counter(s["name"] for s in spans)
    assert names["storage:local.put_blob"] == 1 and names["storage:local.begin_upload"] == 0
    assert sum(n for name, n in names.items() if name.endswith(".seal_batch")) == 1
    # The bucket key of the first put seals this one too: no KMS call.
    assert names["kms:local.wrap_many"] == 0 and names["catalog.commit_many"] == 1

    # A small object is sealed in the caller and kept in its catalog row: the commit is the only call.
    before = traced.host_spans()
    with traced.tracer.start_as_current_span("small put") as small:
        wh.put("traced", "small.txt", b"a few bytes")
    spans = new_spans(before, traced.host_spans())
    assert_one_trace(small, spans, driver_spans(traced.exporter, small))
    names = Counter(s["name"] for s in spans)
    assert dict(names) == {"catalog.commit_many": 1}
    assert hex_trace(small) != hex_trace(root) != hex_trace(medium)
    wh.close()


def test_one_get_is_another_trace_with_open_batch_and_get_blob_spans(traced: TracedTree) -> None:
    wh = traced.warehouse()
    wh.create_bucket("traced-get")
    data = payload(2 * BATCH + 3 * FRAME_SIZE)
    with traced.tracer.start_as_current_span("put") as put_root:
        wh.put("traced-get", "obj.bin", data)
    before = traced.host_spans()
    with traced.tracer.start_as_current_span("get") as root:
        assert wh.get("traced-get", "obj.bin") == data
    spans = new_spans(before, traced.host_spans())

    assert hex_trace(root) != hex_trace(put_root)
    assert_one_trace(root, spans, driver_spans(traced.exporter, root))
    for span in spans:
        check_host_span(span)
    names = Counter(s["name"] for s in spans)
    # Reads are batched by sealed bytes (a little more than the plaintext), so count bounds, not exact
    # numbers: each batch is one get_blob of its byte range and one open_batch.
    opens = sum(n for name, n in names.items() if name.endswith(".open_batch"))
    assert -(-len(data) // BATCH) <= opens <= -(-len(data) // FRAME_SIZE), names
    assert names["storage:local.get_blob"] == opens
    assert names["catalog.get_object"] == 0  # read from the catalog's file: the driver is on its node
    assert names["kms:local.unwrap"] == 0  # the bucket key this warehouse sealed with is still in its cache
    expected = {"stage:frames:0.open_batch", "stage:frames:1.open_batch", "storage:local.get_blob",
                "catalog.get_object", "kms:local.unwrap"}
    assert set(names) <= expected, set(names) - expected

    # A ranged read inside one frame: one get_blob of that frame's record, one open_batch.
    before = traced.host_spans()
    with traced.tracer.start_as_current_span("ranged get") as ranged:
        assert wh.get("traced-get", "obj.bin", range=(FRAME_SIZE + 10, FRAME_SIZE + 99)) == \
            data[FRAME_SIZE + 10:FRAME_SIZE + 100]
    spans = new_spans(before, traced.host_spans())
    assert_one_trace(ranged, spans, driver_spans(traced.exporter, ranged))
    names = Counter(s["name"] for s in spans)
    assert names["storage:local.get_blob"] == 1
    assert sum(n for name, n in names.items() if name.endswith(".open_batch")) == 1
    wh.close()


def test_grouped_commits_appear_in_every_concurrent_puts_trace(traced: TracedTree) -> None:
    """Concurrent small puts share group commits and one bucket key; each put's trace shows its commit."""
    from concurrent.futures import ThreadPoolExecutor

    wh = traced.warehouse()
    wh.create_bucket("traced-many")
    before = traced.host_spans()
    roots: list[Any] = []

    def put(n: int) -> None:
        with traced.tracer.start_as_current_span(f"put {n}") as root:
            roots.append(root)
            wh.put("traced-many", f"k{n}", os.urandom(2048))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(16)))
    spans = new_spans(before, traced.host_spans())
    for root in roots:
        mine = [s for s in spans if s["trace_id"] == hex_trace(root)]
        names = Counter(s["name"] for s in mine)
        assert names["catalog.commit_many"] == 1, (root.name, names)
        # Small objects are kept inline: nothing is sealed in a stage or stored in a blob.
        assert not [name for name in names if name.startswith(("storage:", "stage:"))], (root.name, names)
    # One bucket key for the bucket, wrapped once for all sixteen (single-flight).
    wraps = [s for s in spans if s["name"] == "kms:local.wrap_many" and not s["attributes"].get("dwray.grouped")]
    assert len(wraps) == 1
    grouped = [s for s in spans if s["attributes"].get("dwray.grouped")]
    commits = [s for s in spans if s["name"] == "catalog.commit_many" and not s["attributes"].get("dwray.grouped")]
    assert len(commits) + len([s for s in grouped if s["name"] == "catalog.commit_many"]) == 16
    assert len(commits) < 16, "eight writers never shared a commit"
    wh.close()
