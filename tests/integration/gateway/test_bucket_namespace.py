"""One global bucket namespace, as in S3: a name belongs to one tenant, and every other tenant is refused.

Tenant A is the session's first tenant; tenant B gets its own key. B may not create
A's name (409 BucketAlreadyExists), and every request B makes on A's bucket is 403
AccessDenied, copy sources included, while a name nobody holds stays 404
NoSuchBucket. A's own re-create in us-east-1 is 200 and leaves the bucket as it was.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.gateway.clients import assert_s3_error, keys_in, unique_bucket_name
from tests.integration.gateway.conftest import GatewayUnderTest

DENIED = ("AccessDenied", 403)


@pytest.fixture(scope="module")
def rival(gateway: GatewayUnderTest) -> Any:
    """boto3 for a second tenant."""
    return gateway.client(*gateway.new_key(f"rival-{uuid.uuid4().hex[:8]}"))


def test_a_bucket_name_belongs_to_one_tenant(gateway: GatewayUnderTest, s3: Any, bucket: str, rival: Any) -> None:
    assert gateway.region == "us-east-1"
    s3.put_object(Bucket=bucket, Key="kept", Body=b"A's bytes")
    assert_s3_error("BucketAlreadyExists", 409, rival.create_bucket, Bucket=bucket)
    # The owner's re-create: 200 in us-east-1 (as AWS answers), contents untouched.
    assert s3.create_bucket(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert keys_in(s3, bucket) == ["kept"]
    assert bucket not in [b["Name"] for b in rival.list_buckets()["Buckets"]]
    # A name nobody holds is still simply missing.
    assert_s3_error("NoSuchBucket", 404, rival.list_objects_v2, Bucket=unique_bucket_name())


def test_every_request_on_another_tenants_bucket_is_denied(s3: Any, bucket: str, rival: Any) -> None:
    s3.put_object(Bucket=bucket, Key="kept", Body=b"A's bytes")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    own = unique_bucket_name()
    rival.create_bucket(Bucket=own)
    rival_upload = rival.create_multipart_upload(Bucket=own, Key="copy")["UploadId"]
    where = {"Bucket": bucket, "Key": "kept"}
    tag_set = {"TagSet": [{"Key": "k", "Value": "v"}]}
    attempts: dict[str, Callable[[], Any]] = {
        "ListObjectsV2": lambda: rival.list_objects_v2(Bucket=bucket),
        "ListObjects": lambda: rival.list_objects(Bucket=bucket),
        "ListObjectVersions": lambda: rival.list_object_versions(Bucket=bucket),
        "ListMultipartUploads": lambda: rival.list_multipart_uploads(Bucket=bucket),
        "GetBucketLocation": lambda: rival.get_bucket_location(Bucket=bucket),
        "GetObject": lambda: rival.get_object(**where),
        "PutObject": lambda: rival.put_object(**where, Body=b"B's bytes"),
        "DeleteObject": lambda: rival.delete_object(**where),
        "DeleteObjects": lambda: rival.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "kept"}]}),
        "DeleteBucket": lambda: rival.delete_bucket(Bucket=bucket),
        "CreateMultipartUpload": lambda: rival.create_multipart_upload(**where),
        "UploadPart": lambda: rival.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"x"),
        "ListParts": lambda: rival.list_parts(Bucket=bucket, Key="mp", UploadId=upload),
        "AbortMultipartUpload": lambda: rival.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload),
        "GetBucketVersioning": lambda: rival.get_bucket_versioning(Bucket=bucket),
        "PutBucketVersioning": lambda: rival.put_bucket_versioning(
            Bucket=bucket, VersioningConfiguration={"Status": "Enabled"}),
        "GetObjectTagging": lambda: rival.get_object_tagging(**where),
        "PutObjectTagging": lambda: rival.put_object_tagging(**where, Tagging=tag_set),
        "DeleteObjectTagging": lambda: rival.delete_object_tagging(**where),
        "GetBucketAcl": lambda: rival.get_bucket_acl(Bucket=bucket),
        "PutBucketAcl": lambda: rival.put_bucket_acl(Bucket=bucket, ACL="private"),
        "GetObjectAcl": lambda: rival.get_object_acl(**where),
        "PutObjectAcl": lambda: rival.put_object_acl(**where, ACL="private"),
        # Copies whose source is A's bucket, into B's own: 403, not 404.
        "CopyObject (source)": lambda: rival.copy_object(Bucket=own, Key="copy", CopySource=where),
        "UploadPartCopy (source)": lambda: rival.upload_part_copy(
            Bucket=own, Key="copy", UploadId=rival_upload, PartNumber=1, CopySource=where),
        "CopyObject (destination)": lambda: rival.copy_object(
            Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "kept"}),
    }
    answers = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            answers[name] = "succeeded"
        except rival.exceptions.ClientError as error:
            answers[name] = (error.response["Error"]["Code"], error.response["ResponseMetadata"]["HTTPStatusCode"])
    assert answers == {name: DENIED for name in attempts}
    for head in (lambda: rival.head_bucket(Bucket=bucket), lambda: rival.head_object(**where)):
        with pytest.raises(rival.exceptions.ClientError) as caught:
            head()
        assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    # Nothing B tried changed A's bucket.
    assert keys_in(s3, bucket) == ["kept"]
    assert s3.get_object(**where)["Body"].read() == b"A's bytes"
    assert s3.get_object_tagging(**where)["TagSet"] == []
    assert s3.get_bucket_versioning(Bucket=bucket).get("Status") is None
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)
    assert keys_in(rival, own) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)
    rival.abort_multipart_upload(Bucket=own, Key="copy", UploadId=rival_upload)
    rival.delete_bucket(Bucket=own)
