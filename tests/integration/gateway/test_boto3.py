"""boto3, with its default configuration and checksum behaviour, against the gateway.

Every S3 operation the gateway offers, as boto3 calls it: objects, listings,
copies, conditional and ranged reads, multipart uploads (through the transfer
manager and call by call), flexible checksums, presigned URLs and buckets.
"""
from __future__ import annotations

import datetime
import gzip
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from tests.integration.gateway.clients import (
    assert_s3_error,
    crc32_b64,
    crc32c_b64,
    error_of,
    keys_in,
    md5_hex,
    random_bytes,
    sha256_b64,
    unique_bucket_name,
)

# --- objects -------------------------------------------------------------------------------

def test_put_get_head_delete(s3: Any, bucket: str) -> None:
    body = random_bytes(10_000, seed=1)
    put = s3.put_object(Bucket=bucket, Key="dir/obj.bin", Body=body)
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200

    got = s3.get_object(Bucket=bucket, Key="dir/obj.bin")
    assert got["Body"].read() == body
    assert got["ContentLength"] == len(body)
    assert got["ETag"] == put["ETag"]

    head = s3.head_object(Bucket=bucket, Key="dir/obj.bin")
    assert head["ContentLength"] == len(body)
    assert head["ETag"] == put["ETag"]
    assert isinstance(head["LastModified"], datetime.datetime)

    deleted = s3.delete_object(Bucket=bucket, Key="dir/obj.bin")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert_s3_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="dir/obj.bin")
    assert_s3_error("404", 404, s3.head_object, Bucket=bucket, Key="dir/obj.bin")
    # Deleting what is not there succeeds, as in S3.
    assert s3.delete_object(Bucket=bucket, Key="dir/obj.bin")["ResponseMetadata"]["HTTPStatusCode"] == 204


def test_overwrite_replaces_the_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"first version")
    s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"
    assert keys_in(s3, bucket) == ["k"]


def test_empty_object(s3: Any, bucket: str) -> None:
    put = s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert put["ETag"] == f'"{md5_hex(b"")}"'
    got = s3.get_object(Bucket=bucket, Key="empty")
    assert got["ContentLength"] == 0 and got["Body"].read() == b""


def test_etag_is_md5_for_simple_puts(s3: Any, bucket: str) -> None:
    for size in (1, 4096, 100_001):
        body = random_bytes(size, seed=size)
        put = s3.put_object(Bucket=bucket, Key=f"o{size}", Body=body)
        assert put["ETag"] == f'"{md5_hex(body)}"'
        assert s3.head_object(Bucket=bucket, Key=f"o{size}")["ETag"] == put["ETag"]


def test_user_metadata_round_trip(s3: Any, bucket: str) -> None:
    metadata = {"author": "ada", "mixed-case-name": "Value With Spaces", "number": "42"}
    s3.put_object(Bucket=bucket, Key="m", Body=b"x", Metadata=metadata)
    assert s3.head_object(Bucket=bucket, Key="m")["Metadata"] == metadata
    assert s3.get_object(Bucket=bucket, Key="m")["Metadata"] == metadata


def test_content_headers_round_trip(s3: Any, bucket: str) -> None:
    body = gzip.compress(b"a,b\n1,2\n")
    headers = {
        "ContentType": "text/csv; charset=utf-8",
        "ContentEncoding": "gzip",
        "ContentDisposition": 'attachment; filename="report.csv"',
        "CacheControl": "max-age=60, must-revalidate",
        "ContentLanguage": "de-DE",
    }
    s3.put_object(Bucket=bucket, Key="r.csv.gz", Body=body, **headers)
    for response in (s3.head_object(Bucket=bucket, Key="r.csv.gz"), s3.get_object(Bucket=bucket, Key="r.csv.gz")):
        assert {name: response[name] for name in headers} == headers
    assert s3.get_object(Bucket=bucket, Key="r.csv.gz")["Body"].read() == body


def test_default_content_type(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="plain", Body=b"x")
    assert s3.head_object(Bucket=bucket, Key="plain")["ContentType"] in ("binary/octet-stream",
                                                                         "application/octet-stream")


# --- ranges and conditions -------------------------------------------------------------------

