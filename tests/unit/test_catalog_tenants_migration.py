"""Migration 3: the catalog's ``tenants`` table goes (the identity store is the one registry of
tenants), and ``buckets`` is rebuilt without its foreign key to it, keeping every row."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dwray.core.catalog import MIGRATIONS, SCHEMA_VERSION, Catalog, Placement
from dwray.errors import BucketNotEmpty, CatalogError, UploadNotFound

PLACEMENT_COLUMNS = "'local', 't1/id1/{}', X'48', X'54', 'tenant:t1', 1"


def version_2_catalog(path: Path) -> None:
    """A catalog file as dwray with schema version 2 left it: the old DDL replayed, then rows of
    every kind, uploads in progress among them (the rebuild must not cascade to them)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA foreign_keys=ON")
    for migration in MIGRATIONS[:2]:
        db.executescript(migration)
    db.execute("PRAGMA user_version=2")
    db.executescript(f"""
        INSERT INTO tenants VALUES ('t1', 1.0), ('t2', 1.0), ('gone', 1.0);
        INSERT INTO buckets VALUES ('t1', 'bkt', 'id1', 1.0, 0), ('t1', 'versioned', 'id2', 2.0, 1),
                                   ('t2', 'bkt2', 'id3', 3.0, 0);
        INSERT INTO objects VALUES ('t1', 'bkt', 'one', 'v1', 1, 0, 3, 'e', 'text/plain', '{{}}', '{{}}', 1.0,
                                    {PLACEMENT_COLUMNS.format('one')}, 0);
        INSERT INTO objects VALUES ('t1', 'bkt', 'big', 'v2', 1, 0, 8, 'm-2', 'text/plain', '{{}}', '{{}}', 2.0,
                                    'local', NULL, NULL, NULL, NULL, NULL, 2);
        INSERT INTO object_segments VALUES ('t1', 'bkt', 'big', 'v2', 0, 0, 5, {PLACEMENT_COLUMNS.format('s0')},
                                            'u0.1.r'),
                                           ('t1', 'bkt', 'big', 'v2', 1, 5, 3, {PLACEMENT_COLUMNS.format('s1')},
                                            'u0.2.r');
        INSERT INTO completed_uploads VALUES ('u0', 't1', 'bkt', 'big', 'v2', '[[1, "a"], [2, "b"]]', 'm-2', 8, 2.0);
        INSERT INTO multipart_uploads VALUES ('up1', 't1', 'bkt', 'pending', 3.0, 'text/plain', '{{}}', '{{}}');
        INSERT INTO multipart_parts VALUES ('up1', 1, 5, 'p1', 3.0, {PLACEMENT_COLUMNS.format('p1')}, 'up1.1.r');
        INSERT INTO objects VALUES ('t2', 'bkt2', 'two', 'v3', 1, 0, 4, 'e', 'text/plain', '{{}}', '{{}}', 3.0,
                                    'local', 't2/id3/two', X'48', X'54', 'tenant:t2', 1, 0);
    """)
    db.commit()
    db.close()


def schema(db: sqlite3.Connection) -> dict[str, set[str]]:
    rows = db.execute("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'").fetchall()
    found: dict[str, set[str]] = {}
    for kind, name in rows:
        found.setdefault(kind, set()).add(name)
    return found


