"""Traces that leave the process: one S3 request is one trace, exported over OTLP to real receivers.

A plugin tree of its own (unique namespace) runs with ``[tracing]`` exporting
OTLP/HTTP to a receiver this test starts; its hosts get the section through
their child specs. The gateway is the real ASGI application
(``serve_apps.gateway.fastapi_app`` with a replica context, as a Serve replica
builds it) served by uvicorn on 127.0.0.1 in this process, which exports its
own spans over OTLP/gRPC to a second receiver: one PUT's tree is put together
from what both receivers decoded with the official protobuf classes.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import ray
import uvicorn
from botocore.config import Config
from botocore.exceptions import ClientError
from opentelemetry import trace

from actors.bootstrap import supervisor_spec
from actors.gateway_coordinator import create_coordinator
from actors.supervisor import create_supervisor
from dwray.config import DwrayConfig, RuntimeConfig, ScrubConfig, SweeperConfig
from dwray.config_events import EventsConfig
from dwray.config_telemetry import LoggingConfig, TracingConfig
from dwray.core.ports import free_port
from dwray.core.telemetry import configure_telemetry, flush_telemetry, telemetry_state
from serve_apps.context import install
from serve_apps.gateway import fastapi_app, replica_context
from tests.otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver, ReceivedSpan

TENANT = "tracer"
BIG = 3 << 20  # stored as a blob (not inline in the catalog row): storage, KMS and catalog all take part


@dataclass
class TracedGateway:
    endpoint: str
    s3: Any
    hosts: OtlpHttpReceiver  # the plugin hosts' spans (OTLP/HTTP)
    gateway: OtlpGrpcReceiver  # this process's spans: the gateway's and the warehouse's (OTLP/gRPC)
    gateway_tracing: TracingConfig
    host_tracing: TracingConfig
    supervisor: Any

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return self.hosts.trace(trace_id) + self.gateway.trace(trace_id)


def _serve(port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(fastapi_app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="traced-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, thread


@pytest.fixture(scope="module")
def traced(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedGateway]:
    hosts, gateway = OtlpHttpReceiver(), OtlpGrpcReceiver()
    namespace = f"dwray-otlp-{uuid.uuid4().hex[:8]}"
    config = DwrayConfig(
        data_dir=tmp_path_factory.mktemp("otlp") / "data",
        runtime=RuntimeConfig(namespace=namespace, ping_interval=0.5),
        # Not this test's subject: the housekeeper, the scrubber, the bus.
        sweeper=SweeperConfig(interval=0), scrub=ScrubConfig(interval=0), events=EventsConfig(enabled=False),
        tracing=TracingConfig(exporter="otlp-http", endpoint=hosts.endpoint, schedule_delay=0.2),
        logging=LoggingConfig(format="json"))
    spec = supervisor_spec(config)
    assert all(child.tracing == config.tracing for child in spec.children)
    supervisor = create_supervisor(spec, namespace=namespace)
    coordinator = None
    server = None
    ctx = None
    try:
        ray.get(supervisor.start.remote(), timeout=180)
        coordinator = create_coordinator(namespace)
        # This process is the gateway replica: its spans go over gRPC, to the other receiver.
        gateway_tracing = config.tracing.model_copy(update={"exporter": "otlp-grpc", "endpoint": gateway.endpoint})
        configure_telemetry(gateway_tracing, config.logging, "gateway", config=config)
        ctx = replica_context(config, supervisor, coordinator)
        install(ctx)
        ctx.identity.create_tenant(TENANT)
        key = ctx.access_keys.create(TENANT)
        port = free_port()
        server, thread = _serve(port)
        endpoint = f"http://127.0.0.1:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name=config.gateway.region,
                          aws_access_key_id=key.access_key_id, aws_secret_access_key=key.secret_access_key,
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
        yield TracedGateway(endpoint, s3, hosts, gateway, gateway_tracing, config.tracing, supervisor)
    finally:
        if server is not None:
            server.should_exit = True
            thread.join(10)
        if ctx is not None:
            ctx.close()
        configure_telemetry(TracingConfig(), LoggingConfig(), "pytest")  # nothing exported after this module
        logging.getLogger().removeHandler(telemetry_state().handler)
        telemetry_state().handler = None
        try:
            ray.get(supervisor.stop.remote(), timeout=60)
        finally:
            ray.kill(supervisor)
            if coordinator is not None:
                ray.kill(coordinator)
            hosts.stop()
            gateway.stop()


def _with_header(s3: Any, name: str, value: str) -> Any:
    def add(request: Any, **_: Any) -> None:
        request.headers[name] = value

    s3.meta.events.register_first("before-sign.s3.*", add)
    return add


def _chain_to(root: ReceivedSpan, spans: list[ReceivedSpan]) -> None:
    """Every span's parents lead up to ``root`` through spans of the same trace."""
    by_id = {s.span_id: s for s in spans}
    for span in spans:
        seen, parent = set(), span.parent_span_id
        while span is not root and parent != root.span_id:
            assert parent in by_id and parent not in seen, f"{span.name}: parent {parent} is not in the trace"
            seen.add(parent)
            parent = by_id[parent].parent_span_id


