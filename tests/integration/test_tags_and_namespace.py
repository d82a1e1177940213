"""Object tags (S3's rules, kept per version, copied or replaced) and the global bucket namespace
(names shared by every tenant: 409 for a taken name, 403 for another tenant's bucket), in the warehouse."""
from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dwray.core.catalog import MIGRATIONS, Catalog
from dwray.core.tags import validate_tags
from dwray.core.warehouse import Warehouse
from dwray.errors import (
    BucketAccessDenied,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNameClash,
    BucketNotFound,
    DeleteMarkerVersion,
    InvalidTag,
)


@pytest.mark.parametrize("tags, problem", [
    ({f"k{n}": "v" for n in range(11)}, "at most 10"),
    ({"": "v"}, "1 to 128"),
    ({"k" * 129: "v"}, "1 to 128"),
    ({"k": "v" * 257}, "at most 256"),
    ({"aws:owner": "x"}, "reserved"),
    ({"k\n": "v"}, "character"),
    ({"k": "a;b"}, "character"),
    ([("k", "1"), ("k", "2")], "more than once"),
])
def test_tags_outside_s3s_rules_are_refused_naming_the_rule(tags: Any, problem: str) -> None:
    with pytest.raises(InvalidTag, match=problem):
        validate_tags(tags)


def test_tags_within_the_rules_pass_unicode_and_punctuation_included() -> None:
    tags = {"Projekt": "Überblick 2026", "a+b-c=d.e_f:g/h@i": "", "k" * 128: "v" * 256}
    assert validate_tags(tags) == tags and validate_tags(tags.items()) == tags


def test_tags_belong_to_a_version_and_follow_copies(local_wh: Warehouse) -> None:
    wh = local_wh
    wh.create_bucket("tagged", versioning=True)
    first = wh.put("tagged", "k", b"1", tags={"stage": "raw"})
    second = wh.put("tagged", "k", b"2")
    assert wh.head("tagged", "k").tags == {}
    assert wh.get_tags("tagged", "k", version_id=first.version_id) == (first.version_id, {"stage": "raw"})
    assert wh.put_tags("tagged", "k", {"stage": "clean", "owner": "ana"}) == second.version_id
    assert wh.head("tagged", "k").tags == {"stage": "clean", "owner": "ana"}
    assert wh.copy("tagged", "k", "tagged", "same-tags").tags == {"stage": "clean", "owner": "ana"}
    assert wh.copy("tagged", "k", "tagged", "new-tags", tags={"x": "y"}).tags == {"x": "y"}
    assert wh.delete_tags("tagged", "k") == second.version_id
    assert wh.get_tags("tagged", "k") == (second.version_id, {})
    upload = wh.create_multipart_upload("tagged", "mp", tags={"from": "upload"})
    part = wh.upload_part("tagged", "mp", upload.upload_id, 1, b"x")
    assert wh.complete_multipart_upload("tagged", "mp", upload.upload_id, [(1, part.etag)]).tags == {"from": "upload"}
    marker = wh.delete("tagged", "k")
    with pytest.raises(DeleteMarkerVersion):
        wh.put_tags("tagged", "k", {"a": "b"}, version_id=marker.version_id)
    with pytest.raises(InvalidTag):
        wh.put("tagged", "bad", b"x", tags={"aws:x": "y"})
    assert [v.key for v in wh.list_versions("tagged", prefix="bad").versions] == []


