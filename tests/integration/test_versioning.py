"""S3 versioning in the warehouse: never enabled, Enabled and Suspended buckets, null versions, delete
markers, and ListObjectVersions paging, in process and on Ray (the ``wh`` fixture)."""
from __future__ import annotations

import itertools

import pytest

from dwray.core.models import ObjectInfo
from dwray.core.warehouse import Warehouse
from dwray.errors import DeleteMarkerVersion, InvalidArgument, ObjectDeleted, ObjectNotFound


def versions(wh: Warehouse, bucket: str, **kwargs: object) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, latest, delete marker) of every version, in the listing's order."""
    page = wh.list_versions(bucket, **kwargs)  # type: ignore[arg-type]
    return [(v.key, v.version_id, v.is_latest, v.delete_marker) for v in page.versions]


def test_versioning_never_enabled_then_enabled_then_suspended(wh: Warehouse) -> None:
    wh.create_bucket("vers")
    assert wh.bucket_versioning("vers") is None
    assert wh.put("vers", "k", b"one").version_id == "null"
    assert wh.put("vers", "k", b"two").version_id == "null"  # replaces the null version
    assert versions(wh, "vers") == [("k", "null", True, False)]

    wh.set_bucket_versioning("vers", "Enabled")
    assert wh.bucket_versioning("vers") == "Enabled" and wh.head_bucket("vers").versioning
    three = wh.put("vers", "k", b"three").version_id
    four = wh.put("vers", "k", b"four").version_id
    assert "null" not in (three, four) and three != four
    assert [wh.get("vers", "k", version_id=v) for v in ("null", three, four)] == [b"two", b"three", b"four"]
    assert wh.get("vers", "k") == b"four"

    marker = wh.delete("vers", "k")
    assert marker.delete_marker and marker.version_id not in ("null", three, four)
    with pytest.raises(ObjectDeleted) as deleted:
        wh.head("vers", "k")
    assert deleted.value.version_id == marker.version_id
    with pytest.raises(DeleteMarkerVersion):
        wh.open("vers", "k", version_id=marker.version_id)
    assert versions(wh, "vers") == [("k", marker.version_id, True, True), ("k", four, False, False),
                                    ("k", three, False, False), ("k", "null", False, False)]
    # Removing the marker for good brings the newest version back.
    removed = wh.delete("vers", "k", version_id=marker.version_id)
    assert removed.delete_marker and removed.version_id == marker.version_id
    assert wh.get("vers", "k") == b"four"

    wh.set_bucket_versioning("vers", "Suspended")
    assert wh.bucket_versioning("vers") == "Suspended" and not wh.head_bucket("vers").versioning
    assert wh.put("vers", "k", b"five").version_id == "null"  # replaces the old null version, keeps the rest
    assert versions(wh, "vers") == [("k", "null", True, False), ("k", four, False, False),
                                    ("k", three, False, False)]
    assert wh.get("vers", "k", version_id="null") == b"five"
    suspended_marker = wh.delete("vers", "k")
    assert (suspended_marker.version_id, suspended_marker.delete_marker) == ("null", True)
    assert versions(wh, "vers") == [("k", "null", True, True), ("k", four, False, False),
                                    ("k", three, False, False)]
    with pytest.raises(ObjectDeleted):
        wh.get("vers", "k")
    assert wh.delete("vers", "k", version_id="null").version_id == "null"
    assert wh.get("vers", "k") == b"four"
    with pytest.raises(ObjectNotFound) as missing:
        wh.head("vers", "k", version_id="0" * 32)
    assert missing.value.version_id == "0" * 32
    with pytest.raises(InvalidArgument, match="Enabled"):
        wh.set_bucket_versioning("vers", "enabled")


def test_list_versions_pages_agree_with_one_listing(local_wh: Warehouse) -> None:
    wh = local_wh
    wh.create_bucket("pages", versioning=True)
    for key, count in (("a", 3), ("d/1", 2), ("d/2", 1), ("e", 2), ("f/x/y", 1), ("g", 1)):
        for n in range(count):
            wh.put("pages", key, bytes([n]))
    wh.delete("pages", "e")
    whole = wh.list_versions("pages")
    assert [v.key for v in whole.versions] == ["a"] * 3 + ["d/1"] * 2 + ["d/2"] + ["e"] * 3 + ["f/x/y", "g"]
    assert [v.is_latest for v in whole.versions if v.key == "a"] == [True, False, False]
    for prefix, delimiter, size in itertools.product(("", "d/"), (None, "/"), (1, 2, 3, 1000)):
        seen: list[tuple[str, str] | str] = []
        key_marker = version_marker = None
        for _ in range(40):
            page = wh.list_versions("pages", prefix=prefix, delimiter=delimiter, max_keys=size,
                                    key_marker=key_marker, version_id_marker=version_marker)
            assert len(page.versions) + len(page.common_prefixes) <= size
            seen += [(v.key, v.version_id) for v in page.versions] + list(page.common_prefixes)
            if not page.is_truncated:
                break
            key_marker, version_marker = page.next_key_marker, page.next_version_id_marker
        one = wh.list_versions("pages", prefix=prefix, delimiter=delimiter)
        expected = [(v.key, v.version_id) for v in one.versions] + list(one.common_prefixes)
        assert sorted(seen, key=str) == sorted(expected, key=str), (prefix, delimiter, size)
        assert len(seen) == len(expected)
    assert wh.list_versions("pages", delimiter="/").common_prefixes == ["d/", "f/"]
    # A key marker alone starts after every version of that key.
    assert {v.key for v in wh.list_versions("pages", key_marker="d/1").versions} == {"d/2", "e", "f/x/y", "g"}


def test_a_version_listing_of_an_unversioned_bucket_shows_null_versions(wh: Warehouse) -> None:
    wh.create_bucket("plain")
    for key in ("b", "a", "c"):
        wh.put("plain", key, b"x")
    listed: list[ObjectInfo] = wh.list_versions("plain").versions
    assert [(v.key, v.version_id, v.is_latest) for v in listed] == [("a", "null", True), ("b", "null", True),
                                                                      ("c", "null", True)]
    gone = wh.delete("plain", "a")
    assert (gone.existed, gone.delete_marker, gone.version_id) == (True, False, "null")
    assert [v.key for v in wh.list_versions("plain").versions] == ["b", "c"]
