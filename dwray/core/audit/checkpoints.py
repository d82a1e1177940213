"""Signed checkpoints of the audit log: (log id, tree size, root hash, time), signed with Ed25519.

A checkpoint is what makes the Merkle root worth something: whoever can write
the data dir can recompute any root, but cannot sign one, because the signing
key lives with the master key (``$XDG_CONFIG_HOME/dwray/audit-signing.key`` by
default), never in the data dir. The key file holds a 32-byte Ed25519 seed in
the master key file's format, so it is created race-safe and 0600 by the same
helper and refused when others may read it.

The signed bytes are a fixed prefix (so a signature made for anything else
never passes for a checkpoint) and the checkpoint's canonical JSON.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dwray.errors import ConfigError
from dwray.secrets.key_file import create_key_file, fsync_dir, make_private_dir, read_key_file

__all__ = ["Checkpoint", "CheckpointSigner", "SignedCheckpoint", "read_checkpoint_copies", "write_checkpoint_copy"]

_DOMAIN = b"dwray audit checkpoint v1\n"
_COPY_PREFIX = "checkpoint-"
# Copies kept in the copy folder: the newest is what catches a rollback; a few older ones help a reader.
KEEP_COPIES = 32


def canonical_json(value: Any) -> str:
    """The one spelling of ``value``: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


@dataclass(frozen=True)
class Checkpoint:
    """The log ``log_id`` had ``size`` entries with Merkle root ``root`` at ``time``."""

    log_id: str
    size: int
    root: bytes
    time: float

    def body(self) -> str:
        return canonical_json({"log": self.log_id, "root": self.root.hex(), "size": self.size,
                               "time": round(self.time, 6)})


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint, its Ed25519 signature, and the id of the key that made it."""

    checkpoint: Checkpoint
    signature: bytes
    key_id: str

    def to_json(self) -> str:
        return canonical_json({"checkpoint": json.loads(self.checkpoint.body()),
                               "signature": self.signature.hex(), "key_id": self.key_id})

    @classmethod
    def from_json(cls, text: str) -> SignedCheckpoint:
        """Parse one; ``ValueError`` names what is malformed."""
        try:
            data = json.loads(text)
            body = data["checkpoint"]
            checkpoint = Checkpoint(str(body["log"]), int(body["size"]), bytes.fromhex(body["root"]),
                                    float(body["time"]))
            return cls(checkpoint, bytes.fromhex(data["signature"]), str(data["key_id"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed checkpoint: {exc!r}") from None

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, _DOMAIN + self.checkpoint.body().encode())
        except InvalidSignature:
            return False
        return True


def key_id(public_key: Ed25519PublicKey) -> str:
    return hashlib.sha256(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


class CheckpointSigner:
    """Signs checkpoints with the Ed25519 key in ``path`` (created 0600 on first use when ``create``)."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        ref = f"audit signing key {path}"
        if not path.exists() and not create:
            raise ConfigError(f"[audit] signing_key: {path} does not exist (the audit log's writer creates it)")
        seed = create_key_file(path, ref) if not path.exists() else read_key_file(path, ref)
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key()
        self.key_id = key_id(self.public_key)

    def __repr__(self) -> str:
        return f"CheckpointSigner(key_id={self.key_id!r})"

    def sign(self, checkpoint: Checkpoint) -> SignedCheckpoint:
        return SignedCheckpoint(checkpoint, self._key.sign(_DOMAIN + checkpoint.body().encode()), self.key_id)


def write_checkpoint_copy(folder: Path, signed: SignedCheckpoint) -> Path:
    """Write ``signed`` into ``folder`` durably (temp file, fsync, rename, fsync folder); keep the newest few."""
    make_private_dir(folder)
    path = folder / f"{_COPY_PREFIX}{signed.checkpoint.size:016d}.json"
    temp = folder / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(signed.to_json() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
        fsync_dir(folder)
    finally:
        temp.unlink(missing_ok=True)
    for old in sorted(folder.glob(f"{_COPY_PREFIX}*.json"))[:-KEEP_COPIES]:
        old.unlink(missing_ok=True)
    return path


def read_checkpoint_copies(folder: Path) -> list[tuple[Path, SignedCheckpoint | None]]:
    """Every checkpoint copy in ``folder`` (oldest first); ``None`` for a file that does not parse."""
    found: list[tuple[Path, SignedCheckpoint | None]] = []
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob(f"{_COPY_PREFIX}*.json")):
        try:
            found.append((path, SignedCheckpoint.from_json(path.read_text())))
        except (OSError, ValueError):
            found.append((path, None))
    return found