def test_a_version_2_catalog_migrates_keeping_every_row(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    version_2_catalog(path)
    before = sqlite3.connect(path)
    old_schema = schema(before)
    counts = {table: before.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
              for table in old_schema["table"] - {"tenants"}}
    before.close()

    catalog = Catalog(path)
    assert catalog.schema_version == SCHEMA_VERSION
    new_schema = schema(catalog._db)
    # 4 adds usage counts; 5 quotas and per-bucket usage; 6 null versions and global bucket names;
    # 8 the event outbox and bucket notification rules
    assert new_schema["table"] == old_schema["table"] - {"tenants"} | {
        "tenant_usage", "quotas", "bucket_usage", "event_outbox", "bucket_notifications"}
    assert new_schema["index"] == old_schema["index"] | {"objects_null", "buckets_global_name"}  # every index kept
    assert {table: catalog._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in counts} == counts
    # Buckets keep their rows, primary key and unique ids, and refer to no tenants table.
    assert [(b.name, b.bucket_id, b.created, b.versioning) for b in catalog.list_buckets("t1")] == [
        ("bkt", "id1", 1.0, False), ("versioned", "id2", 2.0, True)]
    assert catalog._db.execute("PRAGMA foreign_key_list(buckets)").fetchall() == []
    autoindexes = catalog._db.execute("SELECT name FROM sqlite_master WHERE type = 'index' "
                                      "AND tbl_name = 'buckets'").fetchall()
    # primary key (tenant, name), unique bucket_id, and (migration 6) unique names across tenants
    assert len(autoindexes) == 3
    with pytest.raises(CatalogError), catalog._write() as db:
        db.execute("INSERT INTO buckets VALUES ('t9', 'x', 'id1', 9.0, 0)")  # bucket ids stay unique
    assert catalog._db.execute("PRAGMA foreign_key_check").fetchall() == []
    assert catalog._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1

    # Objects, segments, uploads in progress and remembered completions read as before.
    one = catalog.get_object("t1", "bkt", "one")
    assert one.placement == Placement("local", "t1/id1/one", b"H", b"T", "tenant:t1", 1)
    big = catalog.get_object("t1", "bkt", "big")
    assert (big.placement, big.parts) == (None, 2)  # an old multipart row names a backend, not a blob
    assert [s.placement.blob_id for s in catalog.segments_page("t1", "bkt", "big", "v2")] == [
        "t1/id1/s0", "t1/id1/s1"]
    assert catalog.completed_upload("t1", "bkt", "big", "u0", [(1, "a"), (2, "b")]) == big
    assert [p.etag for p in catalog.list_parts("t1", "bkt", "pending", "up1")] == ["p1"]
    assert catalog.get_object("t2", "bkt2", "two").size == 4
    assert catalog.referenced_blobs("local") == {"t1/id1/one", "t1/id1/s0", "t1/id1/s1", "t1/id1/p1",
                                                 "t2/id3/two"}

    # The rebuilt table is still the one the others reference: their foreign keys hold.
    with pytest.raises(BucketNotEmpty):
        catalog.delete_bucket("t2", "bkt2")
    with pytest.raises(CatalogError), catalog._write() as db:
        db.execute("INSERT INTO objects (tenant, bucket, key, version_id, is_latest, size, etag, content_type, "
                   "created) VALUES ('t1', 'nobucket', 'k', 'v', 1, 0, '', '', 0)")
    catalog.delete_object("t1", "bkt", "one", None, None)
    catalog.delete_object("t1", "bkt", "big", None, None)
    assert catalog._db.execute("SELECT COUNT(*) FROM object_segments").fetchone()[0] == 0  # cascade
    catalog.delete_bucket("t1", "bkt")
    with pytest.raises(UploadNotFound):  # the upload went with its bucket (cascade)
        catalog._upload_in(catalog._db, "t1", "bkt", "pending", "up1")
    assert catalog._db.execute("SELECT COUNT(*) FROM multipart_parts").fetchone()[0] == 0

    # A bucket of a tenant the catalog never saw needs no tenants row.
    catalog.create_bucket("new-tenant", "fresh", "id9")
    assert catalog.tenant_stats() == {"new-tenant": {"objects": 0, "bytes": 0}, "t1": {"objects": 0, "bytes": 0},
                                      "t2": {"objects": 1, "bytes": 4}}
    catalog.close()
    again = Catalog(path)  # reopening migrates nothing twice
    assert again.schema_version == SCHEMA_VERSION and [b.name for b in again.list_buckets("new-tenant")] == ["fresh"]
    again.close()


def test_a_new_catalog_has_no_tenants_table_and_stats_follow_buckets(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    assert "tenants" not in schema(catalog._db)["table"]
    assert catalog.tenant_stats() == {}
    catalog.create_bucket("acme", "b", "id1")
    assert catalog.tenant_stats() == {"acme": {"objects": 0, "bytes": 0}}
    catalog.delete_bucket("acme", "b")
    assert catalog.tenant_stats() == {}  # a tenant holding no bucket stores nothing
