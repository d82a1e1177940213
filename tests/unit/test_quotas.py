"""Hard quotas: every write path reserves in the transaction that commits it, deletes release.

Each test runs against the in-process warehouse on both backends and against the
Ray warehouse (``wh``), and checks the tally against a recount of the rows.
"""
from __future__ import annotations

import uuid
from contextlib import closing
from pathlib import Path

import pytest

from dwray.core.catalog import Catalog, ObjectRecord
from dwray.core.warehouse import Warehouse
from dwray.errors import BucketNotFound, InvalidArgument, QuotaExceeded
from dwray.s3.errors import from_dwray_error


@pytest.fixture
def wh(operator_wh: Warehouse) -> Warehouse:
    """Quotas are an operator's: the ``wh`` variants without the gateway's tenant client."""
    return operator_wh


def bucket_name() -> str:
    return f"q{uuid.uuid4().hex[:12]}"


def usage(wh: Warehouse, bucket: str | None = None) -> dict[str, int]:
    return wh.quota(bucket=bucket)["usage"]


def assert_tally_matches_rows(wh: Warehouse) -> None:
    """The trigger-kept usage equals what the object and part rows hold."""
    tenant = wh._tenant(None).tenant
    counted = wh.catalog.recount_usage(tenant)
    kept = usage(wh)
    assert (kept["bytes"], kept["objects"]) == (counted["bytes"], counted["objects"])


def test_put_within_quota_then_refused_with_scope_limit_and_usage(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket)
    quota = wh.set_quota(max_bytes=100)
    assert quota["limits"]["max_bytes"] == 100
    wh.put(bucket, "a", b"x" * 60)
    with pytest.raises(QuotaExceeded) as refused:
        wh.put(bucket, "b", b"y" * 41)
    message = str(refused.value)
    assert "tenant" in message and "100 bytes" in message and "101" in message
    assert isinstance(refused.value, PermissionError)
    assert [o.key for o in wh.iter_objects(bucket)] == ["a"]
    assert usage(wh) == {"bytes": 60, "objects": 1, "buckets": 1}
    wh.put(bucket, "b", b"y" * 40)  # exactly at the limit is allowed
    assert usage(wh)["bytes"] == 100
    assert_tally_matches_rows(wh)


def test_overwrite_counts_the_difference_and_delete_releases(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket)
    wh.set_quota(max_bytes=100)
    wh.put(bucket, "k", b"1" * 80)
    wh.put(bucket, "k", b"2" * 100)  # replaces 80 with 100: usage 100, not 180
    assert usage(wh)["bytes"] == 100
    with pytest.raises(QuotaExceeded):
        wh.put(bucket, "k", b"3" * 101)
    assert wh.get(bucket, "k") == b"2" * 100
    wh.put(bucket, "k", b"4" * 10)  # shrinking always passes
    assert usage(wh)["bytes"] == 10
    wh.delete(bucket, "k")
    assert usage(wh) == {"bytes": 0, "objects": 0, "buckets": 1}
    wh.put(bucket, "other", b"5" * 100)
    assert_tally_matches_rows(wh)


def test_object_count_limits_for_tenant_and_bucket(wh: Warehouse) -> None:
    small, big = bucket_name(), bucket_name()
    wh.create_bucket(small)
    wh.create_bucket(big)
    wh.set_quota(max_objects=3)
    wh.set_quota(bucket=small, max_objects=1)
    wh.put(small, "one", b"1")
    with pytest.raises(QuotaExceeded) as refused:
        wh.put(small, "two", b"2")
    assert f"bucket {small!r}" in str(refused.value) and "1 objects" in str(refused.value)
    wh.put(small, "one", b"again")  # an overwrite adds no object
    wh.put(big, "a", b"a")
    wh.put(big, "b", b"b")
    with pytest.raises(QuotaExceeded) as refused:
        wh.put(big, "c", b"c")
    assert "tenant" in str(refused.value) and "3 objects" in str(refused.value)
    shown = wh.quota()
    assert shown["buckets"][small] == {"limits": {"max_bytes": None, "max_objects": 1},
                                       "usage": {"bytes": 5, "objects": 1}}
    assert shown["usage"]["objects"] == 3
    assert wh.quota(bucket=small)["usage"] == {"bytes": 5, "objects": 1}
    assert_tally_matches_rows(wh)


def test_copy_is_counted(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket)
    wh.put(bucket, "src", b"s" * 30)
    wh.set_quota(bucket=bucket, max_bytes=70)
    wh.copy(bucket, "src", bucket, "copy1")
    assert usage(wh, bucket)["bytes"] == 60
    with pytest.raises(QuotaExceeded):
        wh.copy(bucket, "src", bucket, "copy2")
    assert sorted(o.key for o in wh.iter_objects(bucket)) == ["copy1", "src"]
    assert_tally_matches_rows(wh)