@pytest.mark.parametrize(("header", "first", "last"), [
    ("bytes=0-9", 0, 9),
    ("bytes=10-19", 10, 19),
    ("bytes=90-", 90, 99),
    ("bytes=-5", 95, 99),
    ("bytes=95-1000", 95, 99),
    ("bytes=0-0", 0, 0),
])
def test_range_get(s3: Any, bucket: str, header: str, first: int, last: int) -> None:
    body = random_bytes(100, seed=3)
    s3.put_object(Bucket=bucket, Key="r", Body=body)
    got = s3.get_object(Bucket=bucket, Key="r", Range=header)
    assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert got["ContentRange"] == f"bytes {first}-{last}/100"
    assert got["ContentLength"] == last - first + 1
    assert got["Body"].read() == body[first:last + 1]


def test_range_past_the_end_is_invalid(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="r", Body=b"0123456789")
    assert_s3_error("InvalidRange", 416, s3.get_object, Bucket=bucket, Key="r", Range="bytes=10-20")


def test_conditional_get(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="c", Body=b"conditional")
    head = s3.head_object(Bucket=bucket, Key="c")
    etag, modified = head["ETag"], head["LastModified"]
    hour = datetime.timedelta(hours=1)
    get = s3.get_object

    assert get(Bucket=bucket, Key="c", IfMatch=etag)["Body"].read() == b"conditional"
    assert_s3_error("PreconditionFailed", 412, get, Bucket=bucket, Key="c", IfMatch='"0123456789abcdef0123456789abcdef"')
    assert_s3_error("304", 304, get, Bucket=bucket, Key="c", IfNoneMatch=etag)
    assert get(Bucket=bucket, Key="c", IfNoneMatch='"other"')["Body"].read() == b"conditional"

    assert_s3_error("304", 304, get, Bucket=bucket, Key="c", IfModifiedSince=modified)
    assert get(Bucket=bucket, Key="c", IfModifiedSince=modified - hour)["Body"].read() == b"conditional"
    assert_s3_error("PreconditionFailed", 412, get, Bucket=bucket, Key="c", IfUnmodifiedSince=modified - hour)
    assert get(Bucket=bucket, Key="c", IfUnmodifiedSince=modified)["Body"].read() == b"conditional"

    # S3's precedence: a matching If-Match wins over a failing If-Unmodified-Since,
    # and a failing If-None-Match wins over a passing If-Modified-Since.
    assert get(Bucket=bucket, Key="c", IfMatch=etag, IfUnmodifiedSince=modified - hour)["Body"].read()
    assert_s3_error("304", 304, get, Bucket=bucket, Key="c", IfNoneMatch=etag, IfModifiedSince=modified - hour)


def test_conditional_head(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="c", Body=b"x")
    etag = s3.head_object(Bucket=bucket, Key="c")["ETag"]
    assert s3.head_object(Bucket=bucket, Key="c", IfMatch=etag)["ETag"] == etag
    assert_s3_error("412", 412, s3.head_object, Bucket=bucket, Key="c", IfMatch='"nope"')
    assert_s3_error("304", 304, s3.head_object, Bucket=bucket, Key="c", IfNoneMatch=etag)


def test_response_overrides_with_params(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"data", ContentType="application/octet-stream")
    got = s3.get_object(Bucket=bucket, Key="o", ResponseContentType="text/plain",
                        ResponseContentDisposition='attachment; filename="o.txt"',
                        ResponseCacheControl="no-store", ResponseContentLanguage="fr",
                        ResponseContentEncoding="identity")
    assert got["ContentType"] == "text/plain"
    assert got["ContentDisposition"] == 'attachment; filename="o.txt"'
    assert got["CacheControl"] == "no-store"
    assert got["ContentLanguage"] == "fr"
    assert got["ContentEncoding"] == "identity"
    assert got["Body"].read() == b"data"
    # The override is for that response only.
    assert s3.head_object(Bucket=bucket, Key="o")["ContentType"] == "application/octet-stream"


