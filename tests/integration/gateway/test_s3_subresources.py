"""Bucket and object subresources through the gateway: versioning configuration, object tagging, ACLs,
LocationConstraint; boto3 and awscli as clients, raw signed requests where the client would not send it.

Every refusal is checked to have changed nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.gateway.clients import (
    AwsCli,
    assert_s3_error,
    send_signed,
    sign,
    unique_bucket_name,
)
from tests.integration.gateway.conftest import GatewayUnderTest

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


def tags_of(s3: Any, bucket: str, key: str) -> list[dict[str, str]]:
    """The object's tags, in key order (S3 promises no order)."""
    return sorted(s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"], key=lambda tag: tag["Key"])


def status_of(s3: Any, bucket: str) -> str | None:
    return s3.get_bucket_versioning(Bucket=bucket).get("Status")


def test_versioning_configuration(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    assert status_of(s3, bucket) is None  # never set: no Status at all
    for status in ("Enabled", "Suspended", "Enabled"):
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": status})
        assert status_of(s3, bucket) == status

    assert_s3_error("IllegalVersioningConfigurationException", 400, s3.put_bucket_versioning, Bucket=bucket,
                    VersioningConfiguration={"Status": "Disabled"})
    assert_s3_error("NotImplemented", 501, s3.put_bucket_versioning, Bucket=bucket, MFA="serial 123456",
                    VersioningConfiguration={"Status": "Suspended", "MFADelete": "Enabled"})
    for body, code in ((b"<VersioningConfiguration><Status>Suspended", "MalformedXML"),
                       (b"", "MalformedXML"),
                       (b"<VersioningConfiguration><MfaDelete>Enabled</MfaDelete><Status>Suspended</Status>"
                        b"</VersioningConfiguration>", "NotImplemented")):
        response = send_signed(gateway, sign(gateway, "PUT", f"/{bucket}?versioning", body=body))
        assert response.code == code, response
    assert status_of(s3, bucket) == "Enabled"  # no refusal changed it
    assert_s3_error("NoSuchBucket", 404, s3.put_bucket_versioning, Bucket=unique_bucket_name(),
                    VersioningConfiguration={"Status": "Enabled"})


def test_object_tagging(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="doc", Body=b"x")
    got = s3.get_object_tagging(Bucket=bucket, Key="doc")
    assert got["TagSet"] == [] and got["VersionId"] == "null"

    tags = [{"Key": "e", "Value": ""}, {"Key": "project", "Value": "blue sky"}, {"Key": "é" * 128, "Value": "ü" * 256}]
    put = s3.put_object_tagging(Bucket=bucket, Key="doc", Tagging={"TagSet": tags})
    assert put["VersionId"] == "null"
    assert tags_of(s3, bucket, "doc") == tags
    assert s3.get_object(Bucket=bucket, Key="doc")["Body"].read() == b"x"  # the bytes are untouched

    too_many = [{"Key": f"k{n}", "Value": "v"} for n in range(11)]
    for bad in (too_many, [{"Key": "k" * 129, "Value": "v"}], [{"Key": "k", "Value": "v" * 257}],
                [{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}], [{"Key": "a&b", "Value": "v"}]):
        assert_s3_error("InvalidTag", 400, s3.put_object_tagging, Bucket=bucket, Key="doc",
                        Tagging={"TagSet": bad})
    assert tags_of(s3, bucket, "doc") == tags  # refusals stored nothing

    deleted = s3.delete_object_tagging(Bucket=bucket, Key="doc")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204 and deleted["VersionId"] == "null"
    assert s3.get_object_tagging(Bucket=bucket, Key="doc")["TagSet"] == []
    for call in (s3.get_object_tagging, s3.delete_object_tagging):
        assert_s3_error("NoSuchKey", 404, call, Bucket=bucket, Key="missing")
    assert_s3_error("NoSuchKey", 404, s3.put_object_tagging, Bucket=bucket, Key="missing",
                    Tagging={"TagSet": tags[:1]})


def test_tagging_by_version(s3: Any, bucket: str) -> None:
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"1")["VersionId"]
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"2")["VersionId"]
    answer = s3.put_object_tagging(Bucket=bucket, Key="k", VersionId=first,
                                   Tagging={"TagSet": [{"Key": "old", "Value": "yes"}]})
    assert answer["VersionId"] == first
    latest = s3.get_object_tagging(Bucket=bucket, Key="k")
    assert latest["VersionId"] == second and latest["TagSet"] == []
    older = s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=first)
    assert older["VersionId"] == first and older["TagSet"] == [{"Key": "old", "Value": "yes"}]
    assert s3.delete_object_tagging(Bucket=bucket, Key="k", VersionId=first)["VersionId"] == first
    assert s3.get_object_tagging(Bucket=bucket, Key="k", VersionId=first)["TagSet"] == []
    assert_s3_error("NoSuchVersion", 404, s3.get_object_tagging, Bucket=bucket, Key="k", VersionId="0" * 32)
    # A version id dwray cannot have issued is refused as malformed, as on GET.
    assert_s3_error("InvalidArgument", 400, s3.get_object_tagging, Bucket=bucket, Key="k", VersionId="no-such-version")


