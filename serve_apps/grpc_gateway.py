"""dwray's gRPC service (``dwray.v1.Warehouse``, ``dwray/proto/dwray.proto``) on the gateway's replicas.

Ray Serve's gRPC ingress calls an ingress deployment's method named after the
RPC (``Put``, ``Get``, ...), with the request (or a ``gRPCInputStream`` of
them for a client-streaming RPC) and, as ``grpc_context``, a
``RayServegRPCContext`` carrying the call's metadata. :class:`GrpcWarehouse`
holds those five methods and is mixed into the gateway's deployment
(``serve_apps.gateway.Gateway``), so gRPC and S3 share each replica's
context: the access-key cache, rate limits, failed-authentication limits per
address, the in-flight count the drain waits on, metrics and the warehouse.
:func:`grpc_options` is what ``serve.start`` takes to open the port.

In HAProxy mode (``dw up``), HAProxy's gRPC frontend (``[gateway] host``,
``grpc_port``) forwards HTTP/2 to each replica's own gRPC server, and Serve
runs client-streaming, server-streaming and unary methods alike there.

Each call goes through :class:`serve_apps.grpc_call.GrpcCall`: refused while
its address's failed authentications are used up, authenticated
(:mod:`serve_apps.grpc_auth`), rate-limited as the key's S3 requests, then run
on the warehouse as the key's tenant and policy, with the call's trace id as
request id. One span per call, ``grpc.<Method>`` (a child of the caller's
``traceparent`` when sent), ends with the last byte of a stream. The warehouse
audits the operations it runs (the same records as for S3, e.g.
``s3:GetObject``, with the call's request id); a call refused before it is
audited as ``grpc:<Method>``, outcome ``denied``. dwray errors become gRPC
status codes with the error's own message; anything else is INTERNAL with an
opaque message, and the log has the rest.
"""
from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from dwray import errors as dw
from dwray.config import DwrayConfig
from dwray.core.models import ObjectInfo
from dwray.proto import signing
from serve_apps.bodies import BodyPipe, pump_body, stream_reader
from serve_apps.grpc_auth import GrpcRefusal
from serve_apps.grpc_call import GrpcCall

__all__ = ["CHUNK_SIZE", "GRPC_OPERATIONS", "SERVICER_FUNCTION", "GrpcWarehouse", "grpc_options"]

SERVICER_FUNCTION = "dwray.proto.dwray_pb2_grpc.add_WarehouseServicer_to_server"
CHUNK_SIZE = 1 << 20  # bytes per GetResponse at most
#: the metrics' operation names of the gRPC methods (serve_apps.metrics counts them)
GRPC_OPERATIONS = frozenset({"grpc.Put", "grpc.Get", "grpc.Head", "grpc.List", "grpc.Delete"})


def grpc_options(config: DwrayConfig) -> dict[str, Any] | None:
    """``serve.start``'s ``grpc_options`` for ``config``: the port ``[gateway] grpc_port``; ``None``: no gRPC.

    Serve binds the gRPC listener (HAProxy's frontend) on the HTTP host, ``[gateway] host``.
    """
    port = config.gateway.grpc_port
    if port is None:
        return None
    return {"port": port, "grpc_servicer_functions": [SERVICER_FUNCTION]}


def _pb() -> Any:
    from dwray.proto import dwray_pb2  # generated at build time (dwray/proto/build.py)

    return dwray_pb2


def _info(info: ObjectInfo) -> Any:
    return _pb().ObjectInfo(bucket=info.bucket, key=info.key, version_id=info.version_id, size=info.size,
                            etag=info.etag, last_modified=info.last_modified, content_type=info.content_type,
                            metadata=dict(info.metadata), parts_count=info.parts_count)


class GrpcWarehouse:
    """The ``dwray.v1.Warehouse`` methods of a gateway replica (Serve calls them by the RPC's name)."""

    async def Put(self, request_stream: AsyncIterator[Any], grpc_context: Any) -> Any:  # noqa: N802 - the RPC's name
        pb = _pb()
        async with GrpcCall("Put", grpc_context) as call:
            return await _put(call, request_stream)
        return pb.PutResponse()

    async def Get(self, request: Any, grpc_context: Any) -> AsyncIterator[Any]:  # noqa: N802
        async with GrpcCall("Get", grpc_context) as call:
            async for message in _get(call, request):
                yield message

    async def Head(self, request: Any, grpc_context: Any) -> Any:  # noqa: N802
        async def answer(call: GrpcCall) -> Any:
            info = await call.run(call.ctx.warehouse.head, request.bucket, request.key,
                                  version_id=request.version_id or None, tenant=call.tenant)
            return _pb().HeadResponse(info=_info(info))

        return await _unary("Head", request, grpc_context, answer, _pb().HeadResponse)

    async def List(self, request: Any, grpc_context: Any) -> Any:  # noqa: N802
        async def answer(call: GrpcCall) -> Any:
            page = await call.run(call.ctx.warehouse.list, request.bucket, prefix=request.prefix,
                                  delimiter=request.delimiter or None, max_keys=request.max_keys or 1000,
                                  continuation_token=request.continuation_token or None,
                                  start_after=request.start_after or None, tenant=call.tenant)
            return _pb().ListResponse(objects=[_info(info) for info in page.objects],
                                      common_prefixes=page.common_prefixes, is_truncated=page.is_truncated,
                                      next_continuation_token=page.next_continuation_token or "")

        return await _unary("List", request, grpc_context, answer, _pb().ListResponse)

    async def Delete(self, request: Any, grpc_context: Any) -> Any:  # noqa: N802
        async def answer(call: GrpcCall) -> Any:
            result = await call.run(call.ctx.warehouse.delete, request.bucket, request.key,
                                    version_id=request.version_id or None, tenant=call.tenant)
            return _pb().DeleteResponse(version_id=result.version_id or "", delete_marker=result.delete_marker)

        return await _unary("Delete", request, grpc_context, answer, _pb().DeleteResponse)


