"""The warehouse's models rebuilt from S3 answers: ``ObjectInfo`` from an object's headers or a
listing entry, and the document order of a version listing (which botocore splits in two lists).

A HEAD or GET carries everything ``ObjectInfo`` holds but the tags (S3 keeps
them out of the headers: ``get_tags``). A listing entry carries what S3's
listings carry: key, size, ETag, time, and for version listings the version,
whether it is the latest and whether it is a delete marker; content type,
metadata and headers are left at their defaults there.
"""
from __future__ import annotations

import datetime
import email.utils
import re
from collections.abc import Mapping
from typing import Any

from dwray.core.models import ObjectInfo
from dwray.core.warehouse.inputs import DEFAULT_CONTENT_TYPE, STORED_HEADERS

__all__ = ["NULL_VERSION", "VersionOrder", "entry_info", "header_info", "http_headers", "parts_of", "timestamp"]

NULL_VERSION = "null"
META_PREFIX = "x-amz-meta-"
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")


def http_headers(response: Mapping[str, Any]) -> dict[str, str]:
    """The raw response headers of a botocore answer, names lowercased."""
    headers = response.get("ResponseMetadata", {}).get("HTTPHeaders") or {}
    return {name.lower(): value for name, value in headers.items()}


def timestamp(value: Any) -> float:
    """Seconds since the epoch from a botocore datetime or an HTTP date."""
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, str) and value:
        try:
            return email.utils.parsedate_to_datetime(value).timestamp()
        except (TypeError, ValueError):
            return 0.0
    return 0.0


def parts_of(etag: str) -> int:
    """How many parts a multipart object has, read from its ETag (``md5-N``); 0 for one piece."""
    found = _MULTIPART_ETAG.match(etag)
    return int(found[1]) if found else 0


def header_info(bucket: str, key: str, headers: Mapping[str, str], *, size: int | None = None) -> ObjectInfo:
    """An object version as its HEAD/GET headers describe it (``size`` when a range hides the total)."""
    etag = headers.get("etag", "").strip('"')
    stored = {name: value for name, value in headers.items() if name in STORED_HEADERS}
    metadata = {name[len(META_PREFIX):]: value for name, value in headers.items() if name.startswith(META_PREFIX)}
    if size is None:
        size = int(headers.get("content-length", "0") or 0)
    return ObjectInfo(bucket, key, headers.get("x-amz-version-id", NULL_VERSION), size, etag,
                      timestamp(headers.get("last-modified")), headers.get("content-type", DEFAULT_CONTENT_TYPE),
                      metadata, stored, headers.get("x-amz-delete-marker") == "true", True, {}, parts_of(etag))


def entry_info(bucket: str, entry: Mapping[str, Any], *, delete_marker: bool = False,
               version_id: str = "") -> ObjectInfo:
    """A listing entry (ListObjectsV2 ``Contents``, ListObjectVersions ``Version``/``DeleteMarker``).

    ListObjectsV2 names no version: ``version_id`` is then ``""`` (unknown).
    """
    etag = str(entry.get("ETag", "")).strip('"')
    return ObjectInfo(bucket, entry["Key"], str(entry.get("VersionId", version_id) or version_id),
                      int(entry.get("Size", 0)), etag, timestamp(entry.get("LastModified")),
                      DEFAULT_CONTENT_TYPE, {}, {}, delete_marker, bool(entry.get("IsLatest", True)), {},
                      parts_of(etag))


class VersionOrder:
    """Records the document order of ListObjectVersions answers (a botocore ``after-call`` hook).

    S3 interleaves versions and delete markers newest first within a key;
    botocore parses them into two separate lists. The hook adds the order it
    read from the XML under ``"DwrayOrder"``: a list of ``(is_marker, key, version id)``.
    """

    def __call__(self, http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        import defusedxml.ElementTree as SafeET

        if not isinstance(parsed, dict) or "Error" in parsed:
            return
        root = SafeET.fromstring(http_response.content)
        namespace = root.tag.partition("}")[0] + "}" if root.tag.startswith("{") else ""
        url_encoded = (root.findtext(f"{namespace}EncodingType") or "") == "url"
        order: list[tuple[bool, str, str]] = []
        for element in root:
            tag = element.tag[len(namespace):]
            if tag in ("Version", "DeleteMarker"):
                key = element.findtext(f"{namespace}Key") or ""
                if url_encoded:
                    from urllib.parse import unquote_plus

                    key = unquote_plus(key)
                order.append((tag == "DeleteMarker", key, element.findtext(f"{namespace}VersionId") or ""))
        parsed["DwrayOrder"] = order
