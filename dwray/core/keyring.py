"""The local keyring: key-encryption keys (KEKs), kept only sealed under a master key.

Each KEK id (one per tenant, e.g. ``"tenant:default"``) has numbered versions
1, 2, ...; the *primary* version wraps new data keys (DEKs) and versions below
the *minimum* may no longer unwrap. The keyring is one JSON file in the data
dir (``keys/keyring.json``, 0600 in a 0700 folder), the format
``dwray.core.keyring_file`` describes: every KEK sealed under the master key
(``dwray.core.master_key``), which never lives in the data dir, so a copy of
the data dir, a disk image or a backup decrypts nothing on its own.

A keyring from before the sealing (format 1, KEKs in base64) is sealed in
place the first time it is opened: written to a temp file, fsynced, renamed
over the old file and the folder fsynced, so a crash at any point leaves
either the old plaintext file or the sealed one, both readable; temp files of
writers that died are removed, so no plaintext copy stays in the keys folder.
(Blocks the filesystem freed may still hold the old bytes: a disk image taken
before the migration is as exposed as it always was.)

DEKs are wrapped with AES-KWP (RFC 5649) under a key derived from the KEK
version with HKDF-SHA256 (info: purpose, KEK id, version), so a wrapped DEK
opens only under the KEK id and version it was wrapped for, and, KWP being
deterministic, there is no nonce and no limit on wraps per KEK version. DEKs
wrapped by earlier releases (``nonce || AES-256-GCM``, 60 bytes, KEK id and
version as AAD) still unwrap; ``rewrap`` moves them to KWP.

``destroy`` crypto-shreds a KEK id: every version's sealed material leaves the
file (rewritten atomically, stale temp files removed) and a tombstone stays,
so every later call for it raises ``KeyShredded`` and ``ensure`` refuses to
bring it back. The KEK is destroyed rather than the data because erasing data
is not something a filesystem can promise (copy-on-write, SSD wear levelling,
backups keep old blocks); 32 bytes of KEK, themselves only ever written
sealed, are the one thing whose loss makes every copy of the data unreadable.
"""
from __future__ import annotations

import fcntl
import os
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

from dwray.config import default_master_key_path
from dwray.core.keyring_file import SEALED_FORMAT, Kek, KeyringState, decode, encode, read_format
from dwray.core.master_key import load_master_key
from dwray.core.private_files import fsync_dir, make_private_dir
from dwray.errors import (
    IntegrityError,
    InvalidArgument,
    KeyNotFound,
    KeyRetired,
    KeyringError,
    KeyShredded,
    MasterKeyMissing,
)

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = ["LocalKeyring"]

_DEK_SIZE = 32
_KWP_WRAPPED_SIZE = _DEK_SIZE + 8
# Wrapped by releases before the sealed keyring: nonce (12) || AES-256-GCM(KEK, DEK) || tag (16).
_GCM_NONCE_SIZE = 12
_GCM_WRAPPED_SIZE = _GCM_NONCE_SIZE + _DEK_SIZE + 16
_GCM_AAD_TAG = b"dwray-kek-wrap-v1"


