"""Hypothesis-made S3 requests against a real gateway: no 5xx, no crash, nothing stored when refused.

Each example is one request built from parts (method, bucket, key in one of
several encodings, query parameters with S3's subresources, duplicates and
made-up names, headers with bad dates, lengths, checksums and oversized
metadata, a body) and one way of signing it: botocore's SigV4 over the request
as built, the same with the signature tampered, no authentication at all, or a
presigned URL with an odd expiry. It goes out with ``http.client`` byte for
byte as built (``requests`` would normalise the path).

After every example:

- the answer is no 5xx. Two 5xx are S3's own and allowed only with their S3
  error code: 501 ``NotImplemented`` (a feature dwray does not offer) and 503
  ``SlowDown`` with a ``Retry-After`` (a rate limit that was really met: the
  body's code says which refusal it was). Nothing else.
- the gateway is alive: ``/healthz/live`` answers 200.
- a refused request stored nothing: the bucket's listing (by a valid client)
  holds no key and the account no bucket that was not there before the request.

A write the gateway accepted (a valid signature may well make one) is fine; the
listing after it becomes the new "before".
"""
from __future__ import annotations

import datetime
import hashlib
import http.client
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import requests
from botocore.auth import SIGV4_TIMESTAMP, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.integration.gateway.clients import RawResponse, error_code, keys_in, send, sign
from tests.integration.gateway.conftest import VIRTUAL_HOST_DOMAIN, GatewayUnderTest

# More, and a fresh seed, for a longer hunt: FUZZ_EXAMPLES=2000 FUZZ_RANDOM=1 pytest tests/fuzz/test_s3_hypothesis.py
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
DERANDOMIZE = not os.environ.get("FUZZ_RANDOM")
REQUEST_TIMEOUT = 30
BUCKET = "fuzz-target"
ALLOWED_5XX = {501: {"NotImplemented"}, 503: {"SlowDown"}}

# --- the parts of a request ---------------------------------------------------------------------

METHODS = st.sampled_from(["GET", "PUT", "PUT", "POST", "POST", "DELETE", "HEAD", "GET", "PUT", "OPTIONS",
                           "PATCH", "PROPFIND"])
BUCKETS = st.one_of(
    st.just(BUCKET), st.just(""), st.sampled_from(["no-such-bucket-fuzz", "admin", "metrics", "Bad_Name", "ab",
                                                    "a" * 64, "..", "xn--fuzz", "192.168.0.1", "bucket."]),
    st.from_regex(r"[a-z0-9][a-z0-9.\-]{2,40}", fullmatch=True))
KEY_TEXT = st.one_of(
    st.text(min_size=0, max_size=40),
    st.sampled_from(["..", "../..", "a/../../b", "./a", "a//b", "/", "%2e%2e", "k?x=1", "k#f", "\u202e", "\x00",
                     "\ufeff", "\U0001f600", "a" * 1100, "/".join(["d"] * 200)]),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=1200))
KEY_ENCODINGS = st.sampled_from(["quote", "quote-slashes", "double", "raw-ascii"])
SUBRESOURCES = ["uploads", "uploadId", "partNumber", "delete", "location", "versioning", "list-type", "acl",
                "tagging", "versionId", "max-keys", "prefix", "delimiter", "continuation-token", "marker",
                "response-content-type", "X-Amz-Expires", "X-Amz-Signature", "x-id", "select", "torrent"]
QUERY_VALUES = st.one_of(st.sampled_from(["", "1", "2", "0", "-1", "10001", "99999999999999999999", "abc", "%zz",
                                          "a b", "\u00e9", "true"]), st.text(max_size=20))
QUERY = st.lists(st.tuples(st.one_of(st.sampled_from(SUBRESOURCES), st.text(min_size=1, max_size=12)),
                           QUERY_VALUES), max_size=5)
