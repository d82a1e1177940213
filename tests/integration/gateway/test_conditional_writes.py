"""Conditional writes (``If-None-Match: *``, ``If-Match: ETAG``) on PutObject, CopyObject and
CompleteMultipartUpload, with real boto3 clients and raw signed requests.

The warehouse decides a condition in the catalog's commit, so concurrent writers
cannot both pass it: 16 racing create-only writers have exactly one winner, and
a compare-and-swap loop loses no update. A failed condition stores nothing and
leaves the connection usable.
"""
from __future__ import annotations

import http.client
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from tests.integration.gateway.clients import (
    MiB,
    assert_s3_error,
    error_of,
    md5_hex,
    random_bytes,
    sign,
)
from tests.integration.gateway.conftest import GatewayUnderTest

WRITERS = 16
CAS_WRITERS, CAS_WRITES_EACH, CAS_ATTEMPTS = 8, 2, 400


def test_put_if_none_match_and_if_match(gateway: GatewayUnderTest, bucket: str) -> None:
    s3 = gateway.client()
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    assert first["ETag"] == f'"{md5_hex(b"first")}"'
    assert_s3_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="k", Body=b"second",
                    IfNoneMatch="*")
    # If-Match: the current ETag (quoted or not) replaces the object; a stale one does not.
    second = s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfMatch=first["ETag"])
    assert_s3_error("PreconditionFailed", 412, s3.put_object, Bucket=bucket, Key="k", Body=b"third",
                    IfMatch=first["ETag"])
    s3.put_object(Bucket=bucket, Key="k", Body=b"third", IfMatch=second["ETag"].strip('"'))
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"third"
    # If-Match on a key that does not exist: 404 NoSuchKey, and nothing is created.
    assert_s3_error("NoSuchKey", 404, s3.put_object, Bucket=bucket, Key="absent", Body=b"x", IfMatch=first["ETag"])
    # S3 takes only '*' in If-None-Match on a write, and not both headers at once: 501, nothing stored.
    assert_s3_error("NotImplemented", 501, s3.put_object, Bucket=bucket, Key="absent", Body=b"x",
                    IfNoneMatch=first["ETag"])
    assert_s3_error("NotImplemented", 501, s3.put_object, Bucket=bucket, Key="absent", Body=b"x",
                    IfNoneMatch="*", IfMatch=first["ETag"])
    assert [item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["k"]
    # Once the key is deleted, If-None-Match: * may create it again.
    s3.delete_object(Bucket=bucket, Key="k")
    s3.put_object(Bucket=bucket, Key="k", Body=b"again", IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"again"


def test_a_failed_condition_drains_the_body_and_keeps_the_connection(gateway: GatewayUnderTest, s3: Any,
                                                                     bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="taken", Body=b"original")
    body = random_bytes(3 * MiB, seed=11)
    put = sign(gateway, "PUT", f"/{bucket}/taken", body=body, headers={"If-None-Match": "*"})
    get = sign(gateway, "GET", f"/{bucket}/taken")
    netloc = urlsplit(gateway.endpoint).netloc
    connection = http.client.HTTPConnection(netloc, timeout=60)
    try:
        # Two requests on one connection: the 412 must leave it in step for the next one.
        for request in (put, get):
            connection.putrequest(request.method, request.target, skip_accept_encoding=True)
            for name, value in request.headers.items():
                if name.lower() != "host":
                    connection.putheader(name, value)
            connection.endheaders(request.body or None)
            response = connection.getresponse()
            answer = response.read()
            if request is put:
                assert response.status == 412 and b"<Code>PreconditionFailed</Code>" in answer
            else:
                assert (response.status, answer) == (200, b"original")
    finally:
        connection.close()


def test_racing_create_only_writers_have_exactly_one_winner(gateway: GatewayUnderTest, bucket: str) -> None:
    s3 = gateway.client(max_pool_connections=WRITERS)
    bodies = [random_bytes(64 * 1024, seed=100 + index) for index in range(WRITERS)]
    start = threading.Barrier(WRITERS)

    def write(index: int) -> tuple[int, str]:
        start.wait()
        try:
            return 200, s3.put_object(Bucket=bucket, Key="race", Body=bodies[index], IfNoneMatch="*")["ETag"]
        except ClientError as error:
            return error_of(error)[1], error_of(error)[0]

    with ThreadPoolExecutor(WRITERS) as pool:
        outcomes = list(pool.map(write, range(WRITERS)))
    winners = [index for index, (status, _) in enumerate(outcomes) if status == 200]
    assert len(winners) == 1, outcomes
    assert sorted(outcome for index, outcome in enumerate(outcomes) if index not in winners) \
        == [(412, "PreconditionFailed")] * (WRITERS - 1)
    winner = winners[0]
    stored = s3.get_object(Bucket=bucket, Key="race")
    assert stored["Body"].read() == bodies[winner]
    assert stored["ETag"] == outcomes[winner][1] == f'"{md5_hex(bodies[winner])}"'


def test_if_match_compare_and_swap_loses_no_update(gateway: GatewayUnderTest, bucket: str) -> None:
    s3 = gateway.client(max_pool_connections=CAS_WRITERS)
    s3.put_object(Bucket=bucket, Key="counter", Body=b"0")
    start = threading.Barrier(CAS_WRITERS)

    def increment_several_times(_: int) -> tuple[int, int]:
        done = refused = 0
        start.wait()
        for _ in range(CAS_ATTEMPTS):
            current = s3.get_object(Bucket=bucket, Key="counter")
            value = int(current["Body"].read())
            try:
                s3.put_object(Bucket=bucket, Key="counter", Body=str(value + 1).encode(), IfMatch=current["ETag"])
            except ClientError as error:
                assert error_of(error) == ("PreconditionFailed", 412)
                refused += 1
                continue
            done += 1
            if done == CAS_WRITES_EACH:
                break
        return done, refused

    with ThreadPoolExecutor(CAS_WRITERS) as pool:
        results = list(pool.map(increment_several_times, range(CAS_WRITERS)))
    assert [done for done, _ in results] == [CAS_WRITES_EACH] * CAS_WRITERS, results
    assert sum(refused for _, refused in results) > 0  # the writers did race: some lost and retried
    total = CAS_WRITERS * CAS_WRITES_EACH
    assert int(s3.get_object(Bucket=bucket, Key="counter")["Body"].read()) == total


def _upload_one_part(s3: Any, bucket: str, key: str, body: bytes) -> tuple[str, list[dict[str, Any]]]:
    upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)["ETag"]
    return upload, [{"PartNumber": 1, "ETag": etag}]


def test_conditional_complete_multipart_upload(gateway: GatewayUnderTest, bucket: str) -> None:
    s3 = gateway.client()
    # The key exists before the upload begins: 412, and the upload stays (it may complete unconditionally).
    s3.put_object(Bucket=bucket, Key="existing", Body=b"old")
    upload, parts = _upload_one_part(s3, bucket, "existing", b"new bytes")
    assert_s3_error("PreconditionFailed", 412, s3.complete_multipart_upload, Bucket=bucket, Key="existing",
                    UploadId=upload, MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="existing")["Body"].read() == b"old"
    s3.complete_multipart_upload(Bucket=bucket, Key="existing", UploadId=upload, MultipartUpload={"Parts": parts})
    assert s3.get_object(Bucket=bucket, Key="existing")["Body"].read() == b"new bytes"

    # The key is written after the upload began: 409 ConditionalRequestConflict, the other write stays.
    upload, parts = _upload_one_part(s3, bucket, "contended", b"multipart")
    s3.put_object(Bucket=bucket, Key="contended", Body=b"came first")
    assert_s3_error("ConditionalRequestConflict", 409, s3.complete_multipart_upload, Bucket=bucket,
                    Key="contended", UploadId=upload, MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key="contended")["Body"].read() == b"came first"

    # If-None-Match on a free key, and If-Match with the current ETag, complete.
    upload, parts = _upload_one_part(s3, bucket, "fresh", b"fresh")
    done = s3.complete_multipart_upload(Bucket=bucket, Key="fresh", UploadId=upload,
                                        MultipartUpload={"Parts": parts}, IfNoneMatch="*")
    upload, parts = _upload_one_part(s3, bucket, "fresh", b"fresher")
    assert_s3_error("PreconditionFailed", 412, s3.complete_multipart_upload, Bucket=bucket, Key="fresh",
                    UploadId=upload, MultipartUpload={"Parts": parts}, IfMatch=f'"{md5_hex(b"other")}"')
    s3.complete_multipart_upload(Bucket=bucket, Key="fresh", UploadId=upload, MultipartUpload={"Parts": parts},
                                 IfMatch=done["ETag"])
    assert s3.get_object(Bucket=bucket, Key="fresh")["Body"].read() == b"fresher"
    # If-Match on a key nobody wrote: 404 NoSuchKey.
    upload, parts = _upload_one_part(s3, bucket, "nobody", b"x")
    assert_s3_error("NoSuchKey", 404, s3.complete_multipart_upload, Bucket=bucket, Key="nobody",
                    UploadId=upload, MultipartUpload={"Parts": parts}, IfMatch=done["ETag"])
    s3.abort_multipart_upload(Bucket=bucket, Key="nobody", UploadId=upload)


def test_conditional_copy_concerns_the_destination(gateway: GatewayUnderTest, bucket: str) -> None:
    s3 = gateway.client()
    source = s3.put_object(Bucket=bucket, Key="source", Body=b"source bytes")
    taken = s3.put_object(Bucket=bucket, Key="taken", Body=b"taken")
    copy = {"Bucket": bucket, "Key": "source"}
    assert_s3_error("PreconditionFailed", 412, s3.copy_object, Bucket=bucket, Key="taken", CopySource=copy,
                    IfNoneMatch="*")
    # The source's conditions and the destination's are separate: a matching source ETag does not
    # satisfy If-Match on the destination.
    assert_s3_error("PreconditionFailed", 412, s3.copy_object, Bucket=bucket, Key="taken", CopySource=copy,
                    CopySourceIfMatch=source["ETag"], IfMatch=source["ETag"])
    assert s3.get_object(Bucket=bucket, Key="taken")["Body"].read() == b"taken"
    s3.copy_object(Bucket=bucket, Key="taken", CopySource=copy, IfMatch=taken["ETag"])
    assert s3.get_object(Bucket=bucket, Key="taken")["Body"].read() == b"source bytes"
    new_key = f"new-{uuid.uuid4().hex[:8]}"
    s3.copy_object(Bucket=bucket, Key=new_key, CopySource=copy, IfNoneMatch="*")
    assert s3.get_object(Bucket=bucket, Key=new_key)["Body"].read() == b"source bytes"
    assert_s3_error("NoSuchKey", 404, s3.copy_object, Bucket=bucket, Key="never", CopySource=copy,
                    IfMatch=source["ETag"])
    assert_s3_error("NotImplemented", 501, s3.copy_object, Bucket=bucket, Key="never", CopySource=copy,
                    IfNoneMatch=source["ETag"])
    assert sorted(item["Key"] for item in s3.list_objects_v2(Bucket=bucket)["Contents"]) \
        == sorted([new_key, "source", "taken"])
