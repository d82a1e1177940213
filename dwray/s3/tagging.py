"""The ``x-amz-tagging`` request header: an object's tags given with PutObject, CopyObject or
CreateMultipartUpload, as URL query parameters (``k1=v1&k2=v2``).

Decoding follows URL query (form) rules, as AWS's SDKs encode the header: ``%XX``
escapes in UTF-8, ``+`` is a space, a pair without ``=`` is a key with an empty
value. The pairs are then checked by the core's tag rules
(:func:`dwray.core.tags.validate_tags`: how many, unique keys, lengths,
characters), the one rule set for the header and the PutObjectTagging body.
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from dwray.core.tags import validate_tags
from dwray.errors import InvalidTag

__all__ = ["MAX_TAGGING_HEADER_PAIRS", "parse_tagging_header"]

# More pairs than this cannot be a valid tag set (S3 allows 10); stop decoding early.
MAX_TAGGING_HEADER_PAIRS = 50


def parse_tagging_header(value: str) -> dict[str, str]:
    """The tags an ``x-amz-tagging`` header value names, in order; ``{}`` for an empty value.
    Tags that break S3's rules are :class:`~dwray.errors.InvalidTag`.

    ``value`` is the header as the gateway holds it (bytes decoded as Latin-1):
    bytes sent raw instead of percent-encoded are read back as UTF-8.
    """
    try:
        text = value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise InvalidTag("the x-amz-tagging header is not URL-encoded UTF-8") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_TAGGING_HEADER_PAIRS)
    except UnicodeError:
        raise InvalidTag("the x-amz-tagging header has a %-escape that is not UTF-8") from None
    except ValueError:
        raise InvalidTag(f"Object tags cannot be greater than 10 (the x-amz-tagging header has over "
                         f"{MAX_TAGGING_HEADER_PAIRS})") from None
    return validate_tags(pairs)