def test_response_overrides_in_presigned_url(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="o", Body=b"presigned data")
    url = s3.generate_presigned_url("get_object", ExpiresIn=300, Params={
        "Bucket": bucket, "Key": "o", "ResponseContentType": "text/markdown",
        "ResponseContentDisposition": 'inline; filename="notes.md"'})
    response = requests.get(url, timeout=30)
    assert response.status_code == 200, response.text
    assert response.content == b"presigned data"
    assert response.headers["Content-Type"] == "text/markdown"
    assert response.headers["Content-Disposition"] == 'inline; filename="notes.md"'


# --- listings --------------------------------------------------------------------------------

TREE_KEYS = ("a/1", "a/2", "a/b/3", "b/4", "c", "d/e/f")


def test_list_v2_prefix_and_delimiter(s3: Any, bucket: str) -> None:
    for key in TREE_KEYS:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [item["Key"] for item in top["Contents"]] == ["c"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "d/"]
    assert top["KeyCount"] == 4 and top["IsTruncated"] is False

    under_a = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [item["Key"] for item in under_a["Contents"]] == ["a/1", "a/2"]
    assert [p["Prefix"] for p in under_a["CommonPrefixes"]] == ["a/b/"]
    assert under_a["Prefix"] == "a/"

    flat = s3.list_objects_v2(Bucket=bucket, Prefix="a/")
    assert [item["Key"] for item in flat["Contents"]] == ["a/1", "a/2", "a/b/3"]
    assert all(item["Size"] == len(item["Key"]) for item in flat["Contents"])
    assert flat["Contents"][0]["ETag"] == f'"{md5_hex(b"a/1")}"'

    after = s3.list_objects_v2(Bucket=bucket, StartAfter="a/2")
    assert [item["Key"] for item in after["Contents"]] == ["a/b/3", "b/4", "c", "d/e/f"]

    nothing = s3.list_objects_v2(Bucket=bucket, Prefix="zzz")
    assert nothing["KeyCount"] == 0 and "Contents" not in nothing


def test_list_v2_pagination(s3: Any, bucket: str) -> None:
    keys = [f"k/{index:02d}" for index in range(25)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"")

    seen: list[str] = []
    sizes: list[int] = []
    params: dict[str, Any] = {"Bucket": bucket, "MaxKeys": 7}
    while True:
        page = s3.list_objects_v2(**params)
        sizes.append(page["KeyCount"])
        seen.extend(item["Key"] for item in page["Contents"])
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            break
        params["ContinuationToken"] = page["NextContinuationToken"]
    assert seen == keys
    assert sizes == [7, 7, 7, 4]

    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, PaginationConfig={"PageSize": 7}))
    assert [len(page["Contents"]) for page in pages] == [7, 7, 7, 4]


def test_list_v2_common_prefixes_count_toward_max_keys(s3: Any, bucket: str) -> None:
    for index in range(10):
        s3.put_object(Bucket=bucket, Key=f"d{index}/x", Body=b"")
        s3.put_object(Bucket=bucket, Key=f"d{index}/y", Body=b"")
    prefixes: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Delimiter="/", PaginationConfig={"PageSize": 3}):
        assert page["KeyCount"] <= 3
        prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes", []))
    assert prefixes == [f"d{index}/" for index in range(10)]


def test_list_v1_with_marker(s3: Any, bucket: str) -> None:
    keys = [f"m{index:02d}" for index in range(25)]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"v1")
    seen: list[str] = []
    marker = ""
    while True:
        page = s3.list_objects(Bucket=bucket, MaxKeys=7, Marker=marker)
        page_keys = [item["Key"] for item in page["Contents"]]
        assert len(page_keys) <= 7
        seen.extend(page_keys)
        if not page["IsTruncated"]:
            break
        marker = page.get("NextMarker", page_keys[-1])
    assert seen == keys

    grouped = s3.list_objects(Bucket=bucket, Prefix="m1", Delimiter="/", Marker="m12")
    assert [item["Key"] for item in grouped["Contents"]] == [f"m{index}" for index in range(13, 20)]


