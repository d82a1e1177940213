"""SigV2 presigned URLs bind their bucket in both addressing styles.

SigV2 does not sign the Host header. Before the gateway put the host's bucket
into the checked resource, a URL presigned (path style) for ``/public/x`` was
also accepted as ``Host: private.<domain>``, i.e. as key ``public/x`` of bucket
``private``. These tests sign with botocore (boto3's default presigner) in each
style, send the URL as it is and with the bucket swapped, and check the verifier.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from dwray.s3.auth import UNSIGNED_PAYLOAD, AuthResult
from dwray.s3.http import bucket_and_key, virtual_host_bucket
from dwray.s3.sigv2 import canonical_resources
from tests.unit.test_s3_auth import ACCESS_KEY, IDENTITY, SECRET, Captured, make_verifier, raises
from tests.unit.test_s3_auth_presigned import expires_of

DOMAIN = "s3.dwray.test"
PORT = 9000


def presigner(style: str) -> Any:
    """boto3 as users have it (SigV2 presigning), for ``style`` addressing under ``DOMAIN``."""
    return boto3.client("s3", endpoint_url=f"http://{DOMAIN}:{PORT}", aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(s3={"addressing_style": style}))


def v2_request(style: str, op: str, method: str, **params: Any) -> Captured:
    url = presigner(style).generate_presigned_url(op, Params=params, ExpiresIn=600)
    assert "AWSAccessKeyId=" in url
    parts = urlsplit(url)
    return Captured(method, parts.path, parts.query, [("host", parts.netloc)], b"")


def verify(req: Captured) -> AuthResult:
    """What the gateway does: the host's bucket (virtual-hosted style) goes to the verifier."""
    host = dict(req.headers)["host"]
    return make_verifier(expires_of(req) - 60).verify(req.method, req.raw_path, req.raw_query, req.headers,
                                                      host_bucket=virtual_host_bucket(host, DOMAIN))


def addressed(req: Captured) -> tuple[str | None, str]:
    return bucket_and_key(dict(req.headers)["host"], req.raw_path, DOMAIN)


@pytest.mark.parametrize("key", ["x", "dir/with space/ü.txt", "a+b=c"])
@pytest.mark.parametrize("style", ["path", "virtual"])
@pytest.mark.parametrize("method, op", [("GET", "get_object"), ("PUT", "put_object"), ("HEAD", "head_object"),
                                        ("DELETE", "delete_object")])
def test_a_presigned_url_verifies_as_sent_in_either_style(style: str, method: str, op: str, key: str) -> None:
    req = v2_request(style, op, method, Bucket="public", Key=key)
    assert addressed(req) == ("public", key)
    assert verify(req) == AuthResult(IDENTITY, True, UNSIGNED_PAYLOAD, None)


def test_a_path_style_url_with_another_bucket_in_the_host_is_refused() -> None:
    """The reported hole: /public/x sent with Host: private.<domain> would address private/public/x."""
    req = v2_request("path", "get_object", "GET", Bucket="public", Key="x")
    swapped = req.with_header("host", f"private.{DOMAIN}:{PORT}")
    assert addressed(swapped) == ("private", "public/x")
    raises("SignatureDoesNotMatch", lambda: verify(swapped))


def test_a_virtual_hosted_url_with_another_bucket_in_the_host_is_refused() -> None:
    req = v2_request("virtual", "get_object", "GET", Bucket="public", Key="x")
    assert dict(req.headers)["host"] == f"public.{DOMAIN}:{PORT}" and req.raw_path == "/x"
    swapped = req.with_header("host", f"private.{DOMAIN}:{PORT}")
    assert addressed(swapped) == ("private", "x")
    raises("SignatureDoesNotMatch", lambda: verify(swapped))


def test_a_virtual_hosted_url_sent_path_style_names_its_own_bucket_only() -> None:
    """Moving the bucket from the host to the path keeps the signed resource /public/x: allowed,
    because it is the same object; any other path is refused."""
    req = v2_request("virtual", "get_object", "GET", Bucket="public", Key="x")
    as_path = replace(req.with_header("host", f"{DOMAIN}:{PORT}"), raw_path="/public/x")
    assert addressed(as_path) == ("public", "x")
    assert verify(as_path).identity == IDENTITY
    raises("SignatureDoesNotMatch", lambda: verify(replace(as_path, raw_path="/x")))
    raises("SignatureDoesNotMatch", lambda: verify(replace(as_path, raw_path="/private/x")))


def test_a_path_style_url_sent_virtual_hosted_to_its_own_bucket_verifies() -> None:
    req = v2_request("path", "get_object", "GET", Bucket="public", Key="x")
    moved = replace(req.with_header("host", f"public.{DOMAIN}:{PORT}"), raw_path="/x")
    assert addressed(moved) == ("public", "x")
    assert verify(moved).identity == IDENTITY


def test_bucket_level_virtual_hosted_urls_bind_the_bucket() -> None:
    req = v2_request("virtual", "head_bucket", "HEAD", Bucket="public")
    assert req.raw_path == "/"
    assert verify(req).identity == IDENTITY
    raises("SignatureDoesNotMatch", lambda: verify(req.with_header("host", f"private.{DOMAIN}:{PORT}")))


def test_canonical_resources_put_the_host_bucket_first_in_the_path() -> None:
    assert canonical_resources("/k%20y", None) == ["/k%20y"]
    assert canonical_resources("/k%20y", "bkt") == ["/bkt/k%20y"]
    assert canonical_resources("/", "bkt") == ["/bkt", "/bkt/"]
    raises("InvalidURI", lambda: canonical_resources("/k#x", "bkt"))
