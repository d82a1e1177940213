"""How a pool keeps order among its members and its own writers.

``MemberHealth``
    remembers which members failed lately. A member whose call raised
    ``StorageError`` is "down" for ``retry_after`` seconds: writes skip it
    (and leave it a hint), reads try it last; then it is tried again.
``BlobLocks``
    one lock per blob id in use, so that a put, a delete, a repair, a
    catch-up or a tier move of one blob never interleave, while work on
    different blobs runs in parallel. Readers take no lock: they check
    every byte instead.
``check_members``, ``check_number``
    the argument checks both pools' constructors share.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from dwray.backends.base import StorageBackend
from dwray.backends.blob_locks import BlobLocks
from dwray.errors import InvalidArgument

__all__ = ["BlobLocks", "MemberHealth", "check_members", "check_number", "sweep_members"]

_MEMBER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def check_number(name: str, value: object, *, minimum: float, integer: bool = False,
                 optional: bool = False) -> None:
    """``InvalidArgument`` unless ``value`` is a number (an int if ``integer``) >= ``minimum``
    (or None, if ``optional``)."""
    if optional and value is None:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or value < minimum:
        kind = "an int" if integer else "a number"
        raise InvalidArgument(f"{name} must be {'None or ' if optional else ''}{kind} >= {minimum}, not {value!r}")


def check_members(members: Mapping[str, StorageBackend], block_size: int) -> None:
    """Refuse member maps and block sizes a pool cannot work with (``InvalidArgument``)."""
    if not isinstance(members, Mapping) or not members:
        raise InvalidArgument("a pool needs a non-empty mapping of member names to backends")
    for name, member in members.items():
        if not isinstance(name, str) or not _MEMBER_NAME.fullmatch(name):
            raise InvalidArgument(f"pool member name {name!r} must be 1-64 characters of [A-Za-z0-9_.-]")
        if not isinstance(member, StorageBackend):
            raise InvalidArgument(f"pool member {name!r} must be a StorageBackend, not {type(member).__name__}")
    if len({id(member) for member in members.values()}) != len(members):
        raise InvalidArgument("pool members must be distinct backends")
    check_number("block_size", block_size, minimum=512, integer=True)


class MemberHealth:
    """Which of a pool's members failed lately, and why."""

    def __init__(self, names: Iterable[str], retry_after: float) -> None:
        self.retry_after = retry_after
        self._lock = threading.Lock()
        self._down_until: dict[str, float] = {}
        self._last_error: dict[str, str] = {name: "" for name in names}

    def failed(self, name: str, error: BaseException) -> None:
        with self._lock:
            self._down_until[name] = time.monotonic() + self.retry_after
            self._last_error[name] = str(error)

    def ok(self, name: str) -> None:
        with self._lock:
            self._down_until.pop(name, None)

    def is_up(self, name: str) -> bool:
        with self._lock:
            until = self._down_until.get(name)
        return until is None or time.monotonic() >= until

    def split(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """``(up, down)``, each in the given order."""
        up: list[str] = []
        down: list[str] = []
        for name in names:
            (up if self.is_up(name) else down).append(name)
        return up, down

    def order(self, names: Iterable[str]) -> list[str]:
        """``names`` with the members that failed lately moved to the end."""
        up, down = self.split(names)
        return up + down

    def reason(self, name: str) -> str:
        with self._lock:
            return self._last_error.get(name, "")

    def status(self) -> dict[str, dict[str, Any]]:
        """``name -> {"up": bool, "last_error": str}`` (JSON-able)."""
        with self._lock:
            now = time.monotonic()
            return {
                name: {"up": now >= self._down_until.get(name, now), "last_error": error}
                for name, error in self._last_error.items()
            }


def sweep_members(members: Iterable[StorageBackend], older_than_seconds: float) -> int:
    """What every member's own ``sweep_temp_files`` removed (temp files, crashed uploads), summed."""
    removed = 0
    for member in members:
        sweep = getattr(member, "sweep_temp_files", None)
        if sweep is not None:
            removed += int(sweep(older_than_seconds))
    return removed
