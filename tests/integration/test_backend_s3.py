"""S3Backend against real S3 servers on loopback: SeaweedFS and moto's server.

The conformance suite runs unchanged on both (a fresh key prefix per test).
The rest covers what is S3's own: conditional writes (what each server
honours, and the refusal to write to one that ignores them), multipart uploads
(streamed, aborted on failure), errors that never show the secret key, the
addressing style, and a SeaweedFS that dies under a writer and comes back.
"""
from __future__ import annotations

import hashlib
import http.client
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from dwray.backends import create_backend
from dwray.backends import s3 as s3_module
from dwray.backends.s3 import S3Backend
from dwray.core.ports import free_port
from dwray.errors import BlobExists, BlobNotFound, InvalidArgument, InvalidBlobId, InvalidBucketName, StorageError
from dwray.testing.backend_conformance import BackendConformance
from tests.servers import SeaweedServer, ServerProcess, start_seaweedfs

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part: the tests' threshold and part size, so multipart runs on small blobs


@dataclass
class S3Target:
    """A bucket on a running S3 server, and the credentials it accepts."""

    name: str
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str = field(repr=False)

    def backend(self, **options: Any) -> S3Backend:
        settings: dict[str, Any] = {"endpoint": self.endpoint, "access_key": self.access_key,
                                    "secret_key": self.secret_key, "prefix": f"t-{uuid.uuid4().hex[:12]}/",
                                    "multipart_threshold": PART, "multipart_chunk": PART, "region": "us-east-1"}
        return S3Backend(options.pop("bucket", self.bucket), **{**settings, **options})

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(s3={"addressing_style": "path"}, max_pool_connections=16))

    def uploads(self, prefix: str) -> list[dict[str, Any]]:
        return self.client().list_multipart_uploads(Bucket=self.bucket, Prefix=prefix).get("Uploads", [])

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, the data of large blobs included."""
        return [item["Key"] for item in self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
                .get("Contents", [])]


@pytest.fixture(scope="module")
def seaweed_target(seaweedfs: SeaweedServer) -> S3Target:
    bucket = f"dwray-s3-{uuid.uuid4().hex[:10]}"
    seaweedfs.create_bucket(bucket)
    return S3Target("seaweedfs", seaweedfs.endpoint, bucket, seaweedfs.access_key, seaweedfs.secret_key)


@pytest.fixture(scope="module")
def moto_target(moto_aws: ServerProcess) -> S3Target:
    target = S3Target("moto", moto_aws.address, f"dwray-s3-{uuid.uuid4().hex[:10]}", "moto-key", "moto-secret")
    target.client().create_bucket(Bucket=target.bucket)
    return target


@pytest.fixture(params=["seaweed", "moto"])
def target(request: pytest.FixtureRequest) -> S3Target:
    return request.getfixturevalue(f"{request.param}_target")


class TestSeaweedConformance(BackendConformance):
    large_blob_size = 24 * MiB  # above the 5 MiB threshold: five parts and a bit

    @pytest.fixture
    def backend(self, seaweed_target: S3Target) -> Iterator[S3Backend]:
        backend = seaweed_target.backend()
        yield backend
        backend.close()


class TestMotoConformance(BackendConformance):
    large_blob_size = 24 * MiB

    @pytest.fixture
    def backend(self, moto_target: S3Target) -> Iterator[S3Backend]:
        backend = moto_target.backend()
        yield backend
        backend.close()


# Conditional writes ------------------------------------------------------------


def test_server_honours_if_none_match_on_put_and_complete(target: S3Target) -> None:
    """What the module docstring states about each server: a taken key refuses both conditional writes."""
    client, key = target.client(), f"probe-{uuid.uuid4().hex}"
    client.put_object(Bucket=target.bucket, Key=key, Body=b"first")
    with pytest.raises(ClientError) as refused:
        client.put_object(Bucket=target.bucket, Key=key, Body=b"second", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    upload = client.create_multipart_upload(Bucket=target.bucket, Key=key)["UploadId"]
    part = client.upload_part(Bucket=target.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"third")
    with pytest.raises(ClientError) as refused:
        client.complete_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload, IfNoneMatch="*",
                                         MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload)
    assert client.get_object(Bucket=target.bucket, Key=key)["Body"].read() == b"first"
    client.delete_object(Bucket=target.bucket, Key=key)


def test_racing_multipart_puts_of_one_id(target: S3Target) -> None:
    """Racing large puts commit through the conditional PutObject of a manifest: exactly one wins even where
    racing CompleteMultipartUploads with If-None-Match would all succeed (SeaweedFS, moto)."""
    backend = target.backend()
    size, threads = PART + 512 * 1024, 4
    for round_ in range(2):
        blob_id = f"race/big{round_}"
        barrier = threading.Barrier(threads)

        def put(thread: int) -> str:
            content = bytes([thread]) * size
            chunks = (content[i:i + MiB] for i in range(0, size, MiB))
            barrier.wait()
            try:
                backend.put_blob(blob_id, chunks)
            except BlobExists:
                return "lost"
            return "won"

        with ThreadPoolExecutor(threads) as pool:
            outcomes = list(pool.map(put, range(threads)))
        assert sorted(outcomes) == ["lost"] * (threads - 1) + ["won"]
        assert backend.get_blob(blob_id) == bytes([outcomes.index("won")]) * size
        assert backend.size(blob_id) == size
    assert target.uploads(backend.prefix) == []
    data = [key for key in target.keys(backend.prefix) if "/.large/" in key]
    assert len(data) == 2  # the losers removed theirs
    backend.close()


def test_racing_puts_from_separate_backend_objects(seaweed_target: S3Target) -> None:
    """Writers that share no lock (as separate processes would): the server's conditional PutObject decides.

    SeaweedFS only: moto's conditional PutObject checks, then stores, with no lock between, so across
    processes it is not atomic (within one, the backend serialises its own commits of an id).
    """
    target = seaweed_target
    prefix = f"t-{uuid.uuid4().hex[:12]}/"
    backends = [target.backend(prefix=prefix) for _ in range(4)]
    for round_, size in enumerate((1000, PART + 1000, 2000, PART + 2000, 3000, PART + 3000)):
        blob_id = f"shared/r{round_}"
        if round_ >= 4:  # the id is also a folder of another blob's key (SeaweedFS: the claim path)
            backends[0].put_bytes(f"{blob_id}/child", b"child")
        barrier = threading.Barrier(len(backends))

        def put(n: int) -> str:
            content = bytes([n]) * size
            barrier.wait()
            try:
                backends[n].put_blob(blob_id, (content[i:i + MiB] for i in range(0, size, MiB)))
            except BlobExists:
                return "lost"
            return "won"

        with ThreadPoolExecutor(len(backends)) as pool:
            outcomes = list(pool.map(put, range(len(backends))))
        assert outcomes.count("won") == 1, outcomes
        for backend in backends:
            assert backend.get_blob(blob_id) == bytes([outcomes.index("won")]) * size
    assert list(backends[1].list_blobs("shared/r4")) == ["shared/r4", "shared/r4/child"]
    assert [key for key in target.keys(prefix) if "/.claims/" in key] == []
    for backend in backends:
        backend.close()


def test_claim_left_by_a_crash_is_broken_after_its_lease(seaweed_target: S3Target,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "_CLAIM_LEASE", 3.0)
    backend = seaweed_target.backend()
    backend.put_bytes("f/child", b"child")
    claim = f"{backend.prefix}.claims/{hashlib.sha256(b'f').hexdigest()}"
    seaweed_target.client().put_object(Bucket=seaweed_target.bucket, Key=claim, Body=b"")  # a crashed writer's
    started = time.monotonic()
    assert backend.put_bytes("f", b"parent") == 6
    assert 1.5 <= time.monotonic() - started < 15  # waited for the lease (LastModified has whole seconds)
    assert backend.get_blob("f") == b"parent" and backend.get_blob("f/child") == b"child"
    with pytest.raises(BlobExists):
        backend.put_bytes("f", b"again")
    assert claim not in seaweed_target.keys(backend.prefix)
    backend.close()


def test_flat_listing_where_the_server_sorts(moto_target: S3Target) -> None:
    """Without an endpoint (AWS) one flat listing is streamed; moto sorts as AWS does."""
    backend = moto_target.backend()
    backend._sorted_listing = True
    ids = ["b", "a/x", "a/y/z", "a-b", "a0", "a.c", "Z", "_u", "a=1"]
    for blob_id in ids:
        backend.put_bytes(blob_id, b"x")
    backend.put_blob("big", [b"y" * (PART + 1)])  # its data under .large/ is not listed
    assert list(backend.list_blobs()) == sorted([*ids, "big"])
    assert list(backend.list_blobs("a")) == sorted(i for i in ids if i.startswith("a"))
    backend.close()


def test_large_blob_delete_removes_its_data(target: S3Target) -> None:
    backend = target.backend()
    backend.put_blob("big", [b"a" * PART, b"b" * 10])
    backend.put_bytes("small", b"s")
    assert len(target.keys(backend.prefix)) == 3  # two blobs and the big one's data
    assert list(backend.list_blobs()) == ["big", "small"]
    assert backend.get_blob("big", PART - 2, PART + 3) == b"aabbb"
    assert backend.get_blob("big", PART + 10) == b"" and backend.get_blob("big", PART + 50, PART + 60) == b""
    assert backend.delete_prefix("") == 2
    assert target.keys(backend.prefix) == []
    backend.put_blob("big", [b"c" * (PART + 1)])  # the id can be used again
    assert backend.get_blob("big", PART) == b"c"
    backend.close()


def test_sweep_removes_what_a_crash_leaves(target: S3Target) -> None:
    backend = target.backend()
    backend.put_blob("kept", [b"k" * PART, b"k"])  # a large blob: its manifest names its data
    client, prefix = target.client(), backend.prefix
    # What a crash leaves: data no manifest names, a claim, and an upload never completed.
    client.put_object(Bucket=target.bucket, Key=f"{prefix}.large/lost/0123abcd", Body=b"orphan")
    client.put_object(Bucket=target.bucket, Key=f"{prefix}.claims/{'0' * 64}", Body=b"")
    client.create_multipart_upload(Bucket=target.bucket, Key=f"{prefix}.large/gone/4567ef")
    # Younger than the grace period: kept. (moto dates every upload 2010-11-10, so there the upload
    # is already old enough to go.)
    young = backend.sweep_temp_files(3600)
    assert young == (1 if target.name == "moto" else 0)
    assert backend.sweep_temp_files(0) == 3 - young
    assert target.uploads(prefix) == []
    assert sorted(target.keys(prefix)) == sorted([f"{prefix}kept", *[k for k in target.keys(prefix) if
                                                                    k.startswith(f"{prefix}.large/kept/")]])
    assert len(target.keys(prefix)) == 2
    assert backend.get_blob("kept", PART - 1) == b"kk"
    backend.close()


class _HeaderStrippingProxy:
    """A loopback HTTP proxy in front of a real S3 server that drops If-None-Match: a server that ignores it."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "if-none-match"}
                connection = http.client.HTTPConnection(host, int(port), timeout=30)
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for name, value in reply.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                connection.close()
                proxy.forwarded += 1

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.forwarded = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_server_that_ignores_conditional_writes_is_refused(moto_target: S3Target) -> None:
    proxy = _HeaderStrippingProxy(moto_target.endpoint)
    try:
        backend = moto_target.backend(endpoint=proxy.endpoint)
        with pytest.raises(StorageError) as raised:
            backend.put_bytes("x", b"data")
        assert "ignores If-None-Match" in str(raised.value)
        assert proxy.forwarded >= 3  # the bucket check and the probe's puts went through it
        assert list(backend.list_blobs()) == []  # the probe key was removed, and no blob was written
        assert moto_target.client().list_objects_v2(Bucket=moto_target.bucket,
                                                    Prefix=backend.prefix).get("KeyCount") == 0
        backend.close()
    finally:
        proxy.close()


