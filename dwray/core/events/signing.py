"""Webhook signatures: HMAC-SHA256 over ``timestamp + "." + body``.

A receiver recomputes the MAC with the webhook's secret, compares it in
constant time, and refuses a timestamp too far from its clock, so a captured
request cannot be replayed later (the timestamp is signed with the body).
"""
from __future__ import annotations

import hashlib
import hmac
import time

from dwray.errors import InvalidArgument

__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "sign", "signed_headers", "verify"]

TIMESTAMP_HEADER = "X-Dwray-Timestamp"
SIGNATURE_HEADER = "X-Dwray-Signature"


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``"sha256=" + hex(HMAC-SHA256(secret, timestamp + "." + body))``."""
    if not secret:
        raise InvalidArgument("a webhook's signing secret must not be empty")
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def signed_headers(secret: bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers of a webhook POST of ``body``."""
    timestamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body)}


def verify(secret: bytes, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """Whether ``signature`` is this body's at this timestamp, and the timestamp within ``tolerance`` s."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except ValueError:
        return False
    return age <= tolerance and hmac.compare_digest(sign(secret, timestamp, body), signature)
