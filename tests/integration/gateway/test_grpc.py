"""dwray's gRPC service through Ray Serve's gRPC ingress (HAProxy mode), with a standard grpcio client.

Assumes the session gateway runs with ``[gateway] grpc_port`` set
(``tests/integration/gateway/conftest.py``'s ``gateway_config``) and the
generated modules (``dwray/proto/build.py``, run by ``pip install``).
Every call is signed as ``dwray/proto/dwray.proto`` says, by
:func:`dwray.proto.signing.signed_metadata`.
"""
from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from dwray.proto import dwray_pb2 as pb
from dwray.proto import dwray_pb2_grpc
from dwray.proto.signing import UNSIGNED_PAYLOAD, signed_metadata
from serve_apps.launch import GRPC_MAX_MESSAGE_BYTES
from tests.integration.gateway.peak_rss import PeakRss

SERVICE = "/dwray.v1.Warehouse"
END = pb.PutRequest(end=pb.PutEnd())
READY_TIMEOUT = 60.0
CALL_TIMEOUT = 60.0
MiB = 1 << 20
BIG_PUT = 512 * MiB
# As the HTTP streaming test's bound (test_streaming.py): no process grows by half the object. Measured here
# on a 512 MiB Put: the replica grew by 116 MiB with the stream bounded, 225 MiB without; the bound itself
# is proven on Serve's own class in tests/unit/test_serve_patch_grpc.py.
BIG_PUT_LIMIT = 256 * MiB


class Client:
    """A grpcio stub on the gateway, signing every call with one access key."""

    def __init__(self, channel: grpc.Channel, access_key_id: str, secret: str) -> None:
        self.stub = dwray_pb2_grpc.WarehouseStub(channel)
        self.access_key_id = access_key_id
        self.secret = secret

    def meta(self, method: str, message: Any, **kwargs: Any) -> list[tuple[str, str]]:
        return signed_metadata(f"{SERVICE}/{method}", message, self.access_key_id, self.secret, **kwargs)

    def put(self, bucket: str, key: str, data: bytes, *, chunk: int = 256 << 10, sign_hash: bool = True,
            timeout: float = CALL_TIMEOUT, **header: Any) -> tuple[Any, Any]:
        """Put ``data`` in chunks; the reply and the call (its trailing metadata)."""
        head = pb.PutHeader(bucket=bucket, key=key, **header)
        digest = hashlib.sha256(data).hexdigest() if sign_hash else UNSIGNED_PAYLOAD
        messages = [pb.PutRequest(header=head)] + [pb.PutRequest(chunk=data[i:i + chunk])
                                                     for i in range(0, len(data), chunk)] + [END]
        return self.stub.Put.with_call(iter(messages), metadata=self.meta("Put", head, content_sha256=digest),
                                       timeout=timeout)

    def get(self, bucket: str, key: str, **fields: Any) -> tuple[Any, list[bytes]]:
        """The first GetResponse and the chunks after it."""
        request = pb.GetRequest(bucket=bucket, key=key, **fields)
        replies = list(self.stub.Get(request, metadata=self.meta("Get", request), timeout=CALL_TIMEOUT))
        return replies[0], [reply.chunk for reply in replies[1:]]

    def unary(self, method: str, request: Any) -> Any:
        return getattr(self.stub, method)(request, metadata=self.meta(method, request), timeout=CALL_TIMEOUT)


@pytest.fixture(scope="module")
def channel(gateway: Any) -> Iterator[grpc.Channel]:
    port = gateway.config.gateway.grpc_port
    assert port is not None, "the session gateway must run with [gateway] grpc_port (see the module docstring)"
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield opened


@pytest.fixture(scope="module")
def client(gateway: Any, channel: grpc.Channel) -> Client:
    """A client once the gRPC path answers (HAProxy checks the replicas' gRPC servers on its own)."""
    made = Client(channel, gateway.access_key_id, gateway.secret_access_key)
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            made.unary("Head", pb.HeadRequest(bucket="no-such-bucket-here", key="k"))
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                assert error.code() == grpc.StatusCode.NOT_FOUND, (error.code(), error.details())
                return made
        time.sleep(0.3)


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value.code(), raised.value.details() or ""


