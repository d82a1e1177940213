"""One gRPC call in the gateway: its span, caller, authentication, limits, status, metrics and audit.

:class:`GrpcCall` is the request cycle of :mod:`serve_apps.grpc_gateway`'s
methods, used as ``async with GrpcCall(method, grpc_context) as call``: it
counts the call in flight (the drain waits on it), opens its span
``grpc.<Method>`` (a child of the caller's W3C ``traceparent``), whose trace id
is the request id sent back as trailing metadata ``x-dwray-request-id``;
:meth:`GrpcCall.admit` refuses a source address whose failed authentications
are used up, a draining gateway, a bad signature (:mod:`serve_apps.grpc_auth`)
and a rate-limited key, in that order, as S3 does. On the way out an error
becomes the call's gRPC status (:func:`status_of`), a refusal before the
warehouse is audited as ``grpc:<Method>`` (the warehouse audits what it runs),
and the call is counted in the gateway's metrics as ``grpc.<Method>``.
Cancellation (the deadline passed, the client left) is not an error to
answer: it goes on up, and Serve ends the call.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from dwray import errors as dw
from dwray.core.models import TenantContext
from dwray.s3.errors import S3Error
from serve_apps.grpc_auth import GrpcRefusal, GrpcSignatureVerifier
from serve_apps.haproxy_hardening import CLIENT_ADDRESS_HEADER

__all__ = ["REQUEST_ID", "SERVICE", "GrpcCall", "status_of"]

log = logging.getLogger("dwray.gateway")
tracer = trace.get_tracer("dwray.gateway")
_W3C = TraceContextTextMapPropagator()

SERVICE = "dwray.v1.Warehouse"
REQUEST_ID = "x-dwray-request-id"  # trailing metadata of every reply

# dwray's errors -> gRPC status codes; the first match wins (subclasses before their bases).
_STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (dw.InvalidRange, grpc.StatusCode.OUT_OF_RANGE),
    (dw.EntityTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (dw.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (dw.NotFound, grpc.StatusCode.NOT_FOUND),
    (dw.DeleteMarkerVersion, grpc.StatusCode.NOT_FOUND),
    (dw.QuotaExceeded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (dw.AccessDenied, grpc.StatusCode.PERMISSION_DENIED),
    (dw.AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (dw.BucketNotEmpty, grpc.StatusCode.FAILED_PRECONDITION),
    (dw.PreconditionFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (dw.Backpressure, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (dw.BulkheadFull, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (dw.PluginUnavailable, grpc.StatusCode.UNAVAILABLE),
    (dw.PluginTimeout, grpc.StatusCode.UNAVAILABLE),
    (dw.NotReady, grpc.StatusCode.UNAVAILABLE),
    (dw.IntegrityError, grpc.StatusCode.DATA_LOSS),
)
_S3_STATUS = {"EntityTooLarge": grpc.StatusCode.RESOURCE_EXHAUSTED, "IncompleteBody": grpc.StatusCode.CANCELLED,
              "SlowDown": grpc.StatusCode.RESOURCE_EXHAUSTED}
# For the gateway's request metrics, which count HTTP-style statuses.
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 412, grpc.StatusCode.OUT_OF_RANGE: 416,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.CANCELLED: 499, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}




def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status and details a failed call answers with; only dwray's own messages are passed on."""
    if isinstance(error, GrpcRefusal):
        return error.code, error.details
    if isinstance(error, S3Error):
        return _S3_STATUS.get(error.code, grpc.StatusCode.INVALID_ARGUMENT), f"{error.code}: {error.message}"
    for cls, code in _STATUS:
        if isinstance(error, cls):
            return code, f"{type(error).__name__}: {error}"
    return grpc.StatusCode.INTERNAL, "internal error (the gateway's log has it, under this call's request id)"



