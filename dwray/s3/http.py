"""The S3 protocol's HTTP-header logic, as pure functions.

Ranges, conditional requests, dates, ``response-*`` overrides, user metadata,
``x-amz-copy-source`` and where the bucket and key sit in a request (path-style
or virtual-hosted). Nothing here touches a socket, Ray or Serve: the gateway
hands in header values and gets back plain values or an :class:`S3Error`.

Each rule follows what S3 does, and where S3 is silent, RFC 9110.
"""
from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import unquote, unquote_to_bytes

from dwray.s3.errors import S3Error
from dwray.s3.numbers import MAX_DECIMAL_DIGITS, is_decimal

__all__ = [
    "bucket_and_key", "check_conditions", "check_copy_source_conditions", "http_date", "iso8601",
    "metadata_headers", "parse_copy_range", "parse_copy_source", "parse_http_date", "parse_range",
    "quote_etag", "response_overrides", "user_metadata", "version_id_param", "virtual_host_bucket",
]

META_PREFIX = "x-amz-meta-"

# The response-* query parameters S3 honours on GET/HEAD, and the header each sets.
_OVERRIDES: dict[str, str] = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}

# Characters that would split or end a header line if echoed into a response.
_HEADER_BREAKERS = re.compile(r"[\r\n\x00]")

# ASCII digits only ([0-9], never \d, which matches every script's digits); OWS is space or tab.
_RANGE_SPEC = re.compile(r"[ \t]*([0-9]*)[ \t]*-[ \t]*([0-9]*)[ \t]*\Z")
_COPY_RANGE = re.compile(rf"bytes=([0-9]{{1,{MAX_DECIMAL_DIGITS}}})-([0-9]{{1,{MAX_DECIMAL_DIGITS}}})\Z")
# One entity-tag in a list (RFC 9110 §8.8.3), optionally weak. Unquoted tags are
# accepted too because S3 accepts ``If-Match: <hex>`` from clients that strip quotes.
_ETAG_ITEM = re.compile(r'\s*(W/)?("[^"]*"|[^,\s]+)\s*(?:,|$)')

# The version ids dwray issues (:func:`dwray.core.warehouse.objects.new_version_id`), besides ``null``.
VERSION_ID_PATTERN = re.compile(r"[0-9a-f]{32}")

_COPY_RANGE_FORM = ("The x-amz-copy-source-range value must be of the form bytes=first-last "
                    "where first and last are the zero-based offsets of the first and last bytes to copy")


# ---------------------------------------------------------------- dates

def http_date(ts: float) -> str:
    """``ts`` (seconds since the epoch) as an IMF-fixdate: ``Fri, 27 Nov 2026 10:00:00 GMT``."""
    return email.utils.formatdate(ts, usegmt=True)