class LocalKeyring:
    """KEKs sealed in a 0600 JSON file. Thread-safe; processes may share the file.

    ``master_ref`` names the master key (a ``secret://`` reference; default:
    the key file ``$XDG_CONFIG_HOME/dwray/master.key``). ``create_master``
    makes that key file on first start; it is never made while a sealed
    keyring exists, since a new key could not open it. A missing or wrong
    master key is ``MasterKeyMissing``, raised here, at open.

    Every call first re-reads the file if another writer replaced it (a cheap
    ``stat``), and every change is a read-modify-write under an exclusive
    ``flock`` on ``<file>.lock``, so concurrent processes never lose a version.
    """

    def __init__(self, path: Path, master_ref: str | None = None, create_master: bool = True, *,
                 config: DwrayConfig | None = None) -> None:
        self.path = Path(path)
        self.master_ref = master_ref or f"secret://file/{default_master_key_path()}"
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._mutex = threading.RLock()
        self._state = KeyringState()
        self._seen: tuple[int, ...] | None = None
        self._on_disk_format: int | None = None
        sealed_exists = _peek_format(self.path) == SEALED_FORMAT
        try:
            self._master = load_master_key(self.master_ref, create=create_master and not sealed_exists,
                                           config=config)
        except MasterKeyMissing as exc:
            if not sealed_exists:
                raise
            raise MasterKeyMissing(exc.source, f"{exc.reason}; the keyring {self.path} is sealed under it: restore "
                                               f"the key from your backup, or name it with [keys] master "
                                               f"(DWRAY_KEYS__MASTER)") from None
        with self._mutex:
            if self.path.parent.is_dir():
                # Seal a plaintext keyring, and remove temp files a dead writer left (they
                # may hold KEKs in an older format).
                with self._exclusive():
                    _remove_stale_temps(self.path)
                    if self._on_disk_format is not None and self._on_disk_format != SEALED_FORMAT:
                        self._commit(self._state)
            else:
                self._refresh()

    # Public API ------------------------------------------------------------

    def ensure(self, kek_id: str) -> int:
        """Create version 1 of ``kek_id`` if it has none; return its primary version.

        ``KeyShredded`` if ``kek_id`` was destroyed: it is never recreated
        silently (a new tenant of the same name needs a KEK id of its own).
        """
        _check_kek_id(kek_id)
        with self._mutex:
            self._refresh()
            if kek_id in self._state.keks:
                return self._state.keks[kek_id].primary
            with self._exclusive():
                if kek_id in self._state.shredded:
                    raise KeyShredded(kek_id)
                if kek_id not in self._state.keks:
                    self._commit(self._state.with_kek(kek_id, Kek({1: AESGCM.generate_key(bit_length=256)}, 1, 1)))
                return self._state.keks[kek_id].primary

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        """Wrap ``dek`` under the primary version with AES-KWP; return ``(version, wrapped)``."""
        if len(dek) != _DEK_SIZE:
            raise InvalidArgument(f"a DEK must be {_DEK_SIZE} bytes, not {len(dek)}")
        with self._mutex:
            self._refresh()
            kek = self._get(kek_id)
            version = kek.primary
            key = kek.wrapping_key(kek_id, version)
        return version, aes_key_wrap_with_padding(key, bytes(dek))

    def unwrap(self, kek_id: str, version: int, wrapped: bytes) -> bytes:
        """Recover a DEK wrapped under ``kek_id`` ``version``.

        Raises ``KeyNotFound`` if that version is absent, ``KeyRetired`` if it is
        below the minimum, ``KeyShredded`` if the KEK was destroyed,
        ``IntegrityError`` if ``wrapped`` was altered.
        """
        with self._mutex:
            self._refresh()
            kek = self._get(kek_id)
            material = kek.versions.get(version)
            if material is None:
                raise KeyNotFound(kek_id, version)
            if version < kek.minimum:
                raise KeyRetired(kek_id, version, kek.minimum)
            key = kek.wrapping_key(kek_id, version)
        what = f"DEK wrapped under {kek_id!r} version {version}"
        if len(wrapped) == _KWP_WRAPPED_SIZE:
            try:
                return aes_key_unwrap_with_padding(key, bytes(wrapped))
            except InvalidUnwrap:
                raise IntegrityError(what, "authentication failed (tampered or wrapped under another key)") from None
        if len(wrapped) == _GCM_WRAPPED_SIZE:
            view = memoryview(wrapped)
            try:
                return AESGCM(material).decrypt(view[:_GCM_NONCE_SIZE], view[_GCM_NONCE_SIZE:],
                                                _gcm_aad(kek_id, version))
            except InvalidTag:
                raise IntegrityError(what, "authentication failed (tampered or wrapped under another key)") from None
        raise IntegrityError(what, f"wrapped DEK is {len(wrapped)} bytes, expected {_KWP_WRAPPED_SIZE} "
                                   f"(or {_GCM_WRAPPED_SIZE} from an earlier release)")

    def rewrap(self, kek_id: str, version: int, wrapped: bytes) -> tuple[int, bytes]:
        """Re-wrap a DEK wrapped under ``version`` under the primary version; return ``(primary, wrapped)``.

        The DEK is unwrapped and wrapped again here: it never leaves the keyring.
        """
        return self.wrap(kek_id, self.unwrap(kek_id, version, wrapped))

    def rotate(self, kek_id: str) -> int:
        """Add a new version of ``kek_id``, make it primary and return it."""
        _check_kek_id(kek_id)
        with self._mutex, self._exclusive():
            kek = self._get(kek_id)
            version = max(kek.versions) + 1
            versions = {**kek.versions, version: AESGCM.generate_key(bit_length=256)}
            self._commit(self._state.with_kek(kek_id, Kek(versions, version, kek.minimum)))
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
            self._commit(self._state.with_kek(kek_id, Kek(kek.versions, kek.primary, minimum)))

    def destroy(self, kek_id: str) -> None:
        """Crypto-shred ``kek_id``: remove every version's material for good and leave a tombstone.

        Later calls for it raise ``KeyShredded``. Destroying an unknown id
        leaves a tombstone too (the id is dead either way); destroying a
        destroyed one changes nothing.
        """
        _check_kek_id(kek_id)
        with self._mutex, self._exclusive():
            if kek_id in self._state.shredded:
                return
            self._commit(self._state.without_kek(kek_id))

    def describe(self, kek_id: str) -> dict[str, Any]:
        """Versions, primary and minimum of ``kek_id``, and whether it was shredded; never key material."""
        with self._mutex:
            self._refresh()
            if kek_id in self._state.shredded:
                return {"kek_id": kek_id, "versions": [], "primary": None, "minimum": None, "shredded": True}
            kek = self._get(kek_id)
            return {"kek_id": kek_id, "versions": sorted(kek.versions), "primary": kek.primary,
                    "minimum": kek.minimum, "shredded": False}

    def kek_ids(self) -> list[str]:
        """Every live KEK id in the keyring, sorted (shredded ones are not keys any more)."""
        with self._mutex:
            self._refresh()
            return sorted(self._state.keks)

    def __repr__(self) -> str:
        return f"LocalKeyring({str(self.path)!r})"

    # Storage ---------------------------------------------------------------

    def _get(self, kek_id: str) -> Kek:
        kek = self._state.keks.get(kek_id)
        if kek is None:
            if kek_id in self._state.shredded:
                raise KeyShredded(kek_id)
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
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            _check_private(self.path, st)
            with os.fdopen(fd, "rb", closefd=False) as src:
                raw = src.read()
        finally:
            os.close(fd)
        self._on_disk_format, self._state = decode(self.path, raw, self._master)
        self._seen = _identity(st)

    def _commit(self, state: KeyringState) -> None:
        """Write ``state`` sealed, then adopt it.

        Memory changes only after the file is durable, so a failed write never
        leaves a key in use that the file does not hold.
        """
        try:
            self._write(encode(state, self._master))
        except OSError as exc:
            raise KeyringError(f"could not write keyring {self.path}: {exc.strerror or exc}") from exc
        self._state = state
        self._on_disk_format = SEALED_FORMAT

    def _write(self, body: bytes) -> None:
        """Write the keyring atomically: temp file, fsync, rename, fsync dir."""
        # Writers hold the file lock, so a temp file found now was left by a
        # writer that died: remove it (it may hold key material) before writing.
        _remove_stale_temps(self.path)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
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
        fsync_dir(self.path.parent)
        self._seen = _identity(os.stat(self.path))


