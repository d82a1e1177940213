"""The SQLite catalog: schema, durability settings, migrations, transactions."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from dwray.core.catalog import SCHEMA_VERSION, Catalog, ObjectRecord, Placement
from dwray.errors import BucketNotFound, CatalogError, SchemaVersionError


def record(key: str, version: str, **extra: object) -> ObjectRecord:
    values = dict(tenant="t1", bucket="bkt", key=key, version_id=version, is_latest=True, delete_marker=False,
                  size=3, etag="e", content_type="text/plain", created=float(len(version)),
                  placement=Placement("local", f"t1/x/{version}", b"H", b"T", "tenant:t1", 1))
    values.update(extra)
    return ObjectRecord(**values)  # type: ignore[arg-type]


def test_durability_pragmas_and_schema(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    assert catalog._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert catalog._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert catalog._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert catalog.schema_version == SCHEMA_VERSION
    tables = {row[0] for row in catalog._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"buckets", "objects", "multipart_uploads", "multipart_parts"} <= tables
    assert "tenants" not in tables  # the identity store is the registry of tenants
    catalog.close()
    assert Catalog(tmp_path / "c.db", synchronous="EXTRA")._db.execute("PRAGMA synchronous").fetchone()[0] == 3


def test_reopen_keeps_committed_rows_and_migration_is_idempotent(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.commit_object(record("k", "v1"))
    catalog.close()
    again = Catalog(tmp_path / "c.db")
    assert again.get_object("t1", "bkt", "k").version_id == "v1"
    assert again.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Catalog(tmp_path / "c.db").close()
    db = sqlite3.connect(tmp_path / "c.db")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(SchemaVersionError, match="newer than this dwray supports"):
        Catalog(tmp_path / "c.db")


def test_garbage_file_is_a_catalog_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(CatalogError, match="cannot open catalog"):
        Catalog(path)


def test_commit_needs_bucket_and_failed_transaction_rolls_back(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    with pytest.raises(BucketNotFound):
        catalog.commit_object(record("k", "v1"))
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.commit_object(record("k", "v1"))
    with pytest.raises(CatalogError):
        # A statement that breaks a constraint fails the whole transaction.
        with catalog._write() as db:
            db.execute("DELETE FROM objects")
            db.execute("INSERT INTO objects (tenant) VALUES ('broken')")
    assert catalog.get_object("t1", "bkt", "k").version_id == "v1"  # the DELETE was rolled back


def test_unversioned_commit_displaces_previous_version(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.commit_object(record("k", "v1"))
    committed = catalog.commit_object(record("k", "v22"))
    assert committed.version_id == "v22" and committed.null_version and committed.public_version_id == "null"
    assert [r.version_id for r in catalog.iter_versions("t1", "bkt", "k")] == ["v22"]
    assert catalog.referenced_blobs("local") == {"t1/x/v22"}
    assert not catalog.is_referenced("local", "t1/x/v1")


def test_concurrent_writers_from_two_connections(tmp_path: Path) -> None:
    first, second = Catalog(tmp_path / "c.db"), Catalog(tmp_path / "c.db")
    first.create_bucket("t1", "bkt", "id1")
    errors: list[BaseException] = []

    def write(catalog: Catalog, tag: str) -> None:
        try:
            for i in range(50):
                catalog.commit_object(record(f"{tag}{i}", f"v{tag}{i}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(c, tag)) for c, tag in ((first, "a"), (second, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sum(1 for _ in first.iter_latest("t1", "bkt")) == 100


def test_records_hide_key_material_in_repr(tmp_path: Path) -> None:
    placement = Placement("local", "t1/x/v1", b"SECRET-HEADER", b"SECRET-TABLE", "tenant:t1", 1)
    text = repr(record("k", "v1", placement=placement)) + repr(placement)
    assert "SECRET-" not in text and "'k'" in text


def test_recommitting_the_same_row_is_a_no_op(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1", versioning=True)
    catalog.commit_object(record("k", "v1"))
    first = catalog.get_object("t1", "bkt", "k")
    assert catalog.commit_object(record("k", "v1")) == first  # a retried commit whose answer was lost
    assert [r.version_id for r in catalog.iter_versions("t1", "bkt", "k")] == ["v1"]
    assert catalog.get_object("t1", "bkt", "k").is_latest


def test_latest_page_respects_prefix_start_and_limit(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    for key in ["a/1", "a/2", "a/3", "b/1"]:
        catalog.commit_object(record(key, "v-" + key))
    assert [r.key for r in catalog.latest_page("t1", "bkt", "a/", None, True, 2)] == ["a/1", "a/2"]
    assert [r.key for r in catalog.latest_page("t1", "bkt", "a/", "a/2", False, 10)] == ["a/3"]
    assert [r.key for r in catalog.latest_page("t1", "bkt", "a/", "a/2", True, 10)] == ["a/2", "a/3"]
    assert [r.key for r in catalog.iter_latest("t1", "bkt", batch=1)] == ["a/1", "a/2", "a/3", "b/1"]


def test_group_commit_isolates_a_failing_record(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    results = catalog.commit_many([record("a", "v1"), record("b", "v2", bucket="gone"), record("c", "v3")])
    assert [r.key for r in results[::2]] == ["a", "c"]  # type: ignore[union-attr]
    assert isinstance(results[1], BucketNotFound)
    assert [r.key for r in catalog.iter_latest("t1", "bkt")] == ["a", "c"]