HEADER_CHOICES: dict[str, Any] = {
    "x-amz-date": st.sampled_from(["", "yesterday", "20991231T000000Z", "19700101T000000Z", "2026-01-01"]),
    "Date": st.sampled_from(["", "Mon, 32 Foo 2026 99:99:99 GMT", "0", "Thu, 01 Jan 1970 00:00:00 GMT"]),
    "Content-Length": st.sampled_from(["abc", "-1", "1e3", " 5", "0x10", "0"]),
    "Content-MD5": st.sampled_from(["", "not-base64!", "AAAA", "1B2M2Y8AsgTpgAmY7PhCfg=="]),
    "x-amz-checksum-crc32": st.sampled_from(["", "AAAA", "!!", "AAAAAAAAAAAA"]),
    "x-amz-checksum-sha256": st.sampled_from(["", "x", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="]),
    "x-amz-sdk-checksum-algorithm": st.sampled_from(["CRC32", "MD5", "NONE", "crc64nvme", ""]),
    "x-amz-content-sha256": st.sampled_from(["UNSIGNED-PAYLOAD", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", "abc",
                                             "0" * 64]),
    "x-amz-meta-big": st.integers(0, 12000).map(lambda size: "m" * size),
    "x-amz-meta-latin": st.sampled_from(["\u00e9t\u00e9", "\xff\xfe", "a\tb"]),
    "x-amz-copy-source": st.sampled_from(["", "/", f"/{BUCKET}/", f"{BUCKET}/missing", "/../../etc/passwd",
                                          "%ff%fe", f"/{BUCKET}/k?versionId=x"]),
    "x-amz-copy-source-range": st.sampled_from(["bytes=0-", "bytes=5-1", "bytes=a-b"]),
    "Range": st.sampled_from(["bytes=0-0", "bytes=-0", "bytes=9-1", "bytes=a-", "items=0-1", "bytes=0-1,2-3",
                              "bytes=" + "9" * 30 + "-"]),
    "If-Match": st.sampled_from(["*", '"x"', ""]),
    "If-None-Match": st.sampled_from(["*", '"x"']),
    "If-Modified-Since": st.sampled_from(["garbage", "Thu, 01 Jan 1970 00:00:00 GMT"]),
    "x-amz-storage-class": st.sampled_from(["GLACIER", "STANDARD", "???"]),
    "x-amz-server-side-encryption": st.sampled_from(["AES256", "aws:kms", "rot13"]),
    "Content-Type": st.sampled_from(["application/xml", "text/plain; charset=\u00e9", ""]),
    "Expect": st.sampled_from(["100-continue", "200-ok"]),
    "x-amz-decoded-content-length": st.sampled_from(["-1", "abc", "0", "99999999999999999999", "5"]),
    # Virtual-hosted style and odd Hosts: the bucket then comes from the Host, not the path.
    "Host": st.sampled_from([f"{BUCKET}.{VIRTUAL_HOST_DOMAIN}", f"..{VIRTUAL_HOST_DOMAIN}",
                             f"A_B.{VIRTUAL_HOST_DOMAIN}", VIRTUAL_HOST_DOMAIN, "[::1]", "[::1", "host:99999",
                             f"{BUCKET}.{VIRTUAL_HOST_DOMAIN}:1"]),
}
HEADERS = st.dictionaries(st.sampled_from(sorted(HEADER_CHOICES)), st.none(), max_size=5).flatmap(
    lambda chosen: st.fixed_dictionaries({name: HEADER_CHOICES[name] for name in chosen}))
BODIES = st.one_of(st.just(b""), st.binary(max_size=300),
                   st.sampled_from([b"<Delete><Object><Key>k</Key></Object></Delete>",
                                    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>x</ETag>"
                                    b"</Part></CompleteMultipartUpload>", b"<?xml version='1.0'?><a>" * 50,
                                    b"<!DOCTYPE a [<!ENTITY e SYSTEM 'file:///etc/passwd'>]><a>&e;</a>"]))
AUTH_MODES = st.sampled_from(["sigv4", "sigv4", "sigv4-tampered", "none", "presigned", "presigned-odd-expiry",
                              "presigned-expired"])
ODD_EXPIRIES = st.sampled_from(["0", "-1", "604801", "abc", "1.5", "99999999999999999999", ""])


@dataclass(frozen=True)
class FuzzRequest:
    method: str
    bucket: str
    key: str
    key_encoding: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes
    auth: str
    odd_expiry: str = field(default="")

    @property
    def path(self) -> str:
        if not self.bucket:
            return "/"
        return f"/{quote(self.bucket, safe='')}/{_encode_key(self.key, self.key_encoding)}" if self.key \
            else f"/{quote(self.bucket, safe='')}"

    @property
    def query_string(self) -> str:
        return "&".join(f"{quote(name, safe='')}={quote(value, safe='')}" if value else quote(name, safe="")
                        for name, value in self.query)

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query_string}" if self.query else self.path


def _encode_key(key: str, encoding: str) -> str:
    if encoding == "quote":
        return quote(key, safe="/")
    if encoding == "quote-slashes":
        return quote(key, safe="")
    if encoding == "double":
        return quote(quote(key, safe="/"), safe="/")
    # raw-ascii: printable ASCII left as is ('..' segments, '%' that is not an escape); the rest escaped,
    # because http.client refuses a request line with spaces or control characters in it.
    return "".join(char if 0x21 <= ord(char) < 0x7f and char not in "?#" else quote(char, safe="")
                   for char in key)


REQUESTS = st.builds(FuzzRequest, method=METHODS, bucket=BUCKETS, key=KEY_TEXT, key_encoding=KEY_ENCODINGS,
                     query=QUERY, headers=HEADERS, body=BODIES, auth=AUTH_MODES, odd_expiry=ODD_EXPIRIES)


# --- sending ------------------------------------------------------------------------------------

def _with_length(request: FuzzRequest) -> dict[str, str]:
    """The request's headers, with a Content-Length that is the body's unless the example lies about it.

    A lie is only ever one that cannot leave the gateway waiting for bytes that never come
    (not a number, negative, or shorter than the body); a longer one would only test a timeout.
    """
    headers = dict(request.headers)
    declared = headers.get("Content-Length")
    if declared is None or (declared.strip().isdigit() and int(declared) > len(request.body)):
        headers["Content-Length"] = str(len(request.body))
    return headers


class _DatedQueryAuth(S3SigV4QueryAuth):
    """botocore's presigner, dated when the test says (``add_auth`` itself stamps the current time)."""

    def __init__(self, credentials: Credentials, region: str, at: datetime.datetime | None) -> None:
        super().__init__(credentials, "s3", region, expires=3600)
        self._at = at

    def _modify_request_before_signing(self, request: AWSRequest) -> None:
        if self._at is not None:
            request.context["timestamp"] = self._at.strftime(SIGV4_TIMESTAMP)
        super()._modify_request_before_signing(request)


def _presigned_target(gateway: GatewayUnderTest, request: FuzzRequest) -> str:
    """botocore's presigned URL for the request; its expiry replaced by an odd one, or dated 8 days back."""
    credentials = Credentials(gateway.access_key_id, gateway.secret_access_key)
    at = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8)
          if request.auth == "presigned-expired" else None)
    signer = _DatedQueryAuth(credentials, gateway.region, at)
    # No body here: a presigned URL never signs one (and botocore would parse a POST body as a form). The
    # headers are signed (an unsigned x-amz-* header is refused, rightly, before anything else is looked at).
    headers = {name: value for name, value in request.headers.items() if name.lower() != "content-length"}
    aws = AWSRequest(method=request.method, url=gateway.endpoint + request.target, data=b"", headers=headers)
    signer.add_auth(aws)
    parts = urlsplit(aws.url)
    target = f"{parts.path}?{parts.query}"
    if request.auth == "presigned-odd-expiry":
        target = target.replace("X-Amz-Expires=3600", f"X-Amz-Expires={quote(request.odd_expiry, safe='')}")
    return target


