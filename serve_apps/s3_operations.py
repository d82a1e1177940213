"""What every S3 operation handler shares: the warehouse, the thread pools, the limits, and request bodies.

:class:`S3Operations` is the base of the handler groups (buckets and listings,
objects, multipart uploads) that :class:`serve_apps.s3_api.S3Api` combines.
Object bodies stream through :meth:`S3Operations.receive_body`: the event loop
hands the received pieces, by reference, to the warehouse's ``put`` on a body
thread, and every check the request declares (SHA-256, Content-MD5, flexible
checksums, aws-chunked signatures, length) runs on the same pieces before the
warehouse may commit. Every blocking warehouse call runs on a thread pool,
never on the event loop.
"""
from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from starlette.responses import Response

from dwray.core.ratelimit import AuthFailureLimiter
from dwray.core.request_timing import phase
from dwray.s3.auth import SigV4Verifier
from dwray.s3.checksums import BodyVerifier
from dwray.s3.chunked import AwsChunkedDecoder
from dwray.s3.errors import S3Error
from dwray.s3.numbers import parse_decimal
from serve_apps.bodies import BodyPipe, pump_body
from serve_apps.s3_call import S3Call

__all__ = ["MAX_XML_BODY", "S3Operations"]

STREAMING_MODES = frozenset({
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER"})
SIGNED_CHUNKS = frozenset({"STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"})
STORED_REQUEST_HEADERS = ("content-encoding", "content-disposition", "content-language", "cache-control", "expires")
MAX_XML_BODY = 4 << 20

# A body writer: called on a body thread with the payload pieces and a function
# that gives the verified checksum headers once the pieces are exhausted.
BodyWriter = Callable[[Iterator[Any], Callable[[], dict[str, str]]], Any]


class S3Operations:
    """The state and helpers of one gateway replica's S3 handlers."""

    def __init__(self, warehouse: Any, verifier: SigV4Verifier, *, executor: ThreadPoolExecutor,
                 body_executor: ThreadPoolExecutor | None = None, max_header_bytes: int = 16 << 10,
                 limiter: Any = None, metrics: Any = None, domain: str | None = None, region: str = "us-east-1",
                 max_object_size: int, max_metadata_bytes: int, is_draining: Callable[[], bool] = lambda: False,
                 auth_failures: AuthFailureLimiter | None = None, forwarded_client: bool = False,
                 server_timing: bool = False, memory: Any = None) -> None:
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
        # Unauthenticated and failing requests, per source address (see dwray.core.ratelimit).
        self.auth_failures = auth_failures
        self.forwarded_client = forwarded_client
        # Answer each S3 request with a Server-Timing header (dwray.core.request_timing).
        self.server_timing = server_timing
        # The process's memory monitor (dwray.core.memory_pressure): at critical, writes are refused unread.
        self.memory = memory

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A blocking call on the gateway's thread pool, in the request's context (its timer)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(context.run, fn, *args,
                                                                                      **kwargs))

    @staticmethod
    def _xml(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
        return Response(body, status_code=status, media_type="application/xml", headers=dict(headers or {}))

    async def _xml_body(self, call: S3Call) -> bytes:
        """A small request body (an XML document), whole and verified."""
        declared = call.headers.get("content-length")
        if declared is not None and parse_decimal(declared, "Content-Length") > MAX_XML_BODY:
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
            payload = b"".join(decoder.feed(payload))
            decoder.finish()
        verifier = BodyVerifier(call.headers, content_sha256=call.auth.content_sha256 if call.auth else None,
                                trailer_names=())
        verifier.update(payload)
        verifier.verify({})
        return payload

    @staticmethod
    def _trailer_names(call: S3Call) -> list[str]:
        raw = call.headers.get("x-amz-trailer", "")
        return [name.strip().lower() for name in raw.split(",") if name.strip()]

    @staticmethod
    def _stored_headers(call: S3Call) -> dict[str, str]:
        """The request headers S3 stores with an object and returns on reads."""
        headers: dict[str, str] = {}
        for name in STORED_REQUEST_HEADERS:
            value = call.headers.get(name)
            if value is None:
                continue
            if name == "content-encoding":
                value = _without_aws_chunked(value)
                if not value:
                    continue
            headers[name] = value
        return headers

    def _declared_length(self, call: S3Call) -> int | None:
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
        length = parse_decimal(raw, "x-amz-decoded-content-length" if mode in STREAMING_MODES else "Content-Length")
        if length > self.max_object_size:
            raise S3Error("EntityTooLarge", f"the object is over the maximum size of {self.max_object_size} bytes")
        return length

    async def receive_body(self, call: S3Call, write: BodyWriter) -> tuple[Any, dict[str, str]]:
        """Stream the body into ``write(pieces, checksums)`` on a body thread; verify it before ``write`` commits.

        ``pieces`` are the payload as received (aws-chunked framing removed),
        uncopied; the writer's frame cutter copies each byte once.
        ``checksums()`` gives the verified checksum headers once ``pieces`` is
        exhausted. Returns what ``write`` returned and the checksum headers to echo.
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

        def finish(trailers: Any) -> None:
            outcome["checksums"] = verifier.verify(trailers or {})

        def pieces() -> Iterator[Any]:
            # A failed check raises here, inside the writer's read of the body: it aborts, never commits.
            total = 0
            for piece in pipe.iterate(finish=finish):
                verifier.update(piece)
                total += len(piece)
                yield piece
            if declared is not None and total != declared:
                raise S3Error("IncompleteBody", "You did not provide the number of bytes specified by the "
                                                "Content-Length HTTP header.")

        work = loop.run_in_executor(self.body_executor, contextvars.copy_context().run, write, pieces(),
                                    lambda: dict(outcome.get("checksums", {})))
        # A writer that fails before (or while) reading the body releases the pump.
        work.add_done_callback(lambda _: pipe.reader_gone())
        try:
            with phase("body"):
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


def _without_aws_chunked(value: str) -> str:
    """A Content-Encoding without the ``aws-chunked`` coding, otherwise as sent (spaces kept).

    aws-chunked describes this request's framing, not the object, so S3 drops
    it; every other coding is the client's to name and S3 returns it verbatim.
    """
    codings = value.split(",")
    kept = [coding for coding in codings if coding.strip().lower() != "aws-chunked"]
    if len(kept) == len(codings):
        return value
    return ",".join(kept).strip(" \t")
