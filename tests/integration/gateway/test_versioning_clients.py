"""Versioned buckets through real clients: boto3 end to end (Enabled and Suspended, delete markers,
DeleteObjects with version ids, copies of old versions), ``aws s3api``, s3fs in version-aware mode and
pyarrow reading the latest versions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import s3fs
from botocore.exceptions import ClientError

from tests.integration.gateway.clients import AwsCli, assert_s3_error, error_of, keys_in, md5_hex
from tests.integration.gateway.conftest import GatewayUnderTest


def _versioning(s3: Any, bucket: str, status: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
    assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == status


def _versions(s3: Any, bucket: str, key: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """(version id, is latest) of the key's versions and of its delete markers, newest first."""
    listing = s3.list_object_versions(Bucket=bucket, Prefix=key)
    versions = [(item["VersionId"], item["IsLatest"]) for item in listing.get("Versions", []) if item["Key"] == key]
    markers = [(item["VersionId"], item["IsLatest"]) for item in listing.get("DeleteMarkers", [])
               if item["Key"] == key]
    return versions, markers


def test_boto3_versions_delete_markers_and_copies(s3: Any, bucket: str) -> None:
    _versioning(s3, bucket, "Enabled")
    ids = [s3.put_object(Bucket=bucket, Key="doc", Body=f"body {n}".encode())["VersionId"] for n in (1, 2, 3)]
    assert len(set(ids)) == 3 and "null" not in ids
    for n, version_id in enumerate(ids, start=1):
        got = s3.get_object(Bucket=bucket, Key="doc", VersionId=version_id)
        assert (got["Body"].read(), got["VersionId"]) == (f"body {n}".encode(), version_id)

    # A delete without a version adds a delete marker: the key reads as absent, the versions stay.
    marker = s3.delete_object(Bucket=bucket, Key="doc")
    assert marker["DeleteMarker"] is True and marker["VersionId"] not in ids
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="doc")
    assert error_of(caught.value) == ("NoSuchKey", 404)
    assert caught.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"
    assert _versions(s3, bucket, "doc") == ([(ids[2], False), (ids[1], False), (ids[0], False)],
                                           [(marker["VersionId"], True)])
    # Deleting the marker by its version id restores the latest version.
    restored = s3.delete_object(Bucket=bucket, Key="doc", VersionId=marker["VersionId"])
    assert (restored["DeleteMarker"], restored["VersionId"]) == (True, marker["VersionId"])
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"body 3"

    # CopyObject from an old version: the source's version and the copy's own are returned.
    copied = s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "doc",
                                                                   "VersionId": ids[0]})
    assert copied["CopySourceVersionId"] == ids[0] and copied["VersionId"] not in (*ids, "null")
    assert s3.get_object(Bucket=bucket, Key="copy", VersionId=copied["VersionId"])["Body"].read() == b"body 1"
    # Copying an old version onto its own key is how S3 restores it: a new latest version.
    back = s3.copy_object(Bucket=bucket, Key="doc", CopySource={"Bucket": bucket, "Key": "doc", "VersionId": ids[1]})
    assert back["CopySourceVersionId"] == ids[1]
    latest = s3.get_object(Bucket=bucket, Key="doc")
    assert (latest["Body"].read(), latest["VersionId"]) == (b"body 2", back["VersionId"])
    assert [version for version, _ in _versions(s3, bucket, "doc")[0]] == [back["VersionId"], *reversed(ids)]


def test_delete_objects_with_version_ids(s3: Any, bucket: str) -> None:
    _versioning(s3, bucket, "Enabled")
    first, second = (s3.put_object(Bucket=bucket, Key="k", Body=body)["VersionId"] for body in (b"1", b"2"))
    other = s3.put_object(Bucket=bucket, Key="other", Body=b"o")["VersionId"]
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [
        {"Key": "k", "VersionId": first}, {"Key": "other"}, {"Key": "k", "VersionId": "not-a-version"}]})
    marker = next(item for item in result["Deleted"] if item["Key"] == "other")["DeleteMarkerVersionId"]
    assert sorted(result["Deleted"], key=lambda item: item["Key"]) == [
        {"Key": "k", "VersionId": first},
        {"Key": "other", "DeleteMarker": True, "DeleteMarkerVersionId": marker}]
    assert [(error["Key"], error["VersionId"], error["Code"]) for error in result["Errors"]] \
        == [("k", "not-a-version", "InvalidArgument")]
    assert _versions(s3, bucket, "k") == ([(second, True)], [])
    assert _versions(s3, bucket, "other") == ([(other, False)], [(marker, True)])
    # Deleting a delete marker by its version id: S3 reports the version, and that it was a marker.
    result = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "other", "VersionId": marker},
                                                                  {"Key": "k", "VersionId": second}]})
    assert sorted(result["Deleted"], key=lambda item: item["Key"]) == [
        {"Key": "k", "VersionId": second},
        {"Key": "other", "VersionId": marker, "DeleteMarker": True, "DeleteMarkerVersionId": marker}]
    assert keys_in(s3, bucket) == ["other"]


