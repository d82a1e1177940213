"""Bucket, key and tenant name validation."""
from __future__ import annotations

import pytest

from dwray.core.names import validate_bucket_name, validate_key, validate_tenant_name
from dwray.errors import (
    InvalidArgument,
    InvalidBucketName,
    InvalidObjectKey,
    KeyTooLong,
)


@pytest.mark.parametrize("name", ["abc", "my-bucket.2026", "a" * 63, "0-9", "logs.example.com"])
def test_valid_bucket_names(name: str) -> None:
    assert validate_bucket_name(name) == name


@pytest.mark.parametrize("name,reason", [
    ("ab", "3 to 63"), ("a" * 64, "3 to 63"), ("Upper", "lowercase"), ("under_score", "lowercase"),
    (".dot", "begin and end"), ("dot.", "begin and end"), ("a..b", "adjacent periods"),
    ("10.0.0.1", "IP address"), ("xn--bucket", "xn--"), ("sthree-x", "sthree-"),
    ("name--ol-s3", "--ol-s3"), ("name.mrap", ".mrap"), (None, "must be a str"),
])
def test_invalid_bucket_names(name: object, reason: str) -> None:
    with pytest.raises(InvalidBucketName, match=reason):
        validate_bucket_name(name)


@pytest.mark.parametrize("key", ["a", "a/b/c", "dir/", "/leading", "sp ace", "ü/😀", "a" * 1024, "..a", "a..",
                                 "a/...", "%2e%2e", "tab\there", "new\nline", "cr\r", "\x01\x1f", "del\x7f"])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


def test_key_length_counts_utf8_bytes() -> None:
    validate_key("😀" * 256)  # 4 bytes each: exactly 1024
    with pytest.raises(KeyTooLong, match="1028 bytes"):
        validate_key("😀" * 257)


@pytest.mark.parametrize("key,reason", [
    ("", "empty"), ("a\x00", "NUL"), ("\x00", "NUL"),
    ("..", "'.' or '..'"), ("a/../b", "'.' or '..'"), ("./a", "'.' or '..'"), ("\udc80", "UTF-8"),
    (b"bytes", "must be a str"),
])
def test_invalid_keys(key: object, reason: str) -> None:
    with pytest.raises(InvalidObjectKey, match=reason):
        validate_key(key)


def test_tenant_names() -> None:
    assert validate_tenant_name("acme_co-1") == "acme_co-1"
    for bad in ["", "Acme", "a/b", "..", "-lead", "x" * 64, None]:
        with pytest.raises(InvalidArgument, match="tenant name"):
            validate_tenant_name(bad)
