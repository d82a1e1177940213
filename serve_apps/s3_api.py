"""The S3 protocol over HTTP: one request in, one S3 response out.

:class:`S3Api` authenticates a request (SigV4 in headers or a presigned
query), rate-limits it, finds the operation from the method, path and query,
runs it on the warehouse for the caller's tenant, and answers with S3's XML or
streamed bytes. Protocol details (XML, ranges, conditions, checksums,
aws-chunked bodies, signatures) live in ``dwray.s3``; this module wires them to
the warehouse. Every blocking warehouse call runs on the gateway's thread pool,
never on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from dwray.errors import DwrayError
from dwray.s3 import http as s3http
from dwray.s3 import xml as s3xml
from dwray.s3.auth import AuthResult, SigV4Verifier
from dwray.s3.checksums import BodyVerifier
from dwray.s3.chunked import AwsChunkedDecoder
from dwray.s3.errors import S3Error, from_dwray_error
from serve_apps.bodies import BodyPipe, pump_body, stream_reader

__all__ = ["S3Api", "classify"]

log = logging.getLogger("dwray.gateway")

STREAMING_MODES = frozenset({
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
SIGNED_CHUNKS = frozenset({"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"})
STORED_REQUEST_HEADERS = ("content-encoding", "content-disposition", "content-language", "cache-control", "expires")
# Query parameters that name S3 features dwray does not offer: answered 501, never mistaken for GET/PUT Object.
UNSUPPORTED_SUBRESOURCES = frozenset({
    "acl", "policy", "cors", "lifecycle", "tagging", "website", "replication", "logging", "notification",
    "encryption", "object-lock", "legal-hold", "retention", "torrent", "requestPayment", "accelerate",
    "analytics", "inventory", "metrics", "intelligent-tiering", "ownershipControls", "publicAccessBlock",
    "restore", "select", "attributes", "versions"})
MAX_XML_BODY = 4 << 20
# Path-style names the gateway serves itself (/admin, /healthz, /metrics).
RESERVED_BUCKETS = frozenset({"admin", "healthz", "metrics"})
CONDITIONAL_WRITE_HEADERS = ("if-match", "if-none-match")


def refuse_conditional_write(call: Any) -> None:
    """Conditional writes need an atomic check in the commit, which dwray does not have yet:
    refuse them clearly rather than ignore them (an ignored If-None-Match: * overwrites)."""
    for name in CONDITIONAL_WRITE_HEADERS:
        if name in call.headers:
            raise S3Error("NotImplemented", f"conditional writes ({name}) are not supported by dwray yet")


def classify(method: str, bucket: str | None, key: str, params: Mapping[str, str],
             headers: Mapping[str, str]) -> str:
    """The S3 operation name a request asks for (``Unsupported`` for features dwray lacks)."""
    if any(name in UNSUPPORTED_SUBRESOURCES for name in params):
        return "Unsupported"
    if bucket is None:
        return "ListBuckets" if method == "GET" else "Unsupported"
    if not key:
        table = {
            "GET": ("GetBucketLocation" if "location" in params else
                    "ListMultipartUploads" if "uploads" in params else
                    "GetBucketVersioning" if "versioning" in params else
                    "ListObjectsV2" if params.get("list-type") == "2" else "ListObjects"),
            "PUT": "Unsupported" if "versioning" in params else "CreateBucket",
            "HEAD": "HeadBucket",
            "DELETE": "DeleteBucket",
            "POST": "DeleteObjects" if "delete" in params else "Unsupported",
        }
        return table.get(method, "Unsupported")
    if method == "PUT":
        if "uploadId" in params or "partNumber" in params:
            return "UploadPartCopy" if "x-amz-copy-source" in headers else "UploadPart"
        return "CopyObject" if "x-amz-copy-source" in headers else "PutObject"
    if method == "GET":
        return "ListParts" if "uploadId" in params else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in params else "DeleteObject"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        if "uploadId" in params:
            return "CompleteMultipartUpload"
    return "Unsupported"


def _etag(value: str) -> str:
    return f'"{value}"'


def _int_param(params: Mapping[str, str], name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise S3Error("InvalidArgument", f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        raise S3Error("InvalidArgument", f"{name} must be between {low} and {high if high is not None else 'any'}")
    return value


class _Call:
    """One request, parsed once: what every handler needs."""

    def __init__(self, request: Request, domain: str | None) -> None:
        scope = request.scope
        self.request = request
        self.method = request.method.upper()
        raw = (scope.get("raw_path") or scope["path"].encode()).split(b"?", 1)[0]
        self.raw_path = raw.decode("latin-1")
        self.raw_query = scope.get("query_string", b"").decode("latin-1")
        self.header_list: list[tuple[str, str]] = [
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]]
        self.headers = merged = header_pairs(self.header_list)
        self.params = query_params(self.raw_query)
        self.bucket, self.key = s3http.bucket_and_key(merged.get("host"), raw, domain)
        self.operation = classify(self.method, self.bucket, self.key, self.params, merged)
        # As sent (percent-encoded): a decoded key may hold characters XML cannot carry.
        self.resource = self.raw_path
        self.request_id = secrets.token_hex(8).upper()
        self.auth: AuthResult | None = None
        self.bytes_in = 0

    @property
    def tenant(self) -> str:
        assert self.auth is not None
        return self.auth.identity.tenant


class S3Api:
    """The S3 operations of one gateway replica."""

    def __init__(self, warehouse: Any, verifier: SigV4Verifier, *, executor: ThreadPoolExecutor,
                 body_executor: ThreadPoolExecutor | None = None, max_header_bytes: int = 16 << 10,
                 limiter: Any = None, metrics: Any = None, domain: str | None = None, region: str = "us-east-1",
                 max_object_size: int, max_metadata_bytes: int, is_draining: Callable[[], bool] = lambda: False
                 ) -> None:
        self.wh = warehouse
        self.verifier = verifier
        # Short calls (auth, metadata) and long ones (a body being read or
        # written, which holds a thread for the whole transfer) get separate
        # pools, so slow uploads can never starve authentication or probes.
        self.executor = executor
        self.body_executor = body_executor or executor
        self.max_header_bytes = max_header_bytes
        self.limiter = limiter
        self.metrics = metrics
        self.domain = domain
        self.region = region
        self.max_object_size = max_object_size
        self.max_metadata_bytes = max_metadata_bytes
        self.is_draining = is_draining
        self.handlers: dict[str, Callable[[_Call], Any]] = {
            "ListBuckets": self.list_buckets, "CreateBucket": self.create_bucket, "HeadBucket": self.head_bucket,
            "DeleteBucket": self.delete_bucket, "GetBucketLocation": self.bucket_location,
            "GetBucketVersioning": self.bucket_versioning, "ListObjects": self.list_objects_v1,
            "ListObjectsV2": self.list_objects_v2, "ListMultipartUploads": self.list_uploads,
            "DeleteObjects": self.delete_objects, "PutObject": self.put_object, "CopyObject": self.copy_object,
            "GetObject": self.get_object, "HeadObject": self.head_object, "DeleteObject": self.delete_object,
            "CreateMultipartUpload": self.create_upload, "UploadPart": self.upload_part,
            "UploadPartCopy": self.upload_part_copy, "CompleteMultipartUpload": self.complete_upload,
            "AbortMultipartUpload": self.abort_upload, "ListParts": self.list_parts,
        }

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A blocking call on the gateway's thread pool."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args, **kwargs))

    # The request cycle ---------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        call: _Call | None = None
        try:
            call = _Call(request, self.domain)
            header_bytes = sum(len(name) + len(value) + 4 for name, value in call.header_list)
            if header_bytes > self.max_header_bytes:
                raise S3Error("RequestHeaderSectionTooLarge",
                              f"Your request's headers exceed the maximum of {self.max_header_bytes} bytes.")
            if self.is_draining():
                raise S3Error("ServiceUnavailable", "the gateway is shutting down", headers={"Retry-After": "5"})
            call.auth = await self.run(self.verifier.verify, call.method, call.raw_path, call.raw_query,
                                       call.header_list)
            self._rate_limit(call)
            if call.operation == "Unsupported":
                raise S3Error("NotImplemented", "dwray does not implement this S3 operation")
            response = await self.handlers[call.operation](call)
        except S3Error as error:
            response = self._error(call, error)
        except DwrayError as error:
            response = self._error(call, from_dwray_error(error, resource=call.resource if call else ""))
        except Exception:  # noqa: BLE001 - the client gets an opaque error; the log gets the trace
            log.exception("request %s failed", call.request_id if call else "?")
            response = self._error(call, S3Error("InternalError", "We encountered an internal error."))
        operation = call.operation if call else "unknown"
        response.headers["x-amz-request-id"] = call.request_id if call else secrets.token_hex(8).upper()
        if self.metrics is not None:
            # A streamed body is counted by its declared length when the response starts.
            sent = (int(response.headers.get("content-length", 0)) if isinstance(response, StreamingResponse)
                    else len(response.body or b""))
            self.metrics.observe(operation, response.status_code, time.perf_counter() - started,
                                 call.bytes_in if call else 0, sent)
        return response

    def _rate_limit(self, call: _Call) -> None:
        if self.limiter is None or call.auth is None:
            return
        identity = call.auth.identity
        wait = self.limiter.check(identity.tenant, identity.access_key_id)
        if wait is not None:
            if self.metrics is not None:
                self.metrics.rate_limited("tenant")
            raise S3Error("SlowDown", "Please reduce your request rate.",
                          headers={"Retry-After": str(max(1, int(wait + 0.999)))})

    def _error(self, call: _Call | None, error: S3Error) -> Response:
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

    @staticmethod
    def _xml(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return Response(body, status_code=status, media_type="application/xml", headers=dict(headers or {}))

    async def _xml_body(self, call: _Call) -> bytes:
        declared = call.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_XML_BODY:
            raise S3Error("MalformedXML", "the XML body is too large")
        body = bytearray()
        async for data in call.request.stream():
            body += data
            if len(body) > MAX_XML_BODY:
                raise S3Error("MalformedXML", "the XML body is too large")
        call.bytes_in = len(body)
        payload = bytes(body)
        if call.auth is not None and call.auth.content_sha256 in STREAMING_MODES:
            decoder = AwsChunkedDecoder(signer=call.auth.chunk_signer, trailer_names=self._trailer_names(call))
            payload = b"".join(bytes(piece) for piece in decoder.feed(payload))
            decoder.finish()
        verifier = BodyVerifier(call.headers, content_sha256=call.auth.content_sha256 if call.auth else None,
                                trailer_names=())
        verifier.update(payload)
        verifier.verify({})
        return payload

    # Buckets -------------------------------------------------------------------

    async def list_buckets(self, call: _Call) -> Response:
        buckets = await self.run(self.wh.list_buckets, tenant=call.tenant)
        return self._xml(s3xml.list_buckets_xml(buckets, owner_id=call.tenant, owner_name=call.tenant))

    async def create_bucket(self, call: _Call) -> Response:
        location = s3xml.parse_create_bucket(await self._xml_body(call))
        if location and location != self.region:
            raise S3Error("InvalidArgument", f"this gateway serves region {self.region!r}, not {location!r}")
        assert call.bucket is not None
        if call.bucket in RESERVED_BUCKETS:
            raise S3Error("InvalidBucketName", f"the bucket name {call.bucket!r} is reserved by the gateway "
                                               f"(its {call.bucket} endpoints)")
        await self.run(self.wh.create_bucket, call.bucket, tenant=call.tenant)
        return Response(status_code=200, headers={"location": f"/{call.bucket}"})

    async def head_bucket(self, call: _Call) -> Response:
        await self.run(self.wh.head_bucket, call.bucket, tenant=call.tenant)
        return Response(status_code=200, headers={"x-amz-bucket-region": self.region})

    async def delete_bucket(self, call: _Call) -> Response:
        await self.run(self.wh.delete_bucket, call.bucket, tenant=call.tenant)
        return Response(status_code=204)

    async def bucket_location(self, call: _Call) -> Response:
        await self.run(self.wh.head_bucket, call.bucket, tenant=call.tenant)
        return self._xml(s3xml.location_xml(self.region))

    async def bucket_versioning(self, call: _Call) -> Response:
        info = await self.run(self.wh.head_bucket, call.bucket, tenant=call.tenant)
        return self._xml(s3xml.versioning_xml(True if info.versioning else None))

    def _encoding(self, call: _Call) -> str | None:
        encoding = call.params.get("encoding-type")
        if encoding not in (None, "url"):
            raise S3Error("InvalidArgument", "encoding-type must be 'url'")
        return encoding

    async def list_objects_v2(self, call: _Call) -> Response:
        params = call.params
        encoding = self._encoding(call)
        max_keys = _int_param(params, "max-keys", 1000)
        token = params.get("continuation-token") or None
        page = await self.run(self.wh.list, call.bucket, prefix=params.get("prefix", ""),
                              delimiter=params.get("delimiter") or None, max_keys=max_keys,
                              continuation_token=token, start_after=params.get("start-after") or None,
                              tenant=call.tenant)
        return self._xml(s3xml.list_objects_v2_xml(
            call.bucket, page, prefix=params.get("prefix", ""), delimiter=params.get("delimiter") or None,
            max_keys=max_keys, start_after=params.get("start-after") or None, continuation_token=token,
            encoding_type=encoding, fetch_owner=params.get("fetch-owner") == "true", owner_id=call.tenant))

    async def list_objects_v1(self, call: _Call) -> Response:
        params = call.params
        encoding = self._encoding(call)
        max_keys = _int_param(params, "max-keys", 1000)
        marker = params.get("marker") or None
        delimiter = params.get("delimiter") or None
        start_after = marker
        if marker and delimiter and marker.endswith(delimiter):
            # A NextMarker that is a common prefix: skip every key under it (the
            # highest code point sorts after anything a key can continue with).
            start_after = marker + "\U0010ffff"
        page = await self.run(self.wh.list, call.bucket, prefix=params.get("prefix", ""),
                              delimiter=delimiter, max_keys=max_keys, start_after=start_after, tenant=call.tenant)
        return self._xml(s3xml.list_objects_v1_xml(
            call.bucket, page, prefix=params.get("prefix", ""), delimiter=params.get("delimiter") or None,
            marker=marker, max_keys=max_keys, encoding_type=encoding, owner_id=call.tenant))

    async def list_uploads(self, call: _Call) -> Response:
        params = call.params
        encoding = self._encoding(call)
        max_uploads = _int_param(params, "max-uploads", 1000, high=1000)
        page = await self.run(self.wh.list_multipart_uploads, call.bucket, prefix=params.get("prefix", ""),
                              delimiter=params.get("delimiter") or None, key_marker=params.get("key-marker") or None,
                              upload_id_marker=params.get("upload-id-marker") or None, max_uploads=max_uploads,
                              tenant=call.tenant)
        return self._xml(s3xml.list_uploads_xml(
            call.bucket, page, prefix=params.get("prefix", ""), delimiter=params.get("delimiter") or None,
            key_marker=params.get("key-marker") or None, upload_id_marker=params.get("upload-id-marker") or None,
            max_uploads=max_uploads, encoding_type=encoding))

    async def delete_objects(self, call: _Call) -> Response:
        if "content-md5" not in call.headers and not any(h.startswith("x-amz-checksum-") or h == "x-amz-sdk-checksum-algorithm"
                                                         for h in call.headers):
            raise S3Error("InvalidRequest", "DeleteObjects needs a Content-MD5 or x-amz-checksum header")
        quiet, targets = s3xml.parse_delete_objects(await self._xml_body(call), max_bytes=MAX_XML_BODY)
        deleted: list[tuple[str, str | None, bool, str | None]] = []
        errors: list[tuple[str, str, str]] = []
        for key, version_id in targets:
            try:
                result = await self.run(self.wh.delete, call.bucket, key, version_id=version_id, tenant=call.tenant)
            except DwrayError as error:
                s3error = from_dwray_error(error)
                if s3error.code == "NoSuchBucket":
                    raise s3error from None
                errors.append((key, s3error.code, s3error.message))
                continue
            marker_version = result.version_id if result.delete_marker else None
            deleted.append((key, version_id, result.delete_marker, marker_version))
        return self._xml(s3xml.delete_result_xml(deleted, errors, quiet))

    # Object writes ---------------------------------------------------------------

    def _trailer_names(self, call: _Call) -> list[str]:
        raw = call.headers.get("x-amz-trailer", "")
        return [name.strip().lower() for name in raw.split(",") if name.strip()]

    def _stored_headers(self, call: _Call) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name in STORED_REQUEST_HEADERS:
            value = call.headers.get(name)
            if value is None:
                continue
            if name == "content-encoding":
                # aws-chunked describes this request's framing, not the object (S3 drops it too).
                value = ",".join(part for part in (p.strip() for p in value.split(",")) if part and part != "aws-chunked")
                if not value:
                    continue
            headers[name] = value
        return headers

    def _declared_length(self, call: _Call) -> int | None:
        mode = call.auth.content_sha256 if call.auth else ""
        if mode in STREAMING_MODES:
            # The wire length counts chunk framing; only the decoded length is the object's.
            raw = call.headers.get("x-amz-decoded-content-length")
            if raw is None:
                return None
        else:
            raw = call.headers.get("content-length")
        if raw is None:
            if "chunked" in call.headers.get("transfer-encoding", "").lower():
                return None
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.")
        if not raw.strip().isdigit():
            raise S3Error("InvalidArgument", "Content-Length must be a non-negative integer")
        length = int(raw)
        if length > self.max_object_size:
            raise S3Error("EntityTooLarge", f"the object is over the maximum size of {self.max_object_size} bytes")
        return length

    async def _receive(self, call: _Call, write: Callable[[Any, Callable[[], dict[str, str]]], Any]
                       ) -> tuple[Any, dict[str, str]]:
        """Stream the body into ``write(data, checksums)`` on a worker thread; verify before it commits.

        ``checksums()`` gives the verified checksum headers once ``data`` is exhausted.

        Returns what ``write`` returned and the checksum headers to echo.
        """
        assert call.auth is not None
        declared = self._declared_length(call)
        mode = call.auth.content_sha256
        trailer_names = self._trailer_names(call)
        verifier = BodyVerifier(call.headers, content_sha256=mode, trailer_names=trailer_names)
        decoder = None
        if mode in STREAMING_MODES:
            decoder = AwsChunkedDecoder(signer=call.auth.chunk_signer if mode in SIGNED_CHUNKS else None,
                                        trailer_names=trailer_names, decoded_length=declared)
        loop = asyncio.get_running_loop()
        pipe = BodyPipe(loop)
        outcome: dict[str, Any] = {}

        def verified() -> Any:
            for piece in pipe.iterate(finish=lambda trailers: finish(trailers)):
                verifier.update(piece)
                yield piece

        def finish(trailers: Any) -> None:
            outcome["checksums"] = verifier.verify(trailers or {})

        def counting() -> Any:
            total = 0
            for piece in verified():
                total += len(piece)
                yield piece
            if declared is not None and total != declared:
                raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the "
                                                "Content-Length HTTP header.")

        work = loop.run_in_executor(self.body_executor, write, counting(),
                                    lambda: dict(outcome.get("checksums", {})))
        # A writer that fails before (or while) reading the body releases the pump.
        work.add_done_callback(lambda _: pipe.reader_gone())
        try:
            call.bytes_in = await pump_body(call.request.stream(), pipe,
                                            decode=decoder.feed if decoder is not None else None,
                                            finish=decoder.finish if decoder is not None else None,
                                            limit=self.max_object_size)
        except BaseException:
            try:
                await work
            except BaseException:  # noqa: BLE001 - the pump's error is the one to report
                pass
            raise
        result = await work
        return result, outcome.get("checksums", {})

    async def put_object(self, call: _Call) -> Response:
        refuse_conditional_write(call)
        metadata = s3http.user_metadata(call.header_list, self.max_metadata_bytes)
        headers = self._stored_headers(call)
        content_type = call.headers.get("content-type") or None

        def write(data: Any, checksums: Callable[[], dict[str, str]]) -> Any:
            # The checksums are known once the body has been read, before the commit.
            return self.wh.put(call.bucket, call.key, data, content_type=content_type, metadata=metadata,
                               headers=headers, tenant=call.tenant, finalize=checksums)

        info, echoed = await self._receive(call, write)
        return Response(status_code=200, headers={"etag": _etag(info.etag), **echoed})

    async def copy_object(self, call: _Call) -> Response:
        refuse_conditional_write(call)
        src_bucket, src_key, src_version = s3http.parse_copy_source(call.headers["x-amz-copy-source"])
        source = await self.run(self.wh.head, src_bucket, src_key, version_id=src_version, tenant=call.tenant)
        s3http.check_copy_source_conditions(call.headers, source.etag, source.last_modified)
        directive = call.headers.get("x-amz-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise S3Error("InvalidArgument", "x-amz-metadata-directive must be COPY or REPLACE")
        if directive == "COPY" and (src_bucket, src_key) == (call.bucket, call.key):
            raise S3Error("InvalidRequest", "This copy request is illegal because it is trying to copy an object "
                                            "to itself without changing the object's metadata.")
        kwargs: dict[str, Any] = {}
        if directive == "REPLACE":
            kwargs = {"content_type": call.headers.get("content-type") or "binary/octet-stream",
                      "metadata": s3http.user_metadata(call.header_list, self.max_metadata_bytes),
                      "headers": self._stored_headers(call)}
        info = await self.run(self.wh.copy, src_bucket, src_key, call.bucket, call.key, version_id=src_version,
                              tenant=call.tenant, **kwargs)
        return self._xml(s3xml.copy_object_xml(info.etag, info.last_modified),
                         headers={"x-amz-copy-source-version-id": source.version_id} if src_version else None)

    # Object reads ------------------------------------------------------------------

    def _object_headers(self, info: Any, call: _Call) -> dict[str, str]:
        headers = {
            "etag": _etag(info.etag),
            "last-modified": s3http.http_date(info.last_modified),
            "content-type": info.content_type,
            "accept-ranges": "bytes",
        }
        for name, value in info.headers.items():
            if name.startswith("x-amz-checksum-"):
                if call.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
                    headers[name] = value
                continue
            headers[name] = value
        for name, value in s3http.metadata_headers(info.metadata):
            headers[name.lower()] = value
        for name, value in s3http.response_overrides(call.params).items():
            headers[name.lower()] = value  # replaces the stored value: one header each
        return headers

    async def head_object(self, call: _Call) -> Response:
        version_id = call.params.get("versionId") or None
        info = await self.run(self.wh.head, call.bucket, call.key, version_id=version_id, tenant=call.tenant)
        headers = self._object_headers(info, call)
        status = s3http.check_conditions(call.headers, info.etag, info.last_modified, method="HEAD")
        if status == 304:
            return Response(status_code=304, headers={"etag": headers["etag"],
                                                      "last-modified": headers["last-modified"]})
        span = s3http.parse_range(call.headers.get("range"), info.size)
        if span is not None:
            first, last = span
            headers["content-range"] = f"bytes {first}-{last}/{info.size}"
            headers["content-length"] = str(last - first + 1)
            return Response(status_code=206, headers=headers)
        headers["content-length"] = str(info.size)
        return Response(status_code=200, headers=headers)

    async def get_object(self, call: _Call) -> Response:
        version_id = call.params.get("versionId") or None
        reader = await self.run(self.wh.open, call.bucket, call.key, version_id=version_id, tenant=call.tenant)
        try:
            info = reader.info
            status = s3http.check_conditions(call.headers, info.etag, info.last_modified)
            headers = self._object_headers(info, call)
            if status == 304:
                await self.run(reader.close)
                return Response(status_code=304, headers={"etag": headers["etag"],
                                                          "last-modified": headers["last-modified"]})
            span = s3http.parse_range(call.headers.get("range"), info.size)
            code = 200
            if span is not None:
                await self.run(reader.close)
                first, last = span
                reader = await self.run(self.wh.open, call.bucket, call.key, range=(first, last),
                                        version_id=info.version_id, tenant=call.tenant)
                headers["content-range"] = f"bytes {first}-{last}/{info.size}"
                headers["content-length"] = str(last - first + 1)
                for name in [h for h in headers if h.startswith("x-amz-checksum-")]:
                    del headers[name]
                code = 206
            else:
                headers["content-length"] = str(info.size)
        except BaseException:
            await self.run(reader.close)
            raise
        # The stored Content-Type goes out as it is (a media_type argument would get "; charset=" added).
        return StreamingResponse(stream_reader(reader, self.body_executor), status_code=code, headers=headers)

    async def delete_object(self, call: _Call) -> Response:
        result = await self.run(self.wh.delete, call.bucket, call.key,
                                version_id=call.params.get("versionId") or None, tenant=call.tenant)
        headers = {}
        if result.delete_marker:
            headers["x-amz-delete-marker"] = "true"
            if result.version_id:
                headers["x-amz-version-id"] = result.version_id
        return Response(status_code=204, headers=headers)

    # Multipart ---------------------------------------------------------------------

    def _upload_target(self, call: _Call) -> tuple[str, int]:
        upload_id = call.params.get("uploadId", "")
        if not upload_id:
            raise S3Error("InvalidArgument", "uploadId must not be empty")
        number = _int_param(call.params, "partNumber", 0, low=1, high=10_000)
        return upload_id, number

    async def create_upload(self, call: _Call) -> Response:
        metadata = s3http.user_metadata(call.header_list, self.max_metadata_bytes)
        upload = await self.run(self.wh.create_multipart_upload, call.bucket, call.key,
                                content_type=call.headers.get("content-type") or None, metadata=metadata,
                                headers=self._stored_headers(call), tenant=call.tenant)
        return self._xml(s3xml.initiate_multipart_xml(call.bucket, call.key, upload.upload_id))

    async def upload_part(self, call: _Call) -> Response:
        upload_id, number = self._upload_target(call)

        def write(data: Any, checksums: Callable[[], dict[str, str]]) -> Any:
            return self.wh.upload_part(call.bucket, call.key, upload_id, number, data, tenant=call.tenant)

        part, echoed = await self._receive(call, write)
        return Response(status_code=200, headers={"etag": _etag(part.etag), **echoed})

    async def upload_part_copy(self, call: _Call) -> Response:
        upload_id, number = self._upload_target(call)
        src_bucket, src_key, src_version = s3http.parse_copy_source(call.headers["x-amz-copy-source"])
        source = await self.run(self.wh.head, src_bucket, src_key, version_id=src_version, tenant=call.tenant)
        s3http.check_copy_source_conditions(call.headers, source.etag, source.last_modified)
        span = None
        if "x-amz-copy-source-range" in call.headers:
            span = s3http.parse_copy_range(call.headers["x-amz-copy-source-range"], source.size)
        part = await self.run(self.wh.upload_part_copy, call.bucket, call.key, upload_id, number, src_bucket, src_key,
                              src_version_id=source.version_id, range=span, tenant=call.tenant)
        return self._xml(s3xml.copy_part_xml(part.etag, part.last_modified))

    async def complete_upload(self, call: _Call) -> Response:
        refuse_conditional_write(call)
        upload_id = call.params.get("uploadId", "")
        parts = s3xml.parse_complete_multipart(await self._xml_body(call))
        info = await self.run(self.wh.complete_multipart_upload, call.bucket, call.key, upload_id, parts,
                              tenant=call.tenant)
        host = call.headers.get("host", "")
        location = f"http://{host}/{call.bucket}/{quote(call.key)}"
        return self._xml(s3xml.complete_multipart_xml(location, call.bucket, call.key, info.etag))

    async def abort_upload(self, call: _Call) -> Response:
        await self.run(self.wh.abort_multipart_upload, call.bucket, call.key, call.params.get("uploadId", ""),
                       tenant=call.tenant)
        return Response(status_code=204)

    async def list_parts(self, call: _Call) -> Response:
        upload_id = call.params.get("uploadId", "")
        max_parts = _int_param(call.params, "max-parts", 1000, high=1000)
        marker = _int_param(call.params, "part-number-marker", 0)
        page = await self.run(self.wh.list_parts, call.bucket, call.key, upload_id, max_parts=max_parts,
                              part_number_marker=marker, tenant=call.tenant)
        return self._xml(s3xml.list_parts_xml(call.bucket, call.key, upload_id, page, part_number_marker=marker,
                                              max_parts=max_parts, owner_id=call.tenant))


def query_params(raw_query: str) -> dict[str, str]:
    """Query parameters decoded as SigV4 signs them: ``+`` is a plus, not a space (unlike form decoding)."""
    params: dict[str, str] = {}
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        params[unquote(name)] = unquote(value)
    return params


def header_pairs(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Lowercased headers, repeated ones joined with commas."""
    merged: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        merged[name] = f"{merged[name]},{value}" if name in merged else value
    return merged