def test_multipart_parts_reserve_abort_releases_complete_replaces(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket)
    wh.set_quota(max_bytes=100)
    upload = wh.create_multipart_upload(bucket, "big")
    wh.upload_part(bucket, "big", upload.upload_id, 1, b"a" * 40)
    wh.upload_part(bucket, "big", upload.upload_id, 2, b"b" * 30)
    assert usage(wh) == {"bytes": 70, "objects": 0, "buckets": 1}
    with pytest.raises(QuotaExceeded):
        wh.upload_part(bucket, "big", upload.upload_id, 3, b"c" * 31)
    wh.upload_part(bucket, "big", upload.upload_id, 2, b"b" * 50)  # a replaced part counts the difference
    assert usage(wh)["bytes"] == 90
    with pytest.raises(QuotaExceeded):
        wh.put(bucket, "small", b"s" * 11)  # parts in progress hold their bytes against puts too
    assert_tally_matches_rows(wh)
    # Completing with part 2 only: the object (50 bytes) replaces both parts' 90.
    part2 = wh.list_parts(bucket, "big", upload.upload_id).parts[1]
    info = wh.complete_multipart_upload(bucket, "big", upload.upload_id, [(2, part2.etag)])
    assert info.size == 50
    assert usage(wh) == {"bytes": 50, "objects": 1, "buckets": 1}
    assert_tally_matches_rows(wh)
    other = wh.create_multipart_upload(bucket, "other")
    wh.upload_part(bucket, "other", other.upload_id, 1, b"o" * 50)
    assert usage(wh)["bytes"] == 100
    wh.abort_multipart_upload(bucket, "other", other.upload_id)
    assert usage(wh) == {"bytes": 50, "objects": 1, "buckets": 1}
    assert_tally_matches_rows(wh)


def test_versioned_bucket_counts_every_version(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket, versioning=True)
    wh.set_quota(bucket=bucket, max_bytes=100)
    first = wh.put(bucket, "k", b"1" * 40)
    wh.put(bucket, "k", b"2" * 40)
    assert usage(wh, bucket) == {"bytes": 80, "objects": 2}
    with pytest.raises(QuotaExceeded):
        wh.put(bucket, "k", b"3" * 40)  # the older versions still hold their bytes
    wh.delete(bucket, "k")  # a delete marker frees nothing and holds nothing
    assert usage(wh, bucket) == {"bytes": 80, "objects": 2}
    wh.delete(bucket, "k", version_id=first.version_id)
    assert usage(wh, bucket) == {"bytes": 40, "objects": 1}
    wh.put(bucket, "k", b"4" * 60)
    assert_tally_matches_rows(wh)


def test_bucket_count_limit(wh: Warehouse) -> None:
    first, second, third = bucket_name(), bucket_name(), bucket_name()
    wh.set_quota(max_buckets=2)
    wh.create_bucket(first)
    wh.create_bucket(second)
    with pytest.raises(QuotaExceeded) as refused:
        wh.create_bucket(third)
    assert "2 buckets" in str(refused.value)
    assert sorted(b.name for b in wh.list_buckets()) == sorted([first, second])
    wh.delete_bucket(first)
    wh.create_bucket(third)
    wh.set_quota(max_buckets=None)
    wh.create_bucket(first)
    assert wh.quota()["usage"]["buckets"] == 3


def test_lowered_limit_refuses_growth_but_not_shrinking(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket)
    wh.put(bucket, "a", b"a" * 50)
    wh.put(bucket, "b", b"b" * 50)
    wh.set_quota(max_bytes=60)
    with pytest.raises(QuotaExceeded):
        wh.put(bucket, "c", b"c")
    wh.put(bucket, "a", b"a" * 10)  # over the limit, but shrinking: allowed
    wh.delete(bucket, "b")
    wh.put(bucket, "c", b"c" * 50)
    assert usage(wh)["bytes"] == 60
    wh.set_quota(max_bytes=0)  # 0 clears
    assert wh.quota()["limits"] == {"max_bytes": None, "max_objects": None, "max_buckets": None}
    wh.put(bucket, "d", b"d" * 100)


def test_bad_quota_input_names_what_was_wrong(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket)
    with pytest.raises(InvalidArgument, match="max_bytes"):
        wh.set_quota(max_bytes=-1)
    with pytest.raises(InvalidArgument, match="max_objects"):
        wh.set_quota(max_objects="ten")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="max_buckets is a tenant limit"):
        wh.set_quota(bucket=bucket, max_buckets=3)
    with pytest.raises(InvalidArgument, match="at least one"):
        wh.set_quota()
    with pytest.raises(BucketNotFound):
        wh.set_quota(bucket=bucket_name(), max_bytes=10)
    with pytest.raises(BucketNotFound):
        wh.quota(bucket=bucket_name())


