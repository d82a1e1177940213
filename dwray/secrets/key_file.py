"""256-bit key files: reading them in any of the usual spellings, and creating one safely.

A key file holds 32 bytes of key material as the raw bytes, as 64 hex digits
or as base64 (what ``create_key_file`` writes, with a newline, so the file is
also a valid ``secret://file/`` value). Like every secret file it must be
private (0600): ``read_key_file`` refuses one that others may read.

``create_key_file`` is race-safe between processes: the key is written and
synced under a temporary name and then hard-linked into place, which fails
if the name exists, so a second creator never sees a half-written key; it
reads the winner's instead. Its folder is made 0700.

The master key file (``dwray.config.default_master_key_path``) is one of
these, and by default also the key the local secret store's data key is
wrapped under.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

from dwray.errors import SecretUnavailable
from dwray.secrets.file import read_secret_file

__all__ = ["KEY_BYTES", "create_key_file", "fsync_dir", "make_private_dir", "parse_key_material", "read_key_file"]

KEY_BYTES = 32


def parse_key_material(raw: bytes) -> bytes | None:
    """The 32 key bytes ``raw`` spells (raw, hex, or base64 in either alphabet, padded or not), else ``None``."""
    if len(raw) == KEY_BYTES:
        return bytes(raw)
    text = bytes(raw).strip()
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    if len(text) in (43, 44):  # base64 of 32 bytes, padded or not, standard or URL-safe alphabet
        padded = text.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(text) % 4)
        with contextlib.suppress(binascii.Error, ValueError):
            decoded = base64.b64decode(padded, validate=True)
            if len(decoded) == KEY_BYTES:
                return decoded
    return None


def read_key_file(path: Path, ref: str) -> bytes:
    """The 32-byte key in the private file ``path``; errors name ``ref`` and the path, never the contents."""
    key = parse_key_material(read_secret_file(path, ref))
    if key is None:
        raise SecretUnavailable(ref, f"{path} does not hold a 256-bit key (32 raw bytes, 64 hex digits "
                                     f"or base64 of 32 bytes)")
    return key


def make_private_dir(folder: Path) -> None:
    """Create ``folder`` and every missing parent 0700, whatever the umask.

    Folders that exist are left as they are: one may be shared (a configured
    path's parent), and changing it is for its owner (see
    ``dwray.core.private_files.tighten`` for the data dir's own).
    """
    missing = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, 0o700)


def fsync_dir(folder: Path) -> None:
    """Make a rename or link in ``folder`` durable."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def create_key_file(path: Path, ref: str) -> bytes:
    """Create ``path`` holding a new random 256-bit key (0600, folder 0700) unless it exists; return the key.

    Temp files of creators that died (their key was never published) are removed first.
    """
    make_private_dir(path.parent)
    _remove_dead_temps(path)
    key = secrets.token_bytes(KEY_BYTES)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(base64.b64encode(key) + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path, follow_symlinks=False)
        except FileExistsError:
            return read_key_file(path, ref)
        fsync_dir(path.parent)
        return key
    finally:
        temp.unlink(missing_ok=True)


def _remove_dead_temps(path: Path) -> None:
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
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