def _send(gateway: GatewayUnderTest, request: FuzzRequest) -> RawResponse:
    headers = _with_length(request)
    if request.auth in ("sigv4", "sigv4-tampered"):
        payload = headers.get("x-amz-content-sha256") or hashlib.sha256(request.body).hexdigest()
        signed = sign(gateway, request.method, request.target, headers=headers, body=request.body,
                      payload_hash=payload)
        headers = dict(signed.headers)
        if request.auth == "sigv4-tampered":
            flipped = "0" if signed.signature[-1] != "0" else "1"
            headers["Authorization"] = headers["Authorization"][:-1] + flipped
        return send(gateway, request.method, request.target, headers, request.body, timeout=REQUEST_TIMEOUT)
    if request.auth == "none":
        return send(gateway, request.method, request.target, headers, request.body, timeout=REQUEST_TIMEOUT)
    target = _presigned_target(gateway, request)
    return send(gateway, request.method, target, headers, request.body, timeout=REQUEST_TIMEOUT)


# --- what must hold -----------------------------------------------------------------------------

@dataclass
class Stored:
    """What a valid client sees: the fuzz bucket's keys and the account's buckets."""

    keys: set[str]
    buckets: set[str]


def _stored(s3: Any) -> Stored:
    return Stored(set(keys_in(s3, BUCKET)), {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]})