class _FileLock:
    """``flock`` on the keyring's lock file; re-reads the keyring once held."""

    def __init__(self, keyring: LocalKeyring) -> None:
        self._keyring = keyring
        self._fd = -1

    def __enter__(self) -> None:
        make_private_dir(self._keyring.path.parent)
        self._fd = os.open(self._keyring._lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(self._fd, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._keyring._refresh()
        except BaseException:
            os.close(self._fd)
            raise

    def __exit__(self, *exc: object) -> None:
        # Closing the descriptor releases the flock.
        os.close(self._fd)


def _peek_format(path: Path) -> int | None:
    """The format of the keyring file at ``path`` (``None``: absent or unreadable), read without keys."""
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    return read_format(raw)


def _remove_stale_temps(path: Path) -> None:
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    """What changes when the file is replaced or its mode loosened."""
    return (st.st_ino, st.st_mtime_ns, st.st_size, st.st_mode)


def _check_kek_id(kek_id: str) -> None:
    if not isinstance(kek_id, str) or not kek_id or len(kek_id) > 256:
        raise InvalidArgument(f"a KEK id must be a non-empty str of at most 256 characters, not {kek_id!r}")


def _gcm_aad(kek_id: str, version: int) -> bytes:
    encoded = kek_id.encode("utf-8")
    return _GCM_AAD_TAG + len(encoded).to_bytes(4, "big") + encoded + version.to_bytes(8, "big")


def _check_private(path: Path, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise KeyringError(f"keyring {path} is not a regular file")
    if st.st_mode & 0o077:
        raise KeyringError(
            f"keyring {path} is accessible to group or others (mode {stat.S_IMODE(st.st_mode):o}); "
            f"run: chmod 600 {path}"
        )

