"""Object reads and edges of issue 11 on the session gateway, with boto3 and raw signed or presigned requests.

- GET/HEAD/DELETE by ``versionId`` (``null`` too), delete markers and the
  ``x-amz-version-id`` / ``x-amz-delete-marker`` headers S3 sends with them;
  ``x-amz-tagging-count`` on GET.
- GET/HEAD ``?partNumber=N``: the part's bytes, ``Content-Range`` and
  ``x-amz-mp-parts-count``; parts an object does not have are 416 InvalidPartNumber.
- A part uploaded twice at once: the upload that finished last is the part.
- UploadPartCopy ranges out of the source: 416 InvalidRange; malformed: 400.
- Presigned URLs that are expired or can never be valid: 403 AccessDenied.
- Content-Encoding: only ``aws-chunked`` is dropped, the rest kept verbatim.

Every refused request is checked to have stored nothing.
"""
from __future__ import annotations

import base64
import datetime
import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from botocore.auth import SIGV4_TIMESTAMP, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.integration.gateway.clients import (
    STREAMING_PAYLOAD,
    AwsCli,
    MiB,
    assert_s3_error,
    aws_chunked_body,
    encoded_chunked_length,
    error_code,
    error_of,
    md5_hex,
    random_bytes,
    send_signed,
    sign,
)
from tests.integration.gateway.conftest import GatewayUnderTest

WELL_FORMED_UNKNOWN_VERSION = "0" * 32


def headers_of(response: dict[str, Any]) -> dict[str, str]:
    return response["ResponseMetadata"]["HTTPHeaders"]


def refused(call: Any, **params: Any) -> tuple[str, int, dict[str, str]]:
    """The S3 error code, status and response headers of a call that must fail."""
    with pytest.raises(ClientError) as caught:
        call(**params)
    code, status = error_of(caught.value)
    return code, status, caught.value.response["ResponseMetadata"]["HTTPHeaders"]


# -- versionId on GET, HEAD and DELETE ------------------------------------------------------------


def test_reads_and_deletes_by_version_id(s3: Any, bucket: str) -> None:
    # A never-versioned bucket: its objects are the null version, and no header names it unasked.
    s3.put_object(Bucket=bucket, Key="k", Body=b"null version")
    assert "x-amz-version-id" not in headers_of(s3.get_object(Bucket=bucket, Key="k"))
    assert "x-amz-version-id" not in headers_of(s3.head_object(Bucket=bucket, Key="k"))
    by_null = s3.get_object(Bucket=bucket, Key="k", VersionId="null")
    assert by_null["Body"].read() == b"null version" and by_null["VersionId"] == "null"
    assert s3.head_object(Bucket=bucket, Key="k", VersionId="null")["VersionId"] == "null"

    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=bucket, Key="k", Body=b"one")["VersionId"]
    v2 = s3.put_object(Bucket=bucket, Key="k", Body=b"two")["VersionId"]
    assert len({"null", v1, v2}) == 3
    latest = s3.get_object(Bucket=bucket, Key="k")
    assert (latest["Body"].read(), latest["VersionId"]) == (b"two", v2)
    old = s3.get_object(Bucket=bucket, Key="k", VersionId=v1)
    assert (old["Body"].read(), old["VersionId"]) == (b"one", v1)
    assert s3.head_object(Bucket=bucket, Key="k", VersionId=v1)["ContentLength"] == 3
    assert s3.get_object(Bucket=bucket, Key="k", VersionId="null")["Body"].read() == b"null version"
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v1, Range="bytes=1-")["Body"].read() == b"ne"

    # A delete makes a marker, and S3 names it.
    deleted = s3.delete_object(Bucket=bucket, Key="k")
    marker = deleted["VersionId"]
    assert deleted["DeleteMarker"] is True and marker not in ("null", v1, v2)
    for call, has_body in ((s3.get_object, True), (s3.head_object, False)):
        def answer(code: str, status: int, has_body: bool = has_body) -> tuple[str, int]:
            return (code if has_body else str(status)), status  # HEAD answers carry no body

        code, status, headers = refused(call, Bucket=bucket, Key="k")
        assert (code, status) == answer("NoSuchKey", 404)
        assert (headers["x-amz-delete-marker"], headers["x-amz-version-id"]) == ("true", marker)
        code, status, headers = refused(call, Bucket=bucket, Key="k", VersionId=marker)
        assert (code, status) == answer("MethodNotAllowed", 405)
        assert (headers["x-amz-delete-marker"], headers["x-amz-version-id"]) == ("true", marker)
        assert headers["last-modified"].endswith(" GMT")  # when the marker was made, as S3 says
        # An unknown version, well-formed or not.
        code, status, _ = refused(call, Bucket=bucket, Key="k", VersionId=WELL_FORMED_UNKNOWN_VERSION)
        assert (code, status) == answer("NoSuchVersion", 404)
        code, status, _ = refused(call, Bucket=bucket, Key="k", VersionId="not-a-version")
        assert (code, status) == answer("InvalidArgument", 400)
    assert_s3_error("InvalidArgument", 400, s3.delete_object, Bucket=bucket, Key="k", VersionId="not-a-version")
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v2)["Body"].read() == b"two"  # nothing changed

    # Deleting the marker brings the key back; deleting a version names it.
    undeleted = s3.delete_object(Bucket=bucket, Key="k", VersionId=marker)
    assert (undeleted["DeleteMarker"], undeleted["VersionId"]) == (True, marker)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"two"
    gone = s3.delete_object(Bucket=bucket, Key="k", VersionId=v1)
    assert gone["VersionId"] == v1 and "DeleteMarker" not in gone
    assert refused(s3.get_object, Bucket=bucket, Key="k", VersionId=v1)[:2] == ("NoSuchVersion", 404)
    assert s3.get_object(Bucket=bucket, Key="k", VersionId=v2)["Body"].read() == b"two"