@pytest.fixture(scope="module")
def s3_fuzz(fuzz_gateway: GatewayUnderTest) -> Iterator[Any]:
    s3 = fuzz_gateway.client()
    existing = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    if BUCKET not in existing:
        s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="present", Body=b"present bytes")
    yield s3


def _check_answer(request: FuzzRequest, response: RawResponse) -> None:
    if response.status < 500:
        return
    code = error_code(response.body) if request.method != "HEAD" else ""
    allowed = ALLOWED_5XX.get(response.status, set())
    assert code in allowed or (request.method == "HEAD" and allowed), \
        f"{response.status} {code or response.body[:300]!r} for {request!r}"
    if response.status == 503:
        assert "Retry-After" in response.headers or "retry-after" in response.headers, response.headers


def _alive(gateway: GatewayUnderTest) -> None:
    probe = requests.get(f"{gateway.endpoint}/healthz/live", timeout=REQUEST_TIMEOUT)
    assert probe.status_code == 200, probe.text


@settings(max_examples=EXAMPLES, derandomize=DERANDOMIZE, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(request=REQUESTS)
def test_fuzzed_s3_requests_never_5xx_crash_or_store_when_refused(
        fuzz_gateway: GatewayUnderTest, s3_fuzz: Any, request: FuzzRequest) -> None:
    before = _stored(s3_fuzz)
    try:
        response = _send(fuzz_gateway, request)
    except http.client.HTTPException as error:  # the connection closed with no answer
        pytest.fail(f"no HTTP answer ({type(error).__name__}: {error}) for {request!r}")
    event(f"{request.auth}: {response.status} {error_code(response.body) if response.body.startswith(b'<') else ''}")
    _check_answer(request, response)
    _alive(fuzz_gateway)
    if response.status >= 300 and request.method not in ("GET", "HEAD"):
        after = _stored(s3_fuzz)
        assert after.keys <= before.keys, (sorted(after.keys - before.keys), response.status, request)
        assert after.buckets <= before.buckets, (sorted(after.buckets - before.buckets), response.status, request)


# --- the harness itself: its valid requests are valid, its broken ones are refused ---------------

@pytest.mark.parametrize(("auth", "expected"), [
    ("sigv4", 200), ("presigned", 200), ("sigv4-tampered", 403), ("none", 403), ("presigned-expired", 403)])
def test_the_fuzzers_ways_of_signing_do_what_they_say(fuzz_gateway: GatewayUnderTest, s3_fuzz: Any,
                                                      auth: str, expected: int) -> None:
    """Without this, a signing mode that is always refused would make the fuzzing look at refusals only."""
    plain = FuzzRequest(method="GET", bucket=BUCKET, key="present", key_encoding="quote", query=[], headers={},
                        body=b"", auth=auth)
    response = _send(fuzz_gateway, plain)
    assert response.status == expected, (response.status, response.body[:300])
    if expected == 200:
        assert response.body == b"present bytes"