def test_acls_are_the_owners_full_control(s3: Any, bucket: str) -> None:
    owner = s3.list_buckets()["Owner"]
    s3.put_object(Bucket=bucket, Key="doc", Body=b"x")
    full_control = [{"Grantee": {**owner, "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"}]
    for answer in (s3.get_bucket_acl(Bucket=bucket), s3.get_object_acl(Bucket=bucket, Key="doc")):
        assert answer["Owner"] == owner and answer["Grants"] == full_control

    policy = {"Owner": owner, "Grants": full_control}
    for call, where in ((s3.put_bucket_acl, {}), (s3.put_object_acl, {"Key": "doc"})):
        assert call(Bucket=bucket, ACL="private", **where)["ResponseMetadata"]["HTTPStatusCode"] == 200
        assert call(Bucket=bucket, AccessControlPolicy=policy, **where)["ResponseMetadata"]["HTTPStatusCode"] == 200
        refusals: list[dict[str, Any]] = [
            {"ACL": "public-read"}, {"ACL": "bucket-owner-full-control"}, {"GrantRead": f"uri={ALL_USERS}"},
            {"AccessControlPolicy": {"Owner": owner, "Grants": [
                *full_control, {"Grantee": {"Type": "Group", "URI": ALL_USERS}, "Permission": "READ"}]}},
            {"AccessControlPolicy": {"Owner": owner, "Grants": [
                {"Grantee": {"Type": "CanonicalUser", "ID": "someone-else"}, "Permission": "FULL_CONTROL"}]}},
        ]
        for refused in refusals:
            assert_s3_error("NotImplemented", 501, call, Bucket=bucket, **where, **refused)
        assert_s3_error("InvalidArgument", 400, call, Bucket=bucket, ACL="world-writable", **where)
    assert s3.get_bucket_acl(Bucket=bucket)["Grants"] == full_control  # unchanged by the refusals
    assert_s3_error("NoSuchKey", 404, s3.get_object_acl, Bucket=bucket, Key="missing")
    assert_s3_error("NoSuchKey", 404, s3.put_object_acl, Bucket=bucket, Key="missing", ACL="private")
    assert_s3_error("NoSuchBucket", 404, s3.get_bucket_acl, Bucket=unique_bucket_name())


def test_put_acl_request_shapes(gateway: GatewayUnderTest, bucket: str) -> None:
    """Header or body, not both, not neither; ACL XML that breaks S3's schema is MalformedACLError."""
    private = "<AccessControlPolicy><AccessControlList><Grant><Grantee><ID>{}</ID></Grantee>" \
              "<Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>"
    owner_body = private.format("x").encode()
    cases = [
        ({}, b"", 400, "MissingSecurityHeader"),
        ({"x-amz-acl": "private"}, owner_body, 400, "UnexpectedContent"),
        ({"x-amz-acl": "private", "x-amz-grant-read": f"uri={ALL_USERS}"}, b"", 400, "InvalidRequest"),
        ({}, owner_body.replace(b"FULL_CONTROL", b"ALL_OF_IT"), 400, "MalformedACLError"),
        ({}, b"<AccessControlPolicy><AccessControlList>", 400, "MalformedXML"),
    ]
    for headers, body, status, code in cases:
        response = send_signed(gateway, sign(gateway, "PUT", f"/{bucket}?acl", headers=headers, body=body))
        assert (response.status, response.code) == (status, code), (headers, body, response)


def test_create_bucket_acl_and_location(s3: Any) -> None:
    refused = unique_bucket_name()
    assert_s3_error("NotImplemented", 501, s3.create_bucket, Bucket=refused, ACL="public-read")
    assert_s3_error("NotImplemented", 501, s3.create_bucket, Bucket=refused, GrantFullControl="id=someone")
    assert_s3_error("NotImplemented", 501, s3.create_bucket, Bucket=refused, ObjectLockEnabledForBucket=True)
    assert_s3_error("InvalidLocationConstraint", 400, s3.create_bucket, Bucket=refused,
                    CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert_s3_error("404", 404, s3.head_bucket, Bucket=refused)  # no refusal made the bucket

    for config in ({"ACL": "private"}, {"CreateBucketConfiguration": {"LocationConstraint": "us-east-1"}}):
        name = unique_bucket_name()
        assert s3.create_bucket(Bucket=name, **config)["ResponseMetadata"]["HTTPStatusCode"] == 200
        # S3 answers us-east-1 with an empty LocationConstraint (botocore: None).
        assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] is None
        s3.delete_bucket(Bucket=name)


def test_awscli_subresources(gateway: GatewayUnderTest, s3: Any, bucket: str, tmp_path: Path) -> None:
    aws = AwsCli.for_gateway(gateway, tmp_path / "aws-home")
    s3.put_object(Bucket=bucket, Key="doc", Body=b"x")
    aws.run("s3api", "put-bucket-versioning", "--bucket", bucket, "--versioning-configuration", "Status=Enabled")
    assert json.loads(aws.run("s3api", "get-bucket-versioning", "--bucket", bucket).stdout) == {"Status": "Enabled"}
    aws.run("s3api", "put-object-tagging", "--bucket", bucket, "--key", "doc",
            "--tagging", json.dumps({"TagSet": [{"Key": "team", "Value": "data"}]}))
    tagging = json.loads(aws.run("s3api", "get-object-tagging", "--bucket", bucket, "--key", "doc").stdout)
    assert tagging["TagSet"] == [{"Key": "team", "Value": "data"}]
    refused = aws.run("s3api", "put-bucket-acl", "--bucket", bucket, "--acl", "public-read", check=False)
    assert refused.returncode != 0 and "NotImplemented" in refused.stderr and "public-read" in refused.stderr
