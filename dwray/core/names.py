"""Validation of bucket names, object keys and tenant names, as S3 does it.

Bucket names follow S3's general-purpose bucket rules. Object keys are any
UTF-8 of 1 to 1024 bytes, as in S3, control characters (tab, newline, U+0001
...) included: S3 accepts them, and listings carry them percent-encoded
(``encoding-type=url``, see :mod:`dwray.s3.xml`). Refused: NUL, which C strings
take for their end (SQLite leaves its text functions undefined on it; C
clients and every file system cut the name there), so a key holding one would
reach some tool as another key; and ``.`` or ``..`` path segments, which tools
that mirror keys onto a file system would resolve.
"""
from __future__ import annotations

import ipaddress
import re

from dwray.errors import (
    InvalidArgument,
    InvalidBucketName,
    InvalidObjectKey,
    KeyTooLong,
)

__all__ = ["MAX_KEY_BYTES", "validate_bucket_name", "validate_key", "validate_tenant_name"]

MAX_KEY_BYTES = 1024

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def validate_bucket_name(name: object) -> str:
    """Return ``name`` if S3 would accept it as a bucket name, else raise ``InvalidBucketName``."""
    if not isinstance(name, str):
        raise InvalidBucketName(repr(name), f"must be a str, not {type(name).__name__}")
    if not 3 <= len(name) <= 63:
        raise InvalidBucketName(name, "must be 3 to 63 characters long")
    if not _BUCKET.match(name):
        raise InvalidBucketName(
            name,
            "may hold only lowercase letters, digits, '.' and '-', "
            "and must begin and end with a letter or digit",
        )
    if ".." in name:
        raise InvalidBucketName(name, "must not contain two adjacent periods")
    if name.startswith(_BUCKET_PREFIXES):
        raise InvalidBucketName(name, f"must not begin with any of {', '.join(_BUCKET_PREFIXES)}")
    if name.endswith(_BUCKET_SUFFIXES):
        raise InvalidBucketName(name, f"must not end with any of {', '.join(_BUCKET_SUFFIXES)}")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidBucketName(name, "must not be formatted as an IP address")


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid object key, else raise ``InvalidObjectKey``/``KeyTooLong``."""
    if not isinstance(key, str):
        raise InvalidObjectKey(repr(key), f"must be a str, not {type(key).__name__}")
    if not key:
        raise InvalidObjectKey(key, "must not be empty")
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidObjectKey(key, "is not valid UTF-8 (lone surrogate)") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise KeyTooLong(key[:64] + "...", f"{len(encoded)} bytes of UTF-8, limit {MAX_KEY_BYTES}")
    if "\x00" in key:
        raise InvalidObjectKey(key, "must not contain NUL (U+0000)")
    if any(part in (".", "..") for part in key.split("/")):
        raise InvalidObjectKey(key, "must not contain '.' or '..' path segments")
    return key


def validate_tenant_name(name: object) -> str:
    """Return ``name`` if it is a valid tenant name (lowercase, digits, '_' and '-')."""
    if not isinstance(name, str) or not _TENANT.match(name):
        raise InvalidArgument(
            f"invalid tenant name {name!r}: use 1 to 63 lowercase letters, digits, '_' or '-', "
            "starting with a letter or digit"
        )
    return name