def test_unversioned_delete_names_nothing_and_tag_count_is_on_get(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="tagged", Body=b"x")
    assert "TagCount" not in s3.get_object(Bucket=bucket, Key="tagged")
    s3.put_object_tagging(Bucket=bucket, Key="tagged", Tagging={"TagSet": [
        {"Key": "a", "Value": "1"}, {"Key": "b", "Value": ""}]})
    assert s3.get_object(Bucket=bucket, Key="tagged")["TagCount"] == 2
    assert "x-amz-tagging-count" not in headers_of(s3.head_object(Bucket=bucket, Key="tagged"))  # as S3: GET only
    deleted = headers_of(s3.delete_object(Bucket=bucket, Key="tagged"))
    assert "x-amz-delete-marker" not in deleted and "x-amz-version-id" not in deleted
    assert refused(s3.head_object, Bucket=bucket, Key="tagged")[1] == 404


# -- partNumber on GET and HEAD -------------------------------------------------------------------


def test_get_and_head_by_part_number(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    first, last = random_bytes(5 * MiB, seed=11), random_bytes(1000, seed=12)
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    parts = [{"PartNumber": number, "ETag": s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload,
                                                           PartNumber=number, Body=body)["ETag"]}
             for number, body in ((1, first), (2, last))]
    etag = s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                        MultipartUpload={"Parts": parts})["ETag"]
    size = len(first) + len(last)
    for number, start, body in ((1, 0, first), (2, len(first), last)):
        got = s3.get_object(Bucket=bucket, Key="mp", PartNumber=number)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206 and got["Body"].read() == body
        assert got["ContentRange"] == f"bytes {start}-{start + len(body) - 1}/{size}"
        assert (got["PartsCount"], got["ContentLength"], got["ETag"]) == (2, len(body), etag)
        head = s3.head_object(Bucket=bucket, Key="mp", PartNumber=number)
        assert (head["ResponseMetadata"]["HTTPStatusCode"], head["ContentLength"], head["PartsCount"]) == \
            (206, len(body), 2)
        assert head["ContentRange"] == got["ContentRange"]
    assert refused(s3.get_object, Bucket=bucket, Key="mp", PartNumber=3)[:2] == ("InvalidPartNumber", 416)
    assert refused(s3.head_object, Bucket=bucket, Key="mp", PartNumber=3)[1] == 416
    assert refused(s3.get_object, Bucket=bucket, Key="mp", PartNumber=1, Range="bytes=0-1")[:2] == \
        ("InvalidRequest", 400)

    # A single-part object has one part, all of it.
    s3.put_object(Bucket=bucket, Key="one", Body=b"0123456789")
    whole = s3.get_object(Bucket=bucket, Key="one", PartNumber=1)
    assert (whole["ResponseMetadata"]["HTTPStatusCode"], whole["Body"].read(), whole["ContentRange"]) == \
        (206, b"0123456789", "bytes 0-9/10")
    assert "PartsCount" not in whole
    assert refused(s3.get_object, Bucket=bucket, Key="one", PartNumber=2)[:2] == ("InvalidPartNumber", 416)
    for number in ("0", "10001", "x", ""):
        response = send_signed(gateway, sign(gateway, "GET", f"/{bucket}/one?partNumber={number}"))
        assert (response.status, response.code) == (400, "InvalidArgument"), number


