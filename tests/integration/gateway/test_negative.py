"""Bad input against the gateway: each request gets the right S3 error, nothing is
stored, and the gateway goes on serving normal requests.

Requests that no well-behaved SDK would send (a clock 20 minutes off, a broken
chunk signature, a path with ``..``) are built here and signed with botocore's
signer, then sent with http.client so that they reach the gateway byte for
byte as built.
"""
from __future__ import annotations

import datetime
import hashlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import requests
from botocore import UNSIGNED
from botocore.exceptions import ClientError

from tests.helpers import BILLION_LAUGHS_DTD
from tests.integration.gateway.clients import (
    UNSIGNED_PAYLOAD,
    assert_serves,
    chunked_put,
    crc32_b64,
    crc32c_b64,
    error_code,
    error_of,
    keys_in,
    md5_b64,
    random_bytes,
    s3_client,
    send,
    send_signed,
    sha256_b64,
    sign,
)
from tests.integration.gateway.conftest import MAX_OBJECT_SIZE


def _client_error(call: Callable[..., Any], **params: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as caught:
        call(**params)
    return error_of(caught.value)


# --- who is asking ---------------------------------------------------------------------------

def test_wrong_secret_is_signature_does_not_match(gateway: Any, s3: Any, bucket: str) -> None:
    wrong = s3_client(gateway, secret_access_key="not-the-secret-" + uuid.uuid4().hex)
    assert _client_error(wrong.put_object, Bucket=bucket, Key="k", Body=b"x") == ("SignatureDoesNotMatch", 403)
    assert _client_error(wrong.list_objects_v2, Bucket=bucket) == ("SignatureDoesNotMatch", 403)
    assert keys_in(s3, bucket) == []
    assert_serves(s3, bucket)


def test_unknown_access_key_is_invalid_access_key_id(gateway: Any, s3: Any, bucket: str) -> None:
    stranger = s3_client(gateway, access_key_id="AKIA" + uuid.uuid4().hex[:16].upper(),
                         secret_access_key=uuid.uuid4().hex)
    assert _client_error(stranger.put_object, Bucket=bucket, Key="k", Body=b"x") == ("InvalidAccessKeyId", 403)
    assert _client_error(stranger.list_buckets) == ("InvalidAccessKeyId", 403)
    assert keys_in(s3, bucket) == []
    assert_serves(s3, bucket)


def test_anonymous_requests_are_access_denied(gateway: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="private", Body=b"private bytes")
    put = requests.put(f"{gateway.endpoint}/{bucket}/anon", data=b"anonymous", timeout=30)
    assert (put.status_code, error_code(put.content)) == (403, "AccessDenied")
    got = requests.get(f"{gateway.endpoint}/{bucket}/private", timeout=30)
    assert (got.status_code, error_code(got.content)) == (403, "AccessDenied")
    assert b"private bytes" not in got.content

    anonymous = s3_client(gateway, signature_version=UNSIGNED)
    assert _client_error(anonymous.list_objects_v2, Bucket=bucket) == ("AccessDenied", 403)
    assert keys_in(s3, bucket) == ["private"]
    assert_serves(s3, bucket)


def test_expired_presigned_urls_are_access_denied(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="existing", Body=b"secret content")
    put_url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "late"}, ExpiresIn=1)
    get_url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "existing"}, ExpiresIn=1)
    time.sleep(2)
    put = requests.put(put_url, data=b"too late", timeout=30)
    assert (put.status_code, error_code(put.content)) == (403, "AccessDenied")
    got = requests.get(get_url, timeout=30)
    assert (got.status_code, error_code(got.content)) == (403, "AccessDenied")
    assert b"secret content" not in got.content
    assert keys_in(s3, bucket) == ["existing"]
    assert_serves(s3, bucket)


@pytest.mark.parametrize("minutes", [-20, 20])
def test_skewed_clock_is_request_time_too_skewed(gateway: Any, s3: Any, bucket: str, minutes: int) -> None:
    body = b"from a machine with a wrong clock"
    now = datetime.datetime.now(datetime.UTC)
    skewed = sign(gateway, "PUT", f"/{bucket}/skewed", body=body, at=now + datetime.timedelta(minutes=minutes))
    response = send_signed(gateway, skewed)
    assert (response.status, response.code) == (403, "RequestTimeTooSkewed")
    assert keys_in(s3, bucket) == []

    # The same request with the right time goes through, so the clock was the only fault.
    on_time = sign(gateway, "PUT", f"/{bucket}/skewed", body=body, at=now)
    assert send_signed(gateway, on_time).status == 200
    assert s3.get_object(Bucket=bucket, Key="skewed")["Body"].read() == body