def test_listing_unusual_keys(s3: Any, bucket: str) -> None:
    # boto3 asks for encoding-type=url and decodes, so these survive the XML.
    keys = sorted(["with space", "ünïcödé/名前", "plus+sign", "percent%41", "amp&lt<tag>", "q?x=1#frag",
                   "trailing/slash/", "x" * 1024])
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert keys_in(s3, bucket) == keys
    assert [item["Key"] for item in s3.list_objects(Bucket=bucket)["Contents"]] == keys
    for key in keys:
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()


def test_keys_with_control_characters_are_stored_but_nul_is_refused(s3: Any, bucket: str) -> None:
    # S3 allows every character but NUL in a key (listings of them: test_s3_listings.py).
    keys = ["tab\tand\nnewline", "carriage\rreturn", "bell\x07"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    assert keys_in(s3, bucket) == sorted(keys)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="nul\x00", Body=b"")
    assert error_of(caught.value) == ("InvalidURI", 400)
    assert keys_in(s3, bucket) == sorted(keys)


# --- copy ------------------------------------------------------------------------------------

def test_copy_with_metadata_directive_copy(s3: Any, bucket: str) -> None:
    body = random_bytes(5000, seed=4)
    s3.put_object(Bucket=bucket, Key="src", Body=body, Metadata={"origin": "src"}, ContentType="text/x-src")
    copied = s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
    assert copied["CopyObjectResult"]["ETag"] == f'"{md5_hex(body)}"'
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["Metadata"] == {"origin": "src"}
    assert head["ContentType"] == "text/x-src"
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == body
    # The source is untouched.
    assert s3.get_object(Bucket=bucket, Key="src")["Body"].read() == body


def test_copy_with_metadata_directive_replace(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"payload", Metadata={"origin": "src"}, ContentType="text/x-src")
    s3.copy_object(Bucket=bucket, Key="dst", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"fresh": "yes"}, ContentType="text/x-dst")
    head = s3.head_object(Bucket=bucket, Key="dst")
    assert head["Metadata"] == {"fresh": "yes"}
    assert head["ContentType"] == "text/x-dst"
    assert s3.get_object(Bucket=bucket, Key="dst")["Body"].read() == b"payload"
    # Copying an object onto itself is allowed only when something changes, and REPLACE does.
    s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"},
                   MetadataDirective="REPLACE", Metadata={"again": "1"})
    assert s3.head_object(Bucket=bucket, Key="src")["Metadata"] == {"again": "1"}


def test_copy_across_buckets_and_from_missing_source(s3: Any, bucket: str) -> None:
    other = unique_bucket_name()
    s3.create_bucket(Bucket=other)
    try:
        s3.put_object(Bucket=bucket, Key="src", Body=b"across")
        s3.copy_object(Bucket=other, Key="dst", CopySource={"Bucket": bucket, "Key": "src"})
        assert s3.get_object(Bucket=other, Key="dst")["Body"].read() == b"across"
        assert_s3_error("NoSuchKey", 404, s3.copy_object, Bucket=other, Key="x",
                CopySource={"Bucket": bucket, "Key": "missing"})
    finally:
        for key in keys_in(s3, other):
            s3.delete_object(Bucket=other, Key=key)
        s3.delete_bucket(Bucket=other)


# --- delete_objects --------------------------------------------------------------------------

def test_delete_objects_verbose(s3: Any, bucket: str) -> None:
    for key in ("x1", "x2", "keep"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x1"}, {"Key": "x2"},
                                                                  {"Key": "never-existed"}]})
    assert sorted(item["Key"] for item in result["Deleted"]) == ["never-existed", "x1", "x2"]
    assert "Errors" not in result
    assert keys_in(s3, bucket) == ["keep"]


def test_delete_objects_quiet(s3: Any, bucket: str) -> None:
    for key in ("q1", "q2", "keep"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"")
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "q1"}, {"Key": "q2"}], "Quiet": True})
    assert "Deleted" not in result and "Errors" not in result
    assert keys_in(s3, bucket) == ["keep"]


# --- checksums -------------------------------------------------------------------------------

def test_default_crc32_checksum_is_verified_and_returned(s3: Any, bucket: str) -> None:
    body = random_bytes(70_000, seed=11)
    put = s3.put_object(Bucket=bucket, Key="crc", Body=body)
    assert put["ChecksumCRC32"] == crc32_b64(body)
    got = s3.get_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32"] == crc32_b64(body)
    assert got["Body"].read() == body
    assert s3.head_object(Bucket=bucket, Key="crc", ChecksumMode="ENABLED")["ChecksumCRC32"] == crc32_b64(body)


