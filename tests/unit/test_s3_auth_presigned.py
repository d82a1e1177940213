"""Presigned URLs against requests signed by botocore itself: SigV4 query auth
(boto3 with ``signature_version="s3v4"``) and SigV2, boto3's default for
``generate_presigned_url``, as ``requests`` and real sockets send them."""
from __future__ import annotations

import calendar
import datetime
import re
import time
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
import requests

from dwray.s3.auth import STREAMING_UNSIGNED_TRAILER, UNSIGNED_PAYLOAD, AuthResult
from tests.unit.test_s3_auth import (
    ACCESS_KEY,
    ENDPOINT,
    IDENTITY,
    KEYS,
    SECRET,
    BotoRecorder,
    Captured,
    capture_one,
    make_verifier,
    raises,
)


@pytest.fixture
def boto() -> BotoRecorder:
    return BotoRecorder()


# -- SigV4 presigned URLs --------------------------------------------------------


def presigned(url: str, method: str = "GET", host: str = "127.0.0.1:9000") -> Captured:
    parts = urlsplit(url)
    return Captured(method, parts.path, parts.query, [("host", host)], b"")


def issued_at(req: Captured) -> float:
    amz_date = re.search(r"X-Amz-Date=(\w+)", req.raw_query).group(1)  # type: ignore[union-attr]
    return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))


@pytest.mark.parametrize("key", KEYS)
def test_presigned_get_and_put(boto: BotoRecorder, key: str) -> None:
    for method, op in (("GET", "get_object"), ("PUT", "put_object")):
        req = presigned(boto.client.generate_presigned_url(op, Params={"Bucket": "bkt", "Key": key},
                                                           ExpiresIn=300), method)
        result = req.verify(make_verifier(issued_at(req) + 1))
        assert result.presigned and result.identity == IDENTITY
        assert result.content_sha256 == UNSIGNED_PAYLOAD and result.payload_sha256 is None


def test_presigned_with_parameters(boto: BotoRecorder) -> None:
    url = boto.client.generate_presigned_url("list_objects_v2", Params={
        "Bucket": "bkt", "Prefix": "a/b c", "Delimiter": "/", "MaxKeys": 10})
    req = presigned(url)
    assert "prefix=a%2Fb%20c" in req.raw_query and "list-type=2" in req.raw_query
    assert req.verify(make_verifier(issued_at(req))).presigned
    url = boto.client.generate_presigned_url("get_object", Params={
        "Bucket": "bkt", "Key": "k", "ResponseContentDisposition": "attachment; filename=\"x+y=z.txt\""})
    assert presigned(url).verify(make_verifier(issued_at(presigned(url)))).presigned


def test_presigned_expiry(boto: BotoRecorder) -> None:
    req = presigned(boto.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"},
                                                       ExpiresIn=60))
    t = issued_at(req)
    req.verify(make_verifier(t + 60))
    err = raises("AccessDenied", lambda: req.verify(make_verifier(t + 61)))
    assert err.message == "Request has expired"
    raises("AccessDenied", lambda: req.verify(make_verifier(t - 901)))  # issued in the future


def test_presigned_expiry_limit(boto: BotoRecorder) -> None:
    week = presigned(boto.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"},
                                                        ExpiresIn=604800))
    week.verify(make_verifier(issued_at(week) + 604800))
    longer = presigned(boto.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"},
                                                          ExpiresIn=604801))
    err = raises("AccessDenied", lambda: longer.verify(make_verifier(issued_at(longer))))
    assert err.message == "X-Amz-Expires must be less than a week (in seconds) that is 604800"


def test_presigned_tampering(boto: BotoRecorder) -> None:
    url = boto.client.generate_presigned_url("list_objects_v2", Params={"Bucket": "bkt", "Prefix": "a"},
                                             ExpiresIn=60)
    req = presigned(url)
    v = make_verifier(issued_at(req))
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_query=req.raw_query.replace(
        "prefix=a", "prefix=b")).verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_query=req.raw_query.replace(
        "X-Amz-Expires=60", "X-Amz-Expires=600")).verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_path="/other").verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, headers=[("host", "evil:9000")]).verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, method="DELETE").verify(v))


