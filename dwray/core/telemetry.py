"""Where this process's spans go and how its log lines look: ``[tracing]`` and ``[logging]`` applied.

Every process of a warehouse calls :func:`configure_telemetry` once it knows
its config: a gateway replica, each plugin host (its ``ChildSpec`` carries the
two sections: references, never secret values), the supervisor, ``dw up``.

Tracing: the process gets one global OpenTelemetry ``TracerProvider`` (the API
allows setting it once per process) whose resource names the service and the
process. Its span processor and sampler are switches: calling
:func:`configure_telemetry` again with another config swaps the exporter
(OTLP/HTTP protobuf, OTLP/gRPC, console, none) and the sampler in place, so a
reload changes them live and the tracers already handed out keep working.
With ``exporter = "none"`` a trace started here is not recorded (the sampler
drops it: cheap) but still gets a trace id, which requests and log lines
carry; a caller's sampled trace passes through (recorded, not exported), so the
processes it calls next that do export still join it. Header
values are secret references, resolved here, in the calling process.

Logging: one handler on the root logger (replaced, never doubled, on a new
call), plain text or one JSON object per line (``time``, ``level``,
``logger``, ``message``, ``trace_id``, ``span_id``, ``process`` and
``exception`` when there is one); the trace and span ids are the current
span's, so every line written while a request is served names its trace.
Levels: ``level`` for the root, ``levels`` per logger; a logger named by a
previous call and no longer is set back to inherit.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)

from dwray.config_telemetry import LoggingConfig, TracingConfig
from dwray.errors import DwrayError, InvalidArgument

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = [
    "JsonFormatter",
    "TextFormatter",
    "TraceContextFilter",
    "add_span_processor",
    "configure_telemetry",
    "current_trace_id",
    "flush_telemetry",
    "make_exporter",
    "make_sampler",
    "remove_span_processor",
    "telemetry_state",
]

_log = logging.getLogger("dwray.telemetry")
# The OTLP/HTTP path of traces, appended to an endpoint that does not name it already.
OTLP_HTTP_TRACES_PATH = "/v1/traces"


class _SwitchProcessor(SpanProcessor):
    """Delegates to the current exporting processor and to the added ones; the current one can be swapped."""

    def __init__(self) -> None:
        self.current: SpanProcessor | None = None
        self.extra: list[SpanProcessor] = []

    def _all(self) -> list[SpanProcessor]:
        return [*([self.current] if self.current is not None else []), *self.extra]

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        for processor in self._all():
            processor.on_start(span, parent_context=parent_context)

    def on_end(self, span: Any) -> None:
        for processor in self._all():
            processor.on_end(span)

    def shutdown(self) -> None:
        for processor in self._all():
            processor.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(processor.force_flush(timeout_millis) for processor in self._all())


class _SwitchSampler(Sampler):
    """A sampler whose decisions are another's, swapped by a new configuration."""

    def __init__(self, inner: Sampler) -> None:
        self.inner = inner

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                      attributes: Any = None, links: Sequence[Any] | None = None,
                      trace_state: Any = None) -> SamplingResult:
        return self.inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"Switch{{{self.inner.get_description()}}}"


@dataclass
class TelemetryState:
    """What :func:`configure_telemetry` set up in this process (one per process)."""

    provider: TracerProvider | None = None
    processor: _SwitchProcessor = field(default_factory=_SwitchProcessor)
    sampler: _SwitchSampler = field(default_factory=lambda: _SwitchSampler(ALWAYS_OFF))
    tracing: TracingConfig | None = None
    configured_sampler: Sampler = ALWAYS_OFF
    handler: logging.Handler | None = None
    leveled: set[str] = field(default_factory=set)
    process: str = ""


_state = TelemetryState()
_lock = threading.RLock()


def telemetry_state() -> TelemetryState:
    """This process's telemetry (for tests and the reload's report)."""
    return _state


def make_sampler(tracing: TracingConfig) -> Sampler:
    """The OpenTelemetry sampler ``[tracing] sampler`` and ``ratio`` name."""
    if tracing.sampler == "always_on":
        return ALWAYS_ON
    if tracing.sampler == "always_off":
        return ALWAYS_OFF
    if tracing.sampler == "traceidratio":
        return TraceIdRatioBased(tracing.ratio)
    return ParentBased(TraceIdRatioBased(tracing.ratio))


def _headers(tracing: TracingConfig, config: DwrayConfig | None) -> dict[str, str]:
    """The exporter's headers, each value resolved from its secret reference in this process."""
    from dwray.secrets import resolve_secret

    return {name: resolve_secret(ref, config).reveal() for name, ref in tracing.headers.items()}