async def _unary(method: str, request: Any, grpc_context: Any, answer: Callable[[GrpcCall], Awaitable[Any]],
                 empty: Callable[[], Any]) -> Any:
    """One unary call: admitted (signature, limits), then ``answer``; a refusal or a dwray error is
    the call's status (``GrpcCall`` sets it on leaving), with ``empty()`` as the message."""
    async with GrpcCall(method, grpc_context) as call:
        await call.admit(request)
        call.reached = True
        return await answer(call)
    return empty()


async def _get(call: GrpcCall, request: Any) -> AsyncIterator[Any]:
    """The object's info and span, then its bytes in chunks of at most ``CHUNK_SIZE``."""
    pb = _pb()
    await call.admit(request)
    ranged = request.HasField("range_first")
    if request.HasField("range_last") and not ranged:
        raise GrpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "range_last needs range_first")
    span = (request.range_first, request.range_last if request.HasField("range_last") else None) if ranged else None
    call.reached = True
    warehouse = call.ctx.warehouse
    reader = await call.run(warehouse.open, request.bucket, request.key, range=span,
                            version_id=request.version_id or None, tenant=call.tenant)
    try:
        info = reader.info
        first = span[0] if span else 0
        last = min(span[1] if span and span[1] is not None else info.size - 1, info.size - 1)
        yield pb.GetResponse(info=_info(info), first=first if info.size else 0, last=max(last, 0))
    except BaseException:
        await call.run(reader.close)
        raise
    async for data in stream_reader(reader, call.ctx.body_executor):  # closes the reader however it ends
        view = memoryview(data)
        for start in range(0, len(view), CHUNK_SIZE):
            piece = bytes(view[start:start + CHUNK_SIZE])
            call.bytes_out += len(piece)
            yield pb.GetResponse(chunk=piece)


async def _put(call: GrpcCall, request_stream: Any) -> Any:
    """A PutHeader, the chunks streamed into the warehouse's ``put``, PutEnd; committed only if all is well."""
    pb = _pb()
    ctx = call.ctx
    try:
        first = await request_stream.__anext__()
    except StopAsyncIteration:
        raise GrpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "a Put stream must start with a PutHeader") from None
    if first.WhichOneof("part") != "header":
        raise GrpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "the first PutRequest must carry the header")
    header = first.header
    declared_hash = await call.admit(header, allow_payload_hash=True)
    limit = ctx.config.limits.max_object_size
    length = header.content_length if header.HasField("content_length") else None
    if length is not None and length > limit:
        raise GrpcRefusal(grpc.StatusCode.RESOURCE_EXHAUSTED, f"content_length {length} is over the maximum "
                          f"object size of {limit} bytes")
    if ctx.memory is not None:
        ctx.memory.refuse_if_critical("a new write (gRPC Put)")

    async def chunks() -> AsyncIterator[bytes]:
        async for message in request_stream:
            part = message.WhichOneof("part")
            if part == "end":
                return
            if part != "chunk":
                raise GrpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "only the first PutRequest carries a header")
            yield message.chunk
        # Serve may end a cancelled stream (the client gone, its deadline passed) quietly, as if complete.
        raise GrpcRefusal(grpc.StatusCode.INVALID_ARGUMENT, "the Put stream ended without its PutEnd message "
                          "(cancelled or incomplete): nothing was stored")

    loop = asyncio.get_running_loop()
    pipe = BodyPipe(loop)

    def pieces() -> Any:
        # A failed check raises here, inside the warehouse's read of the body: it aborts, never commits.
        digest = hashlib.sha256() if declared_hash != signing.UNSIGNED_PAYLOAD else None
        total = 0
        for piece in pipe.iterate():
            total += len(piece)
            if digest is not None:
                digest.update(piece)
            yield piece
        if length is not None and total != length:
            raise dw.InvalidArgument(f"the chunks hold {total} bytes, not the content_length of {length}")
        if digest is not None and digest.hexdigest() != declared_hash:
            raise dw.InvalidArgument(f"the object's SHA-256 is not the {signing.CONTENT_SHA256} the call signed")

    call.reached = True
    write = call.bind(ctx.warehouse.put, header.bucket, header.key, pieces(), content_type=header.content_type or None,
                      metadata=dict(header.metadata), tenant=call.tenant)
    work = loop.run_in_executor(ctx.body_executor, write)
    work.add_done_callback(lambda _: pipe.reader_gone())  # a writer that fails early releases the pump
    try:
        call.bytes_in = await pump_body(chunks(), pipe, limit=limit)
    except BaseException:
        try:
            await work
        except BaseException:  # noqa: BLE001 - the stream's error is the one to report
            pass
        raise
    return pb.PutResponse(info=_info(await work))