# -- a part uploaded twice at once ----------------------------------------------------------------


def test_a_part_uploaded_twice_is_the_upload_that_finished_last(s3: Any, bucket: str) -> None:
    """The first upload of part 1 starts, the second runs whole, then the first finishes: it is the part."""
    upload = s3.create_multipart_upload(Bucket=bucket, Key="twice")["UploadId"]
    url = s3.generate_presigned_url("upload_part", Params={"Bucket": bucket, "Key": "twice", "UploadId": upload,
                                                           "PartNumber": 1})
    slow_body, fast_body = b"S" * 300_000, b"F" * 200_000
    started, release = threading.Event(), threading.Event()
    answers: dict[str, requests.Response] = {}

    def slow_chunks() -> Iterator[bytes]:
        yield slow_body[:100_000]
        started.set()
        assert release.wait(60)
        yield slow_body[100_000:]

    def slow_upload() -> None:
        answers["slow"] = requests.put(url, data=slow_chunks(), timeout=120)

    thread = threading.Thread(target=slow_upload)
    thread.start()
    try:
        assert started.wait(60)
        fast = s3.upload_part(Bucket=bucket, Key="twice", UploadId=upload, PartNumber=1, Body=fast_body)
    finally:
        release.set()
        thread.join(120)
    slow = answers["slow"]
    assert slow.status_code == 200, slow.text
    assert (slow.headers["ETag"], fast["ETag"]) == (f'"{md5_hex(slow_body)}"', f'"{md5_hex(fast_body)}"')
    listed = s3.list_parts(Bucket=bucket, Key="twice", UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [(1, slow.headers["ETag"], len(slow_body))]

    assert_s3_error("InvalidPart", 400, s3.complete_multipart_upload, Bucket=bucket, Key="twice", UploadId=upload,
                    MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": fast["ETag"]}]})
    assert refused(s3.head_object, Bucket=bucket, Key="twice")[1] == 404  # the refused Complete stored nothing
    s3.complete_multipart_upload(Bucket=bucket, Key="twice", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": slow.headers["ETag"]}]})
    assert s3.get_object(Bucket=bucket, Key="twice")["Body"].read() == slow_body


# -- UploadPartCopy ranges ------------------------------------------------------------------------


def test_upload_part_copy_ranges(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="src", Body=b"0123456789")
    upload = s3.create_multipart_upload(Bucket=bucket, Key="dst")["UploadId"]
    params = {"Bucket": bucket, "Key": "dst", "UploadId": upload, "PartNumber": 1,
              "CopySource": {"Bucket": bucket, "Key": "src"}}
    for outside in ("bytes=0-10", "bytes=10-12", "bytes=5-4"):
        assert_s3_error("InvalidRange", 416, s3.upload_part_copy, CopySourceRange=outside, **params)
    for malformed in ("bytes=0-", "bytes=-3", "items=0-3", "0-3", "bytes=0-2,4-5", "bytes=a-b"):
        assert_s3_error("InvalidArgument", 400, s3.upload_part_copy, CopySourceRange=malformed, **params)
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="dst", UploadId=upload)  # nothing stored
    copied = s3.upload_part_copy(CopySourceRange="bytes=2-9", **params)["CopyPartResult"]
    assert copied["ETag"] == f'"{md5_hex(b"23456789")}"'
    s3.abort_multipart_upload(Bucket=bucket, Key="dst", UploadId=upload)


# -- presigned URLs that are expired or can never be valid ---------------------------------------


class IssuedAt(S3SigV4QueryAuth):
    """botocore's (pure Python) presigner, with any X-Amz-Expires and the issue time chosen by the test.

    boto3's own ``generate_presigned_url`` refuses to make the URLs under test (awscrt asserts a
    positive expiry), and a URL that has already expired needs an issue time in the past.
    """

    def __init__(self, credentials: Credentials, region: str, expires: int, at: datetime.datetime) -> None:
        super().__init__(credentials, "s3", region, expires=expires)
        self._at = at

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        request.context["timestamp"] = self._at.strftime(SIGV4_TIMESTAMP)
        super()._modify_request_before_signing(request)


def presigned(gateway: GatewayUnderTest, method: str, path: str, expires: int, *,
              issued_ago: datetime.timedelta = datetime.timedelta(0)) -> str:
    request = AWSRequest(method=method, url=f"{gateway.endpoint}{path}")
    credentials = Credentials(gateway.access_key_id, gateway.secret_access_key)
    IssuedAt(credentials, gateway.region, expires, datetime.datetime.now(datetime.UTC) - issued_ago).add_auth(request)
    return request.url


def test_presigned_urls_out_of_their_time_are_access_denied(gateway: GatewayUnderTest, s3: Any,
                                                            bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"secret-free body")
    cases = {-7: "X-Amz-Expires must be non-negative", 0: "Request has expired",
             604801: "X-Amz-Expires must be less than a week (in seconds) that is 604800"}
    for expires, message in cases.items():
        for method, path in (("GET", f"/{bucket}/k"), ("PUT", f"/{bucket}/new")):
            url = presigned(gateway, method, path, expires)
            assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == [str(expires)]
            response = requests.request(method, url, data=b"body" if method == "PUT" else None, timeout=30)
            assert (response.status_code, error_code(response.content)) == (403, "AccessDenied"), response.text
            assert message in response.text
    week = presigned(gateway, "GET", f"/{bucket}/k", 604800)
    assert requests.get(week, timeout=30).content == b"secret-free body"
    not_a_number = requests.get(week.replace("X-Amz-Expires=604800", "X-Amz-Expires=soon"), timeout=30)
    assert (not_a_number.status_code, error_code(not_a_number.content)) == (403, "AccessDenied")

    # Issued two hours ago for one hour: expired.
    expired = requests.put(presigned(gateway, "PUT", f"/{bucket}/new", 3600, issued_ago=datetime.timedelta(hours=2)),
                           data=b"body", timeout=30)
    assert (expired.status_code, error_code(expired.content)) == (403, "AccessDenied")
    assert "Request has expired" in expired.text

    # SigV2 presigned URLs (boto3's default) whose Expires has passed.
    old = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "new"}, ExpiresIn=-60)
    assert "AWSAccessKeyId=" in old
    response = requests.put(old, data=b"body", timeout=30)
    assert (response.status_code, error_code(response.content)) == (403, "AccessDenied")
    assert refused(s3.head_object, Bucket=bucket, Key="new")[1] == 404  # no refused PUT stored anything


