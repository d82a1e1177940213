"""Per-tenant object and byte counts kept by the catalog as objects change (schema migration 4).

``/metrics`` reads ``Catalog.tenant_stats`` on every scrape, so it reads a
table of one row per tenant that triggers keep in the same transaction as each
object change, instead of scanning every object. These tests drive a real
warehouse on the local disk through every way an object comes and goes (put,
overwrite, delete, delete markers and versions, multipart completion, copy,
bucket removal) and compare the kept counts with a full scan after each step.
"""
from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.core.catalog import MIGRATIONS, Catalog
from dwray.core.warehouse import Warehouse
from tests.conftest import make_config

PART = 5 << 20  # S3's smallest part but the last

SCAN = ("SELECT b.tenant, COUNT(o.key), COALESCE(SUM(o.size), 0) FROM (SELECT DISTINCT tenant FROM buckets) b "
        "LEFT JOIN objects o ON o.tenant = b.tenant AND o.is_latest = 1 AND o.delete_marker = 0 "
        "GROUP BY b.tenant")


def scanned(catalog: Catalog) -> dict[str, dict[str, int]]:
    """The counts the old per-scrape query found by reading every object."""
    return {name: {"objects": count, "bytes": size} for name, count, size in catalog._read(SCAN)}


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[Warehouse]:
    with Warehouse(make_config(tmp_path / "data")) as warehouse:
        yield warehouse


def counts(wh: Warehouse) -> dict[str, dict[str, int]]:
    kept = wh.catalog.tenant_stats()
    assert kept == scanned(wh.catalog)
    return kept


def test_puts_overwrites_and_deletes_keep_exact_counts(wh: Warehouse) -> None:
    wh.create_bucket("alpha-1", tenant="alpha")
    wh.create_bucket("beta-1", tenant="beta")
    assert counts(wh) == {"alpha": {"objects": 0, "bytes": 0}, "beta": {"objects": 0, "bytes": 0}}
    wh.put("alpha-1", "k1", b"x" * 100, tenant="alpha")
    wh.put("alpha-1", "k2", b"y" * 50, tenant="alpha")
    wh.put("beta-1", "k1", b"z" * 7, tenant="beta")
    assert counts(wh) == {"alpha": {"objects": 2, "bytes": 150}, "beta": {"objects": 1, "bytes": 7}}
    wh.put("alpha-1", "k1", b"x" * 10, tenant="alpha")  # overwrite, smaller
    wh.put("alpha-1", "k2", b"y" * 500, tenant="alpha")  # overwrite, bigger
    assert counts(wh) == {"alpha": {"objects": 2, "bytes": 510}, "beta": {"objects": 1, "bytes": 7}}
    wh.delete("alpha-1", "k1", tenant="alpha")
    wh.delete("alpha-1", "never-there", tenant="alpha")
    assert counts(wh) == {"alpha": {"objects": 1, "bytes": 500}, "beta": {"objects": 1, "bytes": 7}}
    wh.put("alpha-1", "empty", b"", tenant="alpha")
    assert counts(wh)["alpha"] == {"objects": 2, "bytes": 500}


def test_versions_and_delete_markers_count_only_the_live_latest(wh: Warehouse) -> None:
    wh.create_bucket("ver-1", versioning=True, tenant="alpha")
    first = wh.put("ver-1", "k", b"a" * 10, tenant="alpha")
    wh.put("ver-1", "k", b"b" * 30, tenant="alpha")
    assert counts(wh)["alpha"] == {"objects": 1, "bytes": 30}
    wh.delete("ver-1", "k", tenant="alpha")  # a delete marker becomes the latest
    assert counts(wh)["alpha"] == {"objects": 0, "bytes": 0}
    wh.put("ver-1", "k", b"c" * 5, tenant="alpha")
    assert counts(wh)["alpha"] == {"objects": 1, "bytes": 5}
    wh.delete("ver-1", "k", version_id=first.version_id, tenant="alpha")  # an old version goes for good
    assert counts(wh)["alpha"] == {"objects": 1, "bytes": 5}
    latest = wh.head("ver-1", "k", tenant="alpha")
    wh.delete("ver-1", "k", version_id=latest.version_id, tenant="alpha")  # the latest goes: the marker is next
    assert counts(wh)["alpha"] == scanned(wh.catalog)["alpha"]


