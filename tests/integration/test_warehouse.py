"""Behaviour of the warehouse core, run against every backend and as a tenant through the gateway
(see the ``wh`` fixture). What only an operator may do (other tenants, the catalog, key rotation,
sweeping, the gateway's own ``finalize`` hook) runs on ``operator_wh``, the variants without the gateway."""
from __future__ import annotations

import hashlib
import io
import os
import threading
from pathlib import Path

import pytest

from dwray.core.models import TenantContext
from dwray.core.warehouse import Warehouse
from dwray.errors import (
    BucketAccessDenied,
    BucketAlreadyExists,
    BucketNotEmpty,
    BucketNotFound,
    EntityTooLarge,
    IntegrityError,
    InvalidArgument,
    InvalidBucketName,
    InvalidContinuationToken,
    InvalidObjectKey,
    InvalidRange,
    KeyringError,
    KeyTooLong,
    ObjectNotFound,
)
from dwray.remote import GatewayWarehouse
from tests.conftest import TEST_FRAME_SIZE, make_config

F = TEST_FRAME_SIZE


def data_of(size: int, seed: int = 0) -> bytes:
    """Half compressible, half random, so both codecs are exercised."""
    rng = os.urandom(size // 2)
    text = (f"row {seed},".encode() * (size // 8 + 1))[: size - len(rng)]
    return text + rng


# Buckets -------------------------------------------------------------------

def test_bucket_lifecycle(wh: Warehouse) -> None:
    wh.create_bucket("alpha")
    wh.create_bucket("beta", versioning=True)
    assert [b.name for b in wh.list_buckets()] == ["alpha", "beta"]
    assert wh.head_bucket("beta").versioning is True
    with pytest.raises(BucketAlreadyExists, match="alpha"):
        wh.create_bucket("alpha")
    wh.put("alpha", "k", b"x")
    with pytest.raises(BucketNotEmpty):
        wh.delete_bucket("alpha")
    wh.delete("alpha", "k")
    wh.delete_bucket("alpha")
    assert [b.name for b in wh.list_buckets()] == ["beta"]
    with pytest.raises(BucketNotFound, match="alpha"):
        wh.head_bucket("alpha")
    with pytest.raises(BucketNotFound):
        wh.delete_bucket("alpha")


@pytest.mark.parametrize("name", ["ab", "A-bucket", "a_b", "-abc", "abc-", "a..b", "192.168.1.1",
                                  "xn--abc", "abc-s3alias", "a" * 64, "", "ab c"])
def test_invalid_bucket_names(wh: Warehouse, name: str) -> None:
    with pytest.raises(InvalidBucketName) as caught:
        wh.create_bucket(name)
    assert repr(name) in str(caught.value)


def test_missing_bucket_errors(wh: Warehouse) -> None:
    with pytest.raises(BucketNotFound):
        wh.put("nobucket", "k", b"x")
    with pytest.raises(BucketNotFound):
        wh.get("nobucket", "k")
    with pytest.raises(BucketNotFound):
        wh.list("nobucket")


# Put and get ----------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 1, F - 1, F, F + 1, 3 * F, 10 * F + 17])
def test_round_trip_sizes(wh: Warehouse, size: int) -> None:
    wh.create_bucket("bkt")
    payload = data_of(size)
    info = wh.put("bkt", "obj", payload)
    assert info.size == size
    assert info.etag == hashlib.md5(payload).hexdigest()
    assert wh.get("bkt", "obj") == payload
    assert wh.head("bkt", "obj").etag == info.etag


def test_put_from_file_object_and_chunk_iterator(wh: Warehouse, tmp_path: Path) -> None:
    wh.create_bucket("bkt")
    payload = data_of(5 * F + 123)
    wh.put("bkt", "file", io.BytesIO(payload))
    assert wh.get("bkt", "file") == payload
    path = tmp_path / "src.bin"
    path.write_bytes(payload)
    with open(path, "rb") as handle:
        wh.put("bkt", "real-file", handle)
    assert wh.get("bkt", "real-file") == payload
    sizes = [1, 7, F, 3, 2 * F + 5, 0, 999]
    chunks, offset = [], 0
    for size in sizes * 3:
        chunks.append(payload[offset:offset + size])
        offset += size
    chunks.append(payload[offset:])
    wh.put("bkt", "chunks", iter(chunks))
    assert wh.get("bkt", "chunks") == payload
    wh.put("bkt", "memoryview", memoryview(bytearray(payload)))
    assert wh.get("bkt", "memoryview") == payload


def test_chunk_buffer_reused_by_the_caller(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    buffer = bytearray(F)
    parts = [os.urandom(F) for _ in range(5)]

    def refill():
        for part in parts:
            buffer[:] = part  # the same buffer, new contents, every time
            yield buffer

    wh.put("bkt", "reused", refill())
    assert wh.get("bkt", "reused") == b"".join(parts)


def test_bad_data_types_are_refused(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    with pytest.raises(InvalidArgument, match="str"):
        wh.put("bkt", "k", "text is not bytes")
    with pytest.raises(InvalidArgument, match="chunks must be bytes-like"):
        wh.put("bkt", "k", iter([b"ok", 42]))
    with pytest.raises(ObjectNotFound):
        wh.head("bkt", "k")


def test_metadata_content_type_and_headers(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    wh.put("bkt", "k", b"{}", content_type="application/json", metadata={"Owner": "ana", "run-id": "7"},
           headers={"Content-Encoding": "identity", "Cache-Control": "no-cache"})
    info = wh.head("bkt", "k")
    assert info.content_type == "application/json"
    assert info.metadata == {"owner": "ana", "run-id": "7"}
    assert info.headers == {"content-encoding": "identity", "cache-control": "no-cache"}
    with pytest.raises(InvalidArgument, match="X-Secret"):
        wh.put("bkt", "k2", b"", headers={"X-Secret": "1"})
    with pytest.raises(InvalidArgument, match="limit is 2048"):
        wh.put("bkt", "k3", b"", metadata={"big": "v" * 3000})
    with pytest.raises(InvalidArgument, match="metadata name"):
        wh.put("bkt", "k4", b"", metadata={"bad name": "v"})


def test_overwrite_replaces_object(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    first = wh.put("bkt", "k", b"first" * 1000)
    second = wh.put("bkt", "k", b"second")
    assert first.version_id == second.version_id == "null"  # an unversioned bucket has the null version only
    assert wh.get("bkt", "k") == b"second"
    assert len(wh.versions("bkt", "k")) == 1


# Ranges and streaming --------------------------------------------------------

@pytest.mark.parametrize("first,last", [(0, 0), (0, F - 1), (F - 1, F), (5, 3 * F + 2), (2 * F, None),
                                        (7 * F + 3, 7 * F + 3), (100, 10**9), (0, None)])
def test_ranges(wh: Warehouse, first: int, last: int | None) -> None:
    wh.create_bucket("bkt")
    payload = data_of(7 * F + 10)
    wh.put("bkt", "k", payload)
    end = len(payload) if last is None else last + 1
    assert wh.get("bkt", "k", range=(first, last)) == payload[first:end]


def test_invalid_ranges(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    wh.put("bkt", "k", b"0123456789")
    wh.put("bkt", "empty", b"")
    for bad in [(10, 12), (-1, 3), (5, 2), (0, 0)]:
        key = "empty" if bad == (0, 0) else "k"
        with pytest.raises(InvalidRange):
            wh.get("bkt", key, range=bad)
    with pytest.raises(InvalidArgument, match="range"):
        wh.get("bkt", "k", range=(1,))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="integers"):
        wh.get("bkt", "k", range=("0", 3))  # type: ignore[arg-type]


def test_streaming_reader(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    payload = data_of(6 * F + 5)
    wh.put("bkt", "k", payload)
    with wh.open("bkt", "k") as reader:
        assert reader.info.size == len(payload)
        head = reader.read(10)
        rest = reader.read()
    assert head + rest == payload
    with wh.open("bkt", "k", range=(F + 3, 4 * F)) as reader:
        chunks = list(reader)
        assert reader.length == 3 * F - 2
    # About a frame per chunk from the warehouse; over HTTP, a chunk is a read of the response (one, here).
    assert len(chunks) >= (1 if isinstance(wh, GatewayWarehouse) else 3)
    assert b"".join(chunks) == payload[F + 3:4 * F + 1]
    with wh.open("bkt", "k") as reader:
        buffered = io.BufferedReader(reader, buffer_size=1000)
        assert buffered.read(F + 1) == payload[:F + 1]


# Keys --------------------------------------------------------------------------

@pytest.mark.parametrize("key,error", [
    ("", InvalidObjectKey), ("a\x00b", InvalidObjectKey),
    ("../etc/passwd", InvalidObjectKey), ("a/./b", InvalidObjectKey), ("a/..", InvalidObjectKey),
    ("é" * 513, KeyTooLong), ("\ud800", InvalidObjectKey),
], ids=["empty", "nul", "dotdot", "dot", "trailing-dotdot", "too-long", "surrogate"])
def test_invalid_keys(wh: Warehouse, key: str, error: type[Exception]) -> None:
    wh.create_bucket("bkt")
    with pytest.raises(error):
        wh.put("bkt", key, b"x")
    assert wh.list("bkt").objects == []


def test_longest_key_and_unicode(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    key = "é" * 512  # exactly 1024 bytes of UTF-8
    wh.put("bkt", key, b"x")
    assert wh.get("bkt", key) == b"x"
    wh.put("bkt", "日本/データ 🚀.csv", b"y")
    assert wh.head("bkt", "日本/データ 🚀.csv").size == 1


# Listing -------------------------------------------------------------------------

def test_list_order_is_utf8_byte_order(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    keys = ["b", "a", "Z", "é", "\u00ff", "\U0001f680", "a/b", "a-b", "\uffff", "0"]
    for key in keys:
        wh.put("bkt", key, b"")
    listed = wh.list("bkt").keys
    assert listed == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_list_prefix_delimiter_and_pagination(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    keys = [f"logs/2026/{m:02d}/{d:02d}.log" for m in (1, 2, 3) for d in (1, 2)]
    keys += ["logs/readme", "data/x", "data/y", "top"]
    for key in keys:
        wh.put("bkt", key, b"1")
    page = wh.list("bkt", delimiter="/")
    assert page.common_prefixes == ["data/", "logs/"]
    assert page.keys == ["top"]
    page = wh.list("bkt", prefix="logs/", delimiter="/")
    assert page.common_prefixes == ["logs/2026/"]
    assert page.keys == ["logs/readme"]
    page = wh.list("bkt", prefix="logs/2026/", delimiter="/")
    assert page.common_prefixes == ["logs/2026/01/", "logs/2026/02/", "logs/2026/03/"]
    # Paging one entry at a time visits every entry exactly once, prefixes included.
    seen: list[str] = []
    token = None
    while True:
        page = wh.list("bkt", delimiter="/", prefix="logs/2026/", max_keys=1, continuation_token=token)
        assert len(page.keys) + len(page.common_prefixes) <= 1
        seen += page.keys + page.common_prefixes
        if not page.is_truncated:
            break
        token = page.next_continuation_token
    assert seen == ["logs/2026/01/", "logs/2026/02/", "logs/2026/03/"]
    all_keys: list[str] = []
    token = None
    while True:
        page = wh.list("bkt", max_keys=3, continuation_token=token)
        all_keys += page.keys
        if not page.is_truncated:
            assert page.next_continuation_token is None
            break
        token = page.next_continuation_token
    assert all_keys == sorted(keys)
    assert wh.list("bkt", start_after="logs/2026/03/02.log").keys == ["logs/readme", "top"]
    assert wh.list("bkt", max_keys=0).keys == []
    assert [info.key for info in wh.iter_objects("bkt", prefix="data/")] == ["data/x", "data/y"]


def test_list_rejects_bad_tokens_and_max_keys(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    with pytest.raises(InvalidContinuationToken):
        wh.list("bkt", continuation_token="not-a-token!")
    with pytest.raises(InvalidArgument, match="max_keys"):
        wh.list("bkt", max_keys=-1)


# Delete, versions, copy --------------------------------------------------------

def test_delete_semantics(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    wh.put("bkt", "k", b"x")
    assert wh.delete("bkt", "k").existed is True
    assert wh.delete("bkt", "k").existed is False
    with pytest.raises(ObjectNotFound, match="'k'"):
        wh.get("bkt", "k")


def test_versioned_bucket(wh: Warehouse) -> None:
    wh.create_bucket("ver", versioning=True)
    one = wh.put("ver", "k", b"one")
    two = wh.put("ver", "k", b"two")
    assert wh.get("ver", "k") == b"two"
    assert wh.get("ver", "k", version_id=one.version_id) == b"one"
    result = wh.delete("ver", "k")
    assert result.delete_marker is True
    with pytest.raises(ObjectNotFound):
        wh.get("ver", "k")
    assert wh.list("ver").keys == []
    versions = wh.versions("ver", "k")
    assert [v.delete_marker for v in versions] == [True, False, False]
    wh.delete("ver", "k", version_id=result.version_id)
    assert wh.get("ver", "k") == b"two"
    wh.delete("ver", "k", version_id=two.version_id)
    assert wh.get("ver", "k") == b"one"
    with pytest.raises(BucketNotEmpty):
        wh.delete_bucket("ver")


def test_copy(wh: Warehouse) -> None:
    wh.create_bucket("src-bkt")
    wh.create_bucket("dst-bkt")
    payload = data_of(3 * F + 1)
    wh.put("src-bkt", "src", payload, content_type="text/csv", metadata={"m": "1"})
    copied = wh.copy("src-bkt", "src", "dst-bkt", "dst")
    assert wh.get("dst-bkt", "dst") == payload
    assert copied.content_type == "text/csv" and copied.metadata == {"m": "1"}
    assert copied.etag == hashlib.md5(payload).hexdigest()
    replaced = wh.copy("src-bkt", "src", "src-bkt", "src2", metadata={"n": "2"})
    assert replaced.metadata == {"n": "2"}
    assert replaced.content_type == "application/octet-stream"
    with pytest.raises(ObjectNotFound):
        wh.copy("src-bkt", "missing", "dst-bkt", "x")
    with pytest.raises(BucketNotFound):
        wh.copy("src-bkt", "src", "nope", "x")


# Tenancy -------------------------------------------------------------------------

def test_tenants_are_isolated(operator_wh: Warehouse) -> None:
    wh = operator_wh
    acme, globex = f"{wh.config.default_tenant}-acme", f"{wh.config.default_tenant}-globex"
    wh.create_bucket("acme-data", tenant=acme)
    wh.create_bucket("globex-data", tenant=globex)
    # Two frames each, so each object has a blob (one frame would be kept inline, in its row).
    acme_data, globex_data = b"acme data" * 1000, b"globex data" * 1000
    wh.put("acme-data", "k", acme_data, tenant=acme)
    wh.put("globex-data", "k", globex_data, tenant=TenantContext(globex))
    assert wh.get("acme-data", "k", tenant=acme) == acme_data
    assert wh.get("globex-data", "k", tenant=globex) == globex_data
    wh.create_bucket("private", tenant=acme)
    wh.put("private", "secret", b"s", tenant=acme)
    assert [b.name for b in wh.list_buckets(tenant=globex)] == ["globex-data"]
    # Bucket names are global: another tenant's bucket is refused (403), not hidden (404), as in S3.
    with pytest.raises(BucketAccessDenied):
        wh.get("private", "secret", tenant=globex)
    with pytest.raises(BucketAccessDenied):
        wh.list("private")  # the default tenant may not see it either
    with pytest.raises(BucketNotFound):
        wh.list("nobody-has-this")
    acme_row = wh.catalog.get_object(acme, "acme-data", "k")
    globex_row = wh.catalog.get_object(globex, "globex-data", "k")
    acme_at, globex_at = acme_row.placement, globex_row.placement
    assert acme_at.blob_id.startswith(f"{acme}/") and globex_at.blob_id.startswith(f"{globex}/")
    assert acme_at.kek_id != globex_at.kek_id
    with pytest.raises(InvalidArgument, match="tenant"):
        wh.list_buckets(tenant="../evil")


# Limits, keys, integrity ---------------------------------------------------------

def test_max_object_size_stores_nothing(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"max_object_size": 3 * F})})
    with Warehouse(config) as wh:
        wh.create_bucket("bkt")
        with pytest.raises(EntityTooLarge, match="limit of"):
            wh.put("bkt", "big", iter([b"x" * F] * 5))
        with pytest.raises(ObjectNotFound):
            wh.head("bkt", "big")
        assert list(wh.backend.list_blobs("")) == []
        wh.put("bkt", "fits", b"x" * (3 * F))


def test_key_rotation_rewrap_and_retire(operator_wh: Warehouse) -> None:
    wh = operator_wh
    wh.create_bucket("bkt")
    wh.put("bkt", "old", b"old data" * 1000)  # a blob: rewrap must leave its bytes alone
    assert wh.catalog.get_object(wh.config.default_tenant, "bkt", "old").placement.kek_version == 1
    assert wh.rotate_keys() == 2
    wh.put("bkt", "new", b"new data")
    assert wh.catalog.get_object(wh.config.default_tenant, "bkt", "new").placement.kek_version == 2
    with pytest.raises(KeyringError, match="rewrap first"):
        wh.retire_keys(2)
    blob_before = wh.backend.get_blob(wh.catalog.get_object(wh.config.default_tenant, "bkt", "old").placement.blob_id)
    assert wh.rewrap() == 1
    old = wh.catalog.get_object(wh.config.default_tenant, "bkt", "old")
    assert old.placement.kek_version == 2
    assert wh.backend.get_blob(old.placement.blob_id) == blob_before  # data untouched
    wh.retire_keys(2)
    assert wh.get("bkt", "old") == b"old data" * 1000
    assert wh.get("bkt", "new") == b"new data"
    assert wh.rewrap() == 0


def test_tampered_blob_raises_integrity_error(local_wh: Warehouse) -> None:
    local_wh.create_bucket("bkt")
    payload = data_of(4 * F)
    local_wh.put("bkt", "k", payload)
    record = local_wh.catalog.get_object("default", "bkt", "k")
    path = local_wh.storage_path() / record.placement.blob_id
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.chmod(0o600)
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError):
        local_wh.get("bkt", "k")
    # Frames before the damaged one still read; the damaged range never does.
    assert local_wh.get("bkt", "k", range=(0, 99)) == payload[:100]


def test_concurrent_puts_and_gets(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                payload = data_of(F + n * 100 + i, seed=n)
                wh.put("bkt", f"w{n}/{i}", payload)
                assert wh.get("bkt", f"w{n}/{i}") == payload
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(list(wh.iter_objects("bkt"))) == 60


# Sweeper ---------------------------------------------------------------------------

def test_sweeper_removes_only_old_unreferenced_blobs(operator_wh: Warehouse) -> None:
    wh = operator_wh
    wh.create_bucket("bkt")
    wh.put("bkt", "k", b"v1" * 5000)
    old_blob = wh.catalog.get_object(wh.config.default_tenant, "bkt", "k").placement.blob_id
    wh.put("bkt", "k", b"v2" * 5000)
    live_blob = wh.catalog.get_object(wh.config.default_tenant, "bkt", "k").placement.blob_id
    orphan = f"{wh.config.default_tenant}/zz/orphan"
    wh.backend.put_bytes(orphan, b"left by a crash")
    tenant = wh.config.default_tenant
    report = wh.sweep(tenant=tenant)  # default grace: one hour, everything is younger
    assert report.deleted == 0 and report.young == 2 and report.referenced == 1
    report = wh.sweep(grace_seconds=0, tenant=tenant)
    assert report.deleted == 2
    assert not wh.backend.exists(old_blob) and not wh.backend.exists(orphan)
    assert wh.backend.exists(live_blob)
    assert wh.get("bkt", "k") == b"v2" * 5000


# Tables -----------------------------------------------------------------------------

def test_put_and_get_table(wh: Warehouse) -> None:
    import pyarrow as pa

    wh.create_bucket("tables")
    table = pa.table({"id": list(range(5000)), "city": ["Lisbon", "Porto"] * 2500,
                      "total": [i * 0.5 for i in range(5000)]})
    info = wh.put_table("tables", "orders.parquet", table, metadata={"rows": "5000"})
    assert info.content_type == "application/vnd.apache.parquet"
    back = wh.get_table("tables", "orders.parquet")
    assert back.equals(table)
    assert wh.get_table("tables", "orders.parquet", columns=["city"]).column_names == ["city"]
    with pytest.raises(InvalidArgument, match="pyarrow.Table"):
        wh.put_table("tables", "x", {"not": "a table"})
    wh.put("tables", "notes.txt", b"plain text")
    with pytest.raises(InvalidArgument, match="not a Parquet table"):
        wh.get_table("tables", "notes.txt")


def test_finalize_adds_headers_known_after_the_body_or_aborts_the_put(operator_wh: Warehouse) -> None:
    wh = operator_wh
    wh.create_bucket("fin")
    seen: list[int] = []

    def body() -> object:
        for _ in range(3):
            seen.append(1)
            yield b"x" * TEST_FRAME_SIZE

    def checksums() -> dict[str, str]:
        assert len(seen) == 3, "finalize runs only after the whole body was read"
        return {"x-amz-checksum-crc32": "AAAAAA=="}

    info = wh.put("fin", "k", body(), finalize=checksums)
    assert wh.head("fin", "k").headers["x-amz-checksum-crc32"] == "AAAAAA=="
    assert info.size == 3 * TEST_FRAME_SIZE

    def refuse() -> dict[str, str]:
        raise InvalidArgument("the body does not match its checksum")

    with pytest.raises(InvalidArgument, match="checksum"):
        wh.put("fin", "k", b"other bytes", finalize=refuse)
    assert wh.get("fin", "k") == b"x" * (3 * TEST_FRAME_SIZE)
