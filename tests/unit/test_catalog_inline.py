"""Small objects inline in the catalog row (schema migration 7): their placements, every path
that writes, reads, moves or rewraps object rows, the sweeper's queries, and the migration of
a schema-6 catalog."""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from dwray.core.catalog import (
    INLINE_BACKEND,
    MIGRATIONS,
    SCHEMA_VERSION,
    Catalog,
    ObjectRecord,
    PartRecord,
    Placement,
    WrappedKey,
)
from dwray.errors import BucketNotFound, CatalogError, InvalidArgument

#: a catalog at schema version 6, written through ``Catalog`` by the dwray before migration 7
SCHEMA_6_DUMP = Path(__file__).with_name("catalog_schema_6.sql")
#: the columns ``objects`` had at schema version 6
OBJECT_COLUMNS_6 = ("tenant, bucket, key, version_id, is_latest, delete_marker, size, etag, content_type, headers, "
                    "metadata, created, backend, blob_id, key_header, frame_table, kek_id, kek_version, parts, "
                    "null_version, tags")


def inline(data: bytes, kek_version: int = 1) -> Placement:
    return Placement(INLINE_BACKEND, "", b"HEADER-" + data, b"TABLE", "tenant:t1", kek_version, data)


def blob(name: str) -> Placement:
    return Placement("local", f"t1/id1/{name}", b"HEADER", b"TABLE", "tenant:t1", 1)


def obj(key: str, version: str, placement: Placement | None, created: float, **extra: object) -> ObjectRecord:
    values: dict[str, object] = {
        "tenant": "t1", "bucket": "bkt", "key": key, "version_id": version, "is_latest": True,
        "delete_marker": False, "size": 3, "etag": f"e-{version}", "content_type": "text/plain",
        "created": created, "placement": placement, **extra}
    return ObjectRecord(**values)  # type: ignore[arg-type]


def held(catalog: Catalog, key: str, version_id: str | None = None) -> bytes | None:
    placement = catalog.get_object("t1", "bkt", key, version_id).placement
    assert placement is not None
    return placement.inline


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with closing(Catalog(tmp_path / "c.db")) as catalog:
        catalog.create_bucket("t1", "bkt", "id1")
        yield catalog


def test_an_inline_placement_is_checked_and_hides_its_bytes() -> None:
    with pytest.raises(InvalidArgument, match="inline placement .* needs its sealed bytes, not None"):
        Placement(INLINE_BACKEND, "", b"H", b"T", "tenant:t1", 1)
    with pytest.raises(InvalidArgument, match="not empty bytes"):
        Placement(INLINE_BACKEND, "", b"H", b"T", "tenant:t1", 1, b"")
    with pytest.raises(InvalidArgument, match="blob id is '', not 't1/id1/x'"):
        Placement(INLINE_BACKEND, "t1/id1/x", b"H", b"T", "tenant:t1", 1, b"sealed")
    with pytest.raises(InvalidArgument, match="backend 'local' .* may not carry inline bytes"):
        Placement("local", "t1/id1/x", b"H", b"T", "tenant:t1", 1, b"sealed")
    assert not blob("x").is_inline and blob("x").inline is None
    from_buffer = Placement(INLINE_BACKEND, "", b"H", b"T", "tenant:t1", 1, bytearray(b"SEALED-BYTES"))
    assert from_buffer.is_inline and from_buffer.inline == b"SEALED-BYTES" and type(from_buffer.inline) is bytes
    text = repr(from_buffer) + repr(obj("k", "v1", from_buffer, 1.0))
    assert "SEALED" not in text and "'inline'" in text
    # Parts (and so segments) always have blobs.
    with pytest.raises(InvalidArgument, match="part 1 of upload 'up1': .* never inline"):
        PartRecord("up1", 1, 5, "p1", 1.0, inline(b"part"), "up1.1.r")


