"""The S3 protocol over HTTP: one request in, one S3 response out.

:class:`S3Api` refuses a request whose source address keeps failing
authentication (before any lookup), authenticates it (SigV4 in headers or a
presigned query), rate-limits it, finds the operation from the method, path
and query (:mod:`serve_apps.s3_call`), runs it on the warehouse for the
caller's tenant, and answers with S3's XML or streamed bytes. The operations live by purpose:
buckets and listings (:mod:`serve_apps.s3_buckets`), objects
(:mod:`serve_apps.s3_objects`), multipart uploads
(:mod:`serve_apps.s3_multipart`), on a shared base that streams request bodies
(:mod:`serve_apps.s3_operations`). Protocol details (XML, ranges, conditions,
checksums, aws-chunked bodies, signatures) live in ``dwray.s3``.

With ``[gateway] server_timing`` on, every S3 response carries a
``Server-Timing`` header: ``total`` (the handler's time, up to the response's
first byte) and the time in each phase (``auth``, ``body`` read, each plugin
kind's remote calls: :mod:`dwray.core.request_timing`). The client's latency
minus ``total`` is what HTTP, HAProxy and Serve cost.

Every request is one trace (:mod:`dwray.core.telemetry` exports it): the
gateway's span ``s3.<Operation>`` (kind SERVER) is its root, or the child of
the client's W3C ``traceparent`` when one is sent; the warehouse's spans and
the plugin hosts' are its descendants. Its trace id (32 hex digits) is the
response's ``x-amz-request-id``, the error document's ``RequestId`` and the
audit record's request id, and every log line written while the request is
served carries it. A streamed response's span ends with its last byte.

While the node's memory is critical (:mod:`dwray.core.memory_pressure`), a
write that stores new data (:data:`MEMORY_REFUSED`) is answered ``503
SlowDown`` with ``Retry-After`` once authenticated, before its body is read.
"""
from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import cached_property
from types import MappingProxyType
from typing import ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dwray.core.request_timing import RequestTimer, phase, timing
from dwray.errors import DwrayError
from dwray.s3 import xml as s3xml
from dwray.s3.errors import S3Error, from_dwray_error
from dwray.s3.request_headers import refuse_unhonoured_headers
from serve_apps.edge_audit import audit_refusal
from serve_apps.s3_buckets import BucketOperations
from serve_apps.s3_call import S3Call, client_address
from serve_apps.s3_multipart import MultipartOperations
from serve_apps.s3_objects import ObjectOperations
from serve_apps.s3_subresources import SubresourceOperations

__all__ = ["MEMORY_REFUSED", "TIMING_PHASES", "S3Api"]

log = logging.getLogger("dwray.gateway")
tracer = trace.get_tracer("dwray.gateway")
# Only W3C trace context is taken from a client (not baggage: that would let clients set our attributes).
_W3C = TraceContextTextMapPropagator()

# Operations refused with 503 SlowDown while memory is critical: each stores a body's worth of new data.
# CreateMultipartUpload, CompleteMultipartUpload (it joins parts already stored and frees the upload's state),
# deletes, aborts and the small subresource writes (tags, ACLs, versioning) go on: they add no object bytes,
# and refusing them would keep memory and storage held longer.
MEMORY_REFUSED = frozenset({"PutObject", "CopyObject", "UploadPart", "UploadPartCopy"})
# The phases every Server-Timing header names, in this order (0 when not reached); other plugin kinds follow.
TIMING_PHASES = ("auth", "body", "identity", "catalog", "kms", "storage", "stage", "audit")


