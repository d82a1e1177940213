"""Listings as real clients see them: ListObjectVersions (boto3, awscli, rclone), paged ListBuckets,
encoding-type=url end to end for keys with spaces, '+', '%', unicode and control characters, and
V2's echo of a ContinuationToken (raw signed requests where boto3 would hide the wire)."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import defusedxml.ElementTree as SafeET
import pytest
from botocore.exceptions import ClientError

from tests.integration.gateway.clients import (
    AwsCli,
    Rclone,
    assert_s3_error,
    error_of,
    send_signed,
    sign,
)
from tests.integration.gateway.conftest import GatewayUnderTest

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
# S3 allows every character but NUL in a key; these are the ones URLs and XML find awkward.
ODD_KEYS = sorted(["a b", "a+b", "100%", "%41", "é/日本", "x&y<z>", "q?r#s=1", "new\nline", "cr\rhere",
                   "tab\there", "ctl\x01\x1f", "del\x7f", "sp ace/+/"])


def _versions(s3: Any, bucket: str, ids: dict[str, list[str]], **params: Any) -> list[tuple[str, str, bool, bool]]:
    """(key, version id, is latest, is a delete marker) of every entry, all pages, in S3's order.

    boto3 splits a page's interleaved entries into Versions and DeleteMarkers; within a page they are
    put back by key and then newest first (``ids`` lists each key's versions newest first).
    """
    entries: list[tuple[str, str, bool, bool]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, **params):
        both = [(v["Key"], v["VersionId"], v["IsLatest"], False) for v in page.get("Versions", [])]
        both += [(m["Key"], m["VersionId"], m["IsLatest"], True) for m in page.get("DeleteMarkers", [])]
        entries.extend(sorted(both, key=lambda entry: (entry[0], ids[entry[0]].index(entry[1]))))
    return entries


@pytest.fixture
def versioned(s3: Any, bucket: str) -> tuple[str, dict[str, list[str]]]:
    """A versioned bucket: three versions of "a" under a delete marker, "b" twice, two keys under "d/"."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ids: dict[str, list[str]] = {}
    for key, count in (("a", 3), ("b", 2), ("d/x", 1), ("d/y", 1)):
        for index in range(count):
            ids.setdefault(key, []).insert(0, s3.put_object(Bucket=bucket, Key=key,
                                                            Body=f"{key}{index}".encode())["VersionId"])
    ids["a"].insert(0, s3.delete_object(Bucket=bucket, Key="a")["VersionId"])
    return bucket, ids


def test_list_object_versions_with_boto3(s3: Any, versioned: tuple[str, dict[str, list[str]]]) -> None:
    bucket, ids = versioned
    expected = [("a", ids["a"][0], True, True), ("a", ids["a"][1], False, False), ("a", ids["a"][2], False, False),
                ("a", ids["a"][3], False, False), ("b", ids["b"][0], True, False), ("b", ids["b"][1], False, False),
                ("d/x", ids["d/x"][0], True, False), ("d/y", ids["d/y"][0], True, False)]
    assert _versions(s3, bucket, ids) == expected
    # Paged one entry at a time, through NextKeyMarker/NextVersionIdMarker, the same list comes back.
    assert _versions(s3, bucket, ids, PaginationConfig={"PageSize": 1}) == expected
    assert _versions(s3, bucket, ids, PaginationConfig={"PageSize": 3}) == expected

    whole = s3.list_object_versions(Bucket=bucket)
    assert whole["IsTruncated"] is False and whole["MaxKeys"] == 1000 and whole["Name"] == bucket
    version = whole["Versions"][0]
    assert version["ETag"] == s3.head_object(Bucket=bucket, Key="a", VersionId=version["VersionId"])["ETag"]
    assert version["Size"] == 2 and version["StorageClass"] == "STANDARD" and version["Owner"]["ID"]
    assert whole["DeleteMarkers"][0]["Owner"]["ID"] == version["Owner"]["ID"]

    first = s3.list_object_versions(Bucket=bucket, MaxKeys=2)
    assert first["IsTruncated"] is True and first["MaxKeys"] == 2
    assert (first["NextKeyMarker"], first["NextVersionIdMarker"]) == ("a", ids["a"][1])

    # Markers: after a key (all its versions), after one version of a key, a delimiter's common prefixes.
    after_a = s3.list_object_versions(Bucket=bucket, KeyMarker="a")
    assert [v["Key"] for v in after_a["Versions"]] == ["b", "b", "d/x", "d/y"] and "DeleteMarkers" not in after_a
    mid_a = s3.list_object_versions(Bucket=bucket, KeyMarker="a", VersionIdMarker=ids["a"][1])
    assert [v["VersionId"] for v in mid_a["Versions"]][:2] == ids["a"][2:]
    assert mid_a["KeyMarker"] == "a" and mid_a["VersionIdMarker"] == ids["a"][1]
    grouped = s3.list_object_versions(Bucket=bucket, Delimiter="/")
    assert grouped["CommonPrefixes"] == [{"Prefix": "d/"}] and grouped["Delimiter"] == "/"
    assert {v["Key"] for v in grouped["Versions"]} == {"a", "b"}
    pages = list(s3.get_paginator("list_object_versions").paginate(
        Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 2}))
    assert [p["Prefix"] for page in pages for p in page.get("CommonPrefixes", [])] == ["d/"]
    under_d = s3.list_object_versions(Bucket=bucket, Prefix="d/")
    assert [v["Key"] for v in under_d["Versions"]] == ["d/x", "d/y"] and under_d["Prefix"] == "d/"

    assert s3.list_object_versions(Bucket=bucket, MaxKeys=5000)["MaxKeys"] == 1000
    assert "Versions" not in s3.list_object_versions(Bucket=bucket, MaxKeys=0)
    assert_s3_error("InvalidArgument", 400, s3.list_object_versions, Bucket=bucket, VersionIdMarker=ids["b"][0])
    assert_s3_error("InvalidArgument", 400, s3.list_object_versions, Bucket=bucket, MaxKeys=-1)
    assert_s3_error("NoSuchBucket", 404, s3.list_object_versions, Bucket=f"{bucket}-none")