def test_presigned_wrong_region_and_unknown_key() -> None:
    other = BotoRecorder(region="eu-west-1")
    req = presigned(other.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}))
    err = raises("AuthorizationQueryParametersError", lambda: req.verify(make_verifier(issued_at(req))))
    assert "eu-west-1" in err.message and "us-east-1" in err.message
    stranger = BotoRecorder(access_key="AKIDSTRANGER")
    req = presigned(stranger.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}))
    raises("InvalidAccessKeyId", lambda: req.verify(make_verifier(issued_at(req))))


def test_presigned_missing_parameter(boto: BotoRecorder) -> None:
    req = presigned(boto.client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"}))
    stripped = "&".join(p for p in req.raw_query.split("&") if not p.startswith("X-Amz-SignedHeaders"))
    raises("AuthorizationQueryParametersError", lambda: replace(req, raw_query=stripped).verify(
        make_verifier(issued_at(req))))


def s3v4_put_url(boto: BotoRecorder, **params: Any) -> str:
    url = boto.client.generate_presigned_url("put_object", Params={"Bucket": "bkt", "Key": "k", **params})
    assert "X-Amz-Signature=" in url
    return url


def test_presigned_put_as_requests_sends_it_verifies(boto: BotoRecorder) -> None:
    """``requests.put(url, data=...)`` sends no x-amz-* header; boto3 signed host only."""
    url = s3v4_put_url(boto)
    assert "X-Amz-SignedHeaders=host&" in url
    req = sent_by_requests("PUT", url, b"payload")
    assert not any(k.startswith("x-amz-") for k, _ in req.headers)
    result = req.verify(make_verifier(issued_at(req) + 1))
    assert result.presigned and result.content_sha256 == UNSIGNED_PAYLOAD


def test_presigned_put_over_a_real_socket() -> None:
    def send(endpoint: str) -> None:
        url = BotoRecorder(endpoint).client.generate_presigned_url(
            "put_object", Params={"Bucket": "bkt", "Key": "wire #key"})
        assert requests.put(url, data=b"payload", timeout=10).status_code == 200

    req = capture_one(send)
    assert req.raw_path == "/bkt/wire%20%23key" and req.body == b"payload"
    assert req.verify(make_verifier(issued_at(req) + 1)).presigned


@pytest.mark.parametrize("name, value", [
    ("x-amz-copy-source", "bkt/secret"),
    ("x-amz-meta-foo", "bar"),
    ("x-amz-metadata-directive", "REPLACE"),
    ("x-amz-checksum-crc32", "AAAAAA=="),
    ("x-amz-content-sha256", STREAMING_UNSIGNED_TRAILER),
])
def test_presigned_put_refuses_unsigned_amz_headers(boto: BotoRecorder, name: str, value: str) -> None:
    """A presigned PUT cannot be turned into a CopyObject (or change what is stored)
    by adding x-amz-* headers the URL did not sign, as S3 refuses them."""
    req = sent_by_requests("PUT", s3v4_put_url(boto), b"payload", {name: value})
    err = raises("AccessDenied", lambda: req.verify(make_verifier(issued_at(req) + 1)))
    assert err.message == f"There were headers present in the request which were not signed: {name}"
    assert value not in str(err)


def test_presigned_put_with_signed_amz_headers(boto: BotoRecorder) -> None:
    """boto3 signs the x-amz-* headers its Params need; sending them verifies, changing one
    breaks the signature, and adding another unsigned one is still refused."""
    url = s3v4_put_url(boto, Metadata={"foo": "bar"}, ContentType="text/plain")
    assert "X-Amz-SignedHeaders=content-type%3Bhost%3Bx-amz-meta-foo&" in url
    req = sent_by_requests("PUT", url, b"payload", {"Content-Type": "text/plain", "x-amz-meta-foo": "bar"})
    v = make_verifier(issued_at(req) + 1)
    assert req.verify(v).presigned
    raises("SignatureDoesNotMatch", lambda: req.with_header("x-amz-meta-foo", "baz").verify(v))
    err = raises("AccessDenied", lambda: req.with_header("x-amz-copy-source", "bkt/secret").verify(v))
    assert err.message.endswith("not signed: x-amz-copy-source")


def test_sigv2_presigned_put_refuses_an_added_copy_source(default_client: Any) -> None:
    """SigV2 signs every x-amz-* header sent, so an added one breaks the signature."""
    req = sent_by_requests("PUT", v2_url(default_client, "put_object", Key="k"), b"payload")
    v = make_verifier(expires_of(req) - 60)
    assert req.verify(v).presigned
    raises("SignatureDoesNotMatch", lambda: req.with_header("x-amz-copy-source", "bkt/secret").verify(v))
    raises("SignatureDoesNotMatch", lambda: req.with_header("x-amz-meta-foo", "bar").verify(v))


# -- a raw '#' in the path -----------------------------------------------------------
# botocore's signer ends the path at '#', so a signature for /bkt/k would also cover
# /bkt/k#x (key "k#x" to the gateway) unless such paths are refused.


@pytest.mark.parametrize("method, op", [("GET", "get_object"), ("PUT", "put_object")])
def test_raw_hash_in_path_is_refused_for_sigv4_presigned(boto: BotoRecorder, method: str, op: str) -> None:
    req = presigned(boto.client.generate_presigned_url(op, Params={"Bucket": "bkt", "Key": "k"}), method)
    v = make_verifier(issued_at(req) + 1)
    assert req.verify(v).presigned
    raises("InvalidURI", lambda: replace(req, raw_path="/bkt/k#x").verify(v))


def test_raw_hash_in_path_is_refused_for_sigv2_presigned(default_client: Any) -> None:
    req = sent_by_requests("PUT", v2_url(default_client, "put_object", Key="k"), b"payload")
    v = make_verifier(expires_of(req) - 60)
    assert req.verify(v).presigned
    raises("InvalidURI", lambda: replace(req, raw_path="/bkt/k#x").verify(v))


# -- SigV2 presigned URLs: boto3's default generate_presigned_url ------------------


@pytest.fixture(scope="module")
def default_client() -> Any:
    """boto3 as users have it: no signature_version, so presigned S3 URLs are SigV2."""
    return boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET, region_name="us-east-1")


