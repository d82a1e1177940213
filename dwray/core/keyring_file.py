"""The keyring file's format: KEKs sealed under the master key, and the keys derived for each use.

Format 2 (sealed)::

    {"format": 2,
     "check": "<base64>",
     "keks": {"tenant:a": {"primary": 2, "minimum": 1,
                           "versions": {"1": "<base64 sealed KEK>", "2": "..."}},
              "tenant:gone": {"shredded": true}},
     "mac": "<base64>"}

Every key here comes from the 256-bit master key M through HKDF-SHA256 with
an ``info`` that names its use (M is uniformly random, so no salt is needed;
outputs for different ``info`` are independent keys):

- ``check``: HKDF(M, "check"), a key check value. Opening the file with
  another master key fails on it at once, as ``MasterKeyMissing``, instead of
  failing later on garbage. It tells nothing about M or the other keys.
- each KEK version is sealed with AES-KWP (RFC 5649, deterministic
  authenticated key wrapping: no nonce, so no limit on how often it is used)
  under HKDF(M, "seal" || KEK id || version). KWP takes no associated data;
  deriving the wrapping key from the id and version binds the sealed KEK to
  them instead: moved to another id or version, it fails to unseal.
- ``mac``: HMAC-SHA256 under HKDF(M, "mac") over the canonical JSON of the
  rest, so primaries, minimums and tombstones cannot be changed unnoticed.

Format 1 (before sealing) held the KEKs in base64; ``decode`` still reads it
so that the keyring can seal it in place.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from dwray.errors import KeyringError, MasterKeyMissing
from dwray.secret_ref import SecretValue

__all__ = ["PLAINTEXT_FORMAT", "SEALED_FORMAT", "Kek", "KeyringState", "decode", "encode", "read_format"]

PLAINTEXT_FORMAT = 1
SEALED_FORMAT = 2
KEK_SIZE = 32
_INFO = b"dwray/keyring/v2/"


class Kek:
    """One KEK id's versions. Key material lives only here, as bytes."""

    __slots__ = ("_wrapping", "minimum", "primary", "versions")

    def __init__(self, versions: dict[int, bytes], primary: int, minimum: int) -> None:
        self.versions = versions
        self.primary = primary
        self.minimum = minimum
        self._wrapping: dict[int, bytes] = {}

    def wrapping_key(self, kek_id: str, version: int) -> bytes:
        """The key that wraps DEKs under ``version``: HKDF(KEK version, "dek-wrap" || id || version).

        Derived rather than the KEK itself so that KWP, which takes no
        associated data, still binds each wrapped DEK to its KEK id and version.
        """
        key = self._wrapping.get(version)
        if key is None:
            key = self._wrapping[version] = _derive(self.versions[version], b"dek-wrap", kek_id, version)
        return key

    def __repr__(self) -> str:
        return f"Kek(versions={sorted(self.versions)}, primary={self.primary}, minimum={self.minimum})"


@dataclass(frozen=True)
class KeyringState:
    """What the file holds: the live KEKs and the ids shredded for good."""

    keks: dict[str, Kek] = field(default_factory=dict)
    shredded: frozenset[str] = frozenset()

    def with_kek(self, kek_id: str, kek: Kek) -> KeyringState:
        return KeyringState({**self.keks, kek_id: kek}, self.shredded)

    def without_kek(self, kek_id: str) -> KeyringState:
        """The state after shredding ``kek_id``: its material gone, a tombstone in its place."""
        return KeyringState({k: v for k, v in self.keks.items() if k != kek_id}, self.shredded | {kek_id})


def read_format(raw: bytes) -> int | None:
    """The format number of a keyring file's bytes; ``None`` if it is not a keyring at all. Needs no key."""
    try:
        found = json.loads(raw).get("format")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, int) else None


