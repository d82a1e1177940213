"""Multipart uploads in the warehouse core, run against every backend (see the ``wh`` fixture).

The fixture's warehouse gets a small ``limits.min_part_size`` (two frames), so
parts cross frame boundaries without megabytes of test data; the limit is
enforced by the warehouse itself, in process and over Ray alike.
"""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.core.warehouse import Warehouse
from dwray.errors import (
    BucketAccessDenied,
    BucketNotFound,
    EntityTooLarge,
    EntityTooSmall,
    IntegrityError,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    KeyringError,
    ObjectNotFound,
    UploadNotFound,
)
from tests.conftest import TEST_FRAME_SIZE, make_config

F = TEST_FRAME_SIZE
MIN_PART = 2 * F


@pytest.fixture
def mp(operator_wh: Warehouse) -> Iterator[Warehouse]:
    """The ``operator_wh`` warehouse (these tests read its catalog and config), with a minimum part
    size of two frames."""
    wh = operator_wh
    wh.config = wh.config.model_copy(update={"limits": wh.config.limits.model_copy(
        update={"min_part_size": MIN_PART})})
    yield wh


def payload(size: int, seed: int) -> bytes:
    """Half compressible, half random, so both codecs are exercised."""
    random = os.urandom(size // 2)
    return ((f"part {seed};".encode() * (size // 7 + 1))[: size - len(random)]) + random


def multipart_etag(*parts: bytes) -> str:
    digests = b"".join(hashlib.md5(part).digest() for part in parts)
    return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"


def upload_object(wh: Warehouse, bucket: str, key: str, parts: list[bytes], **kwargs: object) -> str:
    """Upload ``parts`` as parts 1..n and complete; returns the object's own row's version id (a null
    version's too, which callers see as "null")."""
    upload = wh.create_multipart_upload(bucket, key, **kwargs)  # type: ignore[arg-type]
    named = [(n, wh.upload_part(bucket, key, upload.upload_id, n, data).etag)
             for n, data in enumerate(parts, start=1)]
    wh.complete_multipart_upload(bucket, key, upload.upload_id, named)
    return wh.catalog.get_object(wh.config.default_tenant, bucket, key).version_id


def tenant_blobs(wh: Warehouse) -> set[str]:
    return set(wh.backend.list_blobs(f"{wh.config.default_tenant}/"))


def segment_blobs(wh: Warehouse, bucket: str, key: str, version_id: str) -> set[str]:
    segments = wh.catalog.segments_page(wh.config.default_tenant, bucket, key, version_id, 0, 1000)
    return {s.placement.blob_id for s in segments}


# Complete and read back --------------------------------------------------------------

def test_complete_reads_back_as_the_concatenation(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    upload = mp.create_multipart_upload(
        "bkt", "big/obj", content_type="text/csv", metadata={"Origin": "test"},
        headers={"Cache-Control": "no-cache", "x-amz-checksum-sha256": "abc="})
    assert upload.bucket == "bkt" and upload.key == "big/obj" and upload.content_type == "text/csv"
    assert len(upload.upload_id) >= 40
    one, two, three = payload(MIN_PART + 123, 1), payload(3 * F + 7, 2), payload(100, 3)
    # Data as bytes, a file object and an iterator of chunks, as put takes it.
    first = mp.upload_part("bkt", "big/obj", upload.upload_id, 1, one)
    second = mp.upload_part("bkt", "big/obj", upload.upload_id, 2, io.BytesIO(two))
    third = mp.upload_part("bkt", "big/obj", upload.upload_id, 3, iter([three[:30], three[30:]]))
    assert (first.part_number, first.etag, first.size) == (1, hashlib.md5(one).hexdigest(), len(one))
    assert second.etag == hashlib.md5(two).hexdigest() and third.size == 100
    listed = mp.list_parts("bkt", "big/obj", upload.upload_id)
    assert [(p.part_number, p.etag, p.size) for p in listed.parts] == [
        (1, first.etag, len(one)), (2, second.etag, len(two)), (3, third.etag, 100)]
    assert not listed.is_truncated
    assert mp.list_multipart_uploads("bkt").uploads[0].upload_id == upload.upload_id
    with pytest.raises(ObjectNotFound):
        mp.head("bkt", "big/obj")  # nothing is visible before the completion

    info = mp.complete_multipart_upload("bkt", "big/obj", upload.upload_id,
                                        [(1, f'"{first.etag}"'), (2, second.etag.upper()), (3, third.etag)])
    whole = one + two + three
    assert info.size == len(whole) and info.etag == multipart_etag(one, two, three)
    head = mp.head("bkt", "big/obj")
    assert (head.size, head.etag, head.version_id) == (len(whole), info.etag, info.version_id)
    assert head.content_type == "text/csv" and head.metadata == {"origin": "test"}
    assert head.headers == {"cache-control": "no-cache", "x-amz-checksum-sha256": "abc="}
    assert mp.get("bkt", "big/obj") == whole
    with mp.open("bkt", "big/obj") as reader:
        assert b"".join(reader) == whole
    assert mp.list("bkt").keys == ["big/obj"]
    assert mp.list_multipart_uploads("bkt").uploads == []
    with pytest.raises(UploadNotFound):
        mp.list_parts("bkt", "big/obj", upload.upload_id)


def test_range_reads_across_part_boundaries(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    parts = [payload(MIN_PART + 500, 1), payload(MIN_PART + 1, 2), payload(F - 3, 3)]
    upload_object(mp, "bkt", "k", parts)
    whole = b"".join(parts)
    edge1, edge2 = len(parts[0]), len(parts[0]) + len(parts[1])
    for first, last in [(0, 0), (edge1 - 1, edge1), (edge1 - 10, edge2 + 10), (edge1, edge2 - 1),
                        (edge2, edge2), (5, len(whole) - 5), (len(whole) - 1, len(whole) - 1),
                        (F - 1, 3 * F + 1), (edge1 + 17, None), (0, 10 * len(whole))]:
        expected = whole[first:] if last is None else whole[first:last + 1]
        assert mp.get("bkt", "k", range=(first, last)) == expected, (first, last)
    with mp.open("bkt", "k", range=(edge1 - 3, edge2 + 3)) as reader:
        got = b""
        while chunk := reader.read(5):  # small reads, across both part boundaries
            assert len(chunk) <= 5
            got += chunk
    assert got == whole[edge1 - 3:edge2 + 4]
    with pytest.raises(InvalidRange):
        mp.get("bkt", "k", range=(len(whole), None))


def test_empty_last_part_and_empty_object(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    body = payload(MIN_PART, 1)
    upload_object(mp, "bkt", "trailing-empty", [body, b""])
    assert mp.get("bkt", "trailing-empty") == body
    assert mp.get("bkt", "trailing-empty", range=(MIN_PART - 2, None)) == body[-2:]
    upload_object(mp, "bkt", "empty", [b""])
    assert mp.head("bkt", "empty").size == 0 and mp.head("bkt", "empty").etag == multipart_etag(b"")
    assert mp.get("bkt", "empty") == b""


# Parts: replace, drop, copy ---------------------------------------------------------------

def test_replacing_a_part_and_dropping_unnamed_parts(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    upload = mp.create_multipart_upload("bkt", "k")
    old = mp.upload_part("bkt", "k", upload.upload_id, 1, payload(MIN_PART, 1))
    new_body = payload(MIN_PART + 9, 2)
    new = mp.upload_part("bkt", "k", upload.upload_id, 1, new_body)
    dropped = mp.upload_part("bkt", "k", upload.upload_id, 2, payload(MIN_PART, 3))
    last_body = payload(77, 4)
    last = mp.upload_part("bkt", "k", upload.upload_id, 5, last_body)
    parts = mp.list_parts("bkt", "k", upload.upload_id).parts
    assert [(p.part_number, p.etag) for p in parts] == [(1, new.etag), (2, dropped.etag), (5, last.etag)]
    with pytest.raises(InvalidPart, match="part 1 .*ETag"):
        mp.complete_multipart_upload("bkt", "k", upload.upload_id, [(1, old.etag), (5, last.etag)])
    info = mp.complete_multipart_upload("bkt", "k", upload.upload_id, [(1, new.etag), (5, last.etag)])
    assert mp.get("bkt", "k") == new_body + last_body
    assert info.etag == multipart_etag(new_body, last_body)


def test_upload_part_copy_streams_ranges_of_other_objects(mp: Warehouse) -> None:
    mp.create_bucket("src")
    mp.create_bucket("dst")
    single = payload(5 * F + 11, 1)
    mp.put("src", "single", single)
    parts = [payload(MIN_PART + 5, 2), payload(F + 1, 3)]
    upload_object(mp, "src", "multi", parts)
    multi = b"".join(parts)
    upload = mp.create_multipart_upload("dst", "copy")
    first = mp.upload_part_copy("dst", "copy", upload.upload_id, 1, "src", "single")
    # A range across the source's own part boundary.
    second = mp.upload_part_copy("dst", "copy", upload.upload_id, 2, "src", "multi",
                                 range=(F, MIN_PART + F + 3))
    third = mp.upload_part_copy("dst", "copy", upload.upload_id, 3, "src", "multi", range=(10, 19))
    expected = [single, multi[F:MIN_PART + F + 4], multi[10:20]]
    assert [first.etag, second.etag, third.etag] == [hashlib.md5(p).hexdigest() for p in expected]
    mp.complete_multipart_upload("dst", "copy", upload.upload_id,
                                 [(1, first.etag), (2, second.etag), (3, third.etag)])
    assert mp.get("dst", "copy") == b"".join(expected)
    with pytest.raises(ObjectNotFound):
        mp.upload_part_copy("dst", "copy2", mp.create_multipart_upload("dst", "copy2").upload_id, 1, "src", "nope")
    with pytest.raises(UploadNotFound):
        mp.upload_part_copy("dst", "copy", upload.upload_id, 1, "src", "single")  # completed already


def test_copy_and_get_table_of_a_multipart_object(mp: Warehouse) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    mp.create_bucket("bkt")
    table = pa.table({"id": list(range(20_000)), "v": [str(i) * 3 for i in range(20_000)]})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="none")
    raw = sink.getvalue().to_pybytes()
    assert len(raw) > 2 * MIN_PART
    upload_object(mp, "bkt", "t.parquet", [raw[:MIN_PART], raw[MIN_PART:2 * MIN_PART + 3], raw[2 * MIN_PART + 3:]])
    assert mp.get_table("bkt", "t.parquet").equals(table)
    copied = mp.copy("bkt", "t.parquet", "bkt", "copy.parquet")
    assert copied.etag == hashlib.md5(raw).hexdigest()  # a copy is one blob again
    assert mp.get("bkt", "copy.parquet") == raw


# S3's completion rules --------------------------------------------------------------------

def test_completion_errors_leave_the_upload_usable(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    upload = mp.create_multipart_upload("bkt", "k")
    uid = upload.upload_id
    small = mp.upload_part("bkt", "k", uid, 1, payload(MIN_PART - 1, 1))
    body2, body3 = payload(MIN_PART, 2), payload(10, 3)
    two = mp.upload_part("bkt", "k", uid, 2, body2)
    three = mp.upload_part("bkt", "k", uid, 3, body3)
    with pytest.raises(InvalidPartOrder):
        mp.complete_multipart_upload("bkt", "k", uid, [(2, two.etag), (1, small.etag)])
    with pytest.raises(InvalidPartOrder):
        mp.complete_multipart_upload("bkt", "k", uid, [(2, two.etag), (2, two.etag)])
    with pytest.raises(InvalidPart, match="not uploaded"):
        mp.complete_multipart_upload("bkt", "k", uid, [(2, two.etag), (4, three.etag)])
    with pytest.raises(InvalidPart, match="ETag"):
        mp.complete_multipart_upload("bkt", "k", uid, [(2, two.etag), (3, "0" * 32)])
    with pytest.raises(EntityTooSmall) as too_small:
        mp.complete_multipart_upload("bkt", "k", uid, [(1, small.etag), (2, two.etag)])
    assert (too_small.value.part_number, too_small.value.minimum) == (1, MIN_PART)
    with pytest.raises(InvalidArgument, match="at least one"):
        mp.complete_multipart_upload("bkt", "k", uid, [])
    for bad in (0, mp.config.limits.max_parts + 1, "1", True):
        with pytest.raises(InvalidArgument, match="part number"):
            mp.upload_part("bkt", "k", uid, bad, b"x")  # type: ignore[arg-type]
    with pytest.raises(UploadNotFound):
        mp.upload_part("bkt", "k", "not-an-upload", 1, b"x")
    with pytest.raises(BucketNotFound):
        mp.create_multipart_upload("nobucket", "k")
    # The small part is fine as the last one.
    info = mp.complete_multipart_upload("bkt", "k", uid, [(2, two.etag), (3, three.etag)])
    assert mp.get("bkt", "k") == body2 + body3 and info.size == len(body2) + len(body3)


def test_completion_is_idempotent(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    upload = mp.create_multipart_upload("bkt", "k")
    body1, body2 = payload(MIN_PART, 1), payload(5, 2)
    parts = [(1, mp.upload_part("bkt", "k", upload.upload_id, 1, body1).etag),
             (2, mp.upload_part("bkt", "k", upload.upload_id, 2, body2).etag)]
    first = mp.complete_multipart_upload("bkt", "k", upload.upload_id, parts)
    again = mp.complete_multipart_upload("bkt", "k", upload.upload_id, [(n, f'"{e}"') for n, e in parts])
    assert (again.version_id, again.etag, again.size) == (first.version_id, first.etag, first.size)
    assert [v.version_id for v in mp.versions("bkt", "k")] == [first.version_id]
    with pytest.raises(UploadNotFound):
        mp.complete_multipart_upload("bkt", "k", upload.upload_id, parts[:1])  # other parts: not a retry
    with pytest.raises(UploadNotFound):
        mp.complete_multipart_upload("bkt", "other", upload.upload_id, parts)  # other key
    with pytest.raises(UploadNotFound):
        mp.abort_multipart_upload("bkt", "k", upload.upload_id)
    assert mp.get("bkt", "k") == body1 + body2


def test_metadata_limit_comes_from_config_and_checksum_headers_are_stored(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"max_metadata_bytes": 10})})
    with Warehouse(config) as wh:
        wh.create_bucket("bkt")
        with pytest.raises(InvalidArgument, match="limit is 10"):
            wh.put("bkt", "k", b"x", metadata={"name": "too long"})
        with pytest.raises(InvalidArgument, match="limit is 10"):
            wh.create_multipart_upload("bkt", "k", metadata={"name": "too long"})
        checksums = {"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-crc32c": "BBBBBB==",
                     "x-amz-checksum-crc64nvme": "CCCCCCCCCCC=", "x-amz-checksum-sha1": "s1",
                     "x-amz-checksum-sha256": "s256"}
        wh.put("bkt", "k", b"x", metadata={"n": "12345678"}, headers=checksums)
        assert wh.head("bkt", "k").headers == checksums


def test_part_over_the_maximum_object_size(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"max_object_size": 3 * F})})
    with Warehouse(config) as wh:
        wh.create_bucket("bkt")
        upload = wh.create_multipart_upload("bkt", "k")
        with pytest.raises(EntityTooLarge):
            wh.upload_part("bkt", "k", upload.upload_id, 1, iter([b"x" * F] * 4))
        assert wh.list_parts("bkt", "k", upload.upload_id).parts == []
        assert list(wh.backend.list_blobs("")) == []
        fits = wh.upload_part("bkt", "k", upload.upload_id, 1, b"x" * (3 * F))
        assert fits.size == 3 * F


# Abort, listing -------------------------------------------------------------------------------

def test_abort_and_sweep_remove_only_unreferenced_part_blobs(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    kept_parts = [payload(MIN_PART, 1), payload(300, 2)]
    upload = mp.create_multipart_upload("bkt", "done")
    named = [(n, mp.upload_part("bkt", "done", upload.upload_id, n, body).etag)
             for n, body in enumerate(kept_parts, start=1)]
    mp.upload_part("bkt", "done", upload.upload_id, 7, payload(50, 3))  # uploaded, never named
    mp.complete_multipart_upload("bkt", "done", upload.upload_id, named)
    version = mp.catalog.get_object(mp.config.default_tenant, "bkt", "done").version_id  # the row's own id
    aborted = mp.create_multipart_upload("bkt", "gone")
    for n in (1, 2):
        mp.upload_part("bkt", "gone", aborted.upload_id, n, payload(MIN_PART, n))
    assert mp.stats()["uploads"] == 1 and mp.stats()["upload_bytes"] == 2 * MIN_PART
    mp.abort_multipart_upload("bkt", "gone", aborted.upload_id)
    for call in (lambda: mp.list_parts("bkt", "gone", aborted.upload_id),
                 lambda: mp.upload_part("bkt", "gone", aborted.upload_id, 3, b"x"),
                 lambda: mp.abort_multipart_upload("bkt", "gone", aborted.upload_id)):
        with pytest.raises(UploadNotFound):
            call()
    assert mp.list_multipart_uploads("bkt").uploads == []
    live = segment_blobs(mp, "bkt", "done", version)
    assert len(live) == 2 and len(tenant_blobs(mp)) == 5
    report = mp.sweep(tenant=mp.config.default_tenant)  # default grace: everything is younger
    assert (report.deleted, report.young, report.referenced) == (0, 3, 2)
    report = mp.sweep(grace_seconds=0, tenant=mp.config.default_tenant)
    assert report.deleted == 3
    assert tenant_blobs(mp) == live
    assert mp.get("bkt", "done") == b"".join(kept_parts)


def test_list_parts_pages(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    upload = mp.create_multipart_upload("bkt", "k")
    for n in (1, 2, 4, 8, 9):
        mp.upload_part("bkt", "k", upload.upload_id, n, str(n).encode())
    page = mp.list_parts("bkt", "k", upload.upload_id, max_parts=2)
    assert [p.part_number for p in page.parts] == [1, 2] and page.is_truncated
    assert page.next_part_number_marker == 2
    page = mp.list_parts("bkt", "k", upload.upload_id, max_parts=2, part_number_marker=2)
    assert [p.part_number for p in page.parts] == [4, 8] and page.next_part_number_marker == 8
    page = mp.list_parts("bkt", "k", upload.upload_id, max_parts=2, part_number_marker=8)
    assert [p.part_number for p in page.parts] == [9] and not page.is_truncated
    assert page.next_part_number_marker is None
    with pytest.raises(InvalidArgument, match="max_parts"):
        mp.list_parts("bkt", "k", upload.upload_id, max_parts=-1)


def test_list_multipart_uploads_orders_groups_and_pages(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    made = {}
    for key in ["b", "a/1", "a/2", "c", "b"]:
        made.setdefault(key, []).append(mp.create_multipart_upload("bkt", key).upload_id)
    everything = mp.list_multipart_uploads("bkt")
    assert [(u.key, u.upload_id) for u in everything.uploads] == [
        ("a/1", made["a/1"][0]), ("a/2", made["a/2"][0]), ("b", made["b"][0]), ("b", made["b"][1]),
        ("c", made["c"][0])]  # by key, then by initiation time
    grouped = mp.list_multipart_uploads("bkt", delimiter="/")
    assert grouped.common_prefixes == ["a/"] and [u.key for u in grouped.uploads] == ["b", "b", "c"]
    assert [u.key for u in mp.list_multipart_uploads("bkt", prefix="a/").uploads] == ["a/1", "a/2"]

    page = mp.list_multipart_uploads("bkt", max_uploads=3)
    assert [u.key for u in page.uploads] == ["a/1", "a/2", "b"] and page.is_truncated
    assert (page.next_key_marker, page.next_upload_id_marker) == ("b", made["b"][0])
    rest = mp.list_multipart_uploads("bkt", key_marker=page.next_key_marker,
                                     upload_id_marker=page.next_upload_id_marker)
    assert [(u.key, u.upload_id) for u in rest.uploads] == [("b", made["b"][1]), ("c", made["c"][0])]
    assert not rest.is_truncated
    assert [u.key for u in mp.list_multipart_uploads("bkt", key_marker="b").uploads] == ["c"]

    first = mp.list_multipart_uploads("bkt", delimiter="/", max_uploads=1)
    assert first.common_prefixes == ["a/"] and first.uploads == [] and first.next_key_marker == "a/"
    second = mp.list_multipart_uploads("bkt", delimiter="/", max_uploads=2, key_marker=first.next_key_marker)
    assert [u.key for u in second.uploads] == ["b", "b"] and second.is_truncated
    with pytest.raises(BucketNotFound):
        mp.list_multipart_uploads("nobucket")


# Tenancy and integrity --------------------------------------------------------------------

def test_upload_ids_are_scoped_to_tenant_bucket_and_key(mp: Warehouse) -> None:
    acme, globex = f"{mp.config.default_tenant}-acme", f"{mp.config.default_tenant}-globex"
    mp.create_bucket("shared", tenant=acme)
    mp.create_bucket("other", tenant=acme)
    mp.create_bucket("globex-own", tenant=globex)
    upload = mp.create_multipart_upload("shared", "k", tenant=acme)
    part = mp.upload_part("shared", "k", upload.upload_id, 1, b"acme part", tenant=acme)
    uid = upload.upload_id
    for bucket, key, tenant in [("shared", "k", globex), ("globex-own", "k", globex), ("shared", "k2", acme),
                                ("other", "k", acme)]:
        refused = BucketAccessDenied if (bucket, tenant) == ("shared", globex) else UploadNotFound
        with pytest.raises(refused):
            mp.upload_part(bucket, key, uid, 1, b"intruder", tenant=tenant)
        with pytest.raises(refused):
            mp.list_parts(bucket, key, uid, tenant=tenant)
        with pytest.raises(refused):
            mp.complete_multipart_upload(bucket, key, uid, [(1, part.etag)], tenant=tenant)
        with pytest.raises(refused):
            mp.abort_multipart_upload(bucket, key, uid, tenant=tenant)
    with pytest.raises(BucketAccessDenied):
        mp.list_multipart_uploads("shared", tenant=globex)
    # The intruders changed nothing.
    assert [p.etag for p in mp.list_parts("shared", "k", uid, tenant=acme).parts] == [part.etag]
    mp.complete_multipart_upload("shared", "k", uid, [(1, part.etag)], tenant=acme)
    assert mp.get("shared", "k", tenant=acme) == b"acme part"
    with pytest.raises(BucketAccessDenied):
        mp.get("shared", "k", tenant=globex)
    stats = mp.catalog.tenant_stats()
    assert stats[acme] == {"objects": 1, "bytes": 9} and stats[globex] == {"objects": 0, "bytes": 0}


def test_part_frames_are_bound_to_their_part(tmp_path: Path) -> None:
    """A segment row pointed at another part's blob (same DEK, same bytes) fails to open:
    the AAD binds each part's own version string."""
    config = make_config(tmp_path / "data")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"min_part_size": MIN_PART})})
    with Warehouse(config) as wh:
        wh.create_bucket("bkt")
        parts = [payload(MIN_PART, 1), payload(MIN_PART, 2)]
        version = upload_object(wh, "bkt", "k", parts)
        with wh.catalog._write() as db:
            db.execute("UPDATE object_segments SET (blob_id, key_header, frame_table) = (SELECT blob_id, "
                       "key_header, frame_table FROM object_segments WHERE part_index = 0) WHERE part_index = 1 "
                       "AND version_id = ?", (version,))
        assert wh.get("bkt", "k", range=(0, MIN_PART - 1)) == parts[0]
        with pytest.raises(IntegrityError, match="part 2|frame"):
            wh.get("bkt", "k")


# Keys, overwrite, delete --------------------------------------------------------------------------

def test_rotate_rewrap_and_retire_keep_multipart_objects_readable(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    parts = [payload(MIN_PART, 1), payload(MIN_PART + 1, 2), payload(3, 3)]
    upload_object(mp, "bkt", "done", parts)
    pending = mp.create_multipart_upload("bkt", "pending")
    early = payload(MIN_PART, 4)
    early_part = mp.upload_part("bkt", "pending", pending.upload_id, 1, early)
    assert mp.rotate_keys() == 2
    late = payload(10, 5)
    late_part = mp.upload_part("bkt", "pending", pending.upload_id, 2, late)
    with pytest.raises(KeyringError, match="rewrap first"):
        mp.retire_keys(2)
    assert mp.rewrap() == 4  # three segments and one part in progress
    mp.retire_keys(2)
    assert mp.rewrap() == 0
    assert mp.get("bkt", "done") == b"".join(parts)
    mp.complete_multipart_upload("bkt", "pending", pending.upload_id, [(1, early_part.etag), (2, late_part.etag)])
    assert mp.get("bkt", "pending") == early + late


def test_overwriting_and_deleting_multipart_objects(mp: Warehouse) -> None:
    mp.create_bucket("bkt")
    tenant = mp.config.default_tenant
    first = upload_object(mp, "bkt", "k", [payload(MIN_PART, 1), payload(9, 2)])
    old_blobs = segment_blobs(mp, "bkt", "k", first)
    mp.put("bkt", "k", b"single blob now")
    assert mp.get("bkt", "k") == b"single blob now"
    assert segment_blobs(mp, "bkt", "k", first) == set()  # the segments went with their row
    assert not old_blobs & mp.catalog.referenced_blobs(mp.backend_name)
    mp.sweep(grace_seconds=0, tenant=tenant)
    assert not any(mp.backend.exists(blob) for blob in old_blobs)
    assert mp.get("bkt", "k") == b"single blob now"

    parts = [payload(MIN_PART, 3), payload(20, 4)]
    second = upload_object(mp, "bkt", "k", parts)  # a multipart object over a single-blob one
    assert mp.get("bkt", "k") == b"".join(parts)
    assert mp.delete("bkt", "k").existed
    with pytest.raises(ObjectNotFound):
        mp.head("bkt", "k")
    assert segment_blobs(mp, "bkt", "k", second) == set()

    mp.create_bucket("versioned", versioning=True)
    v1_parts, v2_parts = [payload(MIN_PART, 5), b"one"], [payload(MIN_PART, 6), b"two"]
    v1 = upload_object(mp, "versioned", "k", v1_parts)
    v2 = upload_object(mp, "versioned", "k", v2_parts)
    assert mp.get("versioned", "k") == b"".join(v2_parts)
    assert mp.get("versioned", "k", version_id=v1) == b"".join(v1_parts)
    assert mp.get("versioned", "k", version_id=v2, range=(MIN_PART - 1, None)) == v2_parts[0][-1:] + b"two"
    assert mp.catalog.tenant_stats()[tenant]["objects"] == 1
    assert mp.stats()["objects"] == 2
