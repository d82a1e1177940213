"""A local keyring of key-encryption keys (KEKs) that wrap objects' data keys.

Each KEK id (one per tenant, e.g. ``"tenant:default"``) has numbered versions
1, 2, ...; the *primary* version wraps new data keys and versions below the
*minimum* may no longer unwrap. The keyring is one JSON file::

    {"format": 1,
     "keks": {"tenant:default": {"primary": 2, "minimum": 1,
                                 "versions": {"1": "<base64>", "2": "<base64>"}}}}

Why a local file: dwray must encrypt from its first run with no external
service to configure. The file is 0600 and written atomically; moving KEK
material into Vault or a KMS (keys that never leave it) is the planned
successor; every key service keeps the ``KeyService`` contract (dwray.core.contracts).

A wrapped DEK is ``nonce (12 bytes) || AES-256-GCM(KEK, DEK)`` with the KEK id
and version bound as AAD, so it cannot be unwrapped under any other key.
"""
from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dwray.errors import (
    IntegrityError,
    InvalidArgument,
    KeyNotFound,
    KeyRetired,
    KeyringError,
)

__all__ = ["LocalKeyring"]

_FILE_FORMAT = 1
_WRAP_TAG = b"dwray-kek-wrap-v1"
_NONCE_SIZE = 12
_DEK_SIZE = 32
_KEK_SIZE = 32
_WRAPPED_SIZE = _NONCE_SIZE + _DEK_SIZE + 16


class _Kek:
    """One KEK id's versions. Key material lives only here, as bytes."""

    __slots__ = ("minimum", "primary", "versions")

    def __init__(self, versions: dict[int, bytes], primary: int, minimum: int) -> None:
        self.versions = versions
        self.primary = primary
        self.minimum = minimum


class LocalKeyring:
    """KEKs kept in a 0600 JSON file. Thread-safe; processes may share the file.

    Every call first re-reads the file if another writer replaced it (a cheap
    ``stat``), and every change is a read-modify-write under an exclusive
    ``flock`` on ``<file>.lock``, so concurrent processes never lose a version.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.RLock()
        self._keks: dict[str, _Kek] = {}
        self._seen: tuple[int, ...] | None = None
        with self._mutex:
            self._refresh()

    # Public API ------------------------------------------------------------

    def ensure(self, kek_id: str) -> int:
        """Create version 1 of ``kek_id`` if it has none; return its primary version."""
        _check_kek_id(kek_id)
        with self._mutex:
            self._refresh()
            if kek_id in self._keks:
                return self._keks[kek_id].primary
            with self._exclusive():
                if kek_id not in self._keks:
                    self._store(kek_id, _Kek({1: AESGCM.generate_key(bit_length=256)}, 1, 1))
                return self._keks[kek_id].primary

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        """Wrap ``dek`` under the primary version; return ``(version, wrapped)``."""
        if len(dek) != _DEK_SIZE:
            raise InvalidArgument(f"a DEK must be {_DEK_SIZE} bytes, not {len(dek)}")
        with self._mutex:
            self._refresh()
            kek = self._get(kek_id)
            version, key = kek.primary, kek.versions[kek.primary]
        nonce = os.urandom(_NONCE_SIZE)
        return version, nonce + AESGCM(key).encrypt(nonce, bytes(dek), _wrap_aad(kek_id, version))

    def unwrap(self, kek_id: str, version: int, wrapped: bytes) -> bytes:
        """Recover a DEK wrapped under ``kek_id`` ``version``.

        Raises ``KeyNotFound`` if that version is absent, ``KeyRetired`` if it is
        below the minimum, ``IntegrityError`` if ``wrapped`` was altered.
        """
        with self._mutex:
            self._refresh()
            kek = self._get(kek_id)
            key = kek.versions.get(version)
            if key is None:
                raise KeyNotFound(kek_id, version)
            if version < kek.minimum:
                raise KeyRetired(kek_id, version, kek.minimum)
        what = f"DEK wrapped under {kek_id!r} version {version}"
        if len(wrapped) != _WRAPPED_SIZE:
            raise IntegrityError(what, f"wrapped DEK is {len(wrapped)} bytes, expected {_WRAPPED_SIZE}")
        view = memoryview(wrapped)
        try:
            return AESGCM(key).decrypt(view[:_NONCE_SIZE], view[_NONCE_SIZE:], _wrap_aad(kek_id, version))
        except InvalidTag:
            raise IntegrityError(what, "authentication failed (tampered or wrapped under another key)") from None

    def rotate(self, kek_id: str) -> int:
        """Add a new version of ``kek_id``, make it primary and return it."""
        _check_kek_id(kek_id)
        with self._mutex, self._exclusive():
            kek = self._get(kek_id)
            version = max(kek.versions) + 1
            versions = {**kek.versions, version: AESGCM.generate_key(bit_length=256)}
            self._store(kek_id, _Kek(versions, version, kek.minimum))
            return version

    def retire_below(self, kek_id: str, minimum: int) -> None:
        """Set the minimum version that may still unwrap (1..primary).

        Versions below it raise ``KeyRetired``; their material is kept, so the
        minimum may be lowered again to recover from a mistake.
        """
        with self._mutex, self._exclusive():
            kek = self._get(kek_id)
            if not isinstance(minimum, int) or not 1 <= minimum <= kek.primary:
                raise InvalidArgument(
                    f"minimum version for {kek_id!r} must be 1..{kek.primary} (the primary), not {minimum}"
                )
            self._store(kek_id, _Kek(kek.versions, kek.primary, minimum))

    def describe(self, kek_id: str) -> dict[str, Any]:
        """Versions, primary and minimum of ``kek_id``; never key material."""
        with self._mutex:
            self._refresh()
            kek = self._get(kek_id)
            return {
                "kek_id": kek_id,
                "versions": sorted(kek.versions),
                "primary": kek.primary,
                "minimum": kek.minimum,
            }

    def kek_ids(self) -> list[str]:
        """Every KEK id in the keyring, sorted."""
        with self._mutex:
            self._refresh()
            return sorted(self._keks)

    def __repr__(self) -> str:
        return f"LocalKeyring({str(self.path)!r})"

    # Storage ---------------------------------------------------------------

    def _get(self, kek_id: str) -> _Kek:
        kek = self._keks.get(kek_id)
        if kek is None:
            raise KeyNotFound(kek_id, "any")
        return kek

    def _exclusive(self) -> _FileLock:
        """Hold the cross-process lock and re-read the file under it."""
        return _FileLock(self)

    def _refresh(self) -> None:
        """Re-read the file if it was replaced since we last read it."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            # Never read, or deleted under us: keep the keys we hold, so that a
            # later write restores them rather than orphaning wrapped DEKs.
            return
        if _identity(st) == self._seen:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            st = os.fstat(fd)
            _check_private(self.path, st)
            with os.fdopen(fd, "rb", closefd=False) as src:
                raw = src.read()
        finally:
            os.close(fd)
        self._keks = _parse(self.path, raw)
        self._seen = _identity(st)

    def _store(self, kek_id: str, kek: _Kek) -> None:
        """Write the keyring with ``kek`` in place, then adopt it.

        Memory changes only after the file is durable, so a failed write never
        leaves a key in use that the file does not hold.
        """
        keks = {**self._keks, kek_id: kek}
        try:
            self._write(keks)
        except OSError as exc:
            raise KeyringError(f"could not write keyring {self.path}: {exc.strerror or exc}") from exc
        self._keks = keks

    def _write(self, keks: dict[str, _Kek]) -> None:
        """Write the keyring atomically: temp file, fsync, rename, fsync dir."""
        body = json.dumps(
            {
                "format": _FILE_FORMAT,
                "keks": {
                    kek_id: {
                        "primary": kek.primary,
                        "minimum": kek.minimum,
                        "versions": {str(v): base64.b64encode(k).decode("ascii") for v, k in kek.versions.items()},
                    }
                    for kek_id, kek in sorted(keks.items())
                },
            },
            indent=1,
        ).encode("utf-8")
        # Writers hold the file lock, so a temp file found now was left by a
        # writer that died: remove it (it holds key material) before writing.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            stale.unlink(missing_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            try:
                view = memoryview(body)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temp, self.path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        self._seen = _identity(os.stat(self.path))


