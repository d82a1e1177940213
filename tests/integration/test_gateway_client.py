"""``dwray.connect(url=...)`` against the session gateway: credentials, tenancy, the errors S3 answers
become, streaming in bounded memory, zero-copy tables, multipart, and TLS verification.

The behaviour shared with the in-process warehouse runs in ``tests/integration/test_warehouse.py``
(the ``wh`` fixture's gateway variant); this module covers what only a gateway client has. Each test
gets fresh tenants through the admin API, shredded afterwards.
"""
from __future__ import annotations

import hashlib
import random
import select
import socket
import ssl
import threading
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config

import dwray
from dwray import errors as dw
from dwray.remote import GatewayWarehouse
from tests.gateway_session import GatewayUnderTest
from tests.integration.gateway.tls_files import TlsMaterial, make_tls_material

MiB = 1 << 20
PART = 5 * MiB  # S3's smallest part: the most parts for the bytes sent


class Tenants:
    """Fresh tenants on the session gateway, each with an access key; all shredded at the end."""

    def __init__(self, gateway: GatewayUnderTest) -> None:
        self.gateway = gateway
        self.made: list[str] = []
        self.clients: list[GatewayWarehouse] = []

    def credentials(self) -> tuple[str, str]:
        """A new tenant's access key id and secret."""
        tenant = f"c{uuid.uuid4().hex[:12]}"
        self.made.append(tenant)
        return self.gateway.new_key(tenant)

    def __call__(self, **options: Any) -> GatewayWarehouse:
        """A client for a new tenant."""
        client = GatewayWarehouse(self.gateway.endpoint, *self.credentials(), region=self.gateway.region, **options)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        for tenant in self.made:
            self.gateway.shred(tenant)


@pytest.fixture
def tenants(gateway: GatewayUnderTest) -> Iterator[Tenants]:
    made = Tenants(gateway)
    yield made
    made.close()


def test_connect_with_a_url_gives_a_tenant_client(gateway: GatewayUnderTest, monkeypatch: pytest.MonkeyPatch,
                                                  tenants: Tenants) -> None:
    access_key, secret = tenants.credentials()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with dwray.connect(url=gateway.endpoint) as client:
        assert isinstance(client, GatewayWarehouse)
        bucket = f"conn-{uuid.uuid4().hex[:12]}"
        client.create_bucket(bucket)
        assert [info.name for info in client.list_buckets()] == [bucket]
        assert client.tenant == tenants.made[-1]
        assert secret not in repr(client)


def test_a_wrong_secret_or_key_is_access_denied_and_never_shown(gateway: GatewayUnderTest,
                                                                tenants: Tenants) -> None:
    access_key, _ = tenants.credentials()
    wrong = "x" * 40
    with GatewayWarehouse(gateway.endpoint, access_key, wrong, region=gateway.region) as client:
        with pytest.raises(dw.AccessDenied, match="signature does not match") as caught:
            client.list_buckets()
        assert wrong not in str(caught.value) and wrong not in repr(client)
    with GatewayWarehouse(gateway.endpoint, "AKNOSUCHKEY0000000", wrong, region=gateway.region) as client:
        with pytest.raises(dw.AccessDenied, match="no such access key"):
            client.put("any-bucket", "k", b"x")


def test_a_tenant_client_acts_only_as_its_own_tenant(tenants: Tenants) -> None:
    client = tenants()
    bucket = f"own-{uuid.uuid4().hex[:12]}"
    client.create_bucket(bucket, tenant=client.tenant)
    assert client.head_bucket(bucket, tenant=dwray.TenantContext(client.tenant)).name == bucket
    with pytest.raises(dw.AccessDenied, match="'someone-else'"):
        client.list_buckets(tenant="someone-else")


