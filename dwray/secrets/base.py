"""The secret manager contract.

A secret manager keeps named secrets, each a value in one or more versions.
Like the storage backends it is an abstract base class with a small required
core and the rest derived:

required
    ``get(name, field, version)``   the value (current, or a given version) as a ``SecretValue``
    ``versions(name)``              the versions kept, oldest first, the current one marked
    ``list(prefix)``                names that start with ``prefix``, sorted
writable managers also
    ``put(name, value, cas)``       store a new version; returns its id
    ``delete(name)``                remove the secret and every version
derived (override where a manager does it better)
    ``current_version``, ``previous_version``, ``rotate``, ``close``

Values are ``str``, ``bytes`` or a ``dict`` of text fields (stored as
canonical JSON). ``#FIELD`` in a reference selects one field of a JSON object
value: ``get(name, field="password")``.

Check-and-set: ``put(name, value, cas=V)`` writes only if the current version
is ``V`` (``cas=ABSENT``: only if the secret does not exist yet) and raises
``SecretConflict`` otherwise, so two writers cannot overwrite each other
unnoticed. ``cas=None`` writes unconditionally.

Version ids are strings (``"3"`` in the local store and Vault, a UUID in AWS;
a keyed fingerprint of the value for ``env`` and ``file``, which keep no
history but let a watcher see a change).

Errors: ``SecretNotFound`` (no such secret, version or field),
``SecretConflict`` (a check-and-set lost), ``SecretUnavailable`` (the manager
cannot be reached, refused access, or its store cannot be opened) and
``InvalidArgument`` (bad names or values, a write to a read-only manager).
None of them ever carries a value: they name the reference and the reason.

``dwray.testing.secret_conformance`` holds the tests every manager passes.
"""
from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from dwray.errors import InvalidArgument, SecretNotFound
from dwray.secret_ref import SecretValue, parse_secret_ref

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = [
    "ABSENT",
    "SecretManager",
    "SecretVersion",
    "SecretInput",
    "UnversionedSecretManager",
    "encode_value",
    "fingerprint",
    "ref_text",
    "select_field",
]

#: ``cas=ABSENT``: write only if the secret does not exist yet
ABSENT = "0"

SecretInput = str | bytes | Mapping[str, str]

# Fingerprints of env and file values are keyed per process: they tell a
# watcher that a value changed without being a hash anyone could brute-force.
_FINGERPRINT_KEY = os.urandom(32)


@dataclass(frozen=True)
class SecretVersion:
    """One kept version of a secret: its id, when it was made (Unix time, where known) and whether it is current."""

    version: str
    created: float | None = None
    current: bool = False


def ref_text(scheme: str, name: str, field: str | None = None) -> str:
    """The reference naming ``name`` (and ``field``) in manager ``scheme``: what errors show."""
    return f"secret://{scheme}/{name}" + (f"#{field}" if field else "")


def fingerprint(value: bytes) -> str:
    """A version id for managers without versions: an HMAC of the value under a per-process key."""
    return hmac.new(_FINGERPRINT_KEY, value, hashlib.sha256).hexdigest()[:16]


def encode_value(value: SecretInput, ref: str) -> bytes:
    """The bytes a manager stores for ``value``; a dict becomes canonical JSON of text fields.

    ``InvalidArgument`` names the reference and what is wrong, never the value.
    """
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise InvalidArgument(f"secret {ref}: field names must be non-empty strings")
            if not isinstance(item, str):
                raise InvalidArgument(f"secret {ref}: field {key!r} must be text, not {type(item).__name__}")
        return json.dumps(dict(value), sort_keys=True, separators=(",", ":")).encode("utf-8")
    raise InvalidArgument(f"secret {ref}: a value is str, bytes or a dict of text fields, "
                          f"not {type(value).__name__}")


def select_field(raw: bytes, field: str, ref: str) -> bytes:
    """Field ``field`` of a JSON-object value; ``SecretNotFound`` (value never quoted) when there is none."""
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        document = None
    if not isinstance(document, dict):
        raise SecretNotFound(ref, "its value is not a JSON object, so it has no fields")
    if field not in document:
        raise SecretNotFound(ref, f"it has no field {field!r}")
    item = document[field]
    return item.encode("utf-8") if isinstance(item, str) else json.dumps(item).encode("utf-8")


