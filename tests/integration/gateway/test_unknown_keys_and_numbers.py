"""Two hardening rules on the wire of the session gateway.

- An unknown access key costs the identity service one lookup, not one per
  request: the replica remembers it for a few seconds (``/metrics`` counts
  where each lookup was answered).
- Numbers in headers and query strings are read strictly: digits of another
  script, underscores, spaces and numbers too long for any size are S3 errors
  (400, or 416 where S3 says so), never a 500. Each request is signed by
  botocore and sent byte for byte with ``http.client``.
"""
from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.gateway.clients import send, send_signed, sign
from tests.integration.gateway.conftest import GatewayUnderTest


def key_lookups(gateway: GatewayUnderTest) -> dict[str, float]:
    text = requests.get(f"{gateway.endpoint}/metrics", timeout=30).text
    found: dict[str, float] = {"cache": 0.0, "service": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dwray_access_key_lookups_total":
                found[sample.labels["source"]] += sample.value
    return found


def test_a_repeated_unknown_key_is_answered_from_the_cache(gateway: GatewayUnderTest) -> None:
    made_up = f"AKID{uuid.uuid4().hex[:16].upper()}"
    before = key_lookups(gateway)
    for _ in range(3):
        response = send_signed(gateway, sign(gateway, "GET", "/", access_key_id=made_up,
                                             secret_access_key="made-up-secret"))
        assert (response.status, response.code) == (403, "InvalidAccessKeyId")
    after = key_lookups(gateway)
    assert after["service"] - before["service"] == 1
    assert after["cache"] - before["cache"] >= 2


# -- strict numbers ----------------------------------------------------------------------------


@pytest.fixture
def small_object(gateway: GatewayUnderTest, s3: Any, bucket: str) -> tuple[str, str]:
    s3.put_object(Bucket=bucket, Key="ten", Body=b"0123456789")
    return bucket, "ten"


@pytest.mark.parametrize("value, status, code", [
    ("bytes=0-\u00b2", 400, "InvalidArgument"),  # superscript two: isdigit() is true, int() refuses it
    ("bytes=\u00b9-", 400, "InvalidArgument"),
    ("bytes=0-" + "9" * 30, 400, "InvalidArgument"),
    ("bytes=0-" + "9" * 4500, 400, "InvalidArgument"),  # past int()'s 4300 digits
    ("bytes=" + "9" * 19 + "-", 416, "InvalidRange"),
])
def test_strange_ranges_are_s3_errors(gateway: GatewayUnderTest, small_object: tuple[str, str], value: str,
                                      status: int, code: str) -> None:
    bucket, key = small_object
    response = send_signed(gateway, sign(gateway, "GET", f"/{bucket}/{key}", headers={"Range": value}))
    assert (response.status, response.code) == (status, code), response.body[:300]


def test_a_plain_range_still_works(gateway: GatewayUnderTest, small_object: tuple[str, str]) -> None:
    bucket, key = small_object
    response = send_signed(gateway, sign(gateway, "GET", f"/{bucket}/{key}", headers={"Range": "bytes=2-4"}))
    assert (response.status, response.body) == (206, b"234")


@pytest.mark.parametrize("query", ["max-keys=%D9%A1%D9%A2", "max-keys=1_000", "max-keys=%2012", "max-keys=" + "9" * 40,
                                   "max-keys=" + "1" * 4500, "list-type=2&max-keys=%C2%B2"])
def test_list_numbers_are_strict(gateway: GatewayUnderTest, bucket: str, query: str) -> None:
    response = send_signed(gateway, sign(gateway, "GET", f"/{bucket}?{query}"))
    assert (response.status, response.code) == (400, "InvalidArgument"), response.body[:300]


@pytest.mark.parametrize("number", ["%D9%A1", "%C2%B2", "1_0", "9" * 25])
def test_part_numbers_are_strict(gateway: GatewayUnderTest, s3: Any, bucket: str, number: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    target = f"/{bucket}/mp?partNumber={number}&uploadId={upload_id}"
    response = send_signed(gateway, sign(gateway, "PUT", target, body=b"part"))
    assert (response.status, response.code) == (400, "InvalidArgument"), response.body[:300]
    listing = send_signed(gateway, sign(gateway, "GET", f"/{bucket}/mp?uploadId={upload_id}&max-parts={number}"))
    assert (listing.status, listing.code) == (400, "InvalidArgument")
    marker = send_signed(gateway, sign(gateway, "GET",
                                       f"/{bucket}/mp?uploadId={upload_id}&part-number-marker={number}"))
    assert (marker.status, marker.code) == (400, "InvalidArgument")
    uploads = send_signed(gateway, sign(gateway, "GET", f"/{bucket}?uploads&max-uploads={number}"))
    assert (uploads.status, uploads.code) == (400, "InvalidArgument")
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload_id)


def test_copy_source_ranges_are_strict(gateway: GatewayUnderTest, s3: Any, small_object: tuple[str, str]) -> None:
    bucket, key = small_object
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="copy")["UploadId"]
    for value in ("bytes=0-\u00b2", "bytes=0-" + "9" * 30, "bytes=0_0-1"):
        request = sign(gateway, "PUT", f"/{bucket}/copy?partNumber=1&uploadId={upload_id}",
                       headers={"x-amz-copy-source": f"/{bucket}/{key}", "x-amz-copy-source-range": value})
        response = send_signed(gateway, request)
        assert (response.status, response.code) == (400, "InvalidArgument"), value
    s3.abort_multipart_upload(Bucket=bucket, Key="copy", UploadId=upload_id)