def test_inline_objects_commit_read_list_and_delete(catalog: Catalog) -> None:
    stored = catalog.commit_object(obj("small", "v1", inline(b"sealed-1"), 1.0))
    assert stored.placement == inline(b"sealed-1") and stored.null_version
    assert catalog.get_object("t1", "bkt", "small") == stored
    assert catalog.get_object("t1", "bkt", "small", "null") == stored
    assert catalog.commit_object(obj("small", "v1", inline(b"other"), 1.0)) == stored  # a retry: the stored row

    results = catalog.commit_many([obj("a", "v2", inline(b"sealed-a"), 2.0), obj("b", "v3", blob("v3"), 3.0),
                                   obj("c", "v4", inline(b"gone"), 4.0, bucket="nobkt"),
                                   obj("d", "v5", inline(b"sealed-d"), 5.0)])
    assert isinstance(results[2], BucketNotFound)
    assert [r.placement.inline for r in results if isinstance(r, ObjectRecord) and r.placement] == [
        b"sealed-a", None, b"sealed-d"]
    # Listings name the versions without their placements (so a page never carries inline bytes).
    assert [(r.key, r.placement) for r in catalog.iter_latest("t1", "bkt")] == [
        ("a", None), ("b", None), ("d", None), ("small", None)]
    assert [(r.key, r.size, r.placement) for r in catalog.versions_page("t1", "bkt", prefix="s")] == [
        ("small", stored.size, None)]
    assert [r.placement for r in catalog.iter_versions("t1", "bkt", "a")] == [inline(b"sealed-a")]

    # Overwritten in a bucket that never kept versions: the new bytes, the old row gone.
    catalog.commit_object(obj("small", "v6", inline(b"sealed-6"), 6.0))
    assert held(catalog, "small") == b"sealed-6"
    assert [r.version_id for r in catalog.iter_versions("t1", "bkt", "small")] == ["v6"]
    # Tags change the row, not its bytes.
    assert catalog.set_tags("t1", "bkt", "small", None, {"k": "v"}).placement == inline(b"sealed-6")
    assert held(catalog, "small") == b"sealed-6"

    # The sweeper sees blobs only; inline rows have none, and the inline "backend" holds none to sweep.
    assert catalog.referenced_blobs("local") == {"t1/id1/v3"}
    assert not catalog.is_referenced("local", "")
    for call in (lambda: catalog.referenced_blobs(INLINE_BACKEND), lambda: catalog.is_referenced(INLINE_BACKEND, "")):
        with pytest.raises(InvalidArgument, match="objects kept in catalog rows, not a storage backend"):
            call()
    # Usage counts plaintext sizes, as for blobs.
    assert catalog.tenant_stats() == {"t1": {"objects": 4, "bytes": 12}}

    outcome = catalog.delete_object("t1", "bkt", "small", None, None)
    assert outcome.removed is not None and outcome.removed.placement == inline(b"sealed-6")
    assert catalog.stats("t1")["objects"] == 3


def test_the_database_refuses_inline_bytes_on_a_blob_row(catalog: Catalog) -> None:
    catalog.commit_object(obj("k", "v1", blob("v1"), 1.0))
    for sql in ("UPDATE objects SET inline_data = X'00' WHERE key = 'k'",  # a blob row with inline bytes
                "UPDATE objects SET backend = 'inline' WHERE key = 'k'",  # an inline row without them
                "UPDATE objects SET backend = 'inline', inline_data = X'' WHERE key = 'k'"):  # empty bytes
        with pytest.raises(CatalogError, match="CHECK constraint failed"), catalog._write() as db:
            db.execute(sql)
    assert catalog.get_object("t1", "bkt", "k").placement == blob("v1")
    with pytest.raises(InvalidArgument, match="no placement of its own"):
        catalog.complete_upload(obj("big", "v9", inline(b"x"), 9.0, parts=2), "up1", [(1, "a"), (2, "b")])


def test_versions_keep_their_own_inline_bytes_through_suspension(catalog: Catalog) -> None:
    catalog.set_versioning("t1", "bkt", True)
    catalog.commit_object(obj("k", "v1", inline(b"one"), 1.0))
    catalog.set_versioning("t1", "bkt", False)  # Suspended
    catalog.commit_object(obj("k", "v2", inline(b"two"), 2.0))
    replaced = catalog.commit_object(obj("k", "v3", inline(b"three"), 3.0))  # replaces the null version v2
    assert replaced.null_version
    assert [(r.version_id, r.null_version, r.placement.inline) for r in catalog.iter_versions("t1", "bkt", "k")
            if r.placement] == [("v3", True, b"three"), ("v1", False, b"one")]
    assert held(catalog, "k", "null") == b"three" and held(catalog, "k", "v1") == b"one"

    # A delete while suspended puts a marker in the null version's place: the removed one keeps its bytes.
    marker = obj("k", "v4", None, 4.0, delete_marker=True, size=0, etag="")
    outcome = catalog.delete_object("t1", "bkt", "k", None, marker)
    assert outcome.removed is not None and outcome.removed.placement == inline(b"three")
    assert outcome.delete_marker is not None and outcome.delete_marker.null_version
    catalog.set_versioning("t1", "bkt", True)
    catalog.commit_object(obj("k", "v5", inline(b"five"), 5.0))
    assert held(catalog, "k") == b"five" and held(catalog, "k", "v1") == b"one"
    removed = catalog.delete_object("t1", "bkt", "k", "v1", None).removed
    assert removed is not None and removed.placement == inline(b"one")
    assert [r.version_id for r in catalog.iter_versions("t1", "bkt", "k")] == ["v5", "v4"]


