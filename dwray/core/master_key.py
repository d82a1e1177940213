"""The master key: 256 bits that seal the local keyring, kept apart from the data dir.

Why apart: the keyring (``DATA_DIR/keys/keyring.json``) holds every KEK, so
whoever holds it and the blobs holds the data. With the KEKs sealed under a
key that lives elsewhere, a copy of the data dir, a disk image or a backup of
it decrypts nothing on its own.

Where it lives is a secret reference (``dwray.secret_ref``):

- ``secret://file/PATH``: a key file. The default is
  ``$XDG_CONFIG_HOME/dwray/master.key`` (``dwray.config.default_master_key_path``),
  which ``load_master_key(..., create=True)`` makes on first start
  (``dwray.secrets.key_file``): 32 random bytes, base64, in a 0600 file in a
  0700 folder, published with ``link()`` from a
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

import os
from pathlib import Path
from typing import TYPE_CHECKING

from dwray.errors import DwrayError, InvalidArgument, MasterKeyMissing, SecretError, SecretNotFound
from dwray.secret_ref import SecretValue, parse_secret_ref
from dwray.secrets.file import read_secret_file
from dwray.secrets.key_file import KEY_BYTES, create_key_file, parse_key_material

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = ["MASTER_KEY_SIZE", "load_master_key", "parse_master_key"]

MASTER_KEY_SIZE = KEY_BYTES


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
    key = parse_key_material(raw)
    if key is None:
        raise MasterKeyMissing(source, f"it must hold {MASTER_KEY_SIZE} raw bytes, {2 * MASTER_KEY_SIZE} hex "
                                       f"digits or the base64 of {MASTER_KEY_SIZE} bytes, not {len(raw)} bytes "
                                       f"of something else")
    return key


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
        raise MasterKeyMissing(ref, getattr(exc, "reason", str(exc))) from None


def _read_key_file(ref: str, path: Path, *, create: bool) -> bytes:
    """The key file's bytes; made first when ``create`` and absent (``dwray.secrets.key_file``)."""
    try:
        return read_secret_file(path, ref)
    except SecretNotFound:
        if not create:
            raise MasterKeyMissing(ref, f"the file {path} does not exist") from None
    except SecretError as exc:
        raise MasterKeyMissing(ref, getattr(exc, "reason", str(exc))) from None
    try:
        return create_key_file(path, ref)
    except SecretError as exc:
        raise MasterKeyMissing(ref, getattr(exc, "reason", str(exc))) from None
    except OSError as exc:
        raise MasterKeyMissing(ref, f"could not create {path}: {exc.strerror or exc}") from None
