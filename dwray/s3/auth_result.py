"""What authenticating an S3 request yields: who signed it and how its body is protected.

:class:`AuthResult` is what :class:`dwray.s3.auth.SigV4Verifier` returns; the
payload modes are the values of ``x-amz-content-sha256`` it accepts, and
:class:`ChunkSigner` carries what checking an aws-chunked body's signature
chain needs (:mod:`dwray.s3.chunked` uses it). Import these from
:mod:`dwray.s3.auth`, the package's entry point for authentication.
"""
from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from dwray.s3.errors import S3Error

__all__ = [
    "SIGNED_STREAMING",
    "STREAMING_SIGNED",
    "STREAMING_SIGNED_TRAILER",
    "STREAMING_UNSIGNED_TRAILER",
    "UNSIGNED_PAYLOAD",
    "AuthResult",
    "ChunkSigner",
    "SigningIdentity",
    "payload_mode",
]

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
# The modes whose chunks carry signatures chained from the request's.
SIGNED_STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)

_PAYLOAD_MODES = (UNSIGNED_PAYLOAD, STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}\Z")


@dataclass(frozen=True)
class SigningIdentity:
    """An access key and the tenant it belongs to, as the identity service returns it, with the key's
    policy (a ``dwray.core.policy.AccessPolicy``; ``None``: the tenant's full rights)."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    tenant: str
    policy: Any = None


@dataclass(frozen=True)
class ChunkSigner:
    """What verifying an aws-chunked body's chunk and trailer signatures needs.

    botocore signs requests but has no chunk signer, so this HMAC chain is
    written by hand from the S3 "Transferring Payload in Multiple Chunks" and
    "Including Trailing Headers" specifications.
    """

    signing_key: bytes = field(repr=False)
    amz_date: str
    scope: str
    seed_signature: str

    def chunk_signature(self, previous: str, chunk_sha256_hex: str) -> str:
        """The signature of one chunk whose data hashes to ``chunk_sha256_hex``."""
        return self._sign("AWS4-HMAC-SHA256-PAYLOAD", previous, _EMPTY_SHA256, chunk_sha256_hex)

    def trailer_signature(self, previous: str, trailer_bytes: bytes) -> str:
        """The signature of the canonical trailer block (``name:value\\n`` per trailer)."""
        return self._sign("AWS4-HMAC-SHA256-TRAILER", previous, hashlib.sha256(trailer_bytes).hexdigest())

    def _sign(self, kind: str, *lines: str) -> str:
        string_to_sign = "\n".join((kind, self.amz_date, self.scope, *lines))
        return hmac.new(self.signing_key, string_to_sign.encode("ascii"), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuthResult:
    """Who sent a request and how its body is protected.

    ``content_sha256`` is the x-amz-content-sha256 value: a lowercase hex digest
    the body must match, ``UNSIGNED-PAYLOAD`` (always for presigned URLs unless
    they signed that header) or one of the ``STREAMING-*`` aws-chunked modes.
    ``chunk_signer`` is set for the signed streaming modes.
    """

    identity: SigningIdentity
    presigned: bool
    content_sha256: str
    chunk_signer: ChunkSigner | None = None

    @property
    def streaming(self) -> bool:
        """True when the body is aws-chunked and must go through the chunk decoder."""
        return self.content_sha256.startswith("STREAMING-")

    @property
    def payload_sha256(self) -> str | None:
        """The hex digest the body must hash to, when the client declared one."""
        return None if self.content_sha256 in _PAYLOAD_MODES else self.content_sha256


def payload_mode(value: str) -> str:
    """The payload mode an ``x-amz-content-sha256`` value declares (hex digests lowercased)."""
    if value in _PAYLOAD_MODES:
        return value
    if _HEX_SHA256.match(value):
        return value.lower()
    if value.startswith("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"):
        raise S3Error("InvalidRequest", f"x-amz-content-sha256 {value!r} (SigV4a) is not supported")
    raise S3Error("InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                  "STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, "
                  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER or a valid sha256 value.")