@pytest.mark.parametrize(("algorithm", "field", "expected"), [
    ("SHA256", "ChecksumSHA256", sha256_b64),
    ("CRC32C", "ChecksumCRC32C", crc32c_b64),
    ("CRC32", "ChecksumCRC32", crc32_b64),
])
def test_chosen_checksum_algorithm(s3: Any, bucket: str, algorithm: str, field: str, expected: Any) -> None:
    body = random_bytes(33_333, seed=12)
    put = s3.put_object(Bucket=bucket, Key="sum", Body=body, ChecksumAlgorithm=algorithm)
    assert put[field] == expected(body)
    got = s3.get_object(Bucket=bucket, Key="sum", ChecksumMode="ENABLED")
    assert got[field] == expected(body)
    assert got["Body"].read() == body


# --- presigned URLs --------------------------------------------------------------------------

def test_presigned_put_and_get_with_requests(s3: Any, bucket: str) -> None:
    body = random_bytes(20_000, seed=13)
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre/signed file"},
                                        ExpiresIn=300)
    put = requests.put(put_url, data=body, timeout=30)
    assert put.status_code == 200, put.text
    assert put.headers["ETag"] == f'"{md5_hex(body)}"'

    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre/signed file"},
                                        ExpiresIn=300)
    got = requests.get(get_url, timeout=30)
    assert got.status_code == 200 and got.content == body
    ranged = requests.get(get_url, headers={"Range": "bytes=5-9"}, timeout=30)
    assert ranged.status_code == 206 and ranged.content == body[5:10]

    head_url = s3.generate_presigned_url("head_object", Params={"Bucket": bucket, "Key": "pre/signed file"},
                                         ExpiresIn=300)
    assert requests.head(head_url, timeout=30).headers["Content-Length"] == str(len(body))


# --- buckets ---------------------------------------------------------------------------------

def test_bucket_lifecycle(s3: Any) -> None:
    name = unique_bucket_name()
    s3.create_bucket(Bucket=name)
    try:
        # The owner's re-create in us-east-1 is 200, as in AWS (test_bucket_namespace.py covers the rest).
        assert s3.create_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert s3.head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]

        s3.put_object(Bucket=name, Key="blocker", Body=b"x")
        assert_s3_error("BucketNotEmpty", 409, s3.delete_bucket, Bucket=name)
        assert s3.get_object(Bucket=name, Key="blocker")["Body"].read() == b"x"
        s3.delete_object(Bucket=name, Key="blocker")
    finally:
        for key in keys_in(s3, name):
            s3.delete_object(Bucket=name, Key=key)
        assert s3.delete_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert_s3_error("404", 404, s3.head_bucket, Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert_s3_error("NoSuchBucket", 404, s3.delete_bucket, Bucket=name)


@pytest.mark.parametrize("name", ["ab", "UPPER-case-name", "double..dot", "-leading-dash", "192.168.1.1"])
def test_invalid_bucket_names(s3: Any, name: str) -> None:
    assert_s3_error("InvalidBucketName", 400, s3.create_bucket, Bucket=name)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_missing_bucket_and_key_errors(s3: Any, bucket: str) -> None:
    missing = unique_bucket_name()
    assert_s3_error("NoSuchKey", 404, s3.get_object, Bucket=bucket, Key="nothing-here")
    assert_s3_error("NoSuchBucket", 404, s3.get_object, Bucket=missing, Key="k")
    assert_s3_error("NoSuchBucket", 404, s3.put_object, Bucket=missing, Key="k", Body=b"x")
    assert_s3_error("NoSuchBucket", 404, s3.list_objects_v2, Bucket=missing)
    assert_s3_error("NoSuchBucket", 404, s3.create_multipart_upload, Bucket=missing, Key="k")
    assert_s3_error("404", 404, s3.head_object, Bucket=missing, Key="k")
    assert missing not in [b["Name"] for b in s3.list_buckets()["Buckets"]]
