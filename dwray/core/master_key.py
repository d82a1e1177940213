"""The master key: 256 bits that seal the local keyring, kept apart from the data dir.

Why apart: the keyring (``DATA_DIR/keys/keyring.json``) holds every KEK, so
whoever holds it and the blobs holds the data. With the KEKs sealed under a
key that lives elsewhere, a copy of the data dir, a disk image or a backup of
it decrypts nothing on its own.

Where it lives is a secret reference (``dwray.secret_ref``):

- ``secret://file/PATH``: a key file. The default is
  ``$XDG_CONFIG_HOME/dwray/master.key`` (``dwray.config.default_master_key_path``),
  which ``load_master_key(..., create=True)`` makes on first start: 32 random
  bytes in a 0600 file in a 0700 folder, published with ``link()`` from a
  fsynced temp file, so two processes starting at once agree on one key (the
  loser of the race reads the winner's) and a crash never leaves a half-written
  key behind;
- ``secret://env/NAME``: an environment variable (containers, orchestrators);
- any other reference (``local``, ``vault``, ``aws``) is resolved by
  ``dwray.secrets.resolve_secret``.

A key is 32 raw bytes, 64 hex digits or the base64 of 32 bytes (surrounding
whitespace allowed in the text forms); anything else is ``MasterKeyMissing``
naming the reference and what was wrong, never the content. The key is held
as a ``SecretValue``: it never shows in a repr, an error or a log, and refuses
to be pickled, so it cannot become a Ray actor argument (actors get the
reference and call this themselves).
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from dwray.core.private_files import fsync_dir, make_private_dir
from dwray.errors import DwrayError, InvalidArgument, MasterKeyMissing
from dwray.secret_ref import SecretValue, parse_secret_ref

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = ["MASTER_KEY_SIZE", "load_master_key", "parse_master_key"]

MASTER_KEY_SIZE = 32
_TEMP_SUFFIX = ".tmp"


def load_master_key(ref: str, *, create: bool = False, config: DwrayConfig | None = None) -> SecretValue:
    """The 32-byte master key that ``ref`` names.

    ``create``: for a ``secret://file/`` reference, make the file (0600, in a
    0700 folder) when it does not exist yet. ``MasterKeyMissing`` names the
    reference and the reason when the key is absent or malformed.
    """
    try:
        parsed = parse_secret_ref(ref)
    except InvalidArgument as exc:
        raise MasterKeyMissing("(not a secret reference)", str(exc)) from None
    if parsed.scheme == "file":
        raw = _read_key_file(ref, Path(parsed.name), create=create)
    elif parsed.scheme == "env":
        value = os.environ.get(parsed.name)
        if value is None:
            raise MasterKeyMissing(ref, f"the environment variable {parsed.name} is not set")
        raw = value.encode("utf-8", "surrogateescape")
    else:
        raw = _resolve_managed(ref, config)
    return SecretValue(parse_master_key(ref, raw), ref=ref)


def parse_master_key(source: str, raw: bytes) -> bytes:
    """32 key bytes from 32 raw bytes, 64 hex digits or base64 of 32 bytes; never echoes ``raw``."""
    if len(raw) == MASTER_KEY_SIZE:
        return bytes(raw)
    text = bytes(raw).strip()
    if len(text) == 2 * MASTER_KEY_SIZE:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    if len(text) in (43, 44):  # base64 of 32 bytes, padded or not, standard or URL-safe alphabet
        padded = text.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(text) % 4)
        with contextlib.suppress(binascii.Error, ValueError):
            key = base64.b64decode(padded, validate=True)
            if len(key) == MASTER_KEY_SIZE:
                return key
    raise MasterKeyMissing(source, f"it must hold {MASTER_KEY_SIZE} raw bytes, {2 * MASTER_KEY_SIZE} hex digits "
                                   f"or the base64 of {MASTER_KEY_SIZE} bytes, not {len(raw)} bytes of something else")


def _resolve_managed(ref: str, config: DwrayConfig | None) -> bytes:
    """A key held by a secret manager (local store, Vault, AWS), through ``dwray.secrets`` and ``config``'s
    ``[secrets]`` settings (the config file's when ``None``)."""
    from dwray.secrets import resolve_secret

    if config is None:  # in the KMS actor: this process's config file and DWRAY_* variables
        from dwray.config import load_config
        config = load_config()
    try:
        return resolve_secret(ref, config).reveal_bytes()
    except DwrayError as exc:
        raise MasterKeyMissing(ref, str(exc)) from None


def _read_key_file(ref: str, path: Path, *, create: bool) -> bytes:
    try:
        return _read_private(ref, path, strict=create)
    except FileNotFoundError:
        if not create:
            raise MasterKeyMissing(ref, f"the file {path} does not exist") from None
    try:
        _create_key_file(path)
    except OSError as exc:
        raise MasterKeyMissing(ref, f"could not create {path}: {exc.strerror or exc}") from None
    try:
        return _read_private(ref, path, strict=True)
    except FileNotFoundError:
        raise MasterKeyMissing(ref, f"the file {path} vanished right after it was created") from None


def _read_private(ref: str, path: Path, *, strict: bool) -> bytes:
    """Read the key file. ``strict`` (the file dwray makes itself): refuse one others may read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise MasterKeyMissing(ref, f"cannot open {path}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise MasterKeyMissing(ref, f"{path} is not a regular file")
        if strict and st.st_mode & 0o077:
            raise MasterKeyMissing(ref, f"{path} is accessible to group or others (mode "
                                        f"{stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}")
        if st.st_size > 4096:
            raise MasterKeyMissing(ref, f"{path} is {st.st_size} bytes, far too big for a key")
        with os.fdopen(fd, "rb", closefd=False) as src:
            return src.read(4097)
    finally:
        os.close(fd)


def _create_key_file(path: Path) -> None:
    """Publish 32 random bytes at ``path`` unless a key is already there.

    The key is written and fsynced under a temp name, then ``link()``ed to
    ``path``: link refuses to replace an existing name, so of two processes
    racing here exactly one key wins and both go on to read it, and ``path``
    only ever names a complete key. Temps of writers that died are removed.
    """
    folder = path.parent
    make_private_dir(folder)
    _remove_dead_temps(path)
    temp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, secrets.token_bytes(MASTER_KEY_SIZE))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another process won the race: its key stands
            os.link(temp, path, follow_symlinks=False)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(folder)


def _remove_dead_temps(path: Path) -> None:
    """Remove temp key files of processes that are gone (their key was never published)."""
    for temp in path.parent.glob(f".{path.name}.*{_TEMP_SUFFIX}"):
        pid = temp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            temp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