# Multipart -----------------------------------------------------------------------


@pytest.mark.parametrize("failure", ["iterator", "type"])
def test_failing_multipart_put_is_aborted(target: S3Target, failure: str) -> None:
    backend = target.backend()
    broken = RuntimeError("the source went away")

    def chunks() -> Iterator[object]:
        for _ in range(12):  # two full parts sent, the third being filled
            yield b"z" * MiB
        if failure == "type":
            yield "not bytes"
        raise broken

    with pytest.raises(RuntimeError if failure == "iterator" else TypeError) as raised:
        backend.put_blob("big/broken", chunks())
    if failure == "iterator":
        assert raised.value is broken
    assert target.uploads(backend.prefix) == []
    assert target.keys(backend.prefix) == []
    assert not backend.exists("big/broken")
    assert backend.put_blob("big/broken", [b"y" * (PART + 1)]) == PART + 1  # the id was not burnt
    assert target.uploads(backend.prefix) == []
    backend.close()


def test_taken_id_refused_before_a_large_upload(target: S3Target) -> None:
    backend = target.backend()
    backend.put_bytes("taken", b"x")
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(40):
            pulled.append(i)
            yield b"y" * MiB

    with pytest.raises(BlobExists):
        backend.put_blob("taken", chunks())
    assert len(pulled) * MiB <= backend.multipart_threshold + MiB  # asked once past the threshold
    assert target.uploads(backend.prefix) == []
    assert backend.get_blob("taken") == b"x"
    backend.close()