def test_one_put_is_one_exported_tree_under_the_gateway_span(traced: TracedGateway) -> None:
    traced.s3.create_bucket(Bucket="traced")
    reply = traced.s3.put_object(Bucket="traced", Key="big.bin", Body=os.urandom(BIG))
    trace_id = reply["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    assert len(trace_id) == 32 and int(trace_id, 16)
    assert flush_telemetry(10)
    wanted = {"s3.PutObject", "dwray.put", "catalog.commit_many", "kms:local.wrap_many", "audit.append_many"}

    def complete(_: list[ReceivedSpan]) -> bool:
        names = {s.name for s in traced.trace(trace_id)}
        return wanted <= names and any(n.startswith("storage:local.") for n in names)

    traced.gateway.wait_for(complete)
    time.sleep(0.5)  # the hosts' batches leave every 0.2 s: let stragglers of this trace arrive
    spans = traced.trace(trace_id)
    (root,) = [s for s in spans if s.parent_span_id is None]
    assert root.name == "s3.PutObject" and root.kind == "SERVER"
    assert root.attributes == {"http.request.method": "PUT", "dwray.s3.operation": "PutObject",
                               "aws.s3.bucket": "traced", "dwray.tenant": TENANT, "http.response.status_code": 200}
    # This process's resource: "gateway" and "dwray", unless an earlier test of the session configured the
    # process first (the resource is the first configuration's, see dwray.core.telemetry).
    here = trace.get_tracer_provider().resource.attributes
    assert root.resource["dwray.process"] == here["dwray.process"]
    assert root.resource["service.name"] == here["service.name"] and root.resource["process.pid"] == os.getpid()
    _chain_to(root, spans)
    (put,) = [s for s in spans if s.name == "dwray.put"]
    assert put.parent_span_id == root.span_id
    hosts = [s for s in spans if s in traced.hosts.spans]
    assert {s.resource["dwray.process"] for s in hosts} >= {"plugin:catalog", "plugin:kms:local",
                                                             "plugin:storage:local", "plugin:audit"}
    for span in hosts:
        child, method = span.name.rsplit(".", 1)
        assert span.resource["dwray.process"] == f"plugin:{child}" and span.attributes["dwray.method"] == method
        assert span.kind == "SERVER"
    # Where each span was exported from: the gateway's process over gRPC, the hosts over HTTP.
    assert {s.name for s in spans if s not in hosts} >= {"s3.PutObject", "dwray.put"}
    assert not [s for s in spans if s not in hosts and s.resource["process.pid"] != os.getpid()]
    assert {s.resource["service.name"] for s in hosts} == {"dwray"}


def test_a_clients_traceparent_is_the_parent_and_names_the_request(traced: TracedGateway) -> None:
    traced.s3.create_bucket(Bucket="traced-parent")
    remote_trace, remote_span = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    hook = _with_header(traced.s3, "traceparent", f"00-{remote_trace}-{remote_span}-01")
    try:
        reply = traced.s3.put_object(Bucket="traced-parent", Key="k", Body=b"small")
        assert traced.s3.get_object(Bucket="traced-parent", Key="k")["Body"].read() == b"small"  # streamed
        with pytest.raises(ClientError) as missing:
            traced.s3.get_object(Bucket="traced-parent", Key="absent")
    finally:
        traced.s3.meta.events.unregister("before-sign.s3.*", hook)
    assert reply["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"] == remote_trace
    error = missing.value.response
    assert error["Error"]["Code"] == "NoSuchKey"
    assert error["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"] == remote_trace
    assert error["ResponseMetadata"]["RequestId"] == remote_trace  # botocore reads it from the error XML too
    assert flush_telemetry(10)
    # A streamed response's span is exported once its last byte is sent: its arrival shows it ended.
    spans = traced.gateway.wait_for(lambda got: len(
        [s for s in got if s.trace_id == remote_trace and s.name.startswith("s3.")]) == 3)
    roots = [(s.name, s.attributes["http.response.status_code"], s.parent_span_id) for s in spans
             if s.trace_id == remote_trace and s.name.startswith("s3.")]
    assert sorted(roots) == [("s3.GetObject", 200, remote_span), ("s3.GetObject", 404, remote_span),
                             ("s3.PutObject", 200, remote_span)]
    # Without a traceparent, every request starts a trace of its own.
    ids = {traced.s3.head_bucket(Bucket="traced-parent")["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
           for _ in range(3)}
    assert len(ids) == 3 and remote_trace not in ids


def test_log_lines_of_a_request_carry_its_trace_id(traced: TracedGateway, capsys: pytest.CaptureFixture[str]) -> None:
    # The access line is at DEBUG; a live change of levels (as a reload makes) turns it on.
    configure_telemetry(traced.gateway_tracing, LoggingConfig(format="json", levels={"dwray.gateway": "DEBUG"}),
                        "gateway")
    try:
        reply = traced.s3.list_objects_v2(Bucket="traced")
    finally:
        configure_telemetry(traced.gateway_tracing, LoggingConfig(format="json"), "gateway")
    trace_id = reply["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    mine = [line for line in lines if line["trace_id"] == trace_id]
    assert mine, lines
    assert mine[0]["logger"] == "dwray.gateway" and mine[0]["level"] == "DEBUG"
    assert mine[0]["message"] == "ListObjectsV2 GET /traced -> 200" and mine[0]["process"] == "gateway"
    assert len(mine[0]["span_id"]) == 16


def test_a_host_takes_new_tracing_settings_live(traced: TracedGateway) -> None:
    """A reload tells running hosts their new sections (PluginHost.configure_telemetry): no restart."""
    host = ray.get(traced.supervisor.handle.remote("catalog"), timeout=30)[0]
    pid = ray.get(host.pid.remote(), timeout=30)
    ray.get(host.configure_telemetry.remote(traced.gateway_tracing, LoggingConfig()), timeout=30)
    try:
        reply = traced.s3.put_object(Bucket="traced", Key="small", Body=b"kept in the catalog row")
        trace_id = reply["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"]
        assert flush_telemetry(10)
        traced.gateway.wait_for(lambda got: any(s.trace_id == trace_id and s.name == "catalog.commit_many"
                                                for s in got))
        assert not [s for s in traced.hosts.trace(trace_id) if s.name == "catalog.commit_many"]
    finally:
        ray.get(host.configure_telemetry.remote(traced.host_tracing, LoggingConfig(format="json")), timeout=30)
    assert ray.get(host.pid.remote(), timeout=30) == pid  # the same process: applied in place
    with pytest.raises(ray.exceptions.RayTaskError, match="absent.key"):
        bad = traced.host_tracing.model_copy(update={"headers": {"x-api-key": "secret://file//nonexistent/absent.key"}})
        ray.get(host.configure_telemetry.remote(bad, LoggingConfig()), timeout=30)