# --- what is sent ----------------------------------------------------------------------------

def _chunks() -> list[bytes]:
    # S3 wants every chunk but the last to be at least 8 KiB.
    return [random_bytes(64 * 1024, seed=50), random_bytes(64 * 1024, seed=51), random_bytes(1000, seed=52)]


def _flip_hex(text: str) -> str:
    return ("0" if text[0] != "0" else "1") + text[1:]


def test_aws_chunked_upload_with_valid_chunk_signatures(gateway: Any, s3: Any, bucket: str) -> None:
    chunks = _chunks()
    request, body = chunked_put(gateway, bucket, "chunked", chunks)
    response = send_signed(gateway, request, body=body)
    assert response.status == 200, response.body
    got = s3.get_object(Bucket=bucket, Key="chunked")
    assert got["Body"].read() == b"".join(chunks)
    assert got.get("ContentEncoding") in (None, "")


@pytest.mark.parametrize("tamper", ["chunk-signature", "final-signature", "chunk-data"])
def test_tampered_aws_chunked_upload_is_refused(gateway: Any, s3: Any, bucket: str, tamper: str) -> None:
    original = b"the object before the attack"
    s3.put_object(Bucket=bucket, Key="victim", Body=original)
    chunks = _chunks()
    request, body = chunked_put(gateway, bucket, "victim", chunks)
    marker = b";chunk-signature="
    starts = [at + len(marker) for at in _find_all(body, marker)]
    if tamper == "chunk-signature":
        at = starts[1]
        body = body[:at] + _flip_hex(body[at:at + 64].decode()).encode() + body[at + 64:]
    elif tamper == "final-signature":
        at = starts[-1]
        body = body[:at] + _flip_hex(body[at:at + 64].decode()).encode() + body[at + 64:]
    else:
        at = starts[1] + 64 + 2 + 10  # a byte inside the second chunk's data
        body = body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1:]

    response = send_signed(gateway, request, body=body)
    assert (response.status, response.code) == (403, "SignatureDoesNotMatch")
    assert keys_in(s3, bucket) == ["victim"]
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == original
    assert_serves(s3, bucket)


def _find_all(data: bytes, needle: bytes) -> list[int]:
    found, at = [], data.find(needle)
    while at != -1:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


TAMPERED_BODIES: dict[str, tuple[dict[str, str], str | None, str]] = {
    # name: (extra headers, payload hash to sign instead of the body's, expected code)
    "x-amz-content-sha256": ({}, hashlib.sha256(b"other bytes").hexdigest(), "XAmzContentSHA256Mismatch"),
    "content-md5": ({"Content-MD5": md5_b64(b"other bytes")}, None, "BadDigest"),
    "content-md5-unsigned-payload": ({"Content-MD5": md5_b64(b"other bytes")}, UNSIGNED_PAYLOAD, "BadDigest"),
    "checksum-crc32": ({"x-amz-checksum-crc32": crc32_b64(b"other bytes")}, None, "BadDigest"),
    "checksum-crc32c": ({"x-amz-checksum-crc32c": crc32c_b64(b"other bytes")}, UNSIGNED_PAYLOAD, "BadDigest"),
    "checksum-sha256": ({"x-amz-checksum-sha256": sha256_b64(b"other bytes")}, None, "BadDigest"),
}


@pytest.mark.parametrize("name", list(TAMPERED_BODIES))
def test_body_not_matching_its_digest_is_refused(gateway: Any, s3: Any, bucket: str, name: str) -> None:
    headers, payload_hash, code = TAMPERED_BODIES[name]
    original = b"the object before the attack"
    s3.put_object(Bucket=bucket, Key="victim", Body=original)
    body = random_bytes(50_000, seed=53)
    request = sign(gateway, "PUT", f"/{bucket}/victim", headers=headers, body=body, payload_hash=payload_hash)
    response = send_signed(gateway, request)
    assert (response.status, response.code) == (400, code)
    assert keys_in(s3, bucket) == ["victim"]
    assert s3.get_object(Bucket=bucket, Key="victim")["Body"].read() == original
    assert_serves(s3, bucket)


