"""The catalog's multipart tables: migration 2 from a version-1 file, parts, segments, completion."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from dwray.core.catalog import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Catalog,
    ObjectRecord,
    PartRecord,
    Placement,
    UploadRecord,
    WrappedKey,
)
from dwray.errors import BucketAccessDenied, BucketNotFound, CatalogError, InvalidPart, UploadNotFound


def version_1_catalog(path: Path) -> None:
    """A catalog file as dwray with schema version 1 left it, holding one of everything."""
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version=1")
    db.execute("INSERT INTO tenants VALUES ('t1', 1.0)")
    db.execute("INSERT INTO buckets VALUES ('t1', 'bkt', 'id1', 1.0, 0)")
    db.execute("INSERT INTO objects VALUES ('t1', 'bkt', 'old', 'v1', 1, 0, 3, 'e', 'text/plain', '{}', '{}', 1.0, "
               "'local', 't1/id1/old-blob', X'48', X'54', 'tenant:t1', 1)")
    db.execute("INSERT INTO multipart_uploads VALUES ('up1', 't1', 'bkt', 'big', 2.0, 'text/plain', '{}', '{}')")
    db.execute("INSERT INTO multipart_parts VALUES ('up1', 1, 5, 'p1', 2.0, 'local', 't1/id1/part-blob', X'48', "
               "X'54', 'tenant:t1', 1)")
    db.commit()
    db.close()


def obj(key: str, version: str, **extra: object) -> ObjectRecord:
    values: dict[str, object] = {
        "tenant": "t1", "bucket": "bkt", "key": key, "version_id": version, "is_latest": True,
        "delete_marker": False, "size": 3, "etag": "e", "content_type": "text/plain", "created": time.time(),
        "placement": Placement("local", f"t1/id1/{version}", b"H", b"T", "tenant:t1", 1), **extra}
    return ObjectRecord(**values)  # type: ignore[arg-type]


def part(upload_id: str, number: int, size: int, etag: str, blob: str, kek_version: int = 1) -> PartRecord:
    return PartRecord(upload_id, number, size, etag, time.time(),
                      Placement("local", blob, b"KEY-" + blob.encode(), b"TABLE", "tenant:t1", kek_version),
                      f"{upload_id}.{number}.r")


def multipart(key: str, version: str, size: int, etag: str, parts: int) -> ObjectRecord:
    return obj(key, version, size=size, etag=etag, placement=None, parts=parts)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    return catalog


def upload(catalog: Catalog, key: str = "big", upload_id: str = "up1") -> UploadRecord:
    record = UploadRecord("t1", "bkt", key, upload_id, time.time(), "text/plain", {"cache-control": "x"},
                          {"a": "b"})
    catalog.create_upload(record)
    return record


# Migration ------------------------------------------------------------------------------

def test_version_1_catalog_migrates_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    version_1_catalog(path)
    catalog = Catalog(path)
    assert catalog.schema_version == SCHEMA_VERSION
    old = catalog.get_object("t1", "bkt", "old")
    assert (old.placement, old.parts) == (Placement("local", "t1/id1/old-blob", b"H", b"T", "tenant:t1", 1), 0)
    assert catalog.get_upload("t1", "bkt", "big", "up1").content_type == "text/plain"
    assert [(p.part_number, p.etag, p.size) for p in catalog.list_parts("t1", "bkt", "big", "up1")] == [(1, "p1", 5)]
    assert catalog.referenced_blobs("local") == {"t1/id1/old-blob", "t1/id1/part-blob"}
    wrapped = catalog.wrapped_below_page("tenant:t1", 2)
    assert [type(row).__name__ for row in wrapped] == ["ObjectRecord", "WrappedKey"]
    assert wrapped[1] == WrappedKey("part", ("up1", 1), b"H", 1)
    tables = {row[0] for row in catalog._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"object_segments", "completed_uploads"} <= tables
    indexes = {row[0] for row in catalog._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"object_segments_placement", "object_segments_kek", "multipart_parts_kek"} <= indexes
    plan = " ".join(str(row) for row in catalog._db.execute(
        "EXPLAIN QUERY PLAN SELECT blob_id FROM object_segments WHERE kek_id = ? AND kek_version < ?", ("k", 2)))
    assert "object_segments_kek" in plan
    assert catalog._db.execute("PRAGMA foreign_key_check").fetchall() == []
    catalog.close()
    again = Catalog(path)  # reopening runs no migration twice
    assert again.schema_version == SCHEMA_VERSION and again.get_object("t1", "bkt", "old").version_id == "v1"


def test_migration_one_is_unchanged_and_later_ones_are_appended() -> None:
    assert len(MIGRATIONS) == 8
    assert "CREATE TABLE multipart_parts" in MIGRATIONS[0] and "object_segments" not in MIGRATIONS[0]
    assert "CREATE TABLE object_segments" in MIGRATIONS[1] and "tenants" not in MIGRATIONS[1]
    assert "DROP TABLE tenants" in MIGRATIONS[2]
    assert "CREATE TABLE tenant_usage" in MIGRATIONS[3]
    assert "CREATE TABLE quotas" in MIGRATIONS[4] and "CREATE TABLE bucket_usage" in MIGRATIONS[4]
    assert "objects_null" in MIGRATIONS[5] and "inline_data" not in MIGRATIONS[5]
    assert "ADD COLUMN inline_data" in MIGRATIONS[6]


# Uploads and parts ----------------------------------------------------------------------

def test_uploads_are_scoped_and_part_commits_replace(catalog: Catalog) -> None:
    upload(catalog)
    with pytest.raises(BucketNotFound):
        catalog.create_upload(UploadRecord("t1", "nobkt", "k", "up9", 1.0, "x"))
    for tenant, bucket, key in [("t2", "bkt", "big"), ("t1", "bkt", "other")]:
        with pytest.raises((UploadNotFound, BucketAccessDenied)):  # t2 may not see t1's bucket
            catalog.get_upload(tenant, bucket, key, "up1")
        with pytest.raises(UploadNotFound):
            catalog.commit_part(tenant, bucket, key, part("up1", 1, 5, "a", "t1/id1/a"))
    catalog.commit_part("t1", "bkt", "big", part("up1", 1, 5, "a", "t1/id1/a"))
    catalog.commit_part("t1", "bkt", "big", part("up1", 1, 5, "a", "t1/id1/a"))  # a retry: no change
    catalog.commit_part("t1", "bkt", "big", part("up1", 1, 7, "b", "t1/id1/b"))  # replaces part 1
    assert [(p.etag, p.size) for p in catalog.list_parts("t1", "bkt", "big", "up1")] == [("b", 7)]
    assert catalog.referenced_blobs("local") == {"t1/id1/b"}  # the replaced blob is the sweeper's
    upload(catalog)  # creating the same upload again (a retried call) changes nothing
    with pytest.raises(CatalogError, match="collision"):
        catalog.create_upload(UploadRecord("t1", "bkt", "else", "up1", 1.0, "x"))
    assert catalog.stats("t1")["uploads"] == 1 and catalog.stats("t1")["upload_bytes"] == 7
    catalog.abort_upload("t1", "bkt", "big", "up1")
    assert catalog.referenced_blobs("local") == set()
    with pytest.raises(UploadNotFound):
        catalog.abort_upload("t1", "bkt", "big", "up1")


def test_uploads_page_orders_by_key_then_initiation(catalog: Catalog) -> None:
    for key, uid, created in [("b", "zz", 1.0), ("b", "aa", 2.0), ("a", "mm", 3.0), ("c", "bb", 0.5)]:
        catalog.create_upload(UploadRecord("t1", "bkt", key, uid, created, "x"))
    order = [(u.key, u.upload_id) for u in catalog.uploads_page("t1", "bkt")]
    assert order == [("a", "mm"), ("b", "zz"), ("b", "aa"), ("c", "bb")]
    after = catalog.uploads_page("t1", "bkt", key_marker="b", upload_id_marker="zz")
    assert [(u.key, u.upload_id) for u in after] == [("b", "aa"), ("c", "bb")]
    gone = catalog.uploads_page("t1", "bkt", key_marker="b", upload_id_marker="ab")  # marker not there
    assert [(u.key, u.upload_id) for u in gone] == [("b", "zz"), ("c", "bb")]
    assert [u.key for u in catalog.uploads_page("t1", "bkt", key_marker="b", inclusive=True)] == ["b", "b", "c"]
    assert [u.key for u in catalog.uploads_page("t1", "bkt", prefix="b", limit=1)] == ["b"]


# Completion and segments ----------------------------------------------------------------

def complete(catalog: Catalog, version: str = "v9") -> ObjectRecord:
    upload(catalog)
    catalog.commit_part("t1", "bkt", "big", part("up1", 1, 10, "a1", "t1/id1/p1"))
    catalog.commit_part("t1", "bkt", "big", part("up1", 2, 4, "a2", "t1/id1/p2"))
    catalog.commit_part("t1", "bkt", "big", part("up1", 3, 6, "a3", "t1/id1/p3"))
    return catalog.complete_upload(multipart("big", version, 10 + 6, "x-2", 2), "up1", [(1, "a1"), (3, "a3")])


def test_completion_commits_segments_and_drops_the_upload(catalog: Catalog) -> None:
    record = complete(catalog)
    assert catalog.get_object("t1", "bkt", "big").parts == 2
    segments = catalog.segments_page("t1", "bkt", "big", "v9")
    assert [(s.index, s.offset, s.size, s.placement.blob_id, s.part_version) for s in segments] == [
        (0, 0, 10, "t1/id1/p1", "up1.1.r"), (1, 10, 6, "t1/id1/p3", "up1.3.r")]
    assert segments[1].placement.key_header == b"KEY-t1/id1/p3" and "KEY-" not in repr(segments[1])
    assert [s.index for s in catalog.segments_page("t1", "bkt", "big", "v9", start=10)] == [1]
    assert [s.index for s in catalog.segments_page("t1", "bkt", "big", "v9", start=9, limit=1)] == [0]
    with pytest.raises(UploadNotFound):
        catalog.get_upload("t1", "bkt", "big", "up1")
    # Part 2 was not named: only the named parts' blobs stay referenced.
    assert catalog.referenced_blobs("local") == {"t1/id1/p1", "t1/id1/p3"}
    assert catalog.is_referenced("local", "t1/id1/p3") and not catalog.is_referenced("local", "t1/id1/p2")
    # A retry (same parts) gets the same row; other parts or another tenant get nothing.
    again = catalog.complete_upload(multipart("big", "v10", 16, "x-2", 2), "up1", [(1, "a1"), (3, "a3")])
    assert again == record
    assert catalog.completed_upload("t1", "bkt", "big", "up1", [(1, "a1"), (3, "a3")]) == record
    assert catalog.completed_upload("t1", "bkt", "big", "up1", [(1, "a1")]) is None
    assert catalog.completed_upload("t2", "bkt", "big", "up1", [(1, "a1"), (3, "a3")]) is None
    assert catalog.tenant_stats() == {"t1": {"objects": 1, "bytes": 16}}


def test_a_part_replaced_during_completion_fails_it_whole(catalog: Catalog) -> None:
    upload(catalog)
    catalog.commit_part("t1", "bkt", "big", part("up1", 1, 10, "new", "t1/id1/p1"))
    with pytest.raises(InvalidPart, match="part 1"):
        catalog.complete_upload(multipart("big", "v9", 10, "x-1", 1), "up1", [(1, "old")])
    with pytest.raises(InvalidPart):
        catalog.complete_upload(multipart("big", "v9", 99, "x-1", 1), "up1", [(1, "new")])  # sizes disagree
    with pytest.raises(UploadNotFound):
        catalog.complete_upload(multipart("big", "v9", 10, "x-1", 1), "nope", [(1, "new")])
    assert catalog.get_upload("t1", "bkt", "big", "up1").upload_id == "up1"
    assert catalog.iter_versions("t1", "bkt", "big") == []


def test_segments_go_with_their_object_row(catalog: Catalog) -> None:
    complete(catalog)
    catalog.commit_object(obj("big", "v11"))  # overwrite (unversioned): the multipart row is displaced
    assert catalog.segments_page("t1", "bkt", "big", "v9") == []
    assert catalog.referenced_blobs("local") == {"t1/id1/v11"}
    # The completion is still remembered, though its object is gone.
    remembered = catalog.completed_upload("t1", "bkt", "big", "up1", [(1, "a1"), (3, "a3")])
    assert remembered is not None and (remembered.version_id, remembered.size, remembered.etag) == ("v9", 16, "x-2")
    catalog.delete_object("t1", "bkt", "big", None, None)
    catalog.create_bucket("t1", "other", "id2")
    catalog.create_upload(UploadRecord("t1", "other", "k", "up2", 1.0, "x"))
    catalog.delete_bucket("t1", "other")  # uploads in progress go with their bucket
    with pytest.raises(BucketNotFound):
        catalog.get_upload("t1", "other", "k", "up2")


def test_rewrap_reaches_segments_and_parts(catalog: Catalog) -> None:
    complete(catalog)
    upload(catalog, key="pending", upload_id="up2")
    catalog.commit_part("t1", "bkt", "pending", part("up2", 1, 5, "p", "t1/id1/q1"))
    catalog.commit_part("t1", "bkt", "pending", part("up2", 2, 5, "q", "t1/id1/q2", kek_version=2))
    catalog.commit_object(obj("single", "v20"))
    assert catalog.count_wrapped_below("tenant:t1", 2) == 4  # one object, two segments, one part
    rows = list(catalog.wrapped_below_page("tenant:t1", 2, limit=10))
    assert [getattr(row, "kind", "object") for row in rows] == ["object", "segment", "segment", "part"]
    assert catalog.wrapped_below_page("tenant:t1", 2, limit=2)[1].kind == "segment"  # type: ignore[union-attr]
    for row in rows:
        assert catalog.replace_key_header(row, b"REWRAPPED", 2)
        assert not catalog.replace_key_header(row, b"AGAIN", 2)  # compare and set: the header changed
    assert catalog.count_wrapped_below("tenant:t1", 2) == 0
    assert {s.placement.key_header for s in catalog.segments_page("t1", "bkt", "big", "v9")} == {b"REWRAPPED"}
    assert WrappedKey("part", ("up2", 2), b"KEY-t1/id1/q2", 2) in catalog.wrapped_below_page("tenant:t1", 3, 10)


def test_every_catalog_method_is_served_by_the_plugin_and_its_proxy() -> None:
    from actors.remote_services import RemoteCatalog
    from dwray.builtins.services import CatalogPlugin

    public = {name for name, value in vars(Catalog).items() if not name.startswith("_") and callable(value)}
    assert {"complete_upload", "segments_page", "tenant_stats"} <= public
    assert public - set(dir(CatalogPlugin)) == set()
    assert public - set(dir(RemoteCatalog)) == set()