class _FileLock:
    """``flock`` on the keyring's lock file; re-reads the keyring once held."""

    def __init__(self, keyring: LocalKeyring) -> None:
        self._keyring = keyring
        self._fd = -1

    def __enter__(self) -> None:
        _make_private_dir(self._keyring.path.parent)
        self._fd = os.open(self._keyring._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._keyring._refresh()
        except BaseException:
            os.close(self._fd)
            raise

    def __exit__(self, *exc: object) -> None:
        # Closing the descriptor releases the flock.
        os.close(self._fd)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when the file is replaced or its mode loosened."""
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)


def _check_kek_id(kek_id: str) -> None:
    if not isinstance(kek_id, str) or not kek_id or len(kek_id) > 256:
        raise InvalidArgument(f"a KEK id must be a non-empty str of at most 256 characters, not {kek_id!r}")


def _wrap_aad(kek_id: str, version: int) -> bytes:
    encoded = kek_id.encode("utf-8")
    return _WRAP_TAG + struct.pack(">I", len(encoded)) + encoded + struct.pack(">Q", version)


def _check_private(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyringError(f"keyring {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyringError(
            f"keyring {path} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}"
        )


def _parse(path: Path, raw: bytes) -> dict[str, _Kek]:
    """Decode the keyring file; any malformation is a ``KeyringError`` naming the path."""
    try:
        doc = json.loads(raw)
        if doc.get("format") != _FILE_FORMAT:
            raise KeyringError(f"keyring {path} has unsupported format {doc.get('format')!r}")
        keks = {}
        for kek_id, entry in doc["keks"].items():
            versions = {int(v): base64.b64decode(k, validate=True) for v, k in entry["versions"].items()}
            primary, minimum = int(entry["primary"]), int(entry["minimum"])
            if primary not in versions or not 1 <= minimum <= primary:
                raise KeyringError(f"keyring {path}: {kek_id!r} has inconsistent primary/minimum versions")
            if any(len(k) != _KEK_SIZE for k in versions.values()):
                raise KeyringError(f"keyring {path}: {kek_id!r} holds a key that is not {_KEK_SIZE} bytes")
            keks[kek_id] = _Kek(versions, primary, minimum)
        return keks
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        # The exception text could quote file contents, i.e. key material.
        raise KeyringError(f"keyring {path} is malformed ({type(exc).__name__})") from None


def _make_private_dir(folder: Path) -> None:
    """Create missing parent folders as 0700; leave existing ones alone."""
    if folder.is_dir():
        return
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, 0o700)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