def test_objects_round_trip_small_and_in_many_chunks(client: Client, s3: Any, bucket: str) -> None:
    reply, call = client.put(bucket, "small.txt", b"hello grpc", content_type="text/plain",
                             metadata={"colour": "blue"})
    assert reply.info.size == 10 and reply.info.etag == hashlib.md5(b"hello grpc").hexdigest()
    assert dict(call.trailing_metadata())["x-dwray-request-id"]
    first, chunks = client.get(bucket, "small.txt")
    assert b"".join(chunks) == b"hello grpc"
    assert (first.info.content_type, dict(first.info.metadata)) == ("text/plain", {"colour": "blue"})

    large = os.urandom(5 * (1 << 20) + 123)  # 21 chunks in, 6 out (1 MiB each at most)
    reply, _ = client.put(bucket, "large.bin", large, sign_hash=False, content_length=len(large))
    assert reply.info.size == len(large)
    first, chunks = client.get(bucket, "large.bin")
    assert len(chunks) >= 6 and max(map(len, chunks)) <= 1 << 20
    assert (first.first, first.last) == (0, len(large) - 1) and b"".join(chunks) == large
    # The same object over S3: one warehouse behind both protocols.
    assert s3.get_object(Bucket=bucket, Key="large.bin")["Body"].read() == large


def test_get_serves_byte_ranges(client: Client, bucket: str) -> None:
    data = bytes(range(256)) * 40
    client.put(bucket, "ranged.bin", data)
    first, chunks = client.get(bucket, "ranged.bin", range_first=10, range_last=19)
    assert (first.first, first.last, b"".join(chunks)) == (10, 19, data[10:20])
    first, chunks = client.get(bucket, "ranged.bin", range_first=len(data) - 5)
    assert (first.last, b"".join(chunks)) == (len(data) - 1, data[-5:])
    first, chunks = client.get(bucket, "ranged.bin", range_first=0, range_last=10 ** 9)  # clipped
    assert b"".join(chunks) == data
    code, details = _code(lambda: client.get(bucket, "ranged.bin", range_first=len(data)))
    assert code == grpc.StatusCode.OUT_OF_RANGE and "InvalidRange" in details


def test_head_list_and_delete(client: Client, bucket: str) -> None:
    for key in ("logs/a.txt", "logs/b.txt", "logs/deep/c.txt", "top.txt"):
        client.put(bucket, key, key.encode())
    head = client.unary("Head", pb.HeadRequest(bucket=bucket, key="logs/a.txt"))
    assert (head.info.key, head.info.size) == ("logs/a.txt", len(b"logs/a.txt"))
    page = client.unary("List", pb.ListRequest(bucket=bucket, prefix="logs/", delimiter="/"))
    assert [info.key for info in page.objects] == ["logs/a.txt", "logs/b.txt"]
    assert list(page.common_prefixes) == ["logs/deep/"] and not page.is_truncated
    page = client.unary("List", pb.ListRequest(bucket=bucket, max_keys=2))
    assert len(page.objects) == 2 and page.is_truncated and page.next_continuation_token
    rest = client.unary("List", pb.ListRequest(bucket=bucket, continuation_token=page.next_continuation_token))
    assert [info.key for info in rest.objects] == ["logs/deep/c.txt", "top.txt"]
    client.unary("Delete", pb.DeleteRequest(bucket=bucket, key="top.txt"))
    code, details = _code(lambda: client.unary("Head", pb.HeadRequest(bucket=bucket, key="top.txt")))
    assert code == grpc.StatusCode.NOT_FOUND


def test_missing_key_and_bucket_are_not_found(client: Client, bucket: str) -> None:
    code, details = _code(lambda: client.get(bucket, "nothing-here"))
    assert code == grpc.StatusCode.NOT_FOUND and "nothing-here" in details
    code, _ = _code(lambda: client.unary("List", pb.ListRequest(bucket=f"none-{uuid.uuid4().hex[:8]}")))
    assert code == grpc.StatusCode.NOT_FOUND


