"""The catalog's event outbox: every change's event committed in the change's own transaction."""
from __future__ import annotations

from pathlib import Path

import pytest

from dwray.core.catalog import SCHEMA_VERSION, Catalog, ObjectRecord, Placement
from dwray.errors import BucketAccessDenied, BucketNotFound, QuotaExceeded


def record(key: str, version: str, **extra: object) -> ObjectRecord:
    values = {"tenant": "t1", "bucket": "bkt", "key": key, "version_id": version, "is_latest": True,
              "delete_marker": False, "size": 3, "etag": '"e"', "content_type": "text/plain",
              "created": 1000.0 + len(version),
              "placement": Placement("local", f"t1/x/{version}", b"H", b"T", "tenant:t1", 1)}
    values.update(extra)
    return ObjectRecord(**values)  # type: ignore[arg-type]


def names(catalog: Catalog, after: int = 0) -> list[tuple[str, str, str, str | None]]:
    return [(e.topic, e.name, e.key, e.version_id) for e in catalog.outbox_page(after)]


def test_bucket_and_object_changes_are_in_the_outbox_in_order(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.commit_object(record("a", "v1"))
    catalog.commit_object(record("a", "v2", size=7))  # overwrite: a creation, not a removal
    catalog.delete_object("t1", "bkt", "a", None, None)
    catalog.delete_bucket("t1", "bkt")
    assert names(catalog) == [
        ("bucket.created", "BucketCreated", "", None),
        ("object.created", "ObjectCreated:Put", "a", "null"),
        ("object.created", "ObjectCreated:Put", "a", "null"),
        ("object.removed", "ObjectRemoved:Delete", "a", "null"),
        ("bucket.removed", "BucketRemoved", "", None)]
    events = catalog.outbox_page()
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert events[2].size == 7 and events[2].etag == '"e"' and events[2].tenant == "t1"
    assert catalog.outbox_page(events[1].seq, limit=1)[0].seq == events[2].seq


def test_versioned_deletes_make_marker_and_removal_events(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1", versioning=True)
    catalog.commit_object(record("k", "v1"))
    marker = record("k", "m1", delete_marker=True, size=0, placement=None)
    catalog.delete_object("t1", "bkt", "k", None, marker)
    catalog.delete_object("t1", "bkt", "k", "v1", None)
    catalog.delete_object("t1", "bkt", "k", "nope", None)  # nothing removed: no event
    assert names(catalog)[1:] == [("object.created", "ObjectCreated:Put", "k", "v1"),
                                  ("object.removed", "ObjectRemoved:DeleteMarkerCreated", "k", "m1"),
                                  ("object.removed", "ObjectRemoved:Delete", "k", "v1")]


def test_multipart_objects_are_complete_multipart_upload_events(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog._db.execute("INSERT INTO objects (tenant, bucket, key, version_id, is_latest, size, etag, content_type, "
                        "created, parts, null_version) VALUES ('t1', 'bkt', 'm', 'v9', 1, 10, 'x-2', 'b', 1, 2, 1)")
    assert names(catalog)[-1] == ("object.created", "ObjectCreated:CompleteMultipartUpload", "m", "null")


def test_a_refused_change_leaves_no_event(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.set_quota("t1", "bkt", {"max_objects": 1})
    catalog.commit_object(record("a", "v1"))
    before = len(catalog.outbox_page())
    with pytest.raises(QuotaExceeded):
        catalog.commit_object(record("b", "v2"))
    assert len(catalog.outbox_page()) == before


def test_trim_removes_what_the_bus_took_and_survives_reopen(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    for n in range(5):
        catalog.commit_object(record(f"k{n}", f"v{n}"))
    events = catalog.outbox_page()
    assert catalog.outbox_trim(events[2].seq) == 3
    assert catalog.outbox_size() == 3
    catalog.close()
    again = Catalog(tmp_path / "c.db")
    assert [e.key for e in again.outbox_page()] == ["k2", "k3", "k4"]
    again.commit_object(record("k5", "v5"))
    assert again.outbox_page()[-1].seq > events[-1].seq  # numbers are never reused
    assert again.schema_version == SCHEMA_VERSION


def test_notification_rules_are_per_bucket_and_go_with_it(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.create_bucket("t2", "other", "id2")
    rule = {"id": "r1", "kind": "Queue", "webhook": "hook", "events": ["s3:ObjectCreated:*"], "prefix": "",
            "suffix": ".csv"}
    assert catalog.notification_rules("t1", "bkt") == []
    catalog.set_notification_rules("t1", "bkt", [rule])
    assert catalog.notification_rules("t1", "bkt") == [rule]
    with pytest.raises(BucketAccessDenied):
        catalog.notification_rules("t2", "bkt")
    with pytest.raises(BucketAccessDenied):
        catalog.set_notification_rules("t2", "bkt", [rule])
    catalog.set_notification_rules("t1", "bkt", [])
    assert catalog.notification_rules("t1", "bkt") == []
    catalog.set_notification_rules("t1", "bkt", [rule])
    catalog.delete_bucket("t1", "bkt")
    catalog.create_bucket("t1", "bkt", "id3")
    assert catalog.notification_rules("t1", "bkt") == []  # a new bucket of the name starts without rules
    with pytest.raises(BucketNotFound):
        catalog.notification_rules("t1", "gone")


def test_crossing_nine_tenths_of_a_quota_is_an_event_once(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.set_quota("t1", "bkt", {"max_objects": 10})
    for n in range(12):
        try:
            catalog.commit_object(record(f"k{n}", f"v{n}"))
        except QuotaExceeded:
            break
    near = [e for e in catalog.outbox_page() if e.topic == "quota.near_limit"]
    assert [(e.key, e.payload) for e in near] == [("t1/bkt", {"tenant": "t1", "bucket": "bkt", "what": "objects",
                                                              "limit": 10, "usage": 9})]


def test_kernel_events_go_through_the_outbox_with_their_payload(tmp_path: Path) -> None:
    from dwray.errors import InvalidArgument

    catalog = Catalog(tmp_path / "c.db")
    catalog.outbox_publish("key.rotated", "tenant:t1", {"kek_id": "tenant:t1", "version": 2})
    [event] = catalog.outbox_page()
    assert (event.topic, event.key, event.payload) == ("key.rotated", "tenant:t1",
                                                       {"kek_id": "tenant:t1", "version": 2})
    with pytest.raises(InvalidArgument, match="unknown event topic"):
        catalog.outbox_publish("nope", "k", {})


def test_a_key_rotation_is_reported(tmp_path: Path) -> None:
    from dwray.core.warehouse import Warehouse
    from tests.conftest import make_config

    with Warehouse(make_config(tmp_path / "data")) as warehouse:
        version = warehouse.rotate_keys()
        rotated = [e for e in warehouse.catalog.outbox_page() if e.topic == "key.rotated"]
    assert [e.payload for e in rotated] == [{"kek_id": rotated[0].key, "version": version,
                                             "tenant": warehouse.config.default_tenant}]
