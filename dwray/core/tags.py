"""S3 object tags: the rules a tag set must keep, checked once for every way tags arrive."""
from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping

from dwray.errors import InvalidTag

__all__ = ["MAX_KEY_CHARS", "MAX_TAGS", "MAX_VALUE_CHARS", "validate_tags"]

MAX_TAGS = 10
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 256
# S3's tag character rule is ``[\p{L}\p{Z}\p{N}_.:/=+\-@]``; Python's ``re`` has no ``\p{...}``
# classes, so the Unicode categories are checked directly.
_PUNCTUATION = frozenset("_.:/=+-@")


def _bad_character(text: str) -> str | None:
    for char in text:
        if char not in _PUNCTUATION and unicodedata.category(char)[0] not in "LZN":
            return char
    return None


def validate_tags(tags: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """``tags`` as a dict if they keep S3's rules, else ``InvalidTag`` naming the first one broken.

    At most 10 tags; keys unique, 1 to 128 characters, not starting with ``aws:``;
    values 0 to 256 characters; letters, digits, spaces and ``_ . : / = + - @`` only.
    """
    pairs = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
    if len(pairs) > MAX_TAGS:
        raise InvalidTag(f"an object can have at most {MAX_TAGS} tags, not {len(pairs)}")
    clean: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidTag(f"tag keys and values must be strings, not {type(key).__name__}/{type(value).__name__}")
        if not 1 <= len(key) <= MAX_KEY_CHARS:
            raise InvalidTag(f"a tag key must be 1 to {MAX_KEY_CHARS} characters long, not {len(key)}")
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidTag(f"the value of tag {key!r} is {len(value)} characters long; at most "
                             f"{MAX_VALUE_CHARS} are allowed")
        if key.lower().startswith("aws:"):
            raise InvalidTag(f"tag key {key!r} uses the reserved prefix 'aws:'")
        for what, text in (("key", key), ("value", value)):
            bad = _bad_character(text)
            if bad is not None:
                raise InvalidTag(f"the tag {what} {text[:40]!r} has the character {bad!r}; only letters, digits, "
                                 "spaces and _ . : / = + - @ are allowed")
        if key in clean:
            raise InvalidTag(f"the tag key {key!r} appears more than once")
        clean[key] = value
    return clean