def test_multipart_completion_and_copies_are_counted(wh: Warehouse) -> None:
    wh.create_bucket("src", tenant="alpha")
    wh.create_bucket("dst", tenant="beta")
    upload = wh.create_multipart_upload("src", "big", tenant="alpha")
    upload_id = upload.upload_id
    one = wh.upload_part("src", "big", upload_id, 1, b"p" * PART, tenant="alpha")
    two = wh.upload_part("src", "big", upload_id, 2, b"q" * 3, tenant="alpha")
    assert counts(wh)["alpha"] == {"objects": 0, "bytes": 0}  # parts in progress are not objects yet
    wh.complete_multipart_upload("src", "big", upload_id, [(1, one.etag), (2, two.etag)], tenant="alpha")
    assert counts(wh)["alpha"] == {"objects": 1, "bytes": PART + 3}
    wh.put("src", "small", b"s" * 11, tenant="alpha")
    wh.copy("src", "small", "src", "small-copy", tenant="alpha")
    wh.copy("src", "small", "src", "small", tenant="alpha")  # onto itself: still one object
    assert counts(wh)["alpha"] == {"objects": 3, "bytes": PART + 3 + 22}
    wh.put("dst", "in-beta", b"b" * 4, tenant="beta")
    wh.copy("dst", "in-beta", "dst", "copied", tenant="beta")
    assert counts(wh)["beta"] == {"objects": 2, "bytes": 8}
    again = wh.create_multipart_upload("src", "big", tenant="alpha")  # replaces the multipart object
    again_id = again.upload_id
    part = wh.upload_part("src", "big", again_id, 1, b"r" * 9, tenant="alpha")
    wh.complete_multipart_upload("src", "big", again_id, [(1, part.etag)], tenant="alpha")
    assert counts(wh)["alpha"] == {"objects": 3, "bytes": 9 + 22}


def test_a_tenant_leaves_the_counts_with_its_last_bucket(wh: Warehouse) -> None:
    wh.create_bucket("bucket-one", tenant="alpha")
    wh.create_bucket("bucket-two", tenant="alpha")
    wh.put("bucket-one", "k", b"123", tenant="alpha")
    wh.delete("bucket-one", "k", tenant="alpha")
    wh.delete_bucket("bucket-one", tenant="alpha")
    assert counts(wh) == {"alpha": {"objects": 0, "bytes": 0}}
    wh.delete_bucket("bucket-two", tenant="alpha")
    assert counts(wh) == {}


def test_the_counts_read_one_row_per_tenant_and_never_scan_objects(wh: Warehouse) -> None:
    """SQLite's authorizer names every table a statement reads: tenant_stats reads tenant_usage only."""
    wh.create_bucket("alpha-1", tenant="alpha")
    wh.put("alpha-1", "k", b"x", tenant="alpha")
    read: set[str] = set()

    def authorize(action: int, table: str | None, *_: object) -> int:
        if action == sqlite3.SQLITE_READ and table:
            read.add(table)
        return sqlite3.SQLITE_OK

    wh.catalog._db.set_authorizer(authorize)
    try:
        assert wh.catalog.tenant_stats() == {"alpha": {"objects": 1, "bytes": 1}}
    finally:
        wh.catalog._db.set_authorizer(None)
    assert read == {"tenant_usage"}


def test_the_migration_backfills_counts_of_an_existing_catalog(tmp_path: Path) -> None:
    """A version-3 catalog with objects, versions and delete markers gets exact counts on opening."""
    path = tmp_path / "c.db"
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:3]:
        db.executescript(migration)
    db.execute("PRAGMA user_version=3")
    placement = "'local', 'p', X'48', X'54', 'tenant:x', 1, 0"
    db.executescript(f"""
        INSERT INTO buckets VALUES ('t1', 'bkt', 'id1', 1.0, 1), ('t2', 'bkt2', 'id2', 1.0, 0),
                                   ('t3', 'empty', 'id3', 1.0, 0);
        INSERT INTO objects VALUES ('t1', 'bkt', 'a', 'v1', 0, 0, 100, 'e', 't', '{{}}', '{{}}', 1.0, {placement});
        INSERT INTO objects VALUES ('t1', 'bkt', 'a', 'v2', 1, 0, 7, 'e', 't', '{{}}', '{{}}', 2.0, {placement});
        INSERT INTO objects VALUES ('t1', 'bkt', 'b', 'v3', 0, 0, 40, 'e', 't', '{{}}', '{{}}', 1.0, {placement});
        INSERT INTO objects VALUES ('t1', 'bkt', 'b', 'v4', 1, 1, 0, 'e', 't', '{{}}', '{{}}', 2.0, {placement});
        INSERT INTO objects VALUES ('t2', 'bkt2', 'c', 'v5', 1, 0, 9, 'e', 't', '{{}}', '{{}}', 1.0, {placement});
    """)
    db.commit()
    db.close()
    catalog = Catalog(path)
    try:
        assert catalog.tenant_stats() == {"t1": {"objects": 1, "bytes": 7}, "t2": {"objects": 1, "bytes": 9},
                                          "t3": {"objects": 0, "bytes": 0}}
        assert catalog.tenant_stats() == scanned(catalog)
    finally:
        catalog.close()