@pytest.mark.parametrize("length", ["\u00b9\u00b2", "1_0", "9" * 30, "9" * 4500])
def test_decoded_content_length_is_strict(gateway: GatewayUnderTest, bucket: str, length: str) -> None:
    request = sign(gateway, "PUT", f"/{bucket}/chunked", body=b"0\r\n\r\n",
                   payload_hash="STREAMING-UNSIGNED-PAYLOAD-TRAILER",
                   headers={"x-amz-decoded-content-length": length, "Content-Encoding": "aws-chunked"})
    response = send_signed(gateway, request)
    assert (response.status, response.code) == (400, "InvalidArgument"), response.body[:300]


@pytest.mark.parametrize("expires", ["9" * 30, "9" * 4500, "%D9%A1%D9%A2"])
def test_presigned_expiry_numbers_are_strict(gateway: GatewayUnderTest, bucket: str, expires: str) -> None:
    v2 = send(gateway, "GET", f"/{bucket}/k?AWSAccessKeyId={gateway.access_key_id}&Expires={expires}"
                              "&Signature=AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D", {})
    assert (v2.status, v2.code) == (400, "AuthorizationQueryParametersError"), v2.body[:300]
    v4 = send(gateway, "GET", f"/{bucket}/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
                              f"{gateway.access_key_id}%2F20260101%2Fus-east-1%2Fs3%2Faws4_request"
                              f"&X-Amz-Date=20260101T000000Z&X-Amz-Expires={expires}&X-Amz-SignedHeaders=host"
                              f"&X-Amz-Signature={'0' * 64}", {})
    assert (v4.status, v4.code) == (403, "AccessDenied"), v4.body[:300]  # a URL that can never be valid


def test_a_huge_year_in_date_is_access_denied_not_a_crash(gateway: GatewayUnderTest, bucket: str) -> None:
    response = send(gateway, "GET", f"/{bucket}", {
        "Date": "Mon, 01 Jan 99999999999999 00:00:00 GMT",
        "Authorization": f"AWS4-HMAC-SHA256 Credential={gateway.access_key_id}/20260101/us-east-1/s3/aws4_request,"
                         f" SignedHeaders=host, Signature={'0' * 64}",
        "x-amz-content-sha256": "UNSIGNED-PAYLOAD"})
    assert (response.status, response.code) == (403, "AccessDenied"), response.body[:300]