def v2_url(client: Any, op: str, expires_in: int = 3600, **params: Any) -> str:
    url = client.generate_presigned_url(op, Params={"Bucket": "bkt", **params}, ExpiresIn=expires_in)
    assert "AWSAccessKeyId=" in url and "X-Amz-" not in url
    return url


def sent_by_requests(method: str, url: str, data: bytes | None = None,
                     headers: dict[str, str] | None = None) -> Captured:
    """The request that ``requests.<method>(url, ...)`` puts on the wire (path and query
    exactly as sent, its default headers plus Host), prepared without a network."""
    prepared = requests.Session().prepare_request(requests.Request(method, url, data=data, headers=headers))
    path, _, query = prepared.path_url.partition("?")
    pairs = [("host", urlsplit(url).netloc)] + [(k.lower(), v) for k, v in prepared.headers.items()]
    return Captured(method, path, query, pairs, data or b"")


def expires_of(req: Captured) -> int:
    return int(parse_qs(req.raw_query)["Expires"][0])


def v2_query(req: Captured, **changes: str | None) -> Captured:
    """The request with query parameters replaced (raw value) or removed (None)."""
    pieces = [p for p in req.raw_query.split("&") if p.partition("=")[0] not in changes]
    pieces += [f"{k}={v}" for k, v in changes.items() if v is not None]
    return replace(req, raw_query="&".join(pieces))


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("method, op, data", [("GET", "get_object", None), ("PUT", "put_object", b"hello"),
                                              ("HEAD", "head_object", None)])
def test_sigv2_presigned_object_requests_verify(default_client: Any, key: str, method: str, op: str,
                                                data: bytes | None) -> None:
    url = v2_url(default_client, op, Key=key)
    req = sent_by_requests(method, url, data)
    assert (req.raw_path, req.raw_query) == (urlsplit(url).path, urlsplit(url).query)
    assert not any(k == "content-type" for k, _ in req.headers)  # requests.put(url, data=bytes)
    result = req.verify(make_verifier(expires_of(req) - 3599))
    assert result == AuthResult(IDENTITY, True, UNSIGNED_PAYLOAD, None)
    assert result.payload_sha256 is None and not result.streaming