def test_suspended_bucket_writes_the_null_version(s3: Any, bucket: str) -> None:
    _versioning(s3, bucket, "Enabled")
    kept = s3.put_object(Bucket=bucket, Key="k", Body=b"kept")["VersionId"]
    _versioning(s3, bucket, "Suspended")
    # Writes now replace the key's null version (S3 returns no version id for it) and keep the older ones.
    for body in (b"null one", b"null two"):
        assert "VersionId" not in s3.put_object(Bucket=bucket, Key="k", Body=body)
    assert _versions(s3, bucket, "k") == ([("null", True), (kept, False)], [])
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"null two"
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=kept)["Body"].read() == b"kept"
    # A delete makes a null delete marker, which replaces the null version.
    deleted = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})["Deleted"]
    assert deleted == [{"Key": "k", "DeleteMarker": True, "DeleteMarkerVersionId": "null"}]
    assert _versions(s3, bucket, "k") == ([(kept, False)], [("null", True)])
    s3.delete_object(Bucket=bucket, Key="k", VersionId="null")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"kept"


def test_never_versioned_bucket_shows_no_version_ids(s3: Any, bucket: str) -> None:
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
    put = s3.put_object(Bucket=bucket, Key="k", Body=b"plain")
    copied = s3.copy_object(Bucket=bucket, Key="c", CopySource={"Bucket": bucket, "Key": "k"})
    assert "VersionId" not in put and "VersionId" not in copied and "CopySourceVersionId" not in copied
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
    assert "VersionId" not in done
    assert _versions(s3, bucket, "k") == ([("null", True)], [])
    assert s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "k"}]})["Deleted"] == [{"Key": "k"}]
    assert sorted(keys_in(s3, bucket)) == ["c", "m"]


def test_versioned_multipart_and_tagged_writes(s3: Any, bucket: str) -> None:
    _versioning(s3, bucket, "Enabled")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="m", Tagging="team=data&tier=hot")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="m", UploadId=upload, PartNumber=1, Body=b"part")["ETag"]
    done = s3.complete_multipart_upload(Bucket=bucket, Key="m", UploadId=upload,
                                        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part}]})
    assert done["VersionId"] not in (None, "null")
    assert s3.head_object(Bucket=bucket, Key="m")["VersionId"] == done["VersionId"]
    assert s3.get_object(Bucket=bucket, Key="m")["TagCount"] == 2

    put = s3.put_object(Bucket=bucket, Key="t", Body=b"t", Tagging="a=1&b=two%20words")
    tags = s3.get_object_tagging(Bucket=bucket, Key="t", VersionId=put["VersionId"])["TagSet"]
    assert sorted((tag["Key"], tag["Value"]) for tag in tags) == [("a", "1"), ("b", "two words")]
    source = {"Bucket": bucket, "Key": "t"}
    s3.copy_object(Bucket=bucket, Key="t-copy", CopySource=source)
    assert s3.get_object(Bucket=bucket, Key="t-copy")["TagCount"] == 2  # COPY, the default: the source's tags
    s3.copy_object(Bucket=bucket, Key="t-replaced", CopySource=source, TaggingDirective="REPLACE", Tagging="c=3")
    assert s3.get_object_tagging(Bucket=bucket, Key="t-replaced")["TagSet"] == [{"Key": "c", "Value": "3"}]
    # Bad tags and ACLs other than private are refused before anything is stored.
    assert_s3_error("InvalidTag", 400, s3.put_object, Bucket=bucket, Key="bad", Body=b"x", Tagging="a=1&a=2")
    assert_s3_error("NotImplemented", 501, s3.put_object, Bucket=bucket, Key="bad", Body=b"x", ACL="public-read")
    assert_s3_error("NotImplemented", 501, s3.create_multipart_upload, Bucket=bucket, Key="bad",
                    ACL="public-read")
    assert_s3_error("NotImplemented", 501, s3.copy_object, Bucket=bucket, Key="bad", CopySource=source,
                    GrantRead='id="someone"')
    s3.put_object(Bucket=bucket, Key="private", Body=b"p", ACL="private")
    assert sorted(keys_in(s3, bucket)) == ["m", "private", "t", "t-copy", "t-replaced"]