def test_another_tenants_bucket_is_refused_not_hidden(tenants: Tenants) -> None:
    owner, rival = tenants(), tenants()
    bucket = f"taken-{uuid.uuid4().hex[:12]}"
    owner.create_bucket(bucket)
    owner.put(bucket, "k", b"mine")
    with pytest.raises(dw.BucketAlreadyOwnedByYou):
        owner.create_bucket(bucket)
    with pytest.raises(dw.BucketAlreadyExists) as taken:
        rival.create_bucket(bucket)
    assert not isinstance(taken.value, dw.BucketAlreadyOwnedByYou)
    for read in (lambda: rival.get(bucket, "k"), lambda: rival.head(bucket, "k"), lambda: rival.list(bucket)):
        with pytest.raises(dw.BucketAccessDenied, match=bucket):
            read()
    with pytest.raises(dw.BucketNotFound):
        rival.head("no-such-bucket-" + uuid.uuid4().hex[:8], "k")


def test_versions_delete_markers_and_tags(tenants: Tenants) -> None:
    client = tenants()
    bucket = f"ver-{uuid.uuid4().hex[:12]}"
    assert client.create_bucket(bucket, versioning=True).versioning_status == "Enabled"
    one = client.put(bucket, "k", b"one", tags={"stage": "raw"})
    client.put(bucket, "k2", b"a key the first one is the prefix of")
    two = client.put(bucket, "k", b"two")
    marker = client.delete(bucket, "k")
    assert marker.delete_marker and marker.existed
    with pytest.raises(dw.ObjectDeleted) as deleted:
        client.get(bucket, "k")
    assert deleted.value.version_id == marker.version_id
    with pytest.raises(dw.DeleteMarkerVersion):
        client.get(bucket, "k", version_id=marker.version_id)
    history = client.versions(bucket, "k")
    assert [(v.version_id, v.delete_marker, v.is_latest) for v in history] == [
        (marker.version_id, True, True), (two.version_id, False, False), (one.version_id, False, False)]
    assert client.get(bucket, "k", version_id=one.version_id) == b"one"
    assert client.get_tags(bucket, "k", version_id=one.version_id) == (one.version_id, {"stage": "raw"})
    copied = client.copy(bucket, "k", bucket, "copy", version_id=one.version_id)
    assert copied.tags == {"stage": "raw"} and client.get(bucket, "copy") == b"one"
    page = client.list_versions(bucket, max_keys=2)
    assert page.is_truncated and [v.key for v in page.versions] == ["copy", "k"]
    assert client.set_bucket_versioning(bucket, "Suspended").versioning_status == "Suspended"
    with pytest.raises(dw.ObjectNotFound):
        client.get(bucket, "k", version_id="0" * 32)