def test_sigv2_presigned_put_over_a_real_socket(default_client: Any) -> None:
    def send(endpoint: str) -> None:
        url = v2_url(default_client, "put_object", Key="wire key+é~/x")
        assert requests.put(url.replace(ENDPOINT, endpoint), data=b"payload", timeout=10).status_code == 200

    req = capture_one(send)
    assert req.raw_path == "/bkt/wire%20key%2B%C3%A9~/x" and req.body == b"payload"
    assert req.verify(make_verifier(expires_of(req) - 60)).presigned


@pytest.mark.parametrize("overrides", [
    {"ResponseContentType": "text/plain; charset=utf-8"},
    {"ResponseContentDisposition": 'attachment; filename="a b=c+d ü.txt"'},
    {"ResponseContentType": "application/x+y", "ResponseContentDisposition": "inline",
     "ResponseCacheControl": "no-cache", "ResponseExpires": datetime.datetime(2030, 1, 2, tzinfo=datetime.UTC)},
])
def test_sigv2_presigned_get_with_response_overrides(default_client: Any, overrides: dict[str, Any]) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "get_object", Key="k v", **overrides))
    assert "response-" in req.raw_query
    v = make_verifier(expires_of(req) - 10)
    assert req.verify(v).identity == IDENTITY
    # the overrides are signed: changing or dropping one breaks the signature
    name = req.raw_query.partition("=")[0]
    assert name.startswith("response-")
    raises("SignatureDoesNotMatch", lambda: v2_query(req, **{name: "text%2Fhtml"}).verify(v))
    raises("SignatureDoesNotMatch", lambda: v2_query(req, **{name: None}).verify(v))


def test_sigv2_signed_subresources_verify_and_are_covered(default_client: Any) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "get_object", Key="k", VersionId="v1"))
    v = make_verifier(expires_of(req))
    assert req.verify(v).presigned
    raises("SignatureDoesNotMatch", lambda: v2_query(req, versionId="v2").verify(v))
    part = sent_by_requests("PUT", v2_url(default_client, "upload_part", Key="k", UploadId="u 1",
                                          PartNumber=3), b"part")
    v = make_verifier(expires_of(part))
    assert part.verify(v).presigned
    raises("SignatureDoesNotMatch", lambda: v2_query(part, partNumber="4").verify(v))


def test_sigv2_presigned_put_with_content_type(default_client: Any) -> None:
    """botocore signs Content-Type and copies it into the query; the uploader sends the header."""
    url = v2_url(default_client, "put_object", Key="k", ContentType="text/plain", Metadata={"owner": "me"})
    assert "content-type=text%2Fplain" in url and "x-amz-meta-owner=me" in url
    req = sent_by_requests("PUT", url, b"x", {"Content-Type": "text/plain", "x-amz-meta-owner": "me"})
    v = make_verifier(expires_of(req))
    assert req.verify(v).presigned
    err = raises("AccessDenied", lambda: req.with_header("content-type", None).verify(v))
    assert "content-type" in err.message and "x-amz-meta-owner" not in err.message
    raises("AccessDenied", lambda: req.with_header("x-amz-meta-owner", "you").verify(v))
    # changing the header and its query copy together is caught by the signature
    swapped = v2_query(req.with_header("content-type", "text/html"), **{"content-type": "text%2Fhtml"})
    raises("SignatureDoesNotMatch", lambda: swapped.verify(v))


def test_sigv2_presigned_headers_are_signed(default_client: Any) -> None:
    req = sent_by_requests("PUT", v2_url(default_client, "put_object", Key="k"), b"data")
    v = make_verifier(expires_of(req))
    req.verify(v)
    raises("SignatureDoesNotMatch", lambda: req.with_header("content-type", "text/html").verify(v))
    raises("SignatureDoesNotMatch", lambda: req.with_header("content-md5", "AAAAAAAAAAAAAAAAAAAAAA==").verify(v))
    raises("SignatureDoesNotMatch", lambda: req.with_header("x-amz-copy-source", "/bkt/other").verify(v))


def test_sigv2_presigned_expiry(default_client: Any) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "get_object", expires_in=60, Key="k"))
    expires = expires_of(req)
    assert req.verify(make_verifier(expires)).presigned
    err = raises("AccessDenied", lambda: req.verify(make_verifier(expires + 1)))
    assert err.message == "Request has expired"
    week = sent_by_requests("GET", v2_url(default_client, "get_object", expires_in=604800, Key="k"))
    assert week.verify(make_verifier(expires_of(week) - 604800)).presigned
    err = raises("AuthorizationQueryParametersError", lambda: week.verify(make_verifier(expires_of(week) - 604801)))
    assert "week" in err.message


