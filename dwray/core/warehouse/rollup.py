"""S3's delimiter roll-up, written once for both listings (objects, and uploads in progress).

Keys that contain the delimiter after the prefix are rolled up into one common
prefix (up to and including the delimiter), which counts as one item of the
page; the scan then jumps past every key under it instead of reading them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["RolledUp", "common_prefix", "next_markers", "resume_point", "roll_up", "successor"]

T = TypeVar("T")


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


def common_prefix(key: str, prefix: str, delimiter: str | None) -> str | None:
    """The common prefix ``key`` rolls up into, or ``None`` when it is listed itself."""
    if not delimiter:
        return None
    cut = key.find(delimiter, len(prefix))
    return key[:cut + len(delimiter)] if cut >= 0 else None


@dataclass(frozen=True)
class RolledUp(Generic[T]):
    """One page of a listing: entries and common prefixes, each in key order."""

    entries: list[T]
    common_prefixes: list[str]
    is_truncated: bool
    #: where a next page starts when this one is truncated, as (key, inclusive): just after the
    #: last entry's key, or (inclusive) at the first key past everything under the last prefix
    resume: tuple[str, bool] | None = None


def roll_up(scan: Callable[[str | None], Iterator[T]], key_of: Callable[[T], str], *, prefix: str,
            delimiter: str | None, limit: int) -> RolledUp[T]:
    """Up to ``limit`` entries and common prefixes from ``scan``, as S3 lists them.

    ``scan(None)`` yields the entries from where the caller's markers say, in
    key order, all under ``prefix``; ``scan(key)`` yields them from ``key`` on
    (inclusive). The page is truncated only when an entry is left over after
    ``limit`` items (never when ``limit`` is 0).
    """
    entries: list[T] = []
    prefixes: list[str] = []
    resume: tuple[str, bool] | None = None
    found = scan(None)
    while True:
        for entry in found:
            if len(entries) + len(prefixes) >= limit:
                return RolledUp(entries, prefixes, limit > 0, resume)
            key = key_of(entry)
            common = common_prefix(key, prefix, delimiter)
            if common is None:
                entries.append(entry)
                resume = (key, False)
                continue
            prefixes.append(common)
            after = successor(common)
            if after is None:
                return RolledUp(entries, prefixes, False)
            resume = (after, True)
            found = scan(after)
            break
        else:
            return RolledUp(entries, prefixes, False)


def resume_point(key_marker: str | None, id_marker: str | None, prefix: str,
                 delimiter: str | None) -> tuple[str | None, bool] | None:
    """Where a marker-paged listing (uploads, versions) starts: ``(key, inclusive)``.

    A ``key_marker`` without an id marker that is a common prefix of this
    listing (a previous page's next key marker) resumes after every key under
    it; ``None`` when nothing can sort after it.
    """
    if key_marker and id_marker is None and key_marker.startswith(prefix) \
            and common_prefix(key_marker, prefix, delimiter) == key_marker:
        after = successor(key_marker)
        return None if after is None else (after, True)
    return key_marker, False


def next_markers(last: tuple[str, str] | None, prefixes: list[str]) -> tuple[str, str | None]:
    """The next key and id markers of a truncated marker-paged page: its last item.

    ``last`` is the (key, id) of the page's last entry. A common prefix that
    sorts after it is the last item; a next page given it as key marker skips its keys.
    """
    if prefixes and (last is None or prefixes[-1] > last[0]):
        return prefixes[-1], None
    assert last is not None  # a truncated page holds at least one item
    return last