def _http_endpoint(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    if not endpoint.startswith(("http://", "https://")):
        raise InvalidArgument(f"[tracing] endpoint {endpoint!r}: otlp-http needs an http:// or https:// URL")
    base = endpoint.rstrip("/")
    return base if base.endswith(OTLP_HTTP_TRACES_PATH) else base + OTLP_HTTP_TRACES_PATH


def make_exporter(tracing: TracingConfig, config: DwrayConfig | None = None) -> SpanExporter | None:
    """The span exporter ``[tracing] exporter`` names (``None`` for ``none``).

    ``endpoint`` for otlp-http is the collector's base URL (``http://host:4318``;
    ``/v1/traces`` is appended unless given), for otlp-grpc ``http://host:4317``
    (plaintext) or ``https://host:4317`` (TLS).
    """
    if tracing.exporter == "none":
        return None
    if tracing.exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(service_name=tracing.service_name, out=sys.stderr)
    headers = _headers(tracing, config)
    if tracing.exporter == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter(endpoint=_http_endpoint(tracing.endpoint), headers=headers or None,
                            timeout=tracing.timeout)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    endpoint = tracing.endpoint
    insecure = None if endpoint is None else endpoint.startswith("http://")
    return GrpcExporter(endpoint=endpoint, insecure=insecure, headers=headers or None, timeout=tracing.timeout)


# Nothing here would see a recorded span: roots are dropped (their ids are still made, for requests and
# logs), and a caller's decision passes through, so processes further down that export keep the trace.
_PASS_THROUGH = ParentBased(ALWAYS_OFF)


def _effective_sampler() -> Sampler:
    if _state.processor.current is None and not _state.processor.extra:
        return _PASS_THROUGH
    return _state.configured_sampler


def _configure_tracing(tracing: TracingConfig, process: str, config: DwrayConfig | None) -> None:
    if tracing == _state.tracing:
        return
    exporter = make_exporter(tracing, config)  # before anything changes: a bad config leaves the old one
    if _state.provider is None:
        resource = Resource.create({"service.name": tracing.service_name, "dwray.process": process,
                                    "process.pid": os.getpid()})
        provider = TracerProvider(sampler=_state.sampler, resource=resource)
        provider.add_span_processor(_state.processor)
        trace.set_tracer_provider(provider)  # once per process: the API ignores (and logs) a second one
        if trace.get_tracer_provider() is not provider:
            raise InvalidArgument("this process's tracer provider was set before configure_telemetry: "
                                  "spans could not be exported")
        _state.provider = provider
    old = _state.processor.current
    _state.processor.current = None if exporter is None else BatchSpanProcessor(
        exporter, schedule_delay_millis=int(tracing.schedule_delay * 1000),
        export_timeout_millis=int(tracing.timeout * 1000))
    _state.configured_sampler = make_sampler(tracing)
    _state.sampler.inner = _effective_sampler()
    _state.tracing = tracing
    if old is not None:
        old.shutdown()  # exports what it still holds, then stops its thread


def add_span_processor(processor: SpanProcessor) -> None:
    """Also hand this process's spans to ``processor`` (tests keep them in memory this way).

    Configures tracing with the defaults first if :func:`configure_telemetry` was not called.
    """
    with _lock:
        if _state.provider is None:
            _configure_tracing(TracingConfig(), _state.process or "process", None)
        _state.processor.extra.append(processor)
        _state.sampler.inner = _effective_sampler()


def remove_span_processor(processor: SpanProcessor) -> None:
    """Stop handing spans to a processor given to :func:`add_span_processor` (and shut it down)."""
    with _lock:
        _state.processor.extra.remove(processor)
        _state.sampler.inner = _effective_sampler()
    processor.shutdown()


def flush_telemetry(timeout: float = 10.0) -> bool:
    """Export the spans this process still holds; ``False`` if ``timeout`` seconds were not enough."""
    with _lock:
        provider = _state.provider
    return True if provider is None else provider.force_flush(int(timeout * 1000))


def current_trace_id() -> str | None:
    """The current span's trace id as 32 hex digits, or ``None`` outside any span."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` (the current span's, or ``None``) and ``dwray_process`` to every record."""

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else None
        record.span_id = format(context.span_id, "016x") if context.is_valid else None
        record.dwray_process = self.process  # not ``process``: the record's own field, the pid
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, ids, process, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "trace_id": getattr(record, "trace_id", None),
            "span_id": getattr(record, "span_id", None),
            "process": getattr(record, "dwray_process", None),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [process] message`` and, inside a span, ``trace_id=...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(dwray_process)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id is None:
            return text
        head, sep, tail = text.partition("\n")  # the ids on the message's line, before any traceback
        return f"{head} trace_id={trace_id} span_id={getattr(record, 'span_id', None)}{sep}{tail}"


def _configure_logging(settings: LoggingConfig, process: str) -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    handler.addFilter(TraceContextFilter(process))
    handler.set_name("dwray-telemetry")
    if _state.handler is not None:
        root.removeHandler(_state.handler)
    root.addHandler(handler)
    _state.handler = handler
    root.setLevel(settings.level)
    for name in _state.leveled - set(settings.levels):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, level in settings.levels.items():
        logging.getLogger(name).setLevel(level)
    _state.leveled = set(settings.levels)


def configure_telemetry(tracing: TracingConfig, logging: LoggingConfig, process: str, *,
                        config: DwrayConfig | None = None, degrade: bool = False) -> None:
    """Apply ``[tracing]`` and ``[logging]`` to this process, named ``process`` in spans and log lines.

    Safe to call again with another config (a reload): the exporter, the sampler,
    the log format and levels change in place; the resource (service name,
    process) stays the first call's. ``config`` is the warehouse config whose
    ``[secrets]`` section resolves the header references (default settings
    without it). A header that cannot be resolved raises the resolver's dwray
    error and changes nothing; with ``degrade`` (a process starting: a secret
    manager that is down must not keep it from serving) the process exports no
    spans instead and logs why (the reference and the reason, never a value).
    """
    if not isinstance(tracing, TracingConfig) or not isinstance(logging, LoggingConfig):
        raise InvalidArgument("configure_telemetry takes a TracingConfig and a LoggingConfig")
    with _lock:
        try:
            _configure_tracing(tracing, process, config)
        except DwrayError as exc:
            if not degrade:
                raise
            _configure_tracing(tracing.model_copy(update={"exporter": "none", "headers": {}}), process, config)
            _log.warning("%s: spans are not exported: %s", process, exc)
        _configure_logging(logging, process)
        _state.process = process
