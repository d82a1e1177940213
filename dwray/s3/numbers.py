"""Numbers in S3 headers and query strings, read strictly: ASCII digits only, of bounded length.

Python's ``int()`` is generous in ways a protocol parser must not be: it takes
digits of every script (``int("١٢") == 12``), underscores (``"1_000"``),
surrounding whitespace and a sign, and raises ``ValueError`` past 4300 digits,
which a handler that expected only well-formed text turns into a 500. Two
parsers that disagree on what a number is (HAProxy, a cache, the gateway)
are how request smuggling and range confusion begin, so every number a client
sends goes through :func:`parse_decimal` or :func:`parse_hex`, and a bad one
is the S3 error the caller names (``InvalidArgument`` unless S3 says
otherwise), never a traceback.

``str.isdigit()`` is no help either: it is true for ``"²"``, which ``int()``
then refuses. The regular expressions here use ``[0-9]``, which, unlike
``\\d``, matches ASCII digits only.
"""
from __future__ import annotations

import re

from dwray.s3.errors import S3Error

__all__ = ["MAX_DECIMAL_DIGITS", "MAX_HEX_DIGITS", "is_decimal", "parse_decimal", "parse_hex"]

# 19 digits hold every size and count S3 knows (an int64 is at most 19 digits).
MAX_DECIMAL_DIGITS = 19
MAX_HEX_DIGITS = 16
_DECIMAL = re.compile(rf"[0-9]{{1,{MAX_DECIMAL_DIGITS}}}\Z")
_HEX = re.compile(rf"[0-9a-fA-F]{{1,{MAX_HEX_DIGITS}}}\Z")


def is_decimal(text: str) -> bool:
    """Whether ``text`` is 1 to ``MAX_DECIMAL_DIGITS`` ASCII digits and nothing else."""
    return _DECIMAL.match(text) is not None


def parse_decimal(text: str, name: str, *, code: str = "InvalidArgument", low: int = 0,
                  high: int | None = None) -> int:
    """``text`` as a non-negative integer in ``[low, high]``, or the S3 error ``code`` naming ``name``.

    Only ASCII digits are accepted: no sign, no spaces, no underscores, at most
    ``MAX_DECIMAL_DIGITS`` of them (leading zeros count).
    """
    if not is_decimal(text):
        raise S3Error(code, f"{name} must be a number written with 1 to {MAX_DECIMAL_DIGITS} ASCII digits "
                      f"(got {_shown(text)})")
    value = int(text)
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise S3Error(code, f"{name} must be {bound} (got {value})")
    return value


def parse_hex(text: str, name: str, *, code: str = "InvalidArgument") -> int:
    """``text`` as a non-negative hexadecimal integer (ASCII, at most ``MAX_HEX_DIGITS`` digits)."""
    if _HEX.match(text) is None:
        raise S3Error(code, f"{name} must be 1 to {MAX_HEX_DIGITS} ASCII hexadecimal digits (got {_shown(text)})")
    return int(text, 16)


def _shown(text: str) -> str:
    """The start of a refused value, for the message (clients see it; a value is never a secret)."""
    return repr(text[:24] + ("..." if len(text) > 24 else ""))
