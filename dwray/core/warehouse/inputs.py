"""What a caller may store with an object besides its bytes: user metadata and system headers."""
from __future__ import annotations

from collections.abc import Mapping

from dwray.errors import InvalidArgument

__all__ = ["DEFAULT_CONTENT_TYPE", "STORED_HEADERS", "check_headers", "clean_metadata"]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: system headers stored with an object and returned on read, as S3 does
STORED_HEADERS = frozenset({"content-encoding", "content-disposition", "content-language",
                            "cache-control", "expires",
                            # flexible checksums, stored as sent and returned with the object
                            "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
                            "x-amz-checksum-sha1", "x-amz-checksum-sha256"})


def clean_metadata(metadata: Mapping[str, str] | None, limit: int) -> dict[str, str]:
    """User metadata with lowercase names, checked; ``limit`` bounds its size in bytes."""
    if metadata is None:
        return {}
    clean: dict[str, str] = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgument("user metadata names and values must be strings")
        if not name or not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"user metadata name {name!r} must be ASCII letters, digits, '-' or '_'")
        clean[name.lower()] = value
    size = sum(len(k.encode()) + len(v.encode()) for k, v in clean.items())
    if size > limit:
        raise InvalidArgument(f"user metadata is {size} bytes; the limit is {limit}")
    return clean


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """System headers with lowercase names; only ``STORED_HEADERS`` are accepted."""
    clean: dict[str, str] = {}
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if lowered not in STORED_HEADERS:
            raise InvalidArgument(f"header {name!r} is not stored with objects; allowed: {sorted(STORED_HEADERS)}")
        if not isinstance(value, str):
            raise InvalidArgument(f"header {name!r} must be a string")
        clean[lowered] = value
    return clean