def test_bucket_names_are_global_and_other_tenants_get_403(local_wh: Warehouse) -> None:
    wh = local_wh
    wh.create_bucket("owned")
    wh.put("owned", "k", b"secret")
    with pytest.raises(BucketAlreadyOwnedByYou):
        wh.create_bucket("owned")
    with pytest.raises(BucketAlreadyExists) as taken:
        wh.create_bucket("owned", tenant="intruder")
    assert not isinstance(taken.value, BucketAlreadyOwnedByYou)
    wh.create_bucket("theirs", tenant="intruder")
    refused: list[Callable[[], object]] = [
        lambda: wh.head_bucket("owned", tenant="intruder"),
        lambda: wh.list("owned", tenant="intruder"),
        lambda: wh.list_versions("owned", tenant="intruder"),
        lambda: wh.get("owned", "k", tenant="intruder"),
        lambda: wh.put("owned", "k", b"overwrite", tenant="intruder"),
        lambda: wh.delete("owned", "k", tenant="intruder"),
        lambda: wh.set_bucket_versioning("owned", "Enabled", tenant="intruder"),
        lambda: wh.put_tags("owned", "k", {"a": "b"}, tenant="intruder"),
        lambda: wh.create_multipart_upload("owned", "k", tenant="intruder"),
        lambda: wh.delete_bucket("owned", tenant="intruder"),
        lambda: wh.copy("owned", "k", "theirs", "stolen", tenant="intruder"),
    ]
    for call in refused:
        with pytest.raises(BucketAccessDenied, match="belongs to another account"):
            call()
    with pytest.raises(BucketNotFound):
        wh.head_bucket("nobodys", tenant="intruder")
    assert wh.get("owned", "k") == b"secret" and wh.bucket_versioning("owned") is None
    assert [v.version_id for v in wh.list_versions("owned").versions] == ["null"]
    assert wh.list("theirs", tenant="intruder").keys == []


def version_5_catalog(path: Path, buckets: list[tuple[str, str, int]]) -> None:
    """A catalog as dwray with schema version 5 left it, with ``buckets`` (tenant, name, versioning) and
    one object in each."""
    db = sqlite3.connect(path)
    for migration in MIGRATIONS[:5]:
        db.executescript(migration)
    db.execute("PRAGMA user_version=5")
    for number, (tenant, name, versioning) in enumerate(buckets):
        db.execute("INSERT INTO buckets VALUES (?, ?, ?, 1.0, ?)", (tenant, name, f"id{number}", versioning))
        db.execute("INSERT INTO objects VALUES (?, ?, 'k', ?, 1, 0, 3, 'e', 'text/plain', '{}', '{}', 1.0, "
                   "'local', ?, X'48', X'54', ?, 1, 0)", (tenant, name, f"v{number}", f"{tenant}/b{number}",
                                                          f"tenant:{tenant}"))
    db.commit()
    db.close()


def test_a_catalog_whose_tenants_share_a_bucket_name_refuses_to_upgrade_naming_the_clash(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    version_5_catalog(path, [("acme", "shared", 0), ("globex", "shared", 0), ("acme", "own", 0),
                             ("initech", "logs", 0), ("globex", "logs", 1)])
    with pytest.raises(BucketNameClash) as refused:
        Catalog(path)
    message = str(refused.value)
    assert "'logs' is owned by tenants globex, initech" in message
    assert "'shared' is owned by tenants acme, globex" in message and "'own'" not in message
    assert "copy each clashing bucket" in message
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 5  # left exactly as it was
    db.close()


def test_a_catalog_without_clashes_upgrades_its_objects_to_null_versions(tmp_path: Path) -> None:
    path = tmp_path / "catalog.db"
    version_5_catalog(path, [("acme", "plain", 0), ("acme", "kept", 1)])
    catalog = Catalog(path)
    try:
        assert catalog.get_object("acme", "plain", "k").public_version_id == "null"
        assert catalog.get_object("acme", "plain", "k", "null").version_id == "v0"
        assert catalog.get_object("acme", "kept", "k").public_version_id == "v1"
        assert catalog.get_bucket("acme", "kept").versioning_status == "Enabled"
        assert catalog.get_bucket("acme", "plain").versioning_status is None
        with pytest.raises(BucketAlreadyExists):
            catalog.create_bucket("globex", "plain", "id9")
    finally:
        catalog.close()