def test_body_swapped_after_signing_is_refused(gateway: Any, s3: Any, bucket: str) -> None:
    signed_body, sent_body = b"A" * 1000, b"B" * 1000
    request = sign(gateway, "PUT", f"/{bucket}/swapped", body=signed_body)
    response = send_signed(gateway, request, body=sent_body)
    assert (response.status, response.code) == (400, "XAmzContentSHA256Mismatch")
    assert keys_in(s3, bucket) == []
    assert_serves(s3, bucket)


# --- keys ------------------------------------------------------------------------------------

TRAVERSALS = [
    "../../{marker}",
    "a/../../{marker}",
    "%2e%2e/%2e%2e/{marker}",
    "..%2f..%2f{marker}",
    "%2e%2e%2f%2e%2e%2f{marker}",
    "..%5c..%5c{marker}",
    "../../../../../../../../../../../../tmp/{marker}",
    "%2fetc%2f{marker}",
]


def _written_since(root: Path, since: float) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and path.stat().st_mtime >= since]


@pytest.mark.parametrize("pattern", TRAVERSALS)
def test_path_traversal_in_keys_never_escapes_the_data_dir(gateway: Any, s3: Any, bucket: str,
                                                           pattern: str) -> None:
    marker = f"escape-{uuid.uuid4().hex}"
    raw_key = pattern.format(marker=marker)
    plaintext = f"TRAVERSAL-{marker}-".encode() + random_bytes(4096, seed=54)
    started = time.time() - 1

    request = sign(gateway, "PUT", f"/{bucket}/{raw_key}", body=plaintext)
    response = send_signed(gateway, request)
    if response.status == 200:
        # Accepted: then it is an ordinary object whose key is the literal text.
        literal = unquote(raw_key)
        assert keys_in(s3, bucket) == [literal]
        assert s3.get_object(Bucket=bucket, Key=literal)["Body"].read() == plaintext
    else:
        assert (response.status, response.code) in {(400, "InvalidArgument"), (400, "InvalidURI")}, response.body
        assert keys_in(s3, bucket) == []

    # No file anywhere near the warehouse (or at the absolute targets) is named after the key...
    data_dir = Path(gateway.data_dir).resolve()
    for root in (data_dir.parent.parent, Path("/tmp"), Path("/etc")):
        candidates = root.rglob(f"*{marker}*") if root == data_dir.parent.parent else root.glob(f"*{marker}*")
        assert list(candidates) == [], f"a file named after the key appeared under {root}"
    # ...and no file the request wrote holds the body in the clear.
    needle = f"TRAVERSAL-{marker}".encode()
    for path in _written_since(data_dir, started):
        assert needle not in path.read_bytes(), f"{path} holds the object's plaintext"
    assert_serves(s3, bucket)


def test_traversal_get_reads_nothing_outside(gateway: Any, s3: Any, bucket: str) -> None:
    for raw_key in ("../../../../../../../../etc/passwd", "%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd"):
        request = sign(gateway, "GET", f"/{bucket}/{raw_key}")
        response = send_signed(gateway, request)
        assert response.status in (400, 404), response.status
        assert response.code in ("InvalidArgument", "InvalidURI", "NoSuchKey")
        assert b"root:" not in response.body
    assert_serves(s3, bucket)


def test_key_over_1024_bytes_is_key_too_long(s3: Any, bucket: str) -> None:
    assert _client_error(s3.put_object, Bucket=bucket, Key="k" * 1025, Body=b"x") == ("KeyTooLongError", 400)
    # The limit is in UTF-8 bytes, not characters: 513 two-byte characters are 1026 bytes.
    assert _client_error(s3.put_object, Bucket=bucket, Key="é" * 513, Body=b"x") == ("KeyTooLongError", 400)
    assert _client_error(s3.create_multipart_upload, Bucket=bucket, Key="m" * 1025) == ("KeyTooLongError", 400)
    assert keys_in(s3, bucket) == []
    assert_serves(s3, bucket)