def _chunks(total: int, seed: int, digest: Any) -> Iterator[bytes]:
    """``total`` reproducible random bytes, a MiB at a time, hashed into ``digest`` as they go."""
    rng = random.Random(seed)
    for _ in range(total // MiB):
        chunk = rng.randbytes(MiB)
        digest.update(chunk)
        yield chunk


def _peak_traced(action: Callable[[], Any]) -> tuple[Any, int]:
    """``action()``'s result and the most Python memory allocated at once while it ran."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = action()
        return result, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def test_a_large_put_streams_in_bounded_memory(tenants: Tenants) -> None:
    client = tenants(part_size=PART)
    bucket = f"big-{uuid.uuid4().hex[:12]}"
    client.create_bucket(bucket)
    size, sent = 64 * MiB, hashlib.sha256()
    info, peak = _peak_traced(lambda: client.put(bucket, "big.bin", _chunks(size, 1, sent)))
    # About three parts (sent, next, gathering the one after) whatever the body's size; never a part twice.
    assert peak < 4 * PART, f"a {size >> 20} MiB put held {peak >> 20} MiB at once"
    parts = -(-size // PART)
    assert info.size == size and info.parts_count == parts and info.etag.endswith(f"-{parts}")
    received = hashlib.sha256()
    with client.open(bucket, "big.bin") as reader:
        for chunk in reader:
            received.update(chunk)
    assert received.digest() == sent.digest()
    assert client.head(bucket, "big.bin").parts_count == parts
    with pytest.raises(dw.InvalidArgument, match="bytes-like"):  # a body failing half-way stores nothing
        client.put(bucket, "half.bin", iter([*_chunks(12 * MiB, 2, hashlib.sha256()), "not bytes"]))
    with pytest.raises(dw.ObjectNotFound):
        client.head(bucket, "half.bin")
    assert client.s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_get_table_wraps_the_body_without_copying_it(tenants: Tenants) -> None:
    import numpy as np
    import pyarrow as pa

    client = tenants()
    bucket = f"tab-{uuid.uuid4().hex[:12]}"
    client.create_bucket(bucket)
    table = pa.table({"x": np.random.default_rng(3).random(2 * MiB), "n": np.arange(2 * MiB)})
    info = client.put_table(bucket, "t.parquet", table, compression="none")
    back, peak = _peak_traced(lambda: client.get_table(bucket, "t.parquet"))
    assert back.equals(table)
    # One buffer of the body's size (plus a read chunk): no joined chunks, no second copy.
    assert peak < info.size + 4 * MiB, f"reading a {info.size >> 20} MiB table held {peak >> 20} MiB of Python memory"


def test_the_multipart_api(tenants: Tenants) -> None:
    client = tenants()
    bucket = f"mp-{uuid.uuid4().hex[:12]}"
    client.create_bucket(bucket)
    upload = client.create_multipart_upload(bucket, "mp.bin", content_type="text/plain", metadata={"m": "1"})
    first = client.upload_part(bucket, "mp.bin", upload.upload_id, 1, b"a" * PART)
    second = client.upload_part(bucket, "mp.bin", upload.upload_id, 2, iter([b"b", b"c"]))
    assert [part.part_number for part in client.list_parts(bucket, "mp.bin", upload.upload_id).parts] == [1, 2]
    info = client.complete_multipart_upload(bucket, "mp.bin", upload.upload_id,
                                            [(1, first.etag), (2, second.etag)])
    assert (info.size, info.parts_count, info.content_type, info.metadata) == (PART + 2, 2, "text/plain", {"m": "1"})
    assert client.get(bucket, "mp.bin", range=(PART - 1, PART + 1)) == b"abc"
    aborted = client.create_multipart_upload(bucket, "gone.bin")
    client.abort_multipart_upload(bucket, "gone.bin", aborted.upload_id)
    with pytest.raises(dw.UploadNotFound):
        client.upload_part(bucket, "gone.bin", aborted.upload_id, 1, b"x")


class TlsRelay:
    """TLS in front of the session gateway: a loopback TLS listener relaying bytes to its HTTP port.

    A TLS gateway of its own would cost a second warehouse and Ray; the relay
    gives the client a real TLS handshake, with a certificate from a private CA,
    in front of the real gateway (the request and its signature pass unchanged).
    """

    def __init__(self, material: TlsMaterial, upstream: tuple[str, int]) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(material.cert), str(material.key))
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(raw,), daemon=True).start()

    def _relay(self, raw: socket.socket) -> None:
        try:
            secure = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        upstream = socket.create_connection(self.upstream)
        try:
            while True:
                ready = [secure] if secure.pending() else select.select([secure, upstream], [], [], 60)[0]
                if not ready:
                    return
                for source in ready:
                    try:
                        data = source.recv(1 << 16)
                    except ssl.SSLWantReadError:
                        continue
                    if not data:
                        return
                    (upstream if source is secure else secure).sendall(data)
        except OSError:
            return
        finally:
            secure.close()
            upstream.close()

    def close(self) -> None:
        self.listener.close()


def test_tls_is_verified_against_the_ca_given(gateway: GatewayUnderTest, tmp_path: Path) -> None:
    material = make_tls_material(tmp_path)
    host, port = gateway.endpoint.removeprefix("http://").rsplit(":", 1)
    relay = TlsRelay(material, (host, int(port)))
    url = f"https://127.0.0.1:{relay.port}"
    try:
        with GatewayWarehouse(url, gateway.access_key_id, gateway.secret_access_key, region=gateway.region,
                              verify=str(material.ca)) as trusting:
            assert trusting.tenant  # a signed request went through TLS to the gateway and back
        with GatewayWarehouse(url, gateway.access_key_id, gateway.secret_access_key, region=gateway.region,
                              verify=True, config=Config(retries={"max_attempts": 1})) as default:
            with pytest.raises(dw.NotReady, match="TLS handshake") as refused:
                default.list_buckets()
            assert gateway.secret_access_key not in str(refused.value)
    finally:
        relay.close()
