"""dwray.core.telemetry in one process: spans exported to real OTLP receivers, samplers, JSON log lines.

The receivers (tests/otlp_receivers.py) are servers on 127.0.0.1 that decode
with the official protobuf classes. The process's tracer provider is global
and set once: every test here configures the same one again, which is the
reload path this module promises.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dwray.config_telemetry import LoggingConfig, TracingConfig
from dwray.core.supervision import ChildSpec, SupervisorSpec
from dwray.core.telemetry import (
    add_span_processor,
    configure_telemetry,
    current_trace_id,
    flush_telemetry,
    make_exporter,
    remove_span_processor,
    telemetry_state,
)
from dwray.errors import DwrayError, InvalidArgument
from tests.otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver

tracer = trace.get_tracer("dwray.tests.telemetry")


@pytest.fixture(scope="module")
def http_receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def grpc_receiver() -> Iterator[OtlpGrpcReceiver]:
    receiver = OtlpGrpcReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(autouse=True)
def back_to_defaults() -> Iterator[None]:
    """Each test leaves the process as it found it: nothing exported, no handler of ours on the root logger."""
    yield
    configure_telemetry(TracingConfig(), LoggingConfig(), "pytest")
    state = telemetry_state()
    logging.getLogger().removeHandler(state.handler)
    state.handler = None
    logging.getLogger().setLevel(logging.WARNING)


def secret_file(tmp_path: Path, value: str) -> str:
    path = tmp_path / "collector.key"
    path.write_text(value)
    path.chmod(0o600)
    return f"secret://file/{path}"


def one_span(name: str) -> str:
    with tracer.start_as_current_span(name) as span:
        return format(span.get_span_context().trace_id, "032x")


def test_spans_reach_an_otlp_http_receiver_with_resource_and_secret_header(
        http_receiver: OtlpHttpReceiver, tmp_path: Path) -> None:
    ref = secret_file(tmp_path, "k-123")
    configure_telemetry(TracingConfig(exporter="otlp-http", endpoint=http_receiver.endpoint, sampler="always_on",
                                      headers={"x-api-key": ref}, service_name="dwray-unit"),
                        LoggingConfig(), "unit-http")
    with tracer.start_as_current_span("parent", attributes={"k": "v"}) as parent:
        with tracer.start_as_current_span("child"):
            pass
    assert flush_telemetry(10)
    trace_id = format(parent.get_span_context().trace_id, "032x")
    spans = http_receiver.wait_for(lambda got: len([s for s in got if s.trace_id == trace_id]) == 2)
    mine = {s.name: s for s in spans if s.trace_id == trace_id}
    assert mine["child"].parent_span_id == mine["parent"].span_id and mine["parent"].parent_span_id is None
    assert mine["parent"].attributes == {"k": "v"}
    # The resource is fixed by the process's first configure_telemetry: this test's, unless an earlier
    # test in the same pytest process (the whole suite) configured first.
    from opentelemetry import trace as otel_trace

    first = dict(otel_trace.get_tracer_provider().resource.attributes)
    assert (mine["parent"].resource["service.name"], mine["parent"].resource["dwray.process"]) == \
        (first["service.name"], first["dwray.process"])
    assert first["service.name"] != "dwray-unit" or first["dwray.process"] == "unit-http"
    assert mine["parent"].resource["process.pid"] == os.getpid()
    assert http_receiver.headers[-1]["x-api-key"] == "k-123"  # resolved here, sent to the collector


def test_a_new_config_swaps_the_exporter_live_to_otlp_grpc(
        http_receiver: OtlpHttpReceiver, grpc_receiver: OtlpGrpcReceiver, tmp_path: Path) -> None:
    configure_telemetry(TracingConfig(exporter="otlp-http", endpoint=http_receiver.endpoint, sampler="always_on"),
                        LoggingConfig(), "unit-swap")
    provider = trace.get_tracer_provider()
    first = one_span("before the swap")
    configure_telemetry(TracingConfig(exporter="otlp-grpc", endpoint=grpc_receiver.endpoint, sampler="always_on",
                                      headers={"authorization": secret_file(tmp_path, "Bearer g")}),
                        LoggingConfig(), "unit-swap")
    assert trace.get_tracer_provider() is provider  # the same provider: tracers handed out keep working
    second = one_span("after the swap")
    assert flush_telemetry(10)
    http_receiver.wait_for(lambda got: any(s.trace_id == first for s in got))  # the old batch was sent on swap
    grpc_receiver.wait_for(lambda got: any(s.trace_id == second for s in got))
    assert not http_receiver.trace(second) and not grpc_receiver.trace(first)
    assert grpc_receiver.headers[-1]["authorization"] == "Bearer g"
    assert grpc_receiver.trace(second)[0].kind == "INTERNAL"


def test_exporter_none_records_no_root_but_makes_ids_and_passes_a_sampled_trace_on() -> None:
    configure_telemetry(TracingConfig(exporter="none"), LoggingConfig(), "unit-none")
    with tracer.start_as_current_span("unrecorded") as span:
        assert not span.is_recording()
        assert current_trace_id() == format(span.get_span_context().trace_id, "032x") != "0" * 32
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        assert not int(carrier["traceparent"][-2:], 16) & 1  # not sampled: the next process drops it too
    assert current_trace_id() is None
    # A caller's sampled trace stays sampled through this process (its hosts may export).
    remote = "4bf92f3577b34da6a3ce929d0e0e4736"
    with tracer.start_as_current_span("passing", context=propagate.extract(
            {"traceparent": f"00-{remote}-00f067aa0ba902b7-01"})):
        carrier = {}
        propagate.inject(carrier)
    assert carrier["traceparent"].startswith(f"00-{remote}-") and int(carrier["traceparent"][-2:], 16) & 1


def test_samplers_and_a_remote_parent(http_receiver: OtlpHttpReceiver) -> None:
    base = TracingConfig(exporter="otlp-http", endpoint=http_receiver.endpoint)
    configure_telemetry(base.model_copy(update={"sampler": "always_off"}), LoggingConfig(), "unit-sampler")
    dropped = one_span("always off")
    configure_telemetry(base.model_copy(update={"sampler": "traceidratio", "ratio": 0.0}), LoggingConfig(),
                        "unit-sampler")
    also_dropped = one_span("ratio 0")
    # Parent-based with ratio 0: a root is dropped, a client's sampled traceparent is followed (same trace id).
    configure_telemetry(base.model_copy(update={"sampler": "parentbased_traceidratio", "ratio": 0.0}),
                        LoggingConfig(), "unit-sampler")
    root_dropped = one_span("parentbased root")
    remote = "4bf92f3577b34da6a3ce929d0e0e4736"
    context = propagate.extract({"traceparent": f"00-{remote}-00f067aa0ba902b7-01"})
    with tracer.start_as_current_span("follows the client", context=context):
        pass
    assert flush_telemetry(10)
    spans = http_receiver.wait_for(lambda got: any(s.trace_id == remote for s in got))
    followed = [s for s in spans if s.trace_id == remote]
    assert [(s.name, s.parent_span_id) for s in followed] == [("follows the client", "00f067aa0ba902b7")]
    for trace_id in (dropped, also_dropped, root_dropped):
        assert not http_receiver.trace(trace_id)


def test_in_memory_processors_are_added_beside_the_exporter() -> None:
    configure_telemetry(TracingConfig(exporter="none"), LoggingConfig(), "unit-memory")
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    add_span_processor(processor)
    try:
        one_span("kept in memory")  # recorded now: something sees the spans
        assert [s.name for s in exporter.get_finished_spans()] == ["kept in memory"]
    finally:
        remove_span_processor(processor)
    one_span("not kept")
    assert [s.name for s in exporter.get_finished_spans()] == ["kept in memory"]
    assert not telemetry_state().processor.extra


def test_json_log_lines_carry_the_current_trace_and_span(capsys: pytest.CaptureFixture[str]) -> None:
    configure_telemetry(TracingConfig(), LoggingConfig(format="json"), "unit-json")
    log = logging.getLogger("dwray.tests.json")
    with tracer.start_as_current_span("request") as span:
        log.warning("serving %s", "k1")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("it failed")
    log.warning("outside")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    context = span.get_span_context()
    first, failed, outside = lines
    assert set(first) == {"time", "level", "logger", "message", "trace_id", "span_id", "process"}
    assert first["message"] == "serving k1" and first["level"] == "WARNING" and first["logger"] == "dwray.tests.json"
    assert first["trace_id"] == format(context.trace_id, "032x") and first["span_id"] == format(context.span_id, "016x")
    assert first["process"] == "unit-json" and first["time"].endswith("Z")
    assert "ValueError: boom" in failed["exception"] and failed["trace_id"] == first["trace_id"]
    assert outside["trace_id"] is None and outside["span_id"] is None


def test_levels_change_live_without_doubling_the_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_telemetry(TracingConfig(), LoggingConfig(level="WARNING", levels={"dwray.tests.chatty": "DEBUG"}),
                        "unit-levels")
    logging.getLogger("dwray.tests.chatty").debug("debug shown")
    logging.getLogger("dwray.tests.quiet").info("info hidden")
    configure_telemetry(TracingConfig(), LoggingConfig(level="INFO", format="json"), "unit-levels")
    logging.getLogger("dwray.tests.chatty").debug("debug hidden now")  # its own level was dropped
    logging.getLogger("dwray.tests.quiet").info("info shown now")
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert "DEBUG dwray.tests.chatty [unit-levels] debug shown" in err[0]  # text format
    assert json.loads(err[1])["message"] == "info shown now"
    assert logging.getLogger("dwray.tests.chatty").level == logging.NOTSET
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "dwray-telemetry"]
    assert len(ours) == 1


def test_text_lines_name_the_trace_inside_a_span(capsys: pytest.CaptureFixture[str]) -> None:
    configure_telemetry(TracingConfig(), LoggingConfig(), "unit-text")
    with tracer.start_as_current_span("request") as span:
        logging.getLogger("dwray.tests.text").warning("inside")
    line = capsys.readouterr().err.strip()
    assert line.endswith(f"inside trace_id={span.get_span_context().trace_id:032x} "
                         f"span_id={span.get_span_context().span_id:016x}")


def test_bad_settings_are_refused_and_change_nothing(http_receiver: OtlpHttpReceiver, tmp_path: Path) -> None:
    good = TracingConfig(exporter="otlp-http", endpoint=http_receiver.endpoint, sampler="always_on")
    configure_telemetry(good, LoggingConfig(), "unit-bad")
    with pytest.raises(InvalidArgument, match="endpoint '127.0.0.1:4318'.*http://"):
        configure_telemetry(good.model_copy(update={"endpoint": "127.0.0.1:4318"}), LoggingConfig(), "unit-bad")
    missing = f"secret://file/{tmp_path / 'absent.key'}"
    with pytest.raises(DwrayError) as refused:
        configure_telemetry(good.model_copy(update={"headers": {"x-api-key": missing}}), LoggingConfig(), "unit-bad")
    assert "absent.key" in str(refused.value)
    assert telemetry_state().tracing == good
    with pytest.raises(InvalidArgument, match="TracingConfig"):
        configure_telemetry({"exporter": "console"}, LoggingConfig(), "unit-bad")  # type: ignore[arg-type]
    trace_id = one_span("still exported")
    assert flush_telemetry(10)
    http_receiver.wait_for(lambda got: any(s.trace_id == trace_id for s in got))


def test_exporters_by_name(tmp_path: Path) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as Http
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    assert make_exporter(TracingConfig()) is None
    assert isinstance(make_exporter(TracingConfig(exporter="console")), ConsoleSpanExporter)
    http = make_exporter(TracingConfig(exporter="otlp-http", endpoint="http://collector:4318/"))
    assert isinstance(http, Http) and http._endpoint == "http://collector:4318/v1/traces"
    kept = make_exporter(TracingConfig(exporter="otlp-http", endpoint="https://c.example/v1/traces"))
    assert kept._endpoint == "https://c.example/v1/traces"
    assert isinstance(make_exporter(TracingConfig(exporter="otlp-grpc", endpoint="http://collector:4317")), Grpc)


def test_child_and_supervisor_specs_carry_the_sections_as_references(tmp_path: Path) -> None:
    from actors.bootstrap import supervisor_spec
    from dwray.config import DwrayConfig

    ref = "secret://env/DWRAY_TEST_COLLECTOR_KEY"
    tracing = TracingConfig(exporter="otlp-grpc", endpoint="http://127.0.0.1:4317", headers={"x-api-key": ref})
    logs = LoggingConfig(format="json", levels={"dwray.gateway": "DEBUG"})
    spec = supervisor_spec(DwrayConfig(data_dir=tmp_path / "data", tracing=tracing, logging=logs))
    assert spec.tracing == tracing and spec.logging == logs
    assert all(child.tracing == tracing and child.logging == logs for child in spec.children)
    assert ref in spec.children[1].model_dump_json()  # a reference crosses to the hosts, never a value
    assert ChildSpec(id="c", plugin="m:C").tracing == TracingConfig()
    assert SupervisorSpec().logging == LoggingConfig()


def test_a_starting_process_degrades_to_no_export_when_a_header_secret_is_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = f"secret://file/{tmp_path / 'gone.key'}"
    tracing = TracingConfig(exporter="otlp-http", endpoint="http://127.0.0.1:9", headers={"x-api-key": missing})
    configure_telemetry(tracing, LoggingConfig(), "unit-degrade", degrade=True)
    state = telemetry_state()
    assert state.tracing is not None and state.tracing.exporter == "none" and state.processor.current is None
    configure_telemetry(TracingConfig(), LoggingConfig(), "unit-degrade")  # the handler now writes to capsys
    configure_telemetry(tracing, LoggingConfig(), "unit-degrade", degrade=True)
    warning = capsys.readouterr().err
    assert "WARNING dwray.telemetry" in warning and "unit-degrade: spans are not exported" in warning
    assert "gone.key" in warning
