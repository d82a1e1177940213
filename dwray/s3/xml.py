"""S3's XML bodies: hardened parsers for what clients send, renderers for what S3 answers.

Parsing goes through defusedxml with DTDs, entity declarations and external
references forbidden, a cap on the body size, and a cap on element depth and
count enforced while parsing (so a deeply nested or flat element flood is
refused before it is built). Any of these, or text that is not XML, is
``MalformedXML``. Namespaces are tolerated: S3 clients send the 2006-03-01
namespace or none.

Renderers build with :mod:`xml.etree.ElementTree`, so text is escaped, and
return UTF-8 bytes with an XML declaration and the S3 namespace on the root
(except ``<Error>``, which S3 sends, and botocore expects, without one).

Keys may hold any character but NUL (as in S3), and XML 1.0 cannot carry most
C0 control characters at all, not even as character references. S3 writes
them anyway (``&#x1;``), which no conforming parser reads; dwray never sends a
malformed document. A listing asked for without ``encoding-type=url`` whose
names hold such a character is refused with ``InvalidArgument`` naming the
name (percent-encoded) and the remedy; with ``encoding-type=url`` every name is
percent-encoded and any key lists. A carriage return is written as ``&#13;``,
which parsers keep (a raw one they would read back as a line feed).
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from urllib.parse import quote

import defusedxml
import defusedxml.ElementTree as DET

from dwray.core.models import (
    BucketInfo,
    ListPage,
    ObjectInfo,
    PartsPage,
    UploadsPage,
    VersionsPage,
)
from dwray.s3.errors import S3Error
from dwray.s3.http import iso8601, quote_etag

__all__ = [
    "MAX_XML_BYTES", "S3_NS", "complete_multipart_xml", "copy_object_xml", "copy_part_xml",
    "delete_result_xml", "error_xml", "initiate_multipart_xml", "list_buckets_xml", "list_objects_v1_xml",
    "list_objects_v2_xml", "list_parts_xml", "list_uploads_xml", "list_versions_xml", "location_xml",
    "parse_complete_multipart", "parse_create_bucket", "parse_delete_objects", "url_encode",
]

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_XML_BYTES = 4 * 1024 * 1024
MAX_DELETE_OBJECTS = 1000
MAX_PART_NUMBER = 10_000
# An integer as XML Schema writes one, in ASCII digits (str.isdigit() is also true for "²", which int() refuses).
_INTEGER = re.compile(r"-?[0-9]+\Z")
# No S3 request body is deeper than four levels; a complete-multipart body of
# 10,000 parts with checksums has under 70,000 elements.
_MAX_DEPTH = 8
_MAX_ELEMENTS = 100_000
_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
# What XML 1.0 cannot carry at all: C0 controls but tab, LF and CR; surrogates; U+FFFE and U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_MALFORMED = "The XML you provided was not well-formed or did not validate against our published schema"


# ---------------------------------------------------------------- parsing

class _Limits(Exception):
    """Raised from inside the parser when the document is too deep or too large."""


class _BoundedBuilder:
    """A TreeBuilder target that refuses a document past the depth or element limits.

    Checking in ``start`` stops a flood while expat reads it, before the tree
    (and its memory) is built; a wrapper because the C TreeBuilder's hooks
    cannot be overridden.
    """

    def __init__(self) -> None:
        self._builder = ET.TreeBuilder()
        self._depth = 0
        self._count = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self._depth += 1
        self._count += 1
        if self._depth > _MAX_DEPTH or self._count > _MAX_ELEMENTS:
            raise _Limits()
        return self._builder.start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, text: str) -> None:
        self._builder.data(text)

    def close(self) -> ET.Element:
        return self._builder.close()


def _parse(body: bytes, root_name: str, max_bytes: int) -> ET.Element:
    """The root element of ``body``, which must be ``root_name`` in any (or no) namespace."""
    if not body or not body.strip():
        raise S3Error("MalformedXML", _MALFORMED + " (the body is empty)")
    if len(body) > max_bytes:
        raise S3Error("MalformedXML", _MALFORMED + f" (the body is larger than {max_bytes} bytes)")
    parser = DET.DefusedXMLParser(target=_BoundedBuilder(), forbid_dtd=True,
                                  forbid_entities=True, forbid_external=True)
    try:
        parser.feed(body)
        root = parser.close()
    except defusedxml.DefusedXmlException:
        raise S3Error("MalformedXML", _MALFORMED + " (DTDs and entities are not allowed)") from None
    except _Limits:
        raise S3Error("MalformedXML", _MALFORMED + " (the document is nested too deeply or too large)") from None
    except (ET.ParseError, ValueError):
        raise S3Error("MalformedXML", _MALFORMED) from None
    if _local(root.tag) != root_name:
        raise S3Error("MalformedXML", _MALFORMED + f" (the root element must be {root_name})")
    return root


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _one(element: ET.Element, name: str, *, required: bool) -> ET.Element | None:
    found = _children(element, name)
    if len(found) > 1 or (required and not found):
        what = "more than one" if found else "no"
        raise S3Error("MalformedXML", _MALFORMED + f" ({what} {name} in {_local(element.tag)})")
    return found[0] if found else None


def _text(element: ET.Element | None) -> str:
    return "" if element is None or element.text is None else element.text


def parse_complete_multipart(body: bytes, *, max_bytes: int = MAX_XML_BYTES) -> list[tuple[int, str]]:
    """The (PartNumber, ETag without quotes) pairs of a CompleteMultipartUpload body, as given.

    Checksum elements a client adds to each Part are ignored; order and
    duplicates are the warehouse's to judge.
    """
    root = _parse(body, "CompleteMultipartUpload", max_bytes)
    parts: list[tuple[int, str]] = []
    for part in _children(root, "Part"):
        number_text = _text(_one(part, "PartNumber", required=True)).strip()
        etag = _text(_one(part, "ETag", required=True)).strip().strip('"')
        if _INTEGER.match(number_text) is None or not etag:
            raise S3Error("MalformedXML", _MALFORMED + " (a Part needs an integer PartNumber and an ETag)")
        # Length first: int() of thousands of digits is slow and then refused by Python.
        number = int(number_text) if len(number_text) <= 12 else MAX_PART_NUMBER + 1
        if not 1 <= number <= MAX_PART_NUMBER:
            raise S3Error("InvalidArgument", f"Part number must be an integer between 1 and {MAX_PART_NUMBER}, "
                          f"inclusive (got {number_text[:20]})")
        parts.append((number, etag))
    if not parts:
        raise S3Error("MalformedXML", _MALFORMED + " (CompleteMultipartUpload lists no Part)")
    return parts


def parse_delete_objects(body: bytes, *, max_bytes: int = MAX_XML_BYTES
                         ) -> tuple[bool, list[tuple[str, str | None]]]:
    """(quiet, [(key, version id or None)]) from a DeleteObjects body: 1 to 1000 objects."""
    root = _parse(body, "Delete", max_bytes)
    quiet_text = _text(_one(root, "Quiet", required=False)).strip().lower()
    if quiet_text not in ("", "true", "false"):
        raise S3Error("MalformedXML", _MALFORMED + " (Quiet must be true or false)")
    objects: list[tuple[str, str | None]] = []
    for entry in _children(root, "Object"):
        key = _text(_one(entry, "Key", required=True))
        version = _text(_one(entry, "VersionId", required=False)).strip()
        objects.append((key, version or None))
    if not objects or len(objects) > MAX_DELETE_OBJECTS:
        raise S3Error("MalformedXML", _MALFORMED + f" (Delete must list 1 to {MAX_DELETE_OBJECTS} Objects, "
                      f"got {len(objects)})")
    return quiet_text == "true", objects


def parse_create_bucket(body: bytes, *, max_bytes: int = MAX_XML_BYTES) -> str | None:
    """The LocationConstraint of a CreateBucket body; None for an empty body or no constraint."""
    if not body or not body.strip():
        return None
    root = _parse(body, "CreateBucketConfiguration", max_bytes)
    return _text(_one(root, "LocationConstraint", required=False)).strip() or None


# ---------------------------------------------------------------- rendering

def _root(tag: str) -> ET.Element:
    return ET.Element(tag, xmlns=S3_NS)


def _add(parent: ET.Element, tag: str, text: str | int | bool | None = None) -> ET.Element:
    """A child element with ``text``. Names a listing shows were checked (or encoded) before
    they got here; anything else XML cannot carry becomes U+FFFD, so no document is malformed."""
    child = ET.SubElement(parent, tag)
    if isinstance(text, bool):
        child.text = "true" if text else "false"
    elif text is not None:
        child.text = _NOT_XML.sub("\ufffd", str(text))
    return child


def _bytes(root: ET.Element) -> bytes:
    # A raw CR can only come from element text here (no attributes but xmlns, no indentation).
    body = ET.tostring(root, encoding="utf-8", xml_declaration=False).replace(b"\r", b"&#13;")
    return _DECLARATION + body


def url_encode(value: str) -> str:
    """A name as ``encoding-type=url`` writes it: UTF-8 percent-encoded, ``/`` kept, a space as ``%20``.

    The S3 conformance suite (ceph's s3-tests) expects ``%20`` and ``%2B``
    (``quux%20ab/``, ``asdf%2Bb``). Some S3 endpoints have been seen sending a
    space as ``+``; ``%20`` is what every client decodes back to a space,
    whether it unquotes as a form (botocore's ``unquote_plus``) or as a path,
    while a ``+`` only the former reads right. A literal ``+`` travels as
    ``%2B`` and a ``%`` as ``%25``, so decoding is exact.
    """
    return quote(value, safe="/", errors="replace")


def _verbatim(value: str) -> str:
    """``value`` unchanged, or ``InvalidArgument`` if XML 1.0 cannot carry it (see the module's docstring)."""
    found = _NOT_XML.search(value)
    if found is not None:
        raise S3Error("InvalidArgument", f"the listing holds the name {url_encode(value)!r} (percent-encoded "
                      f"here), whose character U+{ord(found.group()):04X} XML 1.0 cannot carry: list with "
                      "encoding-type=url")
    return value


def _encoder(encoding_type: str | None) -> Callable[[str], str]:
    """How names are written: as they are (if XML can carry them), or :func:`url_encode`-d."""
    if encoding_type is None:
        return _verbatim
    if encoding_type != "url":
        raise S3Error("InvalidArgument", f"Invalid Encoding Method specified in Request: {encoding_type!r}")
    return url_encode


def _owner(parent: ET.Element, tag: str, owner_id: str, display_name: str | None = None) -> None:
    owner = _add(parent, tag)
    _add(owner, "ID", owner_id)
    _add(owner, "DisplayName", display_name if display_name is not None else owner_id)


def _common_prefixes(root: ET.Element, prefixes: Iterable[str], encode: Callable[[str], str]) -> None:
    for prefix in prefixes:
        _add(_add(root, "CommonPrefixes"), "Prefix", encode(prefix))


def _contents(root: ET.Element, info: ObjectInfo, encode: Callable[[str], str], owner_id: str | None) -> None:
    entry = _add(root, "Contents")
    _add(entry, "Key", encode(info.key))
    _add(entry, "LastModified", iso8601(info.last_modified))
    _add(entry, "ETag", quote_etag(info.etag))
    _add(entry, "Size", info.size)
    if owner_id is not None:
        _owner(entry, "Owner", owner_id)
    _add(entry, "StorageClass", "STANDARD")


def error_xml(error: S3Error, request_id: str) -> bytes:
    """S3's ``<Error>`` document (no namespace, as S3 sends it)."""
    root = ET.Element("Error")
    _add(root, "Code", error.code)
    _add(root, "Message", error.message)
    _add(root, "Resource", error.resource)
    _add(root, "RequestId", request_id)
    return _bytes(root)


def list_buckets_xml(buckets: list[BucketInfo], owner_id: str, owner_name: str, *, region: str | None = None,
                     prefix: str | None = None, continuation_token: str | None = None) -> bytes:
    """ListAllMyBucketsResult; ``continuation_token`` is the next page's, ``prefix`` the one asked for.

    With ``region``, each bucket carries its BucketRegion, as the current API sends.
    """
    root = _root("ListAllMyBucketsResult")
    _owner(root, "Owner", owner_id, owner_name)
    listing = _add(root, "Buckets")
    for bucket in buckets:
        entry = _add(listing, "Bucket")
        _add(entry, "Name", bucket.name)
        _add(entry, "CreationDate", iso8601(bucket.created))
        if region is not None:
            _add(entry, "BucketRegion", region)
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if prefix is not None:
        _add(root, "Prefix", prefix)  # a prefix XML cannot carry matches no bucket name; _add keeps it well-formed
    return _bytes(root)


def list_objects_v2_xml(bucket: str, page: ListPage, *, prefix: str | None, delimiter: str | None,
                        max_keys: int, start_after: str | None, continuation_token: str | None,
                        encoding_type: str | None, fetch_owner: bool, owner_id: str) -> bytes:
    """ListBucketResult for ListObjectsV2.

    With ``encoding_type="url"`` Key, Prefix, Delimiter, StartAfter and the
    common prefixes are URL-encoded, the fields S3 (and botocore's decoder) cover.
    """
    encode = _encoder(encoding_type)
    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", encode(prefix or ""))
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    _add(root, "MaxKeys", max_keys)
    if encoding_type:
        _add(root, "EncodingType", encoding_type)
    _add(root, "KeyCount", len(page.objects) + len(page.common_prefixes))
    _add(root, "IsTruncated", page.is_truncated)
    if continuation_token is not None:
        _add(root, "ContinuationToken", continuation_token)
    if page.is_truncated and page.next_continuation_token:
        _add(root, "NextContinuationToken", page.next_continuation_token)
    if start_after:
        _add(root, "StartAfter", encode(start_after))
    for info in page.objects:
        _contents(root, info, encode, owner_id if fetch_owner else None)
    _common_prefixes(root, page.common_prefixes, encode)
    return _bytes(root)


def list_objects_v1_xml(bucket: str, page: ListPage, *, prefix: str | None, delimiter: str | None,
                        marker: str | None, max_keys: int, encoding_type: str | None, owner_id: str) -> bytes:
    """ListBucketResult for ListObjects (V1).

    NextMarker is sent only when the page is truncated and a delimiter was
    given, as S3 does; it is the last key or common prefix on the page (without
    a delimiter, clients continue from the last Key).
    """
    encode = _encoder(encoding_type)
    root = _root("ListBucketResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", encode(prefix or ""))
    _add(root, "Marker", encode(marker or ""))
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    if encoding_type:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", page.is_truncated)
    last = max([*page.keys[-1:], *page.common_prefixes[-1:]], default=None)
    if page.is_truncated and delimiter and last is not None:
        _add(root, "NextMarker", encode(last))
    for info in page.objects:
        _contents(root, info, encode, owner_id)
    _common_prefixes(root, page.common_prefixes, encode)
    return _bytes(root)


def list_versions_xml(bucket: str, page: VersionsPage, *, prefix: str | None, delimiter: str | None,
                      key_marker: str | None, version_id_marker: str | None, max_keys: int,
                      encoding_type: str | None, owner_id: str) -> bytes:
    """ListVersionsResult (ListObjectVersions): versions and delete markers in the page's order.

    With ``encoding_type="url"`` Prefix, Delimiter, KeyMarker, NextKeyMarker,
    every Key and the common prefixes are URL-encoded (the fields S3 lists and
    botocore decodes); version ids are opaque and never encoded. The Next
    markers are sent only on a truncated page; NextVersionIdMarker only when the
    page ends on a version (not on a common prefix).
    """
    encode = _encoder(encoding_type)
    root = _root("ListVersionsResult")
    _add(root, "Name", bucket)
    _add(root, "Prefix", encode(prefix or ""))
    _add(root, "KeyMarker", encode(key_marker or ""))
    _add(root, "VersionIdMarker", _verbatim(version_id_marker or ""))
    if page.is_truncated and page.next_key_marker is not None:
        _add(root, "NextKeyMarker", encode(page.next_key_marker))
        if page.next_version_id_marker is not None:
            _add(root, "NextVersionIdMarker", page.next_version_id_marker)
    _add(root, "MaxKeys", max_keys)
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    if encoding_type:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", page.is_truncated)
    for info in page.versions:
        entry = _add(root, "DeleteMarker" if info.delete_marker else "Version")
        _add(entry, "Key", encode(info.key))
        _add(entry, "VersionId", info.version_id)
        _add(entry, "IsLatest", info.is_latest)
        _add(entry, "LastModified", iso8601(info.last_modified))
        if info.delete_marker:
            _owner(entry, "Owner", owner_id)
            continue
        _add(entry, "ETag", quote_etag(info.etag))
        _add(entry, "Size", info.size)
        _owner(entry, "Owner", owner_id)
        _add(entry, "StorageClass", "STANDARD")
    _common_prefixes(root, page.common_prefixes, encode)
    return _bytes(root)


def initiate_multipart_xml(bucket: str, key: str, upload_id: str) -> bytes:
    """InitiateMultipartUploadResult."""
    root = _root("InitiateMultipartUploadResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    return _bytes(root)


def complete_multipart_xml(location: str, bucket: str, key: str, etag: str) -> bytes:
    """CompleteMultipartUploadResult."""
    root = _root("CompleteMultipartUploadResult")
    _add(root, "Location", location)
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "ETag", quote_etag(etag))
    return _bytes(root)


def _copy_result(tag: str, etag: str, last_modified: float) -> bytes:
    root = _root(tag)
    _add(root, "ETag", quote_etag(etag))
    _add(root, "LastModified", iso8601(last_modified))
    return _bytes(root)


def copy_object_xml(etag: str, last_modified: float) -> bytes:
    """CopyObjectResult."""
    return _copy_result("CopyObjectResult", etag, last_modified)


def copy_part_xml(etag: str, last_modified: float) -> bytes:
    """CopyPartResult (UploadPartCopy)."""
    return _copy_result("CopyPartResult", etag, last_modified)


def list_parts_xml(bucket: str, key: str, upload_id: str, page: PartsPage, *,
                   part_number_marker: int | None, max_parts: int, owner_id: str) -> bytes:
    """ListPartsResult."""
    root = _root("ListPartsResult")
    _add(root, "Bucket", bucket)
    _add(root, "Key", key)
    _add(root, "UploadId", upload_id)
    _owner(root, "Initiator", owner_id)
    _owner(root, "Owner", owner_id)
    _add(root, "StorageClass", "STANDARD")
    _add(root, "PartNumberMarker", part_number_marker or 0)
    next_marker = page.next_part_number_marker
    if next_marker is None and page.parts:
        next_marker = page.parts[-1].part_number
    if next_marker is not None:
        _add(root, "NextPartNumberMarker", next_marker)
    _add(root, "MaxParts", max_parts)
    _add(root, "IsTruncated", page.is_truncated)
    for part in page.parts:
        entry = _add(root, "Part")
        _add(entry, "PartNumber", part.part_number)
        _add(entry, "LastModified", iso8601(part.last_modified))
        _add(entry, "ETag", quote_etag(part.etag))
        _add(entry, "Size", part.size)
    return _bytes(root)


def list_uploads_xml(bucket: str, page: UploadsPage, *, prefix: str | None, delimiter: str | None,
                     key_marker: str | None, upload_id_marker: str | None, max_uploads: int,
                     encoding_type: str | None, owner_id: str | None = None) -> bytes:
    """ListMultipartUploadsResult. With ``encoding_type="url"`` the key-like fields are URL-encoded."""
    encode = _encoder(encoding_type)
    root = _root("ListMultipartUploadsResult")
    _add(root, "Bucket", bucket)
    _add(root, "KeyMarker", encode(key_marker or ""))
    _add(root, "UploadIdMarker", upload_id_marker or "")
    if page.is_truncated:
        _add(root, "NextKeyMarker", encode(page.next_key_marker or ""))
        _add(root, "NextUploadIdMarker", page.next_upload_id_marker or "")
    if delimiter:
        _add(root, "Delimiter", encode(delimiter))
    _add(root, "Prefix", encode(prefix or ""))
    _add(root, "MaxUploads", max_uploads)
    if encoding_type:
        _add(root, "EncodingType", encoding_type)
    _add(root, "IsTruncated", page.is_truncated)
    for upload in page.uploads:
        entry = _add(root, "Upload")
        _add(entry, "Key", encode(upload.key))
        _add(entry, "UploadId", upload.upload_id)
        if owner_id is not None:
            _owner(entry, "Initiator", owner_id)
            _owner(entry, "Owner", owner_id)
        _add(entry, "StorageClass", "STANDARD")
        _add(entry, "Initiated", iso8601(upload.initiated))
    _common_prefixes(root, page.common_prefixes, encode)
    return _bytes(root)


def delete_result_xml(deleted: list[tuple[str, str | None, bool, str | None]],
                      errors: list[tuple[str, str | None, str, str]], quiet: bool) -> bytes:
    """DeleteResult. ``deleted`` holds (key, version id, delete marker, delete marker version id);
    ``errors`` holds (key, version id, code, message). Quiet mode lists only the errors, as S3 does."""
    root = _root("DeleteResult")
    if not quiet:
        for key, version_id, delete_marker, marker_version_id in deleted:
            entry = _add(root, "Deleted")
            _add(entry, "Key", key)
            if version_id is not None:
                _add(entry, "VersionId", version_id)
            if delete_marker:
                _add(entry, "DeleteMarker", True)
            if marker_version_id is not None:
                _add(entry, "DeleteMarkerVersionId", marker_version_id)
    for key, version_id, code, message in errors:
        entry = _add(root, "Error")
        _add(entry, "Key", key)
        if version_id is not None:
            _add(entry, "VersionId", version_id)
        _add(entry, "Code", code)
        _add(entry, "Message", message)
    return _bytes(root)


def location_xml(region: str) -> bytes:
    """GetBucketLocation's LocationConstraint; empty for us-east-1, as S3 answers."""
    root = _root("LocationConstraint")
    if region and region != "us-east-1":
        root.text = region
    return _bytes(root)
