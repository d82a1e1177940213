"""Edges a review found: writers that fail before reading, header limits, overrides, routes."""
from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

import pytest
import requests
from botocore.exceptions import ClientError

from tests.helpers import wait_until
from tests.integration.gateway.clients import (
    UNSIGNED_PAYLOAD,
    assert_serves,
    error_of,
    send,
    sign,
)
from tests.integration.gateway.conftest import (
    MAX_HEADER_BYTES,
    VIRTUAL_HOST_DOMAIN,
    GatewayUnderTest,
)

MiB = 1 << 20


def test_a_write_refused_before_its_body_is_read_answers_at_once(gateway: GatewayUnderTest, s3: Any,
                                                                  bucket: str) -> None:
    body = os.urandom(12 * MiB)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=f"{bucket}-missing", Key="k", Body=body)
    assert error_of(caught.value) == ("NoSuchBucket", 404)
    with pytest.raises(ClientError) as caught:
        s3.upload_part(Bucket=bucket, Key="k", UploadId="no-such-upload", PartNumber=1, Body=body[:8 * MiB])
    assert error_of(caught.value) == ("NoSuchUpload", 404)

    # Nothing is left in flight: the replica reports its count, and it returns to the probe alone.
    def in_flight() -> float:
        text = requests.get(f"{gateway.endpoint}/metrics", timeout=30).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("dwray_requests_in_flight{"))
    wait_until(lambda: in_flight() <= 1, timeout=20, what="no request left in flight")
    assert_serves(s3, bucket)


def test_response_overrides_replace_stored_headers_once_each(gateway: GatewayUnderTest, s3: Any,
                                                             bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="doc", Body=b"body", ContentType="text/plain", ContentDisposition="inline",
                  CacheControl="no-cache")
    params = {"Bucket": bucket, "Key": "doc", "ResponseContentDisposition": "attachment; filename=doc.txt",
              "ResponseCacheControl": "max-age=60", "ResponseContentType": "application/x-doc"}
    for method, operation in (("GET", "get_object"), ("HEAD", "head_object")):
        url = s3.generate_presigned_url(operation, Params=params)
        response = requests.request(method, url, timeout=30, stream=True)
        assert response.status_code == 200
        raw = response.raw.headers
        assert raw.getlist("content-disposition") == ["attachment; filename=doc.txt"]
        assert raw.getlist("cache-control") == ["max-age=60"]
        assert raw.getlist("content-type") == ["application/x-doc"]


def test_keys_named_like_gateway_routes_are_keys(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    for key in ("metrics", "healthz/live", "admin/tenants", "metrics/"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    port = gateway.endpoint.rsplit(":", 1)[1]
    for key in ("metrics", "healthz/live", "admin/tenants", "metrics/"):
        # Virtual-hosted style: the Host names the bucket, so /metrics is the object "metrics".
        request = sign(gateway, "GET", "/" + quote(key), headers={"Host": f"{bucket}.{VIRTUAL_HOST_DOMAIN}:{port}"},
                       payload_hash=UNSIGNED_PAYLOAD)
        response = send(gateway, "GET", request.target, request.headers, timeout=30)
        assert (response.status, response.body) == (200, key.encode())
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == key.encode()
    for reserved in ("admin", "healthz", "metrics"):
        with pytest.raises(ClientError) as caught:
            s3.create_bucket(Bucket=reserved)
        assert error_of(caught.value) == ("InvalidBucketName", 400)


def test_headers_over_the_configured_limit_are_refused(gateway: GatewayUnderTest, s3: Any, bucket: str) -> None:
    request = sign(gateway, "PUT", f"/{bucket}/big-headers", body=b"x",
                   headers={"x-amz-meta-filler": "f" * (MAX_HEADER_BYTES + 100)})
    response = send(gateway, "PUT", request.target, request.headers, body=b"x", timeout=30)
    assert (response.status, response.code) == (400, "RequestHeaderSectionTooLarge")
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
