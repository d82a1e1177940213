"""S3 body integrity checks: x-amz-content-sha256, Content-MD5 and flexible checksums.

:class:`BodyVerifier` is built from a request's headers before the body is
read, fed every payload piece, and asked to :meth:`~BodyVerifier.verify` at
the end (with the aws-chunked trailers, if any). It computes only what the
request asked for, plus MD5 for the ETag, and raises S3's own error codes:
``XAmzContentSHA256Mismatch``, ``BadDigest`` (a Content-MD5 or checksum that
does not match), ``InvalidDigest`` (an unreadable Content-MD5) and
``InvalidRequest`` (an unreadable or contradictory checksum declaration).

CRCs come from awscrt (the same code the AWS SDKs use), the SHA family from
hashlib.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence

from awscrt import checksums as crt

from dwray.s3.errors import S3Error

__all__ = ["ALGORITHMS", "BodyVerifier", "Checksum"]

# Algorithm name -> digest length in bytes.
ALGORITHMS: dict[str, int] = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
_CHECKSUM_PREFIX = "x-amz-checksum-"
# Headers that start like a checksum but are not one (CreateMultipartUpload's settings).
_NOT_CHECKSUMS = frozenset({"x-amz-checksum-algorithm", "x-amz-checksum-type", "x-amz-checksum-mode"})
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}\Z")


class Checksum:
    """A running checksum of one of S3's flexible-checksum algorithms."""

    def __init__(self, algorithm: str) -> None:
        algorithm = algorithm.lower()
        if algorithm not in ALGORITHMS:
            raise S3Error("InvalidRequest", f"Checksum algorithm {algorithm!r} is not supported; use one of "
                          f"{', '.join(a.upper() for a in ALGORITHMS)}")
        self.algorithm = algorithm
        self._crc = 0
        self._hash = hashlib.new(algorithm) if algorithm.startswith("sha") else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next bytes."""
        if self._hash is not None:
            self._hash.update(data)
        elif self.algorithm == "crc32":
            self._crc = crt.crc32(data, self._crc)
        elif self.algorithm == "crc32c":
            self._crc = crt.crc32c(data, self._crc)
        else:
            self._crc = crt.crc64nvme(data, self._crc)

    def digest(self) -> bytes:
        """The raw digest (big-endian for the CRCs, as S3 encodes them)."""
        if self._hash is not None:
            return self._hash.digest()
        return self._crc.to_bytes(ALGORITHMS[self.algorithm], "big")

    def b64digest(self) -> str:
        """The digest as S3 sends it in x-amz-checksum-* headers."""
        return base64.b64encode(self.digest()).decode("ascii")


class BodyVerifier:
    """Checks a request body against every digest its headers (and trailers) declare.

    ``headers`` maps lowercase names to values. ``content_sha256`` is the
    verified x-amz-content-sha256 (from :class:`dwray.s3.auth.AuthResult`); a hex
    value is checked against the body. ``trailer_names`` are the names
    ``x-amz-trailer`` announced; only ``x-amz-checksum-*`` names are allowed.
    """

    def __init__(self, headers: Mapping[str, str], *, content_sha256: str | None,
                 trailer_names: Sequence[str] = ()) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._sha256_expected = content_sha256.lower() if content_sha256 and _HEX_SHA256.match(
            content_sha256.lower()) else None
        self._sha256 = hashlib.sha256() if self._sha256_expected else None
        self._content_md5 = _content_md5(headers.get("content-md5"))
        self._expected: bytes | None = None  # the declared checksum, when it came as a header
        self._trailer: str | None = None  # the trailer name carrying the checksum, when trailed
        self.algorithm = self._declared_algorithm(headers, trailer_names)
        self._checksum = Checksum(self.algorithm) if self.algorithm else None

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add the next payload bytes."""
        self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        if self._checksum is not None:
            self._checksum.update(data)

    def md5_hex(self) -> str:
        """The body's MD5 as lowercase hex: the ETag of a single-part object."""
        return self._md5.hexdigest()

    def verify(self, trailers: Mapping[str, str] | None = None) -> dict[str, str]:
        """Check the whole body; return the checksum headers to store and echo back."""
        if self._sha256 is not None and self._sha256.hexdigest() != self._sha256_expected:
            raise S3Error("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does "
                          "not match what was computed.")
        if self._content_md5 is not None and self._md5.digest() != self._content_md5:
            raise S3Error("BadDigest", "The Content-MD5 you specified did not match what we received.")
        if self._checksum is None:
            return {}
        algorithm = self._checksum.algorithm
        expected = self._expected
        if self._trailer is not None:
            value = (trailers or {}).get(self._trailer)
            if value is None:
                raise S3Error("InvalidRequest", f"The trailing header {self._trailer} was announced but "
                              "not sent")
            expected = _decode_checksum(algorithm, value, "trailing header")
        if expected != self._checksum.digest():
            raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not match the "
                          "calculated checksum.")
        return {_CHECKSUM_PREFIX + algorithm: self._checksum.b64digest()}

    def _declared_algorithm(self, headers: Mapping[str, str], trailer_names: Sequence[str]) -> str | None:
        header_names = [n for n in headers if n.startswith(_CHECKSUM_PREFIX) and n not in _NOT_CHECKSUMS]
        trailed = [n.lower() for n in trailer_names]
        for name in trailed:
            if not name.startswith(_CHECKSUM_PREFIX) or name in _NOT_CHECKSUMS:
                raise S3Error("InvalidRequest", f"x-amz-trailer may only announce x-amz-checksum-* headers, "
                              f"not {name}")
        declared = header_names + trailed
        if len(declared) > 1:
            raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- header. Multiple checksum "
                          "Types are not allowed.")
        sdk = headers.get("x-amz-sdk-checksum-algorithm")
        if not declared:
            if sdk:
                raise S3Error("InvalidRequest", "x-amz-sdk-checksum-algorithm specified, but no "
                              "corresponding x-amz-checksum-* or x-amz-trailer headers were found.")
            return None
        algorithm = declared[0].removeprefix(_CHECKSUM_PREFIX)
        if algorithm not in ALGORITHMS:
            raise S3Error("InvalidRequest", f"Checksum algorithm {algorithm!r} is not supported; use one of "
                          f"{', '.join(a.upper() for a in ALGORITHMS)}")
        if sdk and sdk.lower() != algorithm:
            raise S3Error("InvalidRequest", "Value for x-amz-sdk-checksum-algorithm header is invalid: "
                          f"it names {sdk!r} but the checksum sent is {algorithm.upper()}")
        if header_names:
            self._expected = _decode_checksum(algorithm, headers[header_names[0]], "header")
        else:
            self._trailer = trailed[0]
        return algorithm


def _decode_checksum(algorithm: str, value: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != ALGORITHMS[algorithm]:
        raise S3Error("InvalidRequest", f"Value for x-amz-checksum-{algorithm} {where} is invalid.")
    return raw


def _content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 16:
        raise S3Error("InvalidDigest", "The Content-MD5 you specified was invalid.")
    return raw