def test_multipart_memory_is_bounded(seaweed_target: S3Target) -> None:
    backend = seaweed_target.backend()
    blob = 48 * MiB
    block = bytes(range(256)) * 4096  # 1 MiB

    tracemalloc.start()
    try:
        assert backend.put_blob("bounded", (block for _ in range(blob // MiB))) == blob
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The part being filled, the part in flight, and what botocore copies of it: not the blob.
    assert peak < 5 * PART, f"peak {peak / MiB:.1f} MiB for a {blob // MiB} MiB blob"
    assert backend.size("bounded") == blob
    assert backend.get_blob("bounded", 20 * MiB, 20 * MiB + 300) == block[:300]
    backend.close()


# Errors and configuration -------------------------------------------------------


def test_unreachable_endpoint_fails_fast() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    backend = S3Backend("some-bucket", endpoint=endpoint, access_key="AK", secret_key="never-shown-secret",
                        connect_timeout=1, read_timeout=2, max_attempts=2)
    for call in (lambda: backend.put_bytes("a", b"x"), lambda: backend.get_blob("a"),
                 lambda: list(backend.list_blobs())):
        started = time.monotonic()
        with pytest.raises(StorageError) as raised:
            call()
        assert time.monotonic() - started < 10
        assert endpoint in str(raised.value)
        assert "never-shown-secret" not in str(raised.value)
    backend.close()


def test_missing_bucket(target: S3Target) -> None:
    bucket = f"no-such-{uuid.uuid4().hex[:10]}"
    backend = target.backend(bucket=bucket)
    for call in (lambda: backend.put_bytes("a", b"x"), lambda: backend.get_blob("a"), lambda: backend.exists("a"),
                 lambda: list(backend.list_blobs())):
        with pytest.raises(StorageError) as raised:
            call()
        assert f"bucket {bucket!r} does not exist" in str(raised.value)
    assert bucket not in [b["Name"] for b in target.client().list_buckets()["Buckets"]]
    backend.close()


def test_create_bucket(target: S3Target) -> None:
    bucket = f"made-{uuid.uuid4().hex[:10]}"
    backend = target.backend(bucket=bucket, create_bucket=True)
    backend.put_bytes("a/b", b"made")
    assert backend.get_blob("a/b") == b"made"
    assert bucket in [b["Name"] for b in target.client().list_buckets()["Buckets"]]
    backend.close()


def test_secret_key_never_shown(seaweed_target: S3Target, caplog: pytest.LogCaptureFixture) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    backend = seaweed_target.backend(secret_key=secret)
    assert secret not in repr(backend) and seaweed_target.secret_key not in repr(backend)
    assert seaweed_target.access_key not in repr(backend)
    for call in (lambda: backend.put_bytes("a", b"x"), lambda: backend.get_blob("a"),
                 lambda: list(backend.list_blobs())):
        with pytest.raises(StorageError) as raised:  # SeaweedFS refuses the signature
            call()
        assert "403" in str(raised.value)
        for text in (str(raised.value), repr(raised.value), repr(raised.value.args)):
            assert secret not in text
    assert secret not in caplog.text
    good = seaweed_target.backend()
    good.put_bytes("shown", b"x")
    assert seaweed_target.secret_key not in repr(good)
    good.close()
    backend.close()


def test_not_found_and_bad_ids(target: S3Target) -> None:
    backend = target.backend()
    with pytest.raises(BlobNotFound):
        backend.get_blob("missing", 3, 9)
    with pytest.raises(BlobNotFound):
        backend.stat_blob("missing")
    for bad in ("../x", "a//b", ".hidden", "a b"):
        with pytest.raises(InvalidBlobId):
            backend.put_bytes(bad, b"x")
    backend.close()


@pytest.mark.parametrize(("options", "named"), [
    ({"addressing_style": "sideways"}, "addressing_style"),
    ({"multipart_chunk": MiB}, "multipart_chunk"),
    ({"multipart_threshold": -1}, "multipart_threshold"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"read_timeout": "1"}, "read_timeout"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"endpoint": "ftp://127.0.0.1:1"}, "endpoint"),
    ({"access_key": "AK"}, "secret_key"),
    ({"prefix": "../up"}, ".."),
])
def test_bad_arguments(options: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        S3Backend("good-bucket", **options)
    assert named in str(raised.value)


def test_bad_bucket_name_and_endpoint_with_credentials() -> None:
    for bad in ("", "ab", "Upper", "under_score", "-dash", "a" * 64, "a..b"):
        with pytest.raises(InvalidBucketName):
            S3Backend(bad)
    with pytest.raises(InvalidArgument) as raised:
        S3Backend("good-bucket", endpoint="http://user:hunter2@127.0.0.1:9000")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize("style", ["path", "auto"])
def test_addressing_style_reaches_botocore(target: S3Target, style: str) -> None:
    backend = target.backend(addressing_style=style)
    assert backend._client.meta.config.s3 == {"addressing_style": style}
    backend.put_bytes("styled", style.encode())  # 127.0.0.1 endpoint: "auto" means path style
    assert backend.get_blob("styled") == style.encode()
    backend.close()


def test_virtual_addressing_puts_the_bucket_in_the_host(moto_target: S3Target) -> None:
    port = moto_target.endpoint.rsplit(":", 1)[1]
    backend = moto_target.backend(endpoint=f"http://localhost:{port}", addressing_style="virtual",
                                  connect_timeout=1, max_attempts=1)
    assert backend._client.meta.config.s3 == {"addressing_style": "virtual"}
    with pytest.raises(StorageError) as raised:  # <bucket>.localhost does not resolve here
        backend.get_blob("x")
    assert f"{moto_target.bucket}.localhost" in str(raised.value)
    backend.close()


def test_registered_and_prefixes_isolate(target: S3Target) -> None:
    one = create_backend("s3", bucket=target.bucket, endpoint=target.endpoint, access_key=target.access_key,
                         secret_key=target.secret_key, prefix=f"iso-{uuid.uuid4().hex[:8]}")
    assert one.prefix.endswith("/") and one.name == "s3"
    two = target.backend()
    one.put_bytes("a", b"one")
    two.put_bytes("a", b"two")
    client = target.client()
    client.put_object(Bucket=target.bucket, Key=one.prefix + "folder/", Body=b"")  # not a blob id
    client.put_object(Bucket=target.bucket, Key=one.prefix + "x/.hidden", Body=b"")
    assert list(one.list_blobs()) == ["a"]
    assert (one.get_blob("a"), two.get_blob("a")) == (b"one", b"two")
    assert one.delete_prefix("") == 1 and two.exists("a")
    one.close()
    two.close()


# SeaweedFS going away under a writer ----------------------------------------------


def test_seaweedfs_outage_loses_no_acknowledged_blob(tmp_path: Path) -> None:
    server = start_seaweedfs(tmp_path / "seaweed")
    try:
        server.create_bucket("outage")
        backend = S3Backend("outage", endpoint=server.endpoint, access_key=server.access_key,
                            secret_key=server.secret_key, multipart_threshold=PART, multipart_chunk=PART,
                            connect_timeout=1, read_timeout=5, max_attempts=2)
        per_call = 2 * (1 + 5) + 3  # attempts x (connect + read) + standard-mode backoff
        acked: dict[str, bytes] = {}
        tried: dict[str, bytes] = {}
        failures: list[float] = []
        crashes: list[BaseException] = []
        phase = {"now": "before"}
        after_restart: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            deadline = time.monotonic() + 240
            for n in range(3000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                blob_id = f"w/{n:05d}"
                content = (f"{n}:".encode() * 50) if n % 9 else bytes([n % 256]) * (PART + 4096)
                tried[blob_id] = content
                started = time.monotonic()
                try:
                    backend.put_bytes(blob_id, content)
                except StorageError:
                    failures.append(time.monotonic() - started)
                    time.sleep(0.05)
                    continue
                except BaseException as exc:  # noqa: BLE001 - any other error is what this test looks for
                    crashes.append(exc)
                    return
                acked[blob_id] = content
                if phase["now"] == "restarted":
                    after_restart.append(blob_id)
                time.sleep(0.01)

        thread = threading.Thread(target=writer)
        thread.start()
        _wait_for(lambda: len(acked) >= 20 or crashes, 60, "20 acknowledged puts")
        server.stop(timeout=1)  # SIGTERM, SIGKILL after 1 s (its filer would linger 15 s): SeaweedFS is gone
        phase["now"] = "down"
        _wait_for(lambda: len(failures) >= 3 or crashes, 60, "puts failing while SeaweedFS is down")
        server.start()
        phase["now"] = "restarted"
        _wait_for(lambda: len(after_restart) >= 10 or crashes or not thread.is_alive(), 120,
                  "puts succeeding after the restart")
        stop.set()
        thread.join(60)
        assert not thread.is_alive()
        assert crashes == []
        assert len(failures) >= 3
        assert max(failures) < 3 * per_call  # a multipart put: a part, then its abort, each bounded
        assert len(after_restart) >= 10  # the same backend object works again, no reconnect by hand
        for blob_id, content in acked.items():
            assert backend.get_blob(blob_id) == content, blob_id
        for blob_id in set(tried) - set(acked):  # outcome unknown to the client, but never partial
            if backend.exists(blob_id):
                assert backend.get_blob(blob_id) == tried[blob_id]
        backend.close()
    finally:
        server.stop(timeout=1)


def _wait_for(condition: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.1)

