"""The signature of a dwray gRPC call: its canonical form, and the metadata a client sends.

The scheme is written down in ``dwray.proto``'s comments (AUTHENTICATION);
this module is its one implementation, shared by Python clients
(:func:`signed_metadata`) and the gateway's check
(:mod:`serve_apps.grpc_auth`), so the two cannot drift apart. It is
SigV4's idea reduced to what a gRPC call has: an HMAC-SHA256, keyed with the S3
secret access key, over the method, the request time, a nonce, the bucket and
key, every other field the request sets, and the payload's SHA-256 (or
``UNSIGNED-PAYLOAD`` for a stream whose hash the client does not know up front).

Only the standard library and protobuf's message API are used (this package is
the bottom layer).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

__all__ = ["ACCESS_KEY_ID", "ALGORITHM", "CONTENT_SHA256", "DATE", "NONCE", "SIGNATURE", "UNSIGNED_PAYLOAD",
           "canonical_params", "format_date", "parse_date", "sign", "signed_metadata", "string_to_sign"]

ALGORITHM = "DWRAY1-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
# The metadata keys (gRPC metadata keys are lowercase).
ACCESS_KEY_ID = "x-dwray-access-key-id"
DATE = "x-dwray-date"
NONCE = "x-dwray-nonce"
CONTENT_SHA256 = "x-dwray-content-sha256"
SIGNATURE = "x-dwray-signature"
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_UNSIGNED_FIELDS = frozenset({"bucket", "key"})  # signed on lines of their own


def uri_encode(value: str) -> str:
    """UTF-8, then every byte but ``A-Z a-z 0-9 - _ . ~`` as ``%XX`` (``/`` included)."""
    return quote(value, safe="-_.~")


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, bytes):
        return value.hex()
    return uri_encode(str(value))


def _entries(message: Any) -> Iterator[tuple[str, str]]:
    for field, value in message.ListFields():
        name = field.name
        if name in _UNSIGNED_FIELDS:
            continue
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            for map_key, map_value in value.items():
                yield f"{name}.{uri_encode(str(map_key))}", _scalar(map_value)
        elif entry is not None:
            raise TypeError(f"the field {name!r} is a message: the signature covers scalars and maps only")
        elif hasattr(value, "__iter__") and not isinstance(value, (str, bytes)):
            for item in value:
                yield name, _scalar(item)
        else:
            yield name, _scalar(value)


def canonical_params(message: Any) -> str:
    """The request's fields other than bucket and key, as ``name=value`` sorted and joined by ``&``.

    Set fields only (proto3: non-default; ``optional``: present); a map gives
    ``name.<key>=value`` per entry. For a Put, ``message`` is its ``PutHeader``.
    """
    return "&".join(f"{name}={value}" for name, value in sorted(_entries(message)))


def string_to_sign(method: str, date: str, nonce: str, bucket: str, key: str, params: str,
                   content_sha256: str) -> str:
    """The eight lines the signature covers, joined by newlines (see ``dwray.proto``)."""
    return "\n".join([ALGORITHM, method, date, nonce, uri_encode(bucket), uri_encode(key), params, content_sha256])


def sign(secret_access_key: str, text: str) -> str:
    """Lowercase hex HMAC-SHA256 of ``text`` keyed with the secret access key."""
    return hmac.new(secret_access_key.encode(), text.encode(), hashlib.sha256).hexdigest()


def format_date(seconds: float) -> str:
    """``YYYYMMDDTHHMMSSZ`` in UTC."""
    return time.strftime(_DATE_FORMAT, time.gmtime(seconds))


def parse_date(value: str) -> float:
    """Seconds since the epoch of a ``YYYYMMDDTHHMMSSZ`` date; ``ValueError`` if it is not one."""
    import calendar

    if len(value) != 16:
        raise ValueError(f"not a YYYYMMDDTHHMMSSZ date: {value[:40]!r}")
    return float(calendar.timegm(time.strptime(value, _DATE_FORMAT)))


def signed_metadata(method: str, message: Any, access_key_id: str, secret_access_key: str, *,
                    content_sha256: str = UNSIGNED_PAYLOAD, now: float | None = None,
                    nonce: str | None = None) -> list[tuple[str, str]]:
    """The metadata that authenticates one call of ``method`` (``/dwray.v1.Warehouse/Get``) with ``message``.

    ``message`` is the request (for Put: its ``PutHeader``); ``content_sha256``
    the hex SHA-256 of a Put's whole object when known (the gateway then checks
    the bytes against it before the commit). Pass the result as ``metadata=``.
    """
    date = format_date(time.time() if now is None else now)
    nonce = nonce or secrets.token_hex(16)
    text = string_to_sign(method, date, nonce, getattr(message, "bucket", ""), getattr(message, "key", ""),
                          canonical_params(message), content_sha256)
    return [(ACCESS_KEY_ID, access_key_id), (DATE, date), (NONCE, nonce), (CONTENT_SHA256, content_sha256),
            (SIGNATURE, sign(secret_access_key, text))]