def test_quota_goes_with_its_bucket(wh: Warehouse) -> None:
    bucket = bucket_name()
    wh.create_bucket(bucket)
    wh.set_quota(bucket=bucket, max_bytes=1)
    wh.delete_bucket(bucket)
    wh.create_bucket(bucket)
    wh.put(bucket, "k", b"not limited any more")
    assert wh.quota(bucket=bucket)["limits"] == {"max_bytes": None, "max_objects": None}


def record(bucket: str, key: str, size: int) -> ObjectRecord:
    return ObjectRecord("t", bucket, key, uuid.uuid4().hex, True, False, size, "e", "text/plain", created=1.0)


def test_group_commit_refuses_only_the_record_over_quota(tmp_path: Path) -> None:
    with closing(Catalog(tmp_path / "catalog.db")) as catalog:
        catalog.create_bucket("t", "b", "id1")
        catalog.set_quota("t", None, {"max_bytes": 100})
        results = catalog.commit_many([record("b", "k1", 60), record("b", "k2", 60), record("b", "k3", 40)])
        assert [r.key for r in results[::2]] == ["k1", "k3"]  # type: ignore[union-attr]
        assert isinstance(results[1], QuotaExceeded)
        assert catalog.quota("t")["usage"] == {"bytes": 100, "objects": 2, "buckets": 1}
        assert catalog.recount_usage("t") == {"bytes": 100, "objects": 2}


def test_migration_counts_what_is_already_stored(tmp_path: Path) -> None:
    from dwray.core.catalog import schema

    path = tmp_path / "catalog.db"
    with closing(Catalog(path)) as catalog:
        catalog.create_bucket("t", "b", "id1")
        catalog.commit_object(record("b", "k1", 7))
        catalog.commit_object(record("b", "k2", 5))
        db = catalog._db
        # Back to version 4: what migrations 5, 6, 7 and 8 added goes.
        for name in [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                                 "AND (name LIKE 'bucket_usage_%' OR name LIKE 'event_%')")]:
            db.execute(f"DROP TRIGGER {name}")
        db.executescript("DROP TABLE quotas; DROP TABLE bucket_usage; DROP INDEX objects_null; "
                         "DROP INDEX buckets_global_name; ALTER TABLE objects DROP COLUMN null_version; "
                         "ALTER TABLE objects DROP COLUMN tags; ALTER TABLE multipart_uploads DROP COLUMN tags; "
                         "ALTER TABLE objects DROP COLUMN inline_data; DROP TABLE event_outbox; "
                         "DROP TABLE bucket_notifications; PRAGMA user_version = 4;")
    assert schema.SCHEMA_VERSION == 8
    with closing(Catalog(path)) as catalog:
        assert catalog.schema_version == 8
        assert catalog.quota("t")["usage"] == {"bytes": 12, "objects": 2, "buckets": 1}


def test_s3_answers_403_quota_exceeded_with_the_message() -> None:
    error = from_dwray_error(QuotaExceeded("tenant 'acme'", "bytes", 100, 101))
    assert (error.code, error.status) == ("QuotaExceeded", 403)
    assert "at most 100 bytes" in error.message and "101" in error.message


def test_a_shredded_tenants_usage_and_quota_go_with_it(tmp_path: Path) -> None:
    from dwray.core.identity import IdentityStore
    from dwray.core.warehouse.tenants import shred_tenant
    from tests.conftest import make_config

    config = make_config(tmp_path / "data")
    identity = IdentityStore(config.identity_path)
    try:
        with Warehouse(config) as wh:
            identity.create_tenant("doomed")
            wh.create_bucket("files", tenant="doomed")
            wh.set_quota("doomed", max_bytes=1000, max_buckets=1)
            wh.set_quota("doomed", "files", max_objects=5)
            wh.put("files", "k", b"x" * 100, tenant="doomed")
            upload = wh.create_multipart_upload("files", "mp", tenant="doomed")
            wh.upload_part("files", "mp", upload.upload_id, 1, b"p" * 50, tenant="doomed")
            assert wh.quota("doomed")["usage"] == {"bytes": 150, "objects": 1, "buckets": 1}
            shred_tenant(wh, identity, "doomed", force=True)
            assert "doomed" not in wh.catalog.quota_tenants()
            assert wh.quota("doomed") == {
                "tenant": "doomed", "bucket": None, "buckets": {},
                "limits": {"max_bytes": None, "max_objects": None, "max_buckets": None},
                "usage": {"bytes": 0, "objects": 0, "buckets": 0}}
    finally:
        identity.close()