def test_awscli_s3api_versioning(gateway: GatewayUnderTest, s3: Any, bucket: str, tmp_path: Path) -> None:
    aws = AwsCli.for_gateway(gateway, tmp_path / "aws-home")
    aws.run("s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled")
    assert json.loads(aws.run("s3api", "get-bucket-versioning", "--bucket", bucket).stdout)["Status"] == "Enabled"
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_bytes(b"first version")
    second.write_bytes(b"second version")
    created = json.loads(aws.run("s3api", "put-object", "--bucket", bucket, "--key", "f.txt", "--body", str(first),
                                 "--if-none-match", "*").stdout)
    assert created["ETag"] == f'"{md5_hex(b"first version")}"'
    refused = aws.run("s3api", "put-object", "--bucket", bucket, "--key", "f.txt", "--body", str(second),
                      "--if-none-match", "*", check=False)
    assert refused.returncode != 0 and "PreconditionFailed" in refused.stderr
    aws.run("s3api", "put-object", "--bucket", bucket, "--key", "f.txt", "--body", str(second))

    listing = json.loads(aws.run("s3api", "list-object-versions", "--bucket", bucket).stdout)
    versions = [(item["Key"], item["VersionId"], item["IsLatest"]) for item in listing["Versions"]]
    assert len(versions) == 2 and versions[1] == ("f.txt", created["VersionId"], False)
    out = tmp_path / "old.txt"
    got = json.loads(aws.run("s3api", "get-object", "--bucket", bucket, "--key", "f.txt", "--version-id",
                             created["VersionId"], str(out)).stdout)
    assert got["VersionId"] == created["VersionId"] and out.read_bytes() == b"first version"


def test_s3fs_reads_an_old_version(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    _versioning(s3, bucket, "Enabled")
    old = s3.put_object(Bucket=bucket, Key="dir/data.bin", Body=b"old bytes")["VersionId"]
    new = s3.put_object(Bucket=bucket, Key="dir/data.bin", Body=b"new bytes")["VersionId"]
    fs = s3fs.S3FileSystem(key=gateway.access_key_id, secret=gateway.secret_access_key, version_aware=True,
                           client_kwargs={"endpoint_url": gateway.endpoint, "region_name": gateway.region},
                           skip_instance_cache=True, use_listings_cache=False)
    with fs.open(f"{bucket}/dir/data.bin", "rb", version_id=old) as handle:
        assert handle.read() == b"old bytes"
    # A version in the path (cat_file: cat would take the "?" for a glob).
    assert fs.cat_file(f"{bucket}/dir/data.bin?versionId={old}") == b"old bytes"
    assert fs.cat_file(f"{bucket}/dir/data.bin") == b"new bytes"
    assert sorted(info["VersionId"] for info in fs.object_version_info(f"{bucket}/dir/data.bin")) == sorted([old, new])
    assert sorted(fs.ls(f"{bucket}/dir", versions=True)) == sorted(
        f"{bucket}/dir/data.bin?versionId={version}" for version in (old, new))


def test_pyarrow_reads_the_latest_versions(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    _versioning(s3, bucket, "Enabled")
    arrow_fs = pafs.S3FileSystem(access_key=gateway.access_key_id, secret_key=gateway.secret_access_key,
                                 endpoint_override=urlsplit(gateway.endpoint).netloc, scheme="http",
                                 region=gateway.region)
    stale, fresh = pa.table({"n": [1, 2]}), pa.table({"n": [10, 20, 30]})
    pq.write_table(stale, f"{bucket}/t/part-0.parquet", filesystem=arrow_fs)
    pq.write_table(stale, f"{bucket}/t/part-1.parquet", filesystem=arrow_fs)
    pq.write_table(fresh, f"{bucket}/t/part-0.parquet", filesystem=arrow_fs)  # a second version
    s3.delete_object(Bucket=bucket, Key="t/part-1.parquet")  # a delete marker
    files = [info.path for info in arrow_fs.get_file_info(pafs.FileSelector(f"{bucket}/t"))]
    assert files == [f"{bucket}/t/part-0.parquet"]
    assert pq.read_table(f"{bucket}/t", filesystem=arrow_fs).equals(fresh)