@pytest.mark.parametrize("value", ["12.5", "soon", "", "-5", "%C2%B2"])
def test_sigv2_expires_must_be_an_integer(default_client: Any, value: str) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "get_object", Key="k"))
    err = raises("AuthorizationQueryParametersError", lambda: v2_query(req, Expires=value).verify(
        make_verifier(expires_of(req) - 60)))
    assert "Expires" in err.message


def test_sigv2_presigned_tampering(default_client: Any) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "get_object", expires_in=600, Key="a b"))
    v = make_verifier(expires_of(req) - 600)
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_path="/bkt/a%20c").verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_path="/other/a%20b").verify(v))
    raises("SignatureDoesNotMatch", lambda: v2_query(req, Expires=str(expires_of(req) + 1)).verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, method="DELETE").verify(v))
    raises("SignatureDoesNotMatch", lambda: v2_query(req, Signature="AAAAAAAAAAAAAAAAAAAAAAAAAAA%3D").verify(v))


def test_sigv2_wrong_secret_and_unknown_key() -> None:
    wrong = boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS_KEY,
                         aws_secret_access_key="not-the-secret", region_name="us-east-1")
    req = sent_by_requests("GET", v2_url(wrong, "get_object", Key="k"))
    err = raises("SignatureDoesNotMatch", lambda: req.verify(make_verifier(expires_of(req))))
    assert SECRET not in str(err) and "not-the-secret" not in str(err)
    stranger = boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id="AKIDSTRANGER",
                            aws_secret_access_key=SECRET, region_name="us-east-1")
    req = sent_by_requests("GET", v2_url(stranger, "get_object", Key="k"))
    raises("InvalidAccessKeyId", lambda: req.verify(make_verifier(expires_of(req))))


@pytest.mark.parametrize("missing", ["AWSAccessKeyId", "Expires", "Signature"])
def test_sigv2_missing_or_repeated_auth_parameter(default_client: Any, missing: str) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "get_object", Key="k"))
    v = make_verifier(expires_of(req))
    err = raises("AuthorizationQueryParametersError", lambda: v2_query(req, **{missing: None}).verify(v))
    assert missing in err.message
    twice = replace(req, raw_query=req.raw_query + "&" + next(
        p for p in req.raw_query.split("&") if p.startswith(missing + "=")))
    raises("AuthorizationQueryParametersError", lambda: twice.verify(v))


@pytest.mark.parametrize("extra", ["prefix=x", "x-id=GetObject", "list-type=2", "version%49d=v1",
                                   "x-amz-meta-owner=me"])
def test_sigv2_unsigned_query_parameters_are_refused(default_client: Any, extra: str) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "get_object", Key="k"))
    err = raises("AccessDenied", lambda: replace(req, raw_query=req.raw_query + "&" + extra).verify(
        make_verifier(expires_of(req))))
    assert extra.partition("=")[0] in err.message and "s3v4" in err.message


def test_sigv2_list_presign_is_refused_clearly(default_client: Any) -> None:
    req = sent_by_requests("GET", v2_url(default_client, "list_objects_v2", Prefix="a/"))
    err = raises("AccessDenied", lambda: req.verify(make_verifier(expires_of(req))))
    assert "prefix" in err.message and "list-type" in err.message


def test_sigv2_query_mixed_with_other_auth_is_refused(default_client: Any, boto: BotoRecorder) -> None:
    v2 = sent_by_requests("GET", v2_url(default_client, "get_object", Key="k"))
    v4_query = urlsplit(boto.client.generate_presigned_url("get_object", Params={"Bucket": "bkt", "Key": "k"})).query
    v = make_verifier(expires_of(v2))
    raises("InvalidArgument", lambda: replace(v2, raw_query=v2.raw_query + "&" + v4_query).verify(v))
    header_signed = boto.last(boto.client.get_object, Bucket="bkt", Key="k")
    raises("InvalidArgument", lambda: replace(header_signed, raw_query=v2.raw_query).verify(v))