# -- Content-Encoding ---------------------------------------------------------------------------


def test_content_encoding_drops_only_aws_chunked(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    chunks = [b"a" * 1000, b"b" * 10]
    for encoding, stored in (("aws-chunked, gzip", "gzip"), ("gzip,aws-chunked", "gzip"),
                             ("aws-chunked", None), ("gzip, aws-chunked, br", "gzip, br")):
        length = encoded_chunked_length(chunks)
        request = sign(gateway, "PUT", f"/{bucket}/chunked", payload_hash=STREAMING_PAYLOAD, headers={
            "Content-Encoding": encoding, "Content-Length": str(length),
            "x-amz-decoded-content-length": str(sum(map(len, chunks)))})
        body, _ = aws_chunked_body(request, chunks)
        response = send_signed(gateway, request, body=body)
        assert response.status == 200, response.body
        head = s3.head_object(Bucket=bucket, Key="chunked")
        assert head.get("ContentEncoding") == stored, encoding
        assert head["ContentLength"] == 1010
    for verbatim in ("gzip, br", "br,gzip", "identity", "x-custom ,  gzip"):
        s3.put_object(Bucket=bucket, Key="plain", Body=b"z", ContentEncoding=verbatim)
        assert s3.get_object(Bucket=bucket, Key="plain")["ContentEncoding"] == verbatim


# -- the same through awscli ----------------------------------------------------------------------


def test_awscli_reads_versions_and_parts(gateway: GatewayUnderTest, s3: Any, bucket: str, tmp_path: Path) -> None:
    aws = AwsCli.for_gateway(gateway, tmp_path / "aws-home")
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first")["VersionId"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"second")
    out = tmp_path / "out"
    got = json.loads(aws.run("s3api", "get-object", "--bucket", bucket, "--key", "k", "--version-id", first,
                             str(out)).stdout)
    assert (got["VersionId"], out.read_bytes()) == (first, b"first")
    part = json.loads(aws.run("s3api", "head-object", "--bucket", bucket, "--key", "k", "--part-number", "1").stdout)
    assert (part["ContentLength"], part["ContentRange"]) == (6, "bytes 0-5/6")
    missing = aws.run("s3api", "head-object", "--bucket", bucket, "--key", "k", "--part-number", "2", check=False)
    assert missing.returncode != 0 and "416" in missing.stderr
    marker = json.loads(aws.run("s3api", "delete-object", "--bucket", bucket, "--key", "k").stdout)
    assert marker["DeleteMarker"] is True
    removed = json.loads(aws.run("s3api", "delete-object", "--bucket", bucket, "--key", "k",
                                 "--version-id", marker["VersionId"]).stdout)
    assert (removed["DeleteMarker"], removed["VersionId"]) == (True, marker["VersionId"])
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"second"


def test_headers_dwray_cannot_honour_are_refused_and_store_nothing(s3: Any, bucket: str) -> None:
    key = b"k" * 32
    customer_key = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": base64.b64encode(key).decode(),
                    "SSECustomerKeyMD5": base64.b64encode(hashlib.md5(key).digest()).decode()}
    refusals = [
        (s3.put_object, {"Key": "sse-c", "Body": b"x", **customer_key}, "NotImplemented"),
        (s3.put_object, {"Key": "kms", "Body": b"x", "ServerSideEncryption": "aws:kms"}, "NotImplemented"),
        (s3.put_object, {"Key": "locked", "Body": b"x", "ObjectLockMode": "COMPLIANCE",
                         "ObjectLockRetainUntilDate": datetime.datetime(2099, 1, 1)}, "NotImplemented"),
        (s3.put_object, {"Key": "owned", "Body": b"x", "ExpectedBucketOwner": "someone-else"}, "AccessDenied"),
    ]
    for call, params, code in refusals:
        with pytest.raises(ClientError) as caught:
            call(Bucket=bucket, **params)
        assert error_of(caught.value)[0] == code, params["Key"]
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    put = s3.put_object(Bucket=bucket, Key="sse-s3", Body=b"x", ServerSideEncryption="AES256")
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(ClientError) as caught:
        s3.delete_object(Bucket=bucket, Key="sse-s3", IfMatch=put["ETag"])
    assert error_of(caught.value)[0] == "NotImplemented"
    assert s3.get_object(Bucket=bucket, Key="sse-s3")["Body"].read() == b"x"
