"""Flexible checksums and body verification, checked against botocore's own checksum code."""
from __future__ import annotations

import base64
import hashlib

import pytest
from botocore.httpchecksum import (
    CrtCrc32cChecksum,
    CrtCrc32Checksum,
    CrtCrc64NvmeChecksum,
    Sha1Checksum,
    Sha256Checksum,
)

from dwray.s3.checksums import ALGORITHMS, BodyVerifier, Checksum
from tests.unit.test_s3_auth import raises

BOTOCORE = {"crc32": CrtCrc32Checksum, "crc32c": CrtCrc32cChecksum, "crc64nvme": CrtCrc64NvmeChecksum,
            "sha1": Sha1Checksum, "sha256": Sha256Checksum}
DATA = [b"", b"hello world", bytes(range(256)) * 1000]
BODY = b"the quick brown fox jumps over the lazy dog"


def b64(algorithm: str, data: bytes) -> str:
    checksum = BOTOCORE[algorithm]()
    checksum.update(data)
    return checksum.b64digest()


def feed(verifier: BodyVerifier, data: bytes = BODY) -> BodyVerifier:
    for i in range(0, len(data), 7):
        verifier.update(memoryview(data)[i:i + 7])
    return verifier


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
@pytest.mark.parametrize("data", DATA, ids=["empty", "hello", "256k"])
def test_checksum_matches_botocore(algorithm: str, data: bytes) -> None:
    whole, pieces = Checksum(algorithm.upper()), Checksum(algorithm)
    whole.update(data)
    for i in range(0, len(data), 1000):
        pieces.update(data[i:i + 1000])
    assert whole.b64digest() == pieces.b64digest() == b64(algorithm, data)
    assert len(whole.digest()) == ALGORITHMS[algorithm]


def test_known_value_from_boto3() -> None:
    crc = Checksum("crc32")
    crc.update(b"hello world")
    assert crc.b64digest() == "DUoRhQ=="  # what boto3 1.43 sent for this body


def test_unknown_algorithm() -> None:
    raises("InvalidRequest", lambda: Checksum("md5"))


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_header_checksum_right_and_wrong(algorithm: str) -> None:
    name = f"x-amz-checksum-{algorithm}"
    headers = {name: b64(algorithm, BODY), "x-amz-sdk-checksum-algorithm": algorithm.upper()}
    verifier = feed(BodyVerifier(headers, content_sha256=None))
    assert verifier.algorithm == algorithm
    assert verifier.verify({}) == {name: b64(algorithm, BODY)}
    wrong = feed(BodyVerifier({name: b64(algorithm, b"other")}, content_sha256=None))
    err = raises("BadDigest", lambda: wrong.verify({}))
    assert err.message == f"The {algorithm.upper()} you specified did not match the calculated checksum."


@pytest.mark.parametrize("value", ["not base64!", "AAAA", "DUoRhQ", b64("sha256", b"x")])
def test_undecodable_header_checksum(value: str) -> None:
    err = raises("InvalidRequest", lambda: BodyVerifier({"x-amz-checksum-crc32": value}, content_sha256=None))
    assert err.message == "Value for x-amz-checksum-crc32 header is invalid."


def test_content_md5() -> None:
    good = base64.b64encode(hashlib.md5(BODY).digest()).decode()
    assert feed(BodyVerifier({"content-md5": good}, content_sha256=None)).verify() == {}
    bad = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    raises("BadDigest", lambda: feed(BodyVerifier({"content-md5": bad}, content_sha256=None)).verify())
    for malformed in ("xyz", hashlib.md5(BODY).hexdigest(), base64.b64encode(b"short").decode()):
        raises("InvalidDigest", lambda m=malformed: BodyVerifier({"content-md5": m}, content_sha256=None))


def test_declared_sha256() -> None:
    right = hashlib.sha256(BODY).hexdigest()
    assert feed(BodyVerifier({}, content_sha256=right)).verify() == {}
    assert feed(BodyVerifier({}, content_sha256=right.upper())).verify() == {}
    wrong = hashlib.sha256(b"other").hexdigest()
    raises("XAmzContentSHA256Mismatch", lambda: feed(BodyVerifier({}, content_sha256=wrong)).verify())


def test_only_what_was_asked_is_computed() -> None:
    for mode in (None, "UNSIGNED-PAYLOAD", "STREAMING-UNSIGNED-PAYLOAD-TRAILER"):
        verifier = feed(BodyVerifier({"content-type": "text/plain", "x-amz-checksum-type": "FULL_OBJECT"},
                                     content_sha256=mode))
        assert verifier.algorithm is None
        assert verifier.verify() == {}
        assert verifier.md5_hex() == hashlib.md5(BODY).hexdigest()


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "sha256"])
def test_trailer_checksums(algorithm: str) -> None:
    name = f"x-amz-checksum-{algorithm}"
    verifier = feed(BodyVerifier({"x-amz-sdk-checksum-algorithm": algorithm.upper()},
                                 content_sha256="STREAMING-UNSIGNED-PAYLOAD-TRAILER", trailer_names=[name]))
    assert verifier.verify({name: b64(algorithm, BODY)}) == {name: b64(algorithm, BODY)}
    raises("BadDigest", lambda: verifier.verify({name: b64(algorithm, b"nope")}))
    err = raises("InvalidRequest", lambda: verifier.verify({name: "%%%"}))
    assert err.message == f"Value for x-amz-checksum-{algorithm} trailing header is invalid."
    raises("InvalidRequest", lambda: verifier.verify({}))


@pytest.mark.parametrize("headers, trailers", [
    ({"x-amz-sdk-checksum-algorithm": "CRC32"}, ()),                                   # algorithm, no value
    ({"x-amz-checksum-crc32": "DUoRhQ==", "x-amz-checksum-sha1": b64("sha1", BODY)}, ()),  # two checksums
    ({"x-amz-checksum-crc32": "DUoRhQ=="}, ("x-amz-checksum-crc32c",)),               # header and trailer
    ({"x-amz-checksum-crc32": "DUoRhQ==", "x-amz-sdk-checksum-algorithm": "SHA256"}, ()),  # disagree
    ({"x-amz-checksum-md5": "DUoRhQ=="}, ()),                                         # unsupported
    ({}, ("x-amz-meta-late",)),                                                       # not a checksum
])
def test_contradictory_declarations(headers: dict[str, str], trailers: tuple[str, ...]) -> None:
    raises("InvalidRequest", lambda: BodyVerifier(headers, content_sha256=None, trailer_names=trailers))


def test_sha256_checked_before_checksums() -> None:
    headers = {"x-amz-checksum-crc32": b64("crc32", b"other")}
    verifier = feed(BodyVerifier(headers, content_sha256=hashlib.sha256(b"other").hexdigest()))
    raises("XAmzContentSHA256Mismatch", lambda: verifier.verify())