class SecretManager(ABC):
    """Keeps named, versioned secrets. See the module docstring for the contract."""

    #: the reference scheme this manager serves (``secret://<scheme>/...``)
    scheme: ClassVar[str] = ""
    #: values are set outside dwray (env, file): ``put``, ``delete`` and ``rotate`` refuse
    read_only: ClassVar[bool] = False
    #: earlier versions stay readable after a write (for the rotation grace period)
    keeps_versions: ClassVar[bool] = True
    #: how many of the latest versions the manager surely keeps readable (AWS: current and previous)
    min_versions_kept: ClassVar[int] = 10
    #: values may be arbitrary bytes (otherwise UTF-8 text only)
    binary: ClassVar[bool] = True
    #: reading is cheap and local: resolvers read it fresh every time instead of caching
    always_fresh: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: DwrayConfig) -> Self:
        """The manager as ``config`` describes it (``[secrets.<scheme>]``)."""
        return cls()

    # -- required ---------------------------------------------------------------

    @abstractmethod
    def get(self, name: str, field: str | None = None, version: str | None = None) -> SecretValue:
        """The value of ``name`` (its ``field``), current or at ``version``; ``SecretNotFound`` if missing."""

    @abstractmethod
    def versions(self, name: str) -> builtins.list[SecretVersion]:
        """The versions kept of ``name``, oldest first, the current one marked; ``SecretNotFound`` if missing."""

    @abstractmethod
    def list(self, prefix: str = "") -> builtins.list[str]:
        """Names of the secrets that start with ``prefix``, sorted."""

    def put(self, name: str, value: SecretInput, cas: str | None = None) -> str:
        """Store ``value`` as the new current version of ``name``; return the version id.

        ``cas``: the version the caller expects to replace (``ABSENT``: none);
        ``SecretConflict`` if the current version is another.
        """
        raise self._read_only("store")

    def delete(self, name: str) -> None:
        """Remove ``name`` and every version of it; ``SecretNotFound`` if there is none."""
        raise self._read_only("delete")

    # -- derived ------------------------------------------------------------------

    def current_version(self, name: str) -> str:
        """The id of the current version of ``name``."""
        for kept in reversed(self.versions(name)):
            if kept.current:
                return kept.version
        raise SecretNotFound(self.ref(name), "no version of it is current")

    def previous_version(self, name: str) -> SecretVersion | None:
        """The version that was current before the current one, if it is kept."""
        kept = self.versions(name)
        for index, entry in enumerate(kept):
            if entry.current:
                return kept[index - 1] if index > 0 else None
        return None

    def rotate(self, name: str, value: SecretInput) -> str:
        """A new current version of an existing secret; the previous one stays readable. Returns the new id.

        Written with check-and-set against the version it replaces, so a
        rotation racing another write fails with ``SecretConflict``.
        """
        if self.read_only:
            raise self._read_only("rotate")
        return self.put(name, value, cas=self.current_version(name))

    def close(self) -> None:
        """Release connections and files. The default holds none."""

    # -- helpers for implementations ------------------------------------------------

    def ref(self, name: str, field: str | None = None) -> str:
        return ref_text(self.scheme, name, field)

    def check_name(self, name: str, field: str | None = None) -> str:
        """``name`` if it is a valid secret name for this manager, else ``InvalidArgument``."""
        if not isinstance(name, str):
            raise InvalidArgument(f"a secret name is a str, not {type(name).__name__}")
        parse_secret_ref(self.ref(name, field))
        return name

    def value(self, raw: bytes, name: str, field: str | None, version: str | None) -> SecretValue:
        """The ``SecretValue`` of ``raw`` (or of its ``field``), labelled with its reference and version."""
        if field is not None:
            raw = select_field(raw, field, self.ref(name, field))
        return SecretValue(raw, ref=self.ref(name, field), version=version)

    def _read_only(self, action: str) -> InvalidArgument:
        return InvalidArgument(f"cannot {action} secrets through the {self.scheme!r} secret manager: it is "
                               f"read-only (its values are set outside dwray)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class UnversionedSecretManager(SecretManager):
    """A read-only manager whose source keeps no history (the environment, a file).

    Its one version is a keyed fingerprint of the current value, so a watcher
    sees a change without the version revealing anything. Subclasses provide
    ``_raw(name)`` and say in ``history`` what keeps no earlier versions.
    """

    read_only = True
    keeps_versions = False
    min_versions_kept = 1
    always_fresh = True
    history: ClassVar[str] = "the source"

    @abstractmethod
    def _raw(self, name: str) -> bytes:
        """The current value of ``name``; ``SecretNotFound``/``SecretUnavailable`` when there is none."""

    def get(self, name: str, field: str | None = None, version: str | None = None) -> SecretValue:
        self.check_name(name, field)
        raw = self._raw(name)
        current = fingerprint(raw)
        if version is not None and version != current:
            raise SecretNotFound(self.ref(name), f"version {version!r}: {self.history} keeps no earlier versions")
        return self.value(raw, name, field, current)

    def versions(self, name: str) -> builtins.list[SecretVersion]:
        return [SecretVersion(fingerprint(self._raw(name)), None, True)]

    def current_version(self, name: str) -> str:
        return fingerprint(self._raw(name))