def test_bad_signatures_replays_and_skew_are_unauthenticated(gateway: Any, client: Client, channel: grpc.Channel,
                                                              bucket: str) -> None:
    client.put(bucket, "secret.txt", b"x")
    forged = Client(channel, gateway.access_key_id, "not-the-secret")
    code, details = _code(lambda: forged.get(bucket, "secret.txt"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "signature does not match" in details
    assert gateway.secret_access_key not in details
    code, details = _code(lambda: Client(channel, "AKIDNOSUCHKEY0000000", "x").get(bucket, "secret.txt"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "does not exist" in details

    request = pb.HeadRequest(bucket=bucket, key="secret.txt")
    metadata = client.meta("Head", request)
    client.stub.Head(request, metadata=metadata, timeout=CALL_TIMEOUT)
    code, details = _code(lambda: client.stub.Head(request, metadata=metadata, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "replayed" in details
    # The signature covers the request: the same metadata on another key does not pass.
    other = pb.HeadRequest(bucket=bucket, key="other.txt")
    code, _ = _code(lambda: client.stub.Head(other, metadata=client.meta("Head", request), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    stale = client.meta("Head", request, now=time.time() - 3600)
    code, details = _code(lambda: client.stub.Head(request, metadata=stale, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "from the gateway's clock" in details
    code, details = _code(lambda: client.stub.Head(request, timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "x-dwray-signature" in details


def test_a_put_that_is_incomplete_or_does_not_match_stores_nothing(client: Client, bucket: str) -> None:
    head = pb.PutHeader(bucket=bucket, key="lying.bin", content_length=10)
    code, details = _code(lambda: client.stub.Put(
        iter([pb.PutRequest(header=head), pb.PutRequest(chunk=b"12345"), END]),
        metadata=client.meta("Put", head), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "content_length" in details
    head = pb.PutHeader(bucket=bucket, key="lying.bin")
    code, details = _code(lambda: client.stub.Put(
        iter([pb.PutRequest(header=head), pb.PutRequest(chunk=b"tampered"), END]),
        metadata=client.meta("Put", head, content_sha256=hashlib.sha256(b"original").hexdigest()),
        timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "SHA-256" in details
    # A stream that just stops (as a cancelled one may look to the replica) is not complete.
    code, details = _code(lambda: client.stub.Put(
        iter([pb.PutRequest(header=head), pb.PutRequest(chunk=b"partial")]),
        metadata=client.meta("Put", head), timeout=CALL_TIMEOUT))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "PutEnd" in details
    code, _ = _code(lambda: client.unary("Head", pb.HeadRequest(bucket=bucket, key="lying.bin")))
    assert code == grpc.StatusCode.NOT_FOUND


def test_deadlines_are_honoured_and_a_late_put_stores_nothing(client: Client, bucket: str) -> None:
    head = pb.PutHeader(bucket=bucket, key="late.bin")

    def slow() -> Iterator[Any]:
        yield pb.PutRequest(header=head)
        for _ in range(20):  # 4 s of chunks: far past the 1 s deadline
            yield pb.PutRequest(chunk=b"x" * 1024)
            time.sleep(0.2)
        yield END

    code, _ = _code(lambda: client.stub.Put(slow(), metadata=client.meta("Put", head), timeout=1.0))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1.0)  # the replica's side of the cancelled stream has ended by now
    code, _ = _code(lambda: client.unary("Head", pb.HeadRequest(bucket=bucket, key="late.bin")))
    assert code == grpc.StatusCode.NOT_FOUND
    # A stream read more slowly than its deadline allows is cut off at the deadline (16 MiB: more
    # than the HTTP/2 windows of the client and HAProxy hold, so the reply cannot finish early).
    client.put(bucket, "sixteen-chunks.bin", os.urandom(16 << 20), sign_hash=False)
    request = pb.GetRequest(bucket=bucket, key="sixteen-chunks.bin")

    def read_slowly() -> None:
        for _ in client.stub.Get(request, metadata=client.meta("Get", request), timeout=1.0):
            time.sleep(0.4)

    code, _ = _code(read_slowly)
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_large_put_is_held_back_not_piled_up_in_the_replica(client: Client, bucket: str) -> None:
    """A client that sends faster than storage writes is held back by the replica (at most
    GRPC_STREAM_MESSAGES chunks queued per call), so no process on the data path grows by the object."""
    block = os.urandom(MiB)  # incompressible: every byte goes through zstd and AES
    head = pb.PutHeader(bucket=bucket, key="big.bin", content_length=BIG_PUT)
    expected = hashlib.md5()

    def chunks() -> Iterator[Any]:
        yield pb.PutRequest(header=head)
        for index in range(BIG_PUT // MiB):
            chunk = block[index % 7:] + block[:index % 7]
            expected.update(chunk)
            yield pb.PutRequest(chunk=chunk)
        yield END

    with PeakRss() as memory:
        reply = client.stub.Put(chunks(), metadata=client.meta("Put", head, content_sha256=UNSIGNED_PAYLOAD),
                                timeout=300)
    assert reply.info.size == BIG_PUT and reply.info.etag == expected.hexdigest()
    growth = memory.growth()
    assert any("ServeReplica" in name for name in growth), growth  # the replica was measured
    worst = max(growth.items(), key=lambda item: item[1])
    print(f"gRPC Put of {BIG_PUT >> 20} MiB: largest RSS growth {worst[1] >> 20} MiB in {worst[0]}")
    assert worst[1] < BIG_PUT_LIMIT, f"{worst[0]} grew by {worst[1] >> 20} MiB; all: {growth}"
    client.unary("Delete", pb.DeleteRequest(bucket=bucket, key="big.bin"))


def test_a_message_over_the_size_limit_is_refused(client: Client, bucket: str) -> None:
    """Serve's limit is lowered from 2 GiB to GRPC_MAX_MESSAGE_BYTES: one huge message cannot fill a replica."""
    too_big = os.urandom(GRPC_MAX_MESSAGE_BYTES + 1)
    code, _ = _code(lambda: client.put(bucket, "too-big.bin", too_big, chunk=len(too_big), sign_hash=False))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    code, _ = _code(lambda: client.unary("Head", pb.HeadRequest(bucket=bucket, key="too-big.bin")))
    assert code == grpc.StatusCode.NOT_FOUND
    reply, _ = client.put(bucket, "under-the-limit.bin", too_big[:2 * MiB], chunk=2 * MiB)  # stored
    assert reply.info.size == 2 * MiB


def test_calls_and_refusals_are_audited(gateway: Any, client: Client, channel: grpc.Channel, bucket: str) -> None:
    _, call = client.put(bucket, "audited.bin", b"data")
    request_id = dict(call.trailing_metadata())["x-dwray-request-id"]
    record = gateway.audit_record(lambda r: r.get("request_id") == request_id and r["action"] == "s3:PutObject")
    assert record["outcome"] == "allowed" and record["resource"] == f"{bucket}/audited.bin"
    assert record["access_key_id"] == gateway.access_key_id and record["source_address"] == "127.0.0.1"

    # A caller's W3C traceparent: the call's trace (and request id, and audit record) is the caller's.
    trace_id = uuid.uuid4().hex
    request = pb.HeadRequest(bucket=bucket, key="audited.bin")
    _, call = client.stub.Head.with_call(request, timeout=CALL_TIMEOUT, metadata=[
        *client.meta("Head", request), ("traceparent", f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")])
    assert dict(call.trailing_metadata())["x-dwray-request-id"] == trace_id
    record = gateway.audit_record(lambda r: r.get("request_id") == trace_id)
    assert record["action"] == "s3:GetObject" and record["resource"] == f"{bucket}/audited.bin"

    forged = Client(channel, gateway.access_key_id, "wrong")
    code, _ = _code(lambda: forged.unary("Delete", pb.DeleteRequest(bucket=bucket, key="audited.bin")))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    refused = gateway.audit_record(lambda r: r["action"] == "grpc:Delete" and r["resource"] == f"{bucket}/audited.bin")
    assert refused["outcome"] == "denied" and refused["error"] == "UNAUTHENTICATED"
    assert refused["access_key_id"] == gateway.access_key_id