# --- XML -------------------------------------------------------------------------------------

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
"""

DELETE_BODIES = {
    "truncated": b"<Delete><Object><Key>keep</Key></Object",
    "not-xml": b"this is not xml at all",
    "wrong-root": b"<Remove><Object><Key>keep</Key></Object></Remove>",
    "billion-laughs": BILLION_LAUGHS_DTD + b"<Delete><Object><Key>&lol9;</Key></Object></Delete>",
    "external-entity": EXTERNAL_ENTITY + b"<Delete><Object><Key>&xxe;</Key></Object></Delete>",
    "external-dtd": b'<?xml version="1.0"?><!DOCTYPE Delete SYSTEM "http://127.0.0.1:9/evil.dtd">'
                    b"<Delete><Object><Key>keep</Key></Object></Delete>",
}


@pytest.mark.parametrize("name", list(DELETE_BODIES))
def test_bad_xml_to_delete_objects_is_malformed_xml(gateway: Any, s3: Any, bucket: str, name: str) -> None:
    s3.put_object(Bucket=bucket, Key="keep", Body=b"still here")
    body = DELETE_BODIES[name]
    # A correct Content-MD5, as S3 requires for DeleteObjects, so that only the XML is wrong.
    request = sign(gateway, "POST", f"/{bucket}?delete", headers={"Content-MD5": md5_b64(body)}, body=body)
    # The send's timeout bounds the wait: an expanding entity would not answer in it.
    response = send_signed(gateway, request, timeout=30)
    assert (response.status, response.code) == (400, "MalformedXML")
    assert b"root:" not in response.body
    assert keys_in(s3, bucket) == ["keep"]
    assert_serves(s3, bucket)


COMPLETE_BODIES = {
    "truncated": b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>",
    "not-xml": b"{\"parts\": [1]}",
    "billion-laughs": BILLION_LAUGHS_DTD + b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
                                       b"<ETag>&lol9;</ETag></Part></CompleteMultipartUpload>",
    "external-entity": EXTERNAL_ENTITY + b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>"
                                         b"<ETag>&xxe;</ETag></Part></CompleteMultipartUpload>",
}


@pytest.mark.parametrize("name", list(COMPLETE_BODIES))
def test_bad_xml_to_complete_multipart_is_malformed_xml(gateway: Any, s3: Any, bucket: str, name: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="mp", UploadId=upload, PartNumber=1, Body=b"only part")["ETag"]
    body = COMPLETE_BODIES[name]
    request = sign(gateway, "POST", f"/{bucket}/mp?uploadId={quote(upload, safe='')}", body=body)
    # The send's timeout bounds the wait: an expanding entity would not answer in it.
    response = send_signed(gateway, request, timeout=30)
    assert (response.status, response.code) == (400, "MalformedXML")
    assert b"root:" not in response.body
    assert keys_in(s3, bucket) == []

    # The upload survives the bad request and completes normally.
    s3.complete_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    assert s3.get_object(Bucket=bucket, Key="mp")["Body"].read() == b"only part"
    assert_serves(s3, bucket)


# --- sizes -----------------------------------------------------------------------------------

def test_oversized_headers_are_refused(gateway: Any, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="target", Body=b"target bytes")
    request = sign(gateway, "GET", f"/{bucket}/target")
    headers = {**request.headers, "X-Filler": "a" * (64 * 1024)}
    try:
        response = send(gateway, "GET", request.target, headers, timeout=30)
    except ConnectionError:
        pytest.fail("the gateway dropped the connection instead of answering 4xx")
    assert 400 <= response.status < 500
    assert b"target bytes" not in response.body
    assert_serves(s3, bucket)


def test_content_length_over_the_limit_is_refused_before_the_body(gateway: Any, s3: Any, bucket: str) -> None:
    size = MAX_OBJECT_SIZE + 1
    request = sign(gateway, "PUT", f"/{bucket}/huge", headers={"Content-Length": str(size)},
                   payload_hash=UNSIGNED_PAYLOAD)
    # No body is sent: the gateway must answer from the headers alone (a gateway
    # waiting for the body would hit the send's timeout instead).
    response = send(gateway, "PUT", request.target, request.headers, timeout=30)
    assert (response.status, response.code) == (400, "EntityTooLarge")
    assert keys_in(s3, bucket) == []
    assert_serves(s3, bucket)


def test_part_over_the_limit_is_refused(gateway: Any, s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    request = sign(gateway, "PUT", f"/{bucket}/mp?partNumber=1&uploadId={quote(upload, safe='')}",
                   headers={"Content-Length": str(MAX_OBJECT_SIZE + 1)}, payload_hash=UNSIGNED_PAYLOAD)
    response = send(gateway, "PUT", request.target, request.headers, timeout=30)
    assert (response.status, response.code) == (400, "EntityTooLarge")
    assert "Parts" not in s3.list_parts(Bucket=bucket, Key="mp", UploadId=upload)
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=upload)
    assert_serves(s3, bucket)