def test_unversioned_objects_are_null_versions(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"one")
    s3.put_object(Bucket=bucket, Key="k", Body=b"two")
    listed = s3.list_object_versions(Bucket=bucket)
    assert [(v["Key"], v["VersionId"], v["IsLatest"], v["Size"]) for v in listed["Versions"]] == [
        ("k", "null", True, 3)]
    assert "DeleteMarkers" not in listed


def test_odd_keys_round_trip_through_every_listing(gateway: GatewayUnderTest, s3: Any, bucket: str,
                                                   tmp_path: Path) -> None:
    """boto3 asks for encoding-type=url and decodes: each key comes back exactly, and can be read by it."""
    for key in ODD_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert [c["Key"] for c in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ODD_KEYS
    assert [c["Key"] for c in s3.list_objects(Bucket=bucket)["Contents"]] == ODD_KEYS
    assert [v["Key"] for v in s3.list_object_versions(Bucket=bucket)["Versions"]] == ODD_KEYS
    paged = [c["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 2}) for c in page["Contents"]]
    assert paged == ODD_KEYS
    for key in ODD_KEYS:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    # Prefixes, delimiters and markers with the same characters survive the round trip too.
    grouped = s3.list_objects_v2(Bucket=bucket, Delimiter="+", Prefix="sp ace/", StartAfter="sp ace")
    assert grouped["CommonPrefixes"] == [{"Prefix": "sp ace/+"}] and grouped["Prefix"] == "sp ace/"
    assert grouped["Delimiter"] == "+" and grouped["StartAfter"] == "sp ace"
    v1 = s3.list_objects(Bucket=bucket, Delimiter="\n", Marker="cr\rhere")
    assert v1["Marker"] == "cr\rhere" and v1["CommonPrefixes"] == [{"Prefix": "new\n"}]
    # rclone (Go, its own decoder) reads the same keys back when it asks for encoding-type=url. Its
    # "Other" provider does not by default: the listing is then refused naming the remedy, where S3
    # would send XML no parser reads.
    rclone = Rclone.for_gateway(gateway, tmp_path / "rclone-home")
    plain = rclone.run("lsjson", "-R", "--files-only", rclone.path(bucket), check=False)
    assert plain.returncode != 0 and "InvalidArgument" in plain.stderr and "encoding-type=url" in plain.stderr
    # rclone shows control characters as their Unicode pictures (U+2400 + code, U+2421 for DEL).
    listed = json.loads(rclone.run("lsjson", "-R", "--files-only", "--s3-list-url-encode=true",
                                   rclone.path(bucket)).stdout)
    pictures = {code: 0x2400 + code for code in range(32)} | {0x7F: 0x2421}
    assert sorted(entry["Path"] for entry in listed) == sorted(key.translate(pictures) for key in ODD_KEYS)
    # NUL alone stays refused (see dwray.core.names), and nothing is stored.
    refused = send_signed(gateway, sign(gateway, "PUT", f"/{bucket}/nul%00key", body=b"x"))
    assert (refused.status, refused.code) == (400, "InvalidURI") and b"NUL" in refused.body
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="nul")


def test_the_wire_encodes_a_space_as_percent_20(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    for key in ("quux ab/thud", "foo+1/bar", "asdf+b", "ctl\x01/x"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")

    def raw(query: str) -> tuple[int, bytes]:
        response = send_signed(gateway, sign(gateway, "GET", f"/{bucket}?{query}"))
        SafeET.fromstring(response.body)  # well-formed, whatever the answer
        return response.status, response.body

    for query in ("list-type=2&delimiter=%2F&encoding-type=url", "delimiter=%2F&encoding-type=url",
                  "versions&delimiter=%2F&encoding-type=url"):
        status, body = raw(query)
        assert status == 200, body
        root = SafeET.fromstring(body)
        prefixes = [node.findtext(f"{NS}Prefix") for node in root.iter(f"{NS}CommonPrefixes")]
        assert prefixes == ["ctl%01/", "foo%2B1/", "quux%20ab/"], body
        keys = [node.findtext(f"{NS}Key") for node in root if node.tag in (f"{NS}Contents", f"{NS}Version")]
        assert keys == ["asdf%2Bb"] and root.findtext(f"{NS}EncodingType") == "url"
        assert b"+" not in body.replace(b"%2B", b"")

    # Without encoding-type, a name XML 1.0 cannot carry is refused by name (never malformed XML, never a 500).
    for query in ("list-type=2", "", "versions", f"list-type=2&prefix={quote('ctl')}"):
        status, body = raw(query)
        assert status == 400 and b"<Code>InvalidArgument</Code>" in body and b"ctl%01/x" in body, body
    assert raw("list-type=2&prefix=quux")[0] == 200
    assert raw("list-type=2&encoding-type=base64")[0] == 400


def test_list_objects_v2_echoes_the_continuation_token_sent(gateway: GatewayUnderTest, s3: Any,
                                                            bucket: str) -> None:
    for key in ("bar", "baz", "foo", "quxx"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    empty = s3.list_objects_v2(Bucket=bucket, ContinuationToken="")
    assert empty["ContinuationToken"] == "" and empty["IsTruncated"] is False
    assert [c["Key"] for c in empty["Contents"]] == ["bar", "baz", "foo", "quxx"]
    first = s3.list_objects_v2(Bucket=bucket, MaxKeys=1, StartAfter="bar")
    token = first["NextContinuationToken"]
    second = s3.list_objects_v2(Bucket=bucket, ContinuationToken=token, StartAfter="bar")
    assert second["ContinuationToken"] == token and second["StartAfter"] == "bar"
    assert [c["Key"] for c in second["Contents"]] == ["foo", "quxx"]
    raw = send_signed(gateway, sign(gateway, "GET", f"/{bucket}?list-type=2&continuation-token="))
    assert raw.status == 200 and b"<ContinuationToken></ContinuationToken>" in raw.body.replace(
        b"<ContinuationToken />", b"<ContinuationToken></ContinuationToken>")


def test_list_buckets_pages(gateway: GatewayUnderTest, bucket: str) -> None:
    tenant = f"listings-{uuid.uuid4().hex[:8]}"
    s3 = gateway.client(*gateway.new_key(tenant))
    # Another tenant's bucket is not listed, nor are its versions.
    assert_s3_error("AccessDenied", 403, s3.list_object_versions, Bucket=bucket)
    stem = f"lb-{uuid.uuid4().hex[:10]}"
    names = [f"{stem}-{index}" for index in range(5)]
    for name in names:
        s3.create_bucket(Bucket=name)
    s3.create_bucket(Bucket=f"other-{stem}")

    everything = s3.list_buckets()
    assert len(everything["Buckets"]) == 6 and "ContinuationToken" not in everything
    seen: list[str] = []
    params: dict[str, Any] = {"MaxBuckets": 2, "Prefix": stem}
    while True:
        page = s3.list_buckets(**params)
        assert len(page["Buckets"]) <= 2 and page["Prefix"] == stem
        assert all(b["BucketRegion"] == gateway.region for b in page["Buckets"])
        seen.extend(b["Name"] for b in page["Buckets"])
        if "ContinuationToken" not in page:
            break
        params["ContinuationToken"] = page["ContinuationToken"]
    assert seen == names
    paged = [b["Name"] for page in s3.get_paginator("list_buckets").paginate(PaginationConfig={"PageSize": 4})
             for b in page["Buckets"]]
    assert paged == sorted([*names, f"other-{stem}"])
    assert [b["Name"] for b in s3.list_buckets(BucketRegion=gateway.region, Prefix="other-")["Buckets"]] == [
        f"other-{stem}"]
    assert s3.list_buckets(BucketRegion="ap-south-2")["Buckets"] == []

    for bad in ({"ContinuationToken": "not a token"}, {"ContinuationToken": "QUJD"}):  # "ABC": no bucket name
        with pytest.raises(ClientError) as caught:
            s3.list_buckets(**bad)
        assert error_of(caught.value) == ("InvalidArgument", 400), bad
    for query in ("max-buckets=0", "max-buckets=10001", "max-buckets=two"):  # boto3 itself refuses these
        refused = send_signed(gateway, sign(gateway, "GET", f"/?{query}"))
        assert (refused.status, refused.code) == (400, "InvalidArgument"), query


def test_awscli_and_rclone_list_versions(gateway: GatewayUnderTest, s3: Any,
                                         versioned: tuple[str, dict[str, list[str]]], tmp_path: Path) -> None:
    bucket, ids = versioned
    aws = AwsCli.for_gateway(gateway, tmp_path / "aws-home")
    listed = json.loads(aws.run("s3api", "list-object-versions", "--bucket", bucket, "--output", "json").stdout)
    assert sorted((v["Key"], v["VersionId"]) for v in listed["Versions"]) == sorted(
        (key, version) for key, versions in ids.items() for version in versions if version != ids["a"][0])
    assert [(m["Key"], m["VersionId"], m["IsLatest"]) for m in listed["DeleteMarkers"]] == [("a", ids["a"][0], True)]
    paged = json.loads(aws.run("s3api", "list-object-versions", "--bucket", bucket, "--page-size", "1",
                               "--prefix", "b", "--output", "json").stdout)
    assert [v["VersionId"] for v in paged["Versions"]] == ids["b"]

    rclone = Rclone.for_gateway(gateway, tmp_path / "rclone-home")
    current = json.loads(rclone.run("lsjson", "-R", rclone.path(bucket)).stdout)
    assert sorted(entry["Path"] for entry in current if not entry["IsDir"]) == ["b", "d/x", "d/y"]
    every = json.loads(rclone.run("lsjson", "-R", "--s3-versions", rclone.path(bucket)).stdout)
    files = [entry["Path"] for entry in every if not entry["IsDir"]]
    # rclone names each old version "<name>-v<timestamp>"; delete markers are not files.
    assert len(files) == 7 and {"b", "d/x", "d/y"} <= set(files)
    assert sum(1 for name in files if name.startswith("a-v")) == 3
    assert sum(1 for name in files if name.startswith("b-v")) == 1
