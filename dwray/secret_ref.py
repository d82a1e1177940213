"""Secret references and the redacting type that holds a resolved secret.

No config field holds a secret value. A field that needs one holds a
*reference* naming where the value lives:

=============================  ==================================================
``secret://env/NAME``          the environment variable ``NAME``
``secret://file/PATH``         the file at ``PATH`` (absolute: ``secret://file//run/s``)
``secret://local/NAME``        the encrypted local store (``dw secret set NAME``)
``secret://vault/PATH#FIELD``  field ``FIELD`` of KV v2 secret ``PATH`` in Vault/OpenBao
``secret://aws/NAME[#FIELD]``  AWS Secrets Manager secret ``NAME`` (a JSON field of it)
=============================  ==================================================

A resolved value is a ``SecretValue``: its ``repr``, ``str`` and format show
``**********``, it compares in constant time and it refuses to be pickled,
so it cannot reach a log line, an error, a Ray actor's arguments or a config
dump by accident. ``reveal()`` is the one way to the value, for the code that
must use it.

This module sits at the ground with ``dwray.config`` (which validates reference
fields with it) and imports nothing of dwray but the errors.
"""
from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn

from pydantic import AfterValidator

from dwray.errors import InvalidArgument

__all__ = ["SCHEMES", "SecretRef", "SecretRefField", "SecretValue", "parse_secret_ref"]

SCHEMES = ("env", "file", "local", "vault", "aws")
_PREFIX = "secret://"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Names in the stores: letters, digits and a few separators, no '..' segments.
_STORE_NAME = re.compile(r"^[A-Za-z0-9_.@+=,/-]{1,512}$")
_FIELD = re.compile(r"^[A-Za-z0-9_.@+=,-]{1,256}$")


@dataclass(frozen=True)
class SecretRef:
    """A parsed reference: which manager (``scheme``), the secret's ``name`` and an optional ``field``."""

    scheme: str
    name: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{_PREFIX}{self.scheme}/{self.name}" + (f"#{self.field}" if self.field else "")


def parse_secret_ref(text: str) -> SecretRef:
    """Parse ``secret://SCHEME/NAME[#FIELD]``; ``InvalidArgument`` says what is wrong (never echoing a value).

    A string that does not start with ``secret://`` is refused without being
    quoted: it is probably a secret value put where a reference belongs.
    """
    if not isinstance(text, str) or not text.startswith(_PREFIX):
        raise InvalidArgument("expected a secret reference (secret://env/NAME, secret://file/PATH, "
                              "secret://local/NAME, secret://vault/PATH#FIELD or secret://aws/NAME[#FIELD]); "
                              "a secret value itself may not appear in configuration")
    scheme, sep, rest = text[len(_PREFIX):].partition("/")
    if scheme not in SCHEMES or not sep:
        raise InvalidArgument(f"secret reference {text!r}: the manager must be one of {', '.join(SCHEMES)}")
    name, _, field = rest.partition("#")
    field_or_none = field or None
    if scheme == "file":
        if not name or "\x00" in name:
            raise InvalidArgument(f"secret reference {text!r}: names no file")
        if field_or_none is not None:
            raise InvalidArgument(f"secret reference {text!r}: a file reference takes no #FIELD")
        return SecretRef(scheme, name, None)
    if scheme == "env":
        if not _ENV_NAME.match(name):
            raise InvalidArgument(f"secret reference {text!r}: {name!r} is not an environment variable name")
        if field_or_none is not None:
            raise InvalidArgument(f"secret reference {text!r}: an env reference takes no #FIELD")
        return SecretRef(scheme, name, None)
    if not _STORE_NAME.match(name) or any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidArgument(f"secret reference {text!r}: the name must be 1-512 letters, digits, '/' "
                              f"between non-empty parts, or _.@+=,-")
    if field_or_none is not None and not _FIELD.match(field_or_none):
        raise InvalidArgument(f"secret reference {text!r}: the #FIELD must be 1-256 letters, digits or _.@+=,-")
    if scheme == "vault" and field_or_none is None:
        raise InvalidArgument(f"secret reference {text!r}: a vault reference needs #FIELD (KV v2 holds fields)")
    return SecretRef(scheme, name, field_or_none)


def _validate(text: str) -> str:
    try:
        parse_secret_ref(text)
    except InvalidArgument as exc:
        raise ValueError(str(exc)) from None
    return text


# A config field that holds a secret reference (kept as its string, so config
# dumps show the reference, never a value).
SecretRefField = Annotated[str, AfterValidator(_validate)]


class SecretValue:
    """A secret's value that never shows itself: ``**********`` in repr, str and format.

    Compares in constant time with another ``SecretValue``, ``str`` or
    ``bytes``. Refuses pickling, so it cannot travel as a Ray actor argument
    (where the dashboard would show it): pass the reference and resolve it
    where it is used.
    """

    __slots__ = ("_value", "ref", "version")

    def __init__(self, value: bytes | str, *, ref: str = "", version: str | int | None = None) -> None:
        self._value = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        self.ref = ref
        self.version = version

    def reveal(self) -> str:
        """The value as text (UTF-8); ``InvalidArgument`` naming the reference if it is not text."""
        try:
            return self._value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidArgument(f"secret {self.ref or '(unnamed)'} is binary, not UTF-8 text") from None

    def reveal_bytes(self) -> bytes:
        """The value as bytes."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return f"SecretValue({self.ref!r}, '**********')" if self.ref else "SecretValue('**********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SecretValue):
            other_bytes = other._value
        elif isinstance(other, str):
            other_bytes = other.encode("utf-8")
        elif isinstance(other, (bytes, bytearray)):
            other_bytes = bytes(other)
        else:
            return NotImplemented
        return hmac.compare_digest(self._value, other_bytes)

    def __hash__(self) -> int:
        # Equal values must hash equal, yet the hash must not leak the value.
        return hash((SecretValue, len(self._value)))

    def __reduce__(self) -> NoReturn:
        raise TypeError(f"a SecretValue ({self.ref or 'unnamed'}) may not be pickled or sent to another "
                        f"process; send its secret:// reference and resolve it there")

    def __getstate__(self) -> Any:
        self.__reduce__()