def encode(state: KeyringState, master: SecretValue) -> bytes:
    """The sealed (format 2) file for ``state``."""
    key = master.reveal_bytes()
    keks: dict[str, Any] = {kek_id: {"shredded": True} for kek_id in state.shredded}
    for kek_id, kek in state.keks.items():
        keks[kek_id] = {
            "primary": kek.primary,
            "minimum": kek.minimum,
            "versions": {str(v): _b64(aes_key_wrap_with_padding(_derive(key, b"seal", kek_id, v), material))
                         for v, material in sorted(kek.versions.items())},
        }
    doc: dict[str, Any] = {"format": SEALED_FORMAT, "check": _b64(_derive(key, b"check")),
                           "keks": dict(sorted(keks.items()))}
    doc["mac"] = _b64(_mac(key, doc))
    return json.dumps(doc, indent=1).encode("utf-8")


def decode(path: Path, raw: bytes, master: SecretValue) -> tuple[int, KeyringState]:
    """``(format, state)`` from the file's bytes. Malformed: ``KeyringError`` naming ``path``, never contents.

    Sealed under another master key: ``MasterKeyMissing``; altered: ``KeyringError``.
    """
    try:
        doc = json.loads(raw)
        found = doc.get("format")
        if found == PLAINTEXT_FORMAT:
            return found, _decode_plaintext(path, doc)
        if found == SEALED_FORMAT:
            return found, _decode_sealed(path, doc, master)
        raise KeyringError(f"keyring {path} has unsupported format {found!r}")
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        # The exception text could quote file contents, i.e. key material.
        raise KeyringError(f"keyring {path} is malformed ({type(exc).__name__})") from None


def _decode_sealed(path: Path, doc: dict[str, Any], master: SecretValue) -> KeyringState:
    key = master.reveal_bytes()
    if not hmac.compare_digest(_unb64(doc["check"]), _derive(key, b"check")):
        raise MasterKeyMissing(master.ref or "(unnamed)", f"this master key does not open the keyring {path} "
                                                          f"(it was sealed under another master key)")
    claimed = _unb64(doc.pop("mac"))
    if not hmac.compare_digest(claimed, _mac(key, doc)):
        raise KeyringError(f"keyring {path} was altered: its MAC does not match (restore it from a backup)")
    keks: dict[str, Kek] = {}
    shredded = set()
    for kek_id, entry in doc["keks"].items():
        if entry.get("shredded") is True:
            shredded.add(kek_id)
            continue
        versions = {}
        for v, sealed in entry["versions"].items():
            try:
                versions[int(v)] = aes_key_unwrap_with_padding(_derive(key, b"seal", kek_id, int(v)), _unb64(sealed))
            except InvalidUnwrap:
                raise KeyringError(f"keyring {path}: {kek_id!r} version {v} does not unseal (altered)") from None
        keks[kek_id] = _checked(path, kek_id, versions, entry)
    return KeyringState(keks, frozenset(shredded))


def _decode_plaintext(path: Path, doc: dict[str, Any]) -> KeyringState:
    keks = {}
    for kek_id, entry in doc["keks"].items():
        versions = {int(v): _unb64(k) for v, k in entry["versions"].items()}
        keks[kek_id] = _checked(path, kek_id, versions, entry)
    return KeyringState(keks)


def _checked(path: Path, kek_id: str, versions: dict[int, bytes], entry: dict[str, Any]) -> Kek:
    primary, minimum = int(entry["primary"]), int(entry["minimum"])
    if primary not in versions or not 1 <= minimum <= primary:
        raise KeyringError(f"keyring {path}: {kek_id!r} has inconsistent primary/minimum versions")
    if any(len(k) != KEK_SIZE for k in versions.values()):
        raise KeyringError(f"keyring {path}: {kek_id!r} holds a key that is not {KEK_SIZE} bytes")
    return Kek(versions, primary, minimum)


def _derive(key: bytes, purpose: bytes, kek_id: str | None = None, version: int | None = None) -> bytes:
    info = _INFO + purpose
    if kek_id is not None and version is not None:
        encoded = kek_id.encode("utf-8")
        info += b"\x00" + len(encoded).to_bytes(4, "big") + encoded + version.to_bytes(8, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


def _mac(key: bytes, doc: dict[str, Any]) -> bytes:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return hmac.new(_derive(key, b"mac"), canonical, hashlib.sha256).digest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