def _peer_address(peer: str) -> str:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv6" and rest.startswith("["):
        return rest[1:rest.find("]")] or "unknown"
    return rest.rsplit(":", 1)[0] if kind == "ipv4" else (peer[:64] or "unknown")


@functools.lru_cache(maxsize=1)
def _own_addresses() -> frozenset[str]:
    """This host's addresses: HAProxy, which sets the client-address header, runs on the replica's node."""
    import psutil

    return frozenset({"127.0.0.1", "::1"} | {address.address.split("%", 1)[0]
                                               for addresses in psutil.net_if_addrs().values()
                                               for address in addresses})


def caller_address(peer: str, forwarded: str | None, trust_forwarded: bool) -> str:
    """The caller's address for limits and audit: HAProxy's header only when HAProxy is who connected.

    Serve binds each replica's own gRPC port on every interface (``[::]``, hard-coded), so a caller
    may reach it without HAProxy; its header is then its own claim and is not believed.
    """
    address = _peer_address(peer)
    if forwarded and trust_forwarded and address in _own_addresses():
        return forwarded[:64]
    return address


class GrpcCall:
    """One gRPC call in the gateway: its span, caller, counters and outcome (``async with``)."""

    def __init__(self, method: str, grpc_context: Any) -> None:
        from serve_apps.context import current

        self.ctx = current()
        self.method = method
        self.grpc_context = grpc_context
        self.metadata = {name: value for name, value in grpc_context.invocation_metadata()
                         if isinstance(value, str)}
        self.source = caller_address(grpc_context.peer() or "", self.metadata.get(CLIENT_ADDRESS_HEADER),
                                     self.ctx.forwarded_client)
        self.resource = "*"
        self.identity: Any = None
        self.claimed_key: str | None = None
        self.reached = False  # whether the warehouse got the call (it audits those itself)
        self.bytes_in = self.bytes_out = 0
        self.code = grpc.StatusCode.OK

    async def __aenter__(self) -> GrpcCall:
        self.started = time.perf_counter()
        self.ctx.metrics.begin()
        parent = _W3C.extract(self.metadata)
        self.span = tracer.start_span(f"grpc.{self.method}", context=parent, kind=trace.SpanKind.SERVER,
                                      attributes={"rpc.system": "grpc", "rpc.service": SERVICE,
                                                  "rpc.method": self.method})
        self.otel = trace.set_span_in_context(self.span, parent)
        span_context = self.span.get_span_context()
        self.request_id = (format(span_context.trace_id, "032x") if span_context.is_valid
                           else secrets.token_hex(16))
        self.grpc_context.set_trailing_metadata([(REQUEST_ID, self.request_id)])
        return self

    async def __aexit__(self, kind: Any, error: BaseException | None, tb: Any) -> bool:
        try:
            if error is not None:
                self._failed(error)
            if self.identity is not None:
                self.span.set_attribute("dwray.tenant", self.identity.tenant)
            self.span.set_attribute("rpc.grpc.status_code", self.code.value[0])
            if self.code not in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND):
                self.span.set_status(trace.Status(trace.StatusCode.ERROR, self.code.name))
            self.ctx.metrics.observe(f"grpc.{self.method}", _HTTP_STATUS.get(self.code, 500),
                                     time.perf_counter() - self.started, self.bytes_in, self.bytes_out)
        finally:
            self.span.end()
            self.ctx.metrics.end()
        # Errors are answered with their status; cancellation (the deadline, the client gone) goes on up.
        return error is not None and isinstance(error, Exception)

    def _failed(self, error: BaseException) -> None:
        if not isinstance(error, Exception):
            self.code = grpc.StatusCode.CANCELLED
            self.span.set_status(trace.Status(trace.StatusCode.ERROR, "cancelled"))
            return
        code, details = status_of(error)
        if code is grpc.StatusCode.INTERNAL:
            log.error("gRPC call %s (%s) failed", self.method, self.request_id, exc_info=error)
        self.span.record_exception(error)
        self.code = code
        self.grpc_context.set_code(code)
        self.grpc_context.set_details(details)
        if code is grpc.StatusCode.UNAUTHENTICATED:
            self.ctx.metrics.auth_failed("other")
            if self.ctx.auth_failures is not None:
                self.ctx.auth_failures.failed(self.source)  # spends from the address's bucket, as S3's refusals
        if not self.reached:
            self._audit_refusal(code, error)

    def _audit_refusal(self, code: grpc.StatusCode, error: BaseException) -> None:
        warehouse = self.ctx.warehouse
        if not hasattr(warehouse, "audit_event"):
            return
        claimed = error.claimed_key if isinstance(error, GrpcRefusal) else None
        try:
            warehouse.audit_event(
                action=f"grpc:{self.method}", resource=self.resource, outcome="denied", error=code.name,
                tenant=self.identity.tenant if self.identity else None,
                access_key_id=self.identity.access_key_id if self.identity else claimed,
                request_id=self.request_id, source_address=self.source)
        except Exception as exc:  # noqa: BLE001 - a refusal's record must not turn the refusal into INTERNAL
            log.warning("could not audit a refused gRPC call: %s", exc)

    # Steps ------------------------------------------------------------------------

    def name(self, bucket: str, key: str = "") -> None:
        self.resource = f"{bucket}/{key}" if key else (bucket or "*")
        if bucket:
            self.span.set_attribute("aws.s3.bucket", bucket)

    async def admit(self, message: Any, *, allow_payload_hash: bool = False) -> str:
        """Refuse a failing address, authenticate, refuse while draining or rate-limited; the payload hash."""
        ctx = self.ctx
        self.name(getattr(message, "bucket", ""), getattr(message, "key", ""))
        wait = None if ctx.auth_failures is None else ctx.auth_failures.check(self.source)
        if wait is not None:
            ctx.metrics.rate_limited("source")
            raise GrpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls from your address failed "
                              f"authentication; retry in {max(1, int(wait + 0.999))} s")
        if ctx.draining:
            raise GrpcRefusal(grpc.StatusCode.UNAVAILABLE, "the gateway is shutting down; retry on another")
        verifier = _verifier(ctx)
        self.identity, payload = await self.run(verifier.verify, f"/{SERVICE}/{self.method}", self.metadata,
                                                message, allow_payload_hash=allow_payload_hash)
        if ctx.limiter is not None:
            wait = ctx.limiter.check(self.identity.tenant, self.identity.access_key_id)
            if wait is not None:
                ctx.metrics.rate_limited("tenant")
                raise GrpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED, "rate limit: please reduce your call rate; "
                                  f"retry in {max(1, int(wait + 0.999))} s")
        return payload

    @property
    def tenant(self) -> TenantContext:
        """Who the call acts for, as the warehouse takes it (the key's tenant and policy)."""
        identity = self.identity
        return TenantContext(identity.tenant, access_key_id=identity.access_key_id, policy=identity.policy,
                             request_id=self.request_id, source_address=self.source)

    def bind(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], Any]:
        """``fn(*args, **kwargs)`` to run on a thread, inside the call's span."""
        def run() -> Any:
            token = otel_context.attach(self.otel)
            try:
                return fn(*args, **kwargs)
            finally:
                otel_context.detach(token)
        return run

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A blocking call on the replica's thread pool, in the call's span."""
        return await asyncio.get_running_loop().run_in_executor(self.ctx.executor, self.bind(fn, *args, **kwargs))


def _verifier(ctx: Any) -> GrpcSignatureVerifier:
    """The replica's verifier (made on first use: it keeps the nonces this replica accepted)."""
    verifier = getattr(ctx, "grpc_verifier", None)
    if verifier is None:
        verifier = ctx.grpc_verifier = GrpcSignatureVerifier(ctx.lookup_key,
                                                             max_skew=ctx.config.gateway.max_clock_skew)
    return verifier