def test_a_rewrap_swaps_the_header_and_keeps_the_inline_bytes(catalog: Catalog) -> None:
    catalog.commit_object(obj("k", "v1", inline(b"sealed"), 1.0))
    catalog.commit_object(obj("b", "v2", blob("v2"), 2.0))
    page = catalog.wrapped_below_page("tenant:t1", 2)
    assert catalog.count_wrapped_below("tenant:t1", 2) == 2
    rows = {row.key: row for row in page if isinstance(row, ObjectRecord)}
    assert not any(isinstance(row, WrappedKey) for row in page)
    assert rows["k"].placement == inline(b"sealed")
    assert catalog.replace_key_header(rows["k"], b"REWRAPPED", 2)
    assert not catalog.replace_key_header(rows["k"], b"AGAIN", 2)  # compare and set: the header changed
    placement = catalog.get_object("t1", "bkt", "k").placement
    assert placement is not None
    assert (placement.key_header, placement.kek_version, placement.inline) == (b"REWRAPPED", 2, b"sealed")
    assert catalog.count_wrapped_below("tenant:t1", 2) == 1


def schema_6_catalog(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_6_DUMP.read_text())
    db.execute("PRAGMA user_version = 6")
    db.close()


def every_row(db: sqlite3.Connection) -> dict[str, list[tuple[object, ...]]]:
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    return {table: sorted(db.execute(f"SELECT {OBJECT_COLUMNS_6 if table == 'objects' else '*'} FROM {table}"),
                          key=repr) for table in tables}


def test_a_schema_6_catalog_migrates_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    schema_6_catalog(path)
    with closing(sqlite3.connect(path)) as db:
        before = every_row(db)
        plain_bytes = db.execute("SELECT bytes FROM bucket_usage WHERE bucket = 'plain'").fetchone()[0]
    assert len(before["objects"]) == 9 and len(before["object_segments"]) == 2 and before["quotas"]
    assert SCHEMA_VERSION == len(MIGRATIONS) == 8

    with closing(Catalog(path)) as catalog:
        assert catalog.schema_version == 8
        after = every_row(catalog._db)
        # migration 8's tables (and SQLite's counter of the outbox's AUTOINCREMENT), empty
        assert [after.pop(table) for table in ("event_outbox", "bucket_notifications", "sqlite_sequence")] == [[]] * 3
        assert after == before
        assert catalog._db.execute("SELECT COUNT(*) FROM objects WHERE inline_data IS NOT NULL").fetchone()[0] == 0
        assert catalog._db.execute("PRAGMA foreign_key_check").fetchall() == []
        old = catalog.get_object("t1", "plain", "a")
        assert old.placement is not None and old.placement.blob_id == "t1/plain/v-a" and not old.placement.is_inline
        assert (old.headers, old.metadata) == ({"cache-control": "no-cache"}, {"m": "1"})
        assert catalog.get_object("t1", "paused", "p", "null").version_id == "v-p2"
        assert [s.placement.blob_id for s in catalog.segments_page("t1", "plain", "big", "v-big")] == [
            "t1/plain/part1", "t1/plain/part2"]
        assert catalog.referenced_blobs("local") >= {"t1/plain/v-a", "t1/plain/part1", "t1/plain/open1"}
        # The migrated catalog takes inline objects, counted as any other.
        catalog.commit_object(obj("new", "v-new", inline(b"sealed"), 12.0, bucket="plain", size=6))
        assert catalog.get_object("t1", "plain", "new").placement == inline(b"sealed")
        assert catalog.quota("t1", "plain")["usage"]["bytes"] == plain_bytes + 6 == 17 + 6
    with closing(Catalog(path)) as again:  # reopening migrates nothing twice
        assert again.schema_version == 8 and again.get_object("t1", "plain", "new").placement == inline(b"sealed")


def test_a_catalog_that_named_a_backend_inline_is_refused_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    schema_6_catalog(path)
    with closing(sqlite3.connect(path)) as db:
        db.execute("UPDATE multipart_parts SET backend = 'inline'")
        db.commit()
    with pytest.raises(CatalogError, match="rows of multipart_parts name a storage backend 'inline'"):
        Catalog(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 6  # left as it was