def parse_http_date(value: str | None) -> float | None:
    """An HTTP date (IMF-fixdate, RFC 850 or asctime form) as epoch seconds; None if invalid.

    RFC 9110 §5.6.7 asks recipients to accept all three forms; dates without a
    zone are GMT by definition.
    """
    if not value or not value.isascii():
        return None  # the email parser would read digits of any script
    try:
        parsed = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):  # a huge year overflows
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def iso8601(ts: float) -> str:
    """``ts`` in the form S3 uses in XML: ``2026-11-27T10:00:00.000Z`` (milliseconds, UTC)."""
    moment = datetime.fromtimestamp(ts, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---------------------------------------------------------------- ranges

def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks of an object of ``size`` bytes.

    None means "serve the whole object": no header, a header that is not a
    single valid ``bytes=`` range (RFC 9110 §14.2 says to ignore those), or
    several ranges (S3 does not serve multipart/byteranges; it answers 200 with
    the whole object). An end past the object is clamped. A range that starts
    past the end, or a zero-length suffix, is unsatisfiable: ``InvalidRange``
    (416) with ``Content-Range: bytes */size``. Non-ASCII characters (digits of
    another script, which Python's ``int()`` would read) and positions of more
    than ``MAX_DECIMAL_DIGITS`` digits are ``InvalidArgument`` (400): a range
    other parsers may read differently is refused, not guessed at.
    """
    if header is None:
        return None
    if not header.isascii():
        raise S3Error("InvalidArgument", "The Range header must be ASCII (bytes=first-last, digits 0-9)")
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    match = _RANGE_SPEC.match(spec)
    if match is None or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if any(position and not is_decimal(position) for position in (first, last)):
        raise S3Error("InvalidArgument", f"The Range header's positions must be at most {MAX_DECIMAL_DIGITS} "
                      "digits")
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise _unsatisfiable(header, size)
        if size == 0:
            return None
        return max(0, size - suffix), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if last and end < start:
        return None
    if start >= size:
        raise _unsatisfiable(header, size)
    return start, min(end, size - 1)


def _unsatisfiable(header: str, size: int) -> S3Error:
    return S3Error("InvalidRange", f"The requested range {header!r} is not satisfiable for an object "
                   f"of {size} bytes.", headers={"Content-Range": f"bytes */{size}"})


def parse_copy_range(value: str, size: int) -> tuple[int, int]:
    """The inclusive range ``x-amz-copy-source-range: bytes=first-last`` names.

    Unlike GET's Range, S3 accepts only the full ``first-last`` form of the
    ``bytes`` unit: anything else is malformed, ``InvalidArgument`` (400). A
    well-formed range that is not within the source (``first > last``, or
    ``last`` at or past its end) is ``InvalidRange`` (416), as S3 sends.
    """
    match = _COPY_RANGE.match(value.strip(" \t"))
    if match is None:
        raise S3Error("InvalidArgument", _COPY_RANGE_FORM)
    start, end = int(match.group(1)), int(match.group(2))
    if start > end or end >= size:
        raise S3Error("InvalidRange", f"The x-amz-copy-source-range {value.strip()!r} is not satisfiable: "
                      f"Range specified is not valid for source object of size: {size}")
    return start, end


def version_id_param(query: Mapping[str, str]) -> str | None:
    """The ``versionId`` query parameter: None when absent, else a well-formed version id.

    dwray's version ids are ``null`` or :data:`VERSION_ID_PATTERN`; anything
    else names no version that can exist, so it is refused as S3 does
    (``400 InvalidArgument``) rather than looked up.
    """
    value = query.get("versionId")
    if value is None:
        return None
    if value == "":
        raise S3Error("InvalidArgument", "Version id cannot be the empty string")
    if value != "null" and not VERSION_ID_PATTERN.fullmatch(value):
        raise S3Error("InvalidArgument", "Invalid version id specified")
    return value


# ---------------------------------------------------------------- conditions

def quote_etag(etag: str) -> str:
    """An ETag as it appears in headers and XML: in double quotes (added once)."""
    if len(etag) >= 2 and etag.startswith('"') and etag.endswith('"'):
        return etag
    return f'"{etag}"'


def _etag_list(value: str) -> list[tuple[bool, str]] | None:
    """The (weak, opaque-tag) items of an ETag list, or None for ``*``."""
    if value.strip() == "*":
        return None
    items: list[tuple[bool, str]] = []
    for match in _ETAG_ITEM.finditer(value):
        if match.group(2):
            items.append((bool(match.group(1)), match.group(2).strip('"')))
    return items


def _etag_matches(value: str, etag: str, *, weak: bool) -> bool:
    """Whether ``etag`` is in the list ``value``: strong comparison unless ``weak``."""
    items = _etag_list(value)
    if items is None:
        return True
    bare = etag.strip('"')
    return any(tag == bare and (weak or not is_weak) for is_weak, tag in items)


def _evaluate(headers: Mapping[str, str], names: tuple[str, str, str, str],
              etag: str, last_modified: float) -> str | None:
    """Which precondition fails, in RFC 9110 §13.2.2 order: "match", "not-modified" or None.

    ``names`` are the If-Match, If-Unmodified-Since, If-None-Match and
    If-Modified-Since header names (plain or x-amz-copy-source-). HTTP dates
    have one-second resolution, so the object's time is compared in whole seconds.
    """
    if_match, if_unmodified, if_none_match, if_modified = (_header(headers, name) for name in names)
    seconds = int(last_modified)
    if if_match is not None:
        if not _etag_matches(if_match, etag, weak=False):
            return "match"
    elif if_unmodified is not None:
        since = parse_http_date(if_unmodified)
        if since is not None and seconds > since:
            return "match"
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag, weak=True):
            return "not-modified"
    elif if_modified is not None:
        since = parse_http_date(if_modified)
        if since is not None and seconds <= since:
            return "not-modified"
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def check_conditions(headers: Mapping[str, str], etag: str, last_modified: float,
                     *, method: str = "GET") -> int | None:
    """Evaluate If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since.

    Raises ``PreconditionFailed`` (412) when If-Match (or, without it,
    If-Unmodified-Since) fails. Returns 304 when If-None-Match matches (or,
    without it, If-Modified-Since finds no change) on GET or HEAD; for other
    methods that is a 412 too (RFC 9110 §13.1.2). Returns None to proceed.
    ``headers`` lookups try the names as given, then lowercased.
    """
    failed = _evaluate(headers, ("If-Match", "If-Unmodified-Since", "If-None-Match", "If-Modified-Since"),
                       etag, last_modified)
    if failed == "not-modified" and method.upper() in ("GET", "HEAD"):
        return 304
    if failed is not None:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")
    return None


def check_copy_source_conditions(headers: Mapping[str, str], etag: str, last_modified: float) -> None:
    """Evaluate the x-amz-copy-source-if-* headers against the source; any failure is 412."""
    names = ("x-amz-copy-source-if-match", "x-amz-copy-source-if-unmodified-since",
             "x-amz-copy-source-if-none-match", "x-amz-copy-source-if-modified-since")
    if _evaluate(headers, names, etag, last_modified) is not None:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold")


# ---------------------------------------------------------------- headers

def response_overrides(query: Mapping[str, str]) -> dict[str, str]:
    """The response headers the ``response-*`` query parameters set, by header name."""
    headers: dict[str, str] = {}
    for param, header in _OVERRIDES.items():
        value = query.get(param)
        if value is None:
            continue
        if _HEADER_BREAKERS.search(value):
            raise S3Error("InvalidArgument", f"The {param} parameter must not contain CR, LF or NUL characters")
        headers[header] = value
    return headers


def user_metadata(headers: Sequence[tuple[str, str]], max_bytes: int) -> dict[str, str]:
    """User metadata from ``x-amz-meta-*`` headers: names lowercased, prefix removed.

    A repeated header's values are joined with "," (RFC 9110 §5.3). S3 counts
    the UTF-8 bytes of every name and value against its limit; past
    ``max_bytes`` the request is ``MetadataTooLarge``.
    """
    metadata: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if not lowered.startswith(META_PREFIX):
            continue
        key = lowered[len(META_PREFIX):]
        if not key:
            raise S3Error("InvalidArgument", "A user metadata header needs a name after x-amz-meta-")
        metadata[key] = f"{metadata[key]},{value}" if key in metadata else value
    total = sum(len(key.encode()) + len(value.encode()) for key, value in metadata.items())
    if total > max_bytes:
        raise S3Error("MetadataTooLarge", f"Your metadata headers exceed the maximum allowed metadata size "
                      f"({total} bytes, at most {max_bytes})")
    return metadata


def metadata_headers(metadata: Mapping[str, str]) -> list[tuple[str, str]]:
    """Response headers for stored user metadata: ``x-amz-meta-<name>: <value>``."""
    return [(f"{META_PREFIX}{name}", value) for name, value in metadata.items()]


# ---------------------------------------------------------------- locations

def parse_copy_source(value: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id) from ``x-amz-copy-source``.

    Accepts ``/bucket/key`` or ``bucket/key``, URL-encoded (botocore encodes
    the path, so a literal ``?`` in a key arrives as ``%3F``), with an optional
    ``?versionId=...``. Access-point ARNs are not supported.
    """
    path, sep, query = value.strip().partition("?")
    version_id: str | None = None
    if sep:
        name, eq, version = query.partition("=")
        if name != "versionId" or not eq or not version:
            raise S3Error("InvalidArgument", "x-amz-copy-source may only carry a non-empty ?versionId=")
        version_id = unquote(version)
        if version_id != "null" and not VERSION_ID_PATTERN.fullmatch(version_id):
            raise S3Error("InvalidArgument", "Invalid version id specified")
    try:
        decoded = unquote(path.removeprefix("/"), errors="strict")
    except UnicodeDecodeError:
        raise S3Error("InvalidArgument", "x-amz-copy-source is not valid percent-encoded UTF-8") from None
    bucket, slash, key = decoded.partition("/")
    if not bucket or not slash or not key:
        raise S3Error("InvalidArgument", "x-amz-copy-source must be of the form bucket/key")
    if bucket.startswith("arn:"):
        raise S3Error("InvalidArgument", "x-amz-copy-source access point ARNs are not supported")
    if "\x00" in decoded:
        raise S3Error("InvalidArgument", "x-amz-copy-source must not contain a NUL character")
    return bucket, key, version_id


def bucket_and_key(host: str | None, raw_path: str | bytes, domain: str | None) -> tuple[str | None, str]:
    """Where a request points: (bucket or None for the service, key or "").

    Virtual-hosted style when ``host`` is ``<bucket>.<domain>[:port]`` (the whole
    path is then the key), else path-style ``/bucket/key``. ``raw_path`` is the
    undecoded path without the query: bytes as ASGI's ``raw_path`` gives them,
    or text (non-ASCII text is taken as UTF-8). ``%2F`` decodes to ``/`` as in S3.
    """
    raw = raw_path if isinstance(raw_path, bytes) else raw_path.encode("utf-8")
    if not raw.startswith(b"/"):
        raise S3Error("InvalidURI", "The request path must start with /")
    bucket = virtual_host_bucket(host, domain)
    if bucket is not None:
        return bucket, _decode_path(raw[1:])
    first, _, rest = raw[1:].partition(b"/")
    if not first:
        if rest:
            raise S3Error("InvalidURI", "The request path names no bucket")
        return None, ""
    return _decode_path(first), _decode_path(rest)


def virtual_host_bucket(host: str | None, domain: str | None) -> str | None:
    """The bucket a ``Host`` of ``<bucket>.<domain>[:port]`` names (virtual-hosted style), else None."""
    if not host or not domain:
        return None
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal is never a bucket host
        return None
    name = name.rpartition(":")[0] if ":" in name else name
    suffix = "." + domain.strip().lower().strip(".")
    if name.endswith(suffix) and len(name) > len(suffix):
        return name[: -len(suffix)]
    return None


def _decode_path(raw: bytes) -> str:
    try:
        text = unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise S3Error("InvalidURI", "The request path is not valid percent-encoded UTF-8") from None
    if "\x00" in text:
        raise S3Error("InvalidURI", "The request path must not contain a NUL character")
    return text
