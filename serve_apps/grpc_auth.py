"""The gateway's check of a gRPC call's signature (the scheme: ``dwray/proto/dwray.proto``).

:class:`GrpcSignatureVerifier` takes the call's metadata and request fields and
returns the caller's :class:`~dwray.s3.auth.SigningIdentity` (the same access
keys, looked up through the replica's cache, as S3's SigV4), or raises
:class:`GrpcRefusal` with the gRPC status to answer. The string to sign is
built by :mod:`dwray.proto.signing`, the clients' own code.

Replays: a signature is valid for ``max_skew`` seconds either side of its date,
as SigV4's. Within that window each replica also remembers the
``(access key id, nonce)`` pairs it accepted and refuses a second use. The
memory is bounded (``MAX_NONCES`` per replica, the oldest forgotten first), and
each replica keeps its own: what bounds a replay across replicas, or under a
flood of calls, is the skew window, as for S3.
"""
from __future__ import annotations

import hmac
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import grpc

from dwray.proto import signing
from dwray.s3.auth import SigningIdentity

__all__ = ["MAX_NONCES", "GrpcRefusal", "GrpcSignatureVerifier"]

MAX_NONCES = 100_000
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}\Z")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")
_ACCESS_KEY = re.compile(r"[A-Za-z0-9]{1,128}\Z")


class GrpcRefusal(Exception):
    """A call refused with a gRPC status; ``details`` are for the client (no secret ever)."""

    def __init__(self, code: grpc.StatusCode, details: str, *, claimed_key: str | None = None) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.claimed_key = claimed_key  # the access key id the call named (for the audit record)


def _unauthenticated(details: str, claimed_key: str | None = None) -> GrpcRefusal:
    return GrpcRefusal(grpc.StatusCode.UNAUTHENTICATED, details, claimed_key=claimed_key)


class GrpcSignatureVerifier:
    """Checks the signature metadata of gRPC calls against the gateway's access keys."""

    def __init__(self, lookup: Callable[[str], SigningIdentity | None], *, max_skew: float = 900.0,
                 clock: Callable[[], float] = time.time, max_nonces: int = MAX_NONCES) -> None:
        self._lookup = lookup
        self._max_skew = max_skew
        self._clock = clock
        self._max_nonces = max_nonces
        self._nonces: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> when it may be forgotten
        self._lock = threading.Lock()

    def verify(self, method: str, metadata: Mapping[str, str], message: Any, *,
               allow_payload_hash: bool = False) -> tuple[SigningIdentity, str]:
        """The caller's identity and the declared ``x-dwray-content-sha256``, or :class:`GrpcRefusal`.

        ``message`` is the request (a Put's ``PutHeader``); only a Put may declare
        a payload hash (``allow_payload_hash``), every other call signs
        ``UNSIGNED-PAYLOAD``. Blocking: the key lookup may ask the identity service.
        """
        missing = [name for name in (signing.ACCESS_KEY_ID, signing.DATE, signing.NONCE, signing.CONTENT_SHA256,
                                     signing.SIGNATURE) if not metadata.get(name)]
        if missing:
            raise _unauthenticated(f"the call carries no {', '.join(missing)} metadata (see dwray.proto: "
                                   "AUTHENTICATION)")
        key_id = metadata[signing.ACCESS_KEY_ID]
        if not _ACCESS_KEY.match(key_id):
            raise _unauthenticated(f"{signing.ACCESS_KEY_ID} is not an access key id")
        date, nonce = metadata[signing.DATE], metadata[signing.NONCE]
        payload, signature = metadata[signing.CONTENT_SHA256], metadata[signing.SIGNATURE]
        try:
            signed_at = signing.parse_date(date)
        except ValueError:
            raise _unauthenticated(f"{signing.DATE} must be YYYYMMDDTHHMMSSZ (UTC)", key_id) from None
        now = self._clock()
        if abs(now - signed_at) > self._max_skew:
            raise _unauthenticated(f"the request time {date} is more than {self._max_skew:.0f} s from the "
                                   f"gateway's clock ({signing.format_date(now)})", key_id)
        if not _NONCE.match(nonce):
            raise _unauthenticated(f"{signing.NONCE} must be 16 to 64 characters from [A-Za-z0-9_-]", key_id)
        if payload != signing.UNSIGNED_PAYLOAD and not (allow_payload_hash and _HEX64.match(payload)):
            allowed = "a lowercase hex SHA-256 or " if allow_payload_hash else ""
            raise GrpcRefusal(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{signing.CONTENT_SHA256} must be {allowed}{signing.UNSIGNED_PAYLOAD}",
                              claimed_key=key_id)
        identity = self._lookup(key_id)
        if identity is None:
            raise _unauthenticated(f"the access key id {key_id} does not exist (or was revoked)", key_id)
        text = signing.string_to_sign(method, date, nonce, getattr(message, "bucket", ""),
                                      getattr(message, "key", ""), signing.canonical_params(message), payload)
        expected = signing.sign(identity.secret_access_key, text)
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise _unauthenticated("the signature does not match: check the secret access key and the string "
                                   "to sign (see dwray.proto: AUTHENTICATION)", key_id)
        self._remember(key_id, nonce, signed_at + self._max_skew, now)
        return identity, payload

    def _remember(self, key_id: str, nonce: str, forget_at: float, now: float) -> None:
        """Refuse a nonce this replica accepted before for the same key; remember this one."""
        with self._lock:
            while self._nonces:
                oldest, until = next(iter(self._nonces.items()))
                if until > now and len(self._nonces) < self._max_nonces:
                    break
                del self._nonces[oldest]
            if (key_id, nonce) in self._nonces:
                raise _unauthenticated(f"replayed call: {signing.NONCE} was already used with this access key "
                                       "(sign every call with a new nonce)", key_id)
            self._nonces[(key_id, nonce)] = forget_at
