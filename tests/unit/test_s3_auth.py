"""SigV4 header auth against requests signed by botocore itself (boto3 clients,
S3SigV4Auth) and against the AWS documentation's example; payload modes, and
malformed or unsupported authentication.

The recording boto3 client, the loopback capture and the verifier factory here
are shared with ``test_s3_auth_presigned.py`` and ``test_s3_chunked.py``."""
from __future__ import annotations

import calendar
import hashlib
import io
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
import h11
import pytest
from botocore.auth import HmacV1Auth, S3SigV4Auth
from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.config import Config
from botocore.credentials import Credentials

from dwray.s3.auth import (
    STREAMING_SIGNED,
    STREAMING_SIGNED_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    UNSIGNED_PAYLOAD,
    AuthResult,
    ChunkSigner,
    SigningIdentity,
    SigV4Verifier,
)
from dwray.s3.checksums import BodyVerifier
from dwray.s3.errors import S3Error

ACCESS_KEY = "AKIDDWRAYTEST0000001"
SECRET = "dwraySecretKey/with+odd=chars0000000000"
IDENTITY = SigningIdentity(ACCESS_KEY, SECRET, "acme")
ENDPOINT = "http://127.0.0.1:9000"

# The AWS documentation's chunked-upload example ("Signature calculation:
# transferring payload in multiple chunks").
DOC_KEY = SigningIdentity("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "docs")
DOC_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
DOC_TIME = float(calendar.timegm((2013, 5, 24, 0, 0, 0)))
DOC_HEADERS = [
    ("host", "s3.amazonaws.com"),
    ("x-amz-date", "20130524T000000Z"),
    ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
    ("authorization", ("AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
                       "SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
                       f"x-amz-decoded-content-length;x-amz-storage-class,Signature={DOC_SEED}")),
    ("x-amz-content-sha256", STREAMING_SIGNED),
    ("content-encoding", "aws-chunked"),
    ("x-amz-decoded-content-length", "66560"),
    ("content-length", "66824"),
]

KEYS = [
    "plain.txt",
    "with space.txt",
    "unicodé/ключ/日本語.txt",
    "a+b~c=d",
    "dir/sub/deeper/file.bin",
    "odd !*'()$@,;:&[].txt",
    "%41 literal percent",
    "trailing/",
    "frag#ment?q.txt",
]


@dataclass(frozen=True)
class Captured:
    """One request as it goes on the wire: what the gateway's ASGI scope would hold."""

    method: str
    raw_path: str
    raw_query: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def signed_at(self) -> float:
        amz_date = self.header("x-amz-date")
        return float(calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")))

    def header(self, name: str) -> str:
        return next(v for k, v in self.headers if k == name)

    def with_header(self, name: str, value: str | None) -> Captured:
        headers = [(k, v) for k, v in self.headers if k != name]
        if value is not None:
            headers.append((name, value))
        return replace(self, headers=headers)

    def verify(self, verifier: SigV4Verifier) -> AuthResult:
        return verifier.verify(self.method, self.raw_path, self.raw_query, self.headers)


def wire_request(method: str, url: str, headers: Any, body: Any) -> Captured:
    """What urllib3 sends for a prepared botocore request: the URL's path and query
    as they are, the headers, and a Host header from the URL unless botocore set one."""
    parts = urlsplit(url)
    pairs = [(k.lower(), v.decode("latin-1") if isinstance(v, bytes) else v) for k, v in headers.items()]
    if not any(k == "host" for k, _ in pairs):
        pairs.append(("host", parts.netloc))
    if hasattr(body, "read"):
        body = body.read()
    data = body.encode() if isinstance(body, str) else bytes(body or b"")
    return Captured(method, parts.path, parts.query, pairs, data)


class _Body:
    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data


_REPLIES = {
    "uploads": b"<InitiateMultipartUploadResult><Bucket>bkt</Bucket><Key>k</Key>"
               b"<UploadId>u1</UploadId></InitiateMultipartUploadResult>",
    "delete": b"<DeleteResult></DeleteResult>",
}


class BotoRecorder:
    """A real boto3 client whose requests are recorded exactly as botocore would
    send them (signed, encoded, aws-chunked) and answered in process."""

    def __init__(self, endpoint: str = ENDPOINT, *, access_key: str = ACCESS_KEY, secret: str = SECRET,
                 region: str = "us-east-1", **config: Any) -> None:
        self.requests: list[Captured] = []
        s3 = {"addressing_style": "path", **config.pop("s3", {})}
        # signature_version: boto3 presigns with SigV2 for custom endpoints unless told s3v4.
        self.client = boto3.client(
            "s3", endpoint_url=endpoint, aws_access_key_id=access_key, aws_secret_access_key=secret,
            region_name=region, verify=False,
            config=Config(retries={"max_attempts": 1}, s3=s3, signature_version="s3v4", **config))
        self.client.meta.events.register("before-send.s3", self._answer)

    def _answer(self, request: Any, **_: Any) -> AWSResponse:
        captured = wire_request(request.method, request.url, request.headers, request.body)
        self.requests.append(captured)
        reply = next((v for k, v in _REPLIES.items() if k in captured.raw_query.split("&")), b"")
        return AWSResponse(request.url, 200, {"ETag": '"0"'}, _Body(reply))

    def last(self, call: Callable[..., Any], **kwargs: Any) -> Captured:
        call(**kwargs)
        return self.requests[-1]


def make_verifier(at: float, *, region: str = "us-east-1",
                  identities: tuple[SigningIdentity, ...] = (IDENTITY, DOC_KEY)) -> SigV4Verifier:
    table = {i.access_key_id: i for i in identities}
    return SigV4Verifier(table.get, region=region, clock=lambda: at)


def sign_manually(method: str, url: str, headers: dict[str, str], *, payload: str | None = None,
                  secret: str = SECRET) -> Captured:
    """Sign with botocore's S3SigV4Auth directly; ``payload`` forces the x-amz-content-sha256
    value (botocore itself only emits the hex and unsigned forms)."""

    class Signer(S3SigV4Auth):
        def payload(self, request: AWSRequest) -> str:
            return payload if payload is not None else super().payload(request)

    request = AWSRequest(method=method, url=url, headers=headers, data=b"")
    Signer(Credentials(ACCESS_KEY, secret), "s3", "us-east-1").add_auth(request)
    return wire_request(method, url, request.headers, b"")


def raises(code: str, fn: Callable[[], Any]) -> S3Error:
    with pytest.raises(S3Error) as info:
        fn()
    assert info.value.code == code, str(info.value)
    return info.value


@pytest.fixture
def boto() -> BotoRecorder:
    return BotoRecorder()


# -- header auth from a real boto3 client ----------------------------------------


@pytest.mark.parametrize("key", KEYS)
def test_put_object_with_awkward_keys_verifies(boto: BotoRecorder, key: str) -> None:
    req = boto.last(boto.client.put_object, Bucket="bkt", Key=key, Body=b"data", Metadata={"k": "v"})
    result = req.verify(make_verifier(req.signed_at))
    assert result.identity == IDENTITY
    assert not result.presigned
    assert result.content_sha256 == hashlib.sha256(b"data").hexdigest() == result.payload_sha256
    assert result.chunk_signer is None and not result.streaming


@pytest.mark.parametrize("call, kwargs, query_part", [
    ("list_objects_v2", {"Prefix": "a/b", "Delimiter": "/", "MaxKeys": 5, "StartAfter": "x y+z"}, "prefix=a%2Fb"),
    ("create_multipart_upload", {"Key": "big file"}, "uploads"),
    ("list_multipart_uploads", {"Prefix": "p", "KeyMarker": ""}, "uploads"),
    ("get_object", {"Key": "k", "Range": "bytes=0-9",
                    "ResponseContentDisposition": 'attachment; filename="a b=c.txt"'}, "response-content-disposition="),
    ("delete_objects", {"Delete": {"Objects": [{"Key": "a"}, {"Key": "b c"}]}}, "delete"),
    ("list_objects", {"Prefix": "é/", "Marker": "m&n", "EncodingType": "url"}, "encoding-type=url"),
])
def test_query_strings_verify(boto: BotoRecorder, call: str, kwargs: dict[str, Any], query_part: str) -> None:
    req = boto.last(getattr(boto.client, call), Bucket="bkt", **kwargs)
    assert query_part in req.raw_query
    assert req.verify(make_verifier(req.signed_at)).identity.tenant == "acme"


def capture_one(send: Callable[[str], Any]) -> Captured:
    """Run ``send(endpoint)`` against a one-request loopback HTTP server (parsed by h11)
    and return the request as the gateway's ASGI scope would hold it."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    seen: list[Captured] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            http = h11.Connection(h11.SERVER)
            head, body = None, bytearray()
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    http.receive_data(conn.recv(65536))
                elif isinstance(event, h11.Request):
                    head = event
                    if http.they_are_waiting_for_100_continue:
                        conn.sendall(http.send(h11.InformationalResponse(status_code=100, headers=[])))
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            assert head is not None
            path, _, query = head.target.decode("latin-1").partition("?")
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers]
            seen.append(Captured(head.method.decode(), path, query, headers, bytes(body)))
            conn.sendall(http.send(h11.Response(status_code=200, headers=[("etag", '"0"'),
                                                                          ("content-length", "0")])))
            conn.sendall(http.send(h11.EndOfMessage()))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        send(f"http://127.0.0.1:{port}")
        thread.join(10)
    finally:
        server.close()
    return seen[0]


def test_real_socket_request_verifies_and_its_checksum_holds() -> None:
    """A boto3 PutObject over a real loopback socket, parsed by h11, as the gateway sees it."""

    def send(endpoint: str) -> None:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ACCESS_KEY,
                              aws_secret_access_key=SECRET, region_name="us-east-1",
                              config=Config(retries={"max_attempts": 1}))
        client.put_object(Bucket="bkt", Key="wire key+1", Body=b"over the wire")

    req = capture_one(send)
    assert req.raw_path == "/bkt/wire%20key%2B1"
    result = req.verify(make_verifier(req.signed_at))
    body = BodyVerifier(dict(req.headers), content_sha256=result.content_sha256)
    body.update(req.body)
    assert body.verify({}) == {"x-amz-checksum-crc32": req.header("x-amz-checksum-crc32")}


def test_repeated_headers_are_joined_like_the_signer_joins_them() -> None:
    request = AWSRequest(method="GET", url=ENDPOINT + "/bkt/k", data=b"")
    request.headers["x-amz-meta-tag"] = "one"
    request.headers["x-amz-meta-tag"] = "two"
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1").add_auth(request)
    req = wire_request("GET", request.url, request.headers, b"")
    assert [v for k, v in req.headers if k == "x-amz-meta-tag"] == ["one", "two"]
    req.verify(make_verifier(req.signed_at))
    raises("SignatureDoesNotMatch", lambda: req.with_header("x-amz-meta-tag", "one").verify(
        make_verifier(req.signed_at)))


def test_date_header_instead_of_x_amz_date() -> None:
    request = AWSRequest(method="GET", url=ENDPOINT + "/bkt/k", data=b"", headers={"Date": "placeholder"})
    S3SigV4Auth(Credentials(ACCESS_KEY, SECRET), "s3", "us-east-1").add_auth(request)
    req = wire_request("GET", request.url, request.headers, b"")
    assert not any(k == "x-amz-date" for k, _ in req.headers)
    issued = parsedate_to_datetime(req.header("date")).timestamp()
    assert req.verify(make_verifier(issued + 10)).identity == IDENTITY
    raises("RequestTimeTooSkewed", lambda: req.verify(make_verifier(issued + 901)))


def test_path_signed_encoded_but_sent_raw_is_accepted() -> None:
    req = sign_manually("GET", ENDPOINT + "/bkt/a%21b%3Dc", {})
    sent_raw = replace(req, raw_path="/bkt/a!b=c")
    assert sent_raw.verify(make_verifier(req.signed_at)).identity == IDENTITY
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_path="/bkt/a!b=d").verify(
        make_verifier(req.signed_at)))


def test_aws_documentation_seed_signature() -> None:
    result = make_verifier(DOC_TIME).verify("PUT", "/examplebucket/chunkObject.txt", "", DOC_HEADERS)
    assert result.content_sha256 == STREAMING_SIGNED and result.streaming
    signer = result.chunk_signer
    assert signer is not None and signer.seed_signature == DOC_SEED
    assert signer.scope == "20130524/us-east-1/s3/aws4_request" and signer.amz_date == "20130524T000000Z"
    first = signer.chunk_signature(DOC_SEED, hashlib.sha256(b"a" * 65536).hexdigest())
    assert first == "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"


# -- a raw '#' in the path -----------------------------------------------------------
# botocore's signer ends the path at '#', so a signature for /bkt/k would also cover
# /bkt/k#x (key "k#x" to the gateway) unless such paths are refused.


def test_raw_hash_in_path_is_refused_for_header_auth() -> None:
    req = sign_manually("GET", ENDPOINT + "/bkt/k", {})
    v = make_verifier(req.signed_at)
    assert req.verify(v).identity == IDENTITY
    err = raises("InvalidURI", lambda: replace(req, raw_path="/bkt/k#x").verify(v))
    assert "'#'" in err.message and "%23" in err.message
    raises("InvalidURI", lambda: replace(req, raw_path="/bkt/k?x").verify(v))


# -- rejections ----------------------------------------------------------------------


def test_tampered_header_path_and_query(boto: BotoRecorder) -> None:
    req = boto.last(boto.client.list_objects_v2, Bucket="bkt", Prefix="a")
    v = make_verifier(req.signed_at)
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_query=req.raw_query.replace(
        "prefix=a", "prefix=b")).verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_query=req.raw_query + "&max-keys=1").verify(v))
    raises("SignatureDoesNotMatch", lambda: replace(req, raw_path="/other").verify(v))
    put = boto.last(boto.client.put_object, Bucket="bkt", Key="k", Body=b"x", Metadata={"owner": "me"})
    v = make_verifier(put.signed_at)
    raises("SignatureDoesNotMatch", lambda: put.with_header("x-amz-meta-owner", "you").verify(v))
    raises("SignatureDoesNotMatch", lambda: put.with_header(
        "x-amz-content-sha256", hashlib.sha256(b"y").hexdigest()).verify(v))
    err = raises("AccessDenied", lambda: put.with_header("x-amz-meta-extra", "sneaky").verify(v))
    assert "x-amz-meta-extra" in err.message


def test_wrong_secret_and_unknown_key() -> None:
    wrong = BotoRecorder(secret="not-the-secret")
    req = wrong.last(wrong.client.head_object, Bucket="b", Key="k")
    err = raises("SignatureDoesNotMatch", lambda: req.verify(make_verifier(req.signed_at)))
    assert SECRET not in str(err) and not re.search(r"[0-9a-f]{64}", str(err))
    stranger = BotoRecorder(access_key="AKIDSTRANGER")
    req = stranger.last(stranger.client.head_object, Bucket="b", Key="k")
    raises("InvalidAccessKeyId", lambda: req.verify(make_verifier(req.signed_at)))


@pytest.mark.parametrize("offset, ok", [(899, True), (-899, True), (901, False), (-901, False)])
def test_clock_skew(boto: BotoRecorder, offset: int, ok: bool) -> None:
    req = boto.last(boto.client.head_bucket, Bucket="bkt")
    verifier = make_verifier(req.signed_at + offset)
    if ok:
        assert req.verify(verifier).identity == IDENTITY
    else:
        raises("RequestTimeTooSkewed", lambda: req.verify(verifier))


def test_lookup_is_called_once_per_request(boto: BotoRecorder) -> None:
    req = boto.last(boto.client.head_bucket, Bucket="bkt")
    calls: list[str] = []

    def lookup(key: str) -> SigningIdentity | None:
        calls.append(key)
        return IDENTITY if key == ACCESS_KEY else None

    SigV4Verifier(lookup, clock=lambda: req.signed_at).verify(req.method, req.raw_path, req.raw_query,
                                                               req.headers)
    assert calls == [ACCESS_KEY]


def test_other_region_verifier() -> None:
    frankfurt = BotoRecorder(region="eu-central-1")
    req = frankfurt.last(frankfurt.client.head_bucket, Bucket="bkt")
    assert req.verify(make_verifier(req.signed_at, region="eu-central-1")).identity == IDENTITY
    err = raises("AuthorizationHeaderMalformed", lambda: req.verify(make_verifier(req.signed_at)))
    assert "eu-central-1" in err.message


# -- payload modes -------------------------------------------------------------------


def test_unsigned_payload_over_https() -> None:
    rec = BotoRecorder("https://127.0.0.1:9443", s3={"payload_signing_enabled": False},
                       request_checksum_calculation="when_required")
    req = rec.last(rec.client.put_object, Bucket="bkt", Key="k", Body=b"payload")
    result = req.verify(make_verifier(req.signed_at))
    assert result.content_sha256 == UNSIGNED_PAYLOAD and result.payload_sha256 is None


def test_streaming_unsigned_trailer_from_boto3() -> None:
    rec = BotoRecorder("https://127.0.0.1:9443")
    req = rec.last(rec.client.put_object, Bucket="bkt", Key="k", Body=io.BytesIO(b"x" * 100))
    result = req.verify(make_verifier(req.signed_at))
    assert result.content_sha256 == STREAMING_UNSIGNED_TRAILER and result.streaming
    assert result.chunk_signer is None
    assert req.header("x-amz-trailer") == "x-amz-checksum-crc32"


@pytest.mark.parametrize("mode", [STREAMING_SIGNED, STREAMING_SIGNED_TRAILER])
def test_signed_streaming_modes_carry_a_chunk_signer(mode: str) -> None:
    req = sign_manually("PUT", ENDPOINT + "/bkt/k", {"x-amz-decoded-content-length": "5",
                                                      "content-encoding": "aws-chunked"}, payload=mode)
    result = req.verify(make_verifier(req.signed_at))
    assert result.content_sha256 == mode and result.streaming
    signer = result.chunk_signer
    assert isinstance(signer, ChunkSigner)
    assert signer.seed_signature == re.search(r"Signature=(\w+)", req.header("authorization")).group(1)  # type: ignore[union-attr]


def test_payload_header_missing_or_bogus(boto: BotoRecorder) -> None:
    req = boto.last(boto.client.head_bucket, Bucket="bkt")
    v = make_verifier(req.signed_at)
    err = raises("InvalidRequest", lambda: req.with_header("x-amz-content-sha256", None).verify(v))
    assert "x-amz-content-sha256" in err.message
    raises("InvalidArgument", lambda: req.with_header("x-amz-content-sha256", "abc").verify(v))
    raises("InvalidRequest", lambda: req.with_header(
        "x-amz-content-sha256", "STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD").verify(v))


# -- malformed and unsupported authentication ---------------------------------------


def test_anonymous_and_unsupported_mechanisms() -> None:
    v = make_verifier(time.time())
    raises("AccessDenied", lambda: v.verify("GET", "/bkt/k", "", [("host", "h")]))
    err = raises("InvalidRequest", lambda: v.verify("GET", "/bkt/k", "", [
        ("host", "h"), ("authorization", f"AWS {ACCESS_KEY}:c2lnbmF0dXJl")]))
    assert "AWS4-HMAC-SHA256" in err.message
    raises("InvalidRequest", lambda: v.verify("GET", "/bkt/k", "", [
        ("host", "h"), ("authorization", (f"AWS4-ECDSA-P256-SHA256 Credential={ACCESS_KEY}/20240101/s3/"
                                          "aws4_request, SignedHeaders=host, Signature=00"))]))
    raises("InvalidArgument", lambda: v.verify("GET", "/bkt/k", "", [("host", "h"), ("authorization", "Bearer x")]))


def test_sigv2_in_the_authorization_header_is_still_refused() -> None:
    request = AWSRequest(method="GET", url=ENDPOINT + "/bkt/k", data=b"")
    HmacV1Auth(Credentials(ACCESS_KEY, SECRET)).add_auth(request)
    req = wire_request("GET", request.url, request.headers, b"")
    assert req.header("authorization").startswith(f"AWS {ACCESS_KEY}:")
    err = raises("InvalidRequest", lambda: req.verify(make_verifier(time.time())))
    assert "AWS4-HMAC-SHA256" in err.message and "s3v4" in err.message


def test_header_and_query_auth_together(boto: BotoRecorder) -> None:
    req = boto.last(boto.client.head_bucket, Bucket="bkt")
    url = boto.client.generate_presigned_url("head_bucket", Params={"Bucket": "bkt"})
    both = replace(req, raw_query=urlsplit(url).query)
    raises("InvalidArgument", lambda: both.verify(make_verifier(req.signed_at)))


@pytest.mark.parametrize("edit", [
    lambda a: a.replace("/s3/", "/ec2/"),
    lambda a: a.replace("/aws4_request", "/aws5_request"),
    lambda a: re.sub(r"Credential=(\w+)/\d{8}/", r"Credential=\1/20131340/", a),
    lambda a: re.sub(r"Credential=(\w+)/\d{8}/", r"Credential=\1/20000101/", a),
    lambda a: re.sub(r"Credential=[^,]+", "Credential=onlyakey", a),
    lambda a: re.sub(r",\s*Signature=\w+", "", a),
    lambda a: re.sub(r"Signature=\w+", "Signature=XYZ", a),
    lambda a: a.replace("SignedHeaders=host;", "SignedHeaders="),
], ids=["service", "terminator", "bad-date", "other-date", "no-scope", "no-signature", "bad-signature",
        "host-unsigned"])
def test_malformed_authorization_header(boto: BotoRecorder, edit: Callable[[str], str]) -> None:
    req = boto.last(boto.client.head_bucket, Bucket="bkt")
    bad = req.with_header("authorization", edit(req.header("authorization")))
    raises("AuthorizationHeaderMalformed", lambda: bad.verify(make_verifier(req.signed_at)))


def test_unparseable_x_amz_date(boto: BotoRecorder) -> None:
    req = boto.last(boto.client.head_bucket, Bucket="bkt")
    raises("AccessDenied", lambda: req.with_header("x-amz-date", "yesterday").verify(make_verifier(req.signed_at)))


def test_no_secrets_in_reprs() -> None:
    assert SECRET not in repr(IDENTITY)
    result = make_verifier(DOC_TIME).verify("PUT", "/examplebucket/chunkObject.txt", "", DOC_HEADERS)
    assert result.chunk_signer is not None
    text = repr(result)
    assert DOC_KEY.secret_access_key not in text
    assert result.chunk_signer.signing_key.hex() not in text and "signing_key" not in text