class S3Api(BucketOperations, SubresourceOperations, ObjectOperations, MultipartOperations):
    """The S3 operations of one gateway replica, and the request cycle that dispatches to them."""

    # Each S3 operation that :func:`~serve_apps.s3_call.classify` names -> the name of its handler method.
    # A class-level table, so the README's compatibility matrix (serve_apps.s3_compat) reads it without a gateway.
    HANDLERS: ClassVar[Mapping[str, str]] = MappingProxyType({
        "ListBuckets": "list_buckets", "CreateBucket": "create_bucket", "HeadBucket": "head_bucket",
        "DeleteBucket": "delete_bucket", "GetBucketLocation": "bucket_location",
        "GetBucketVersioning": "bucket_versioning", "ListObjects": "list_objects_v1",
        "ListObjectsV2": "list_objects_v2", "ListMultipartUploads": "list_uploads",
        "DeleteObjects": "delete_objects", "PutObject": "put_object", "CopyObject": "copy_object",
        "GetObject": "get_object", "HeadObject": "head_object", "DeleteObject": "delete_object",
        "CreateMultipartUpload": "create_upload", "UploadPart": "upload_part",
        "UploadPartCopy": "upload_part_copy", "CompleteMultipartUpload": "complete_upload",
        "AbortMultipartUpload": "abort_upload", "ListParts": "list_parts",
        "ListObjectVersions": "list_object_versions", "PutBucketVersioning": "put_bucket_versioning",
        "GetBucketAcl": "get_bucket_acl", "PutBucketAcl": "put_bucket_acl",
        "GetObjectAcl": "get_object_acl", "PutObjectAcl": "put_object_acl",
        "GetObjectTagging": "get_object_tagging", "PutObjectTagging": "put_object_tagging",
        "DeleteObjectTagging": "delete_object_tagging",
        "GetBucketNotificationConfiguration": "get_bucket_notification",
        "PutBucketNotificationConfiguration": "put_bucket_notification",
    })

    @cached_property
    def handlers(self) -> dict[str, Callable[[S3Call], Awaitable[Response]]]:
        """The handler of each S3 operation that :func:`~serve_apps.s3_call.classify` names."""
        return {operation: getattr(self, method) for operation, method in self.HANDLERS.items()}

    # The request cycle ---------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        """Answer one S3 request, in its own span (see the module docstring)."""
        parent = _W3C.extract(request.headers)
        span = tracer.start_span("s3.request", context=parent, kind=trace.SpanKind.SERVER,
                                 attributes={"http.request.method": request.method})
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            response = await self._timed(request)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR, f"HTTP {response.status_code}"))
        if isinstance(response, StreamingResponse):
            response.body_iterator = _ending_span(response.body_iterator, span)
        else:
            span.end()
        return response

    async def _timed(self, request: Request) -> Response:
        if not self.server_timing:
            return await self._handle(request)
        with timing(RequestTimer()) as timer:
            response = await self._handle(request)
        response.headers["server-timing"] = timer.header(TIMING_PHASES)
        return response

    async def _handle(self, request: Request) -> Response:
        started = time.perf_counter()
        call: S3Call | None = None
        source = client_address(request.scope, forwarded=self.forwarded_client)
        reached = False  # whether the warehouse got the request (it audits those itself)
        try:
            self._refuse_failing_source(source)  # before anything reaches an actor
            call = S3Call(request, self.domain)
            call.source_address = source
            _name_span(call)
            header_bytes = sum(len(name) + len(value) + 4 for name, value in call.header_list)
            if header_bytes > self.max_header_bytes:
                raise S3Error("RequestHeaderSectionTooLarge",
                              f"Your request's headers exceed the maximum of {self.max_header_bytes} bytes.")
            if self.is_draining():
                raise S3Error("ServiceUnavailable", "the gateway is shutting down", headers={"Retry-After": "5"})
            with phase("auth"):
                call.auth = await self.run(self.verifier.verify, call.method, call.raw_path, call.raw_query,
                                           call.header_list, host_bucket=call.host_bucket)
            self._rate_limit(call)
            self._refuse_writes_at_memory_critical(call)
            if call.operation == "Unsupported":
                raise S3Error("NotImplemented", "dwray does not implement this S3 operation")
            refuse_unhonoured_headers(call.headers, call.operation, call.tenant)
            reached = True
            response = await self.handlers[call.operation](call)
        except S3Error as error:
            response = self._error(call, error)
        except DwrayError as error:
            response = self._error(call, from_dwray_error(error, resource=call.resource if call else ""))
        except Exception:  # noqa: BLE001 - the client gets an opaque error; the log gets the trace
            log.exception("request %s failed", call.request_id if call else "?")
            response = self._error(call, S3Error("InternalError", "We encountered an internal error."))
        if self.auth_failures is not None and (call is None or call.auth is None) \
                and 400 <= response.status_code < 500:
            self.auth_failures.failed(source)  # unauthenticated and failing: spends from the address's bucket
        operation = call.operation if call else "unknown"
        if call is not None and call.auth is not None:
            trace.get_current_span().set_attribute("dwray.tenant", call.tenant)
        if not reached:
            audit_refusal(self.wh, request, call, source, response)
        response.headers["x-amz-request-id"] = call.request_id if call else _request_id()
        if log.isEnabledFor(logging.DEBUG):  # an access log line, at DEBUG ([logging] levels), with the trace id
            log.debug("%s %s %s -> %d", operation, call.method if call else request.method,
                      call.resource if call else request.url.path, response.status_code)
        if self.metrics is not None:
            # A streamed body is counted by its declared length when the response starts.
            sent = (int(response.headers.get("content-length", 0)) if isinstance(response, StreamingResponse)
                    else len(response.body or b""))
            self.metrics.observe(operation, response.status_code, time.perf_counter() - started,
                                 call.bytes_in if call else 0, sent)
        return response

    def _refuse_failing_source(self, source: str) -> None:
        """503 SlowDown for an address whose failed authentications used up its bucket."""
        wait = None if self.auth_failures is None else self.auth_failures.check(source)
        if wait is not None:
            if self.metrics is not None:
                self.metrics.rate_limited("source")
            raise S3Error("SlowDown", "Too many requests from your address failed authentication; "
                          "please reduce your request rate.", headers={"Retry-After": str(max(1, int(wait + 0.999)))})

    def _refuse_writes_at_memory_critical(self, call: S3Call) -> None:
        """503 SlowDown with Retry-After (``Backpressure``) for a write that would store data, while the
        node's memory is critical; decided from the headers, before a byte of the body is read.

        Large reads are refused by the warehouse once the object's size is known (after its lookup,
        before a byte is read); writes that free memory or store no data go on (see MEMORY_REFUSED).
        """
        if self.memory is not None and call.operation in MEMORY_REFUSED:
            self.memory.refuse_if_critical(call.operation)

    def _rate_limit(self, call: S3Call) -> None:
        if self.limiter is None or call.auth is None:
            return
        identity = call.auth.identity
        wait = self.limiter.check(identity.tenant, identity.access_key_id)
        if wait is not None:
            if self.metrics is not None:
                self.metrics.rate_limited("tenant")
            raise S3Error("SlowDown", "Please reduce your request rate.",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})

    def _error(self, call: S3Call | None, error: S3Error) -> Response:
        if self.metrics is not None and error.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId",
                                                        "AccessDenied", "RequestTimeTooSkewed"):
            self.metrics.auth_failed(error.code)
        if not error.resource and call is not None:
            error.resource = call.resource
        headers = dict(error.headers)
        if call is not None and call.method == "HEAD":
            return Response(status_code=error.status, headers=headers)
        body = s3xml.error_xml(error, call.request_id if call else "")
        return Response(body, status_code=error.status, media_type="application/xml", headers=headers)


def _request_id() -> str:
    """The current trace's id (32 hex digits), or random hex when tracing is not set up in this process."""
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else secrets.token_hex(16)


def _name_span(call: S3Call) -> None:
    """Name the request's span after its operation, and make its trace id the request id."""
    span = trace.get_current_span()
    span.update_name(f"s3.{call.operation}")
    span.set_attribute("dwray.s3.operation", call.operation)
    if call.bucket:
        span.set_attribute("aws.s3.bucket", call.bucket)
    call.request_id = _request_id()


async def _ending_span(chunks: AsyncIterator[bytes], span: trace.Span) -> AsyncIterator[bytes]:
    """A streamed body whose request span ends with its last chunk (or when the transfer is abandoned)."""
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        span.end()
