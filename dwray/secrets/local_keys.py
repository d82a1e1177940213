"""The local secret store's keys: a random data key, wrapped under a key-encryption key (KEK).

Two ways to the KEK, recorded in the store file's ``"key"`` header with every
parameter needed to derive it again:

``scrypt``
    from a passphrase: scrypt with n=2**15, r=8, p=1 (32 MiB of memory, about
    0.1 s per derivation here; the interactive-login setting of RFC 7914's
    authors), a random 16-byte salt, 32-byte output.
``hkdf-sha256``
    from a 256-bit key file (by default the master key): HKDF-SHA256 with a
    random 16-byte salt and ``info`` naming this use and the store's id, so
    the master key is never used directly for two purposes.

The data key (256 random bits, made once per store) is wrapped under the KEK
with AES-KWP (RFC 5649, ``cryptography``'s ``aes_key_wrap_with_padding``):
deterministic, no nonce to manage, and its integrity check makes a wrong
passphrase or key file fail at once rather than yield a wrong key.

Each secret version is sealed under the data key with AES-256-GCM, a random
96-bit nonce per version and AAD binding the store id, the secret's name and
its version, so sealed values cannot be moved between stores, names or
versions. A store seals once per write (thousands in its life, not the 2**32
at which random 96-bit nonces would start to risk a collision).
"""
from __future__ import annotations

import base64
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from cryptography.hazmat.primitives.keywrap import (
    InvalidUnwrap,
    aes_key_unwrap_with_padding,
    aes_key_wrap_with_padding,
)

__all__ = [
    "KEK_HKDF",
    "KEK_SCRYPT",
    "SCRYPT_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "derive_kek",
    "new_key_header",
    "open_version",
    "seal_version",
    "unwrap_data_key",
]

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
NONCE_BYTES = 12
KEK_SCRYPT = "scrypt"
KEK_HKDF = "hkdf-sha256"
_HKDF_INFO = b"dwray secret store v1: key-encryption key of store "
_AAD_LABEL = "dwray-secret-store/1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def derive_kek(header: dict[str, Any], store_id: str, material: bytes) -> bytes:
    """The KEK from the passphrase or key bytes ``material``, as the store's ``header`` says."""
    salt = _unb64(header["salt"])
    if header["kek"] == KEK_SCRYPT:
        params = header["scrypt"]
        return Scrypt(salt=salt, length=32, n=int(params["n"]), r=int(params["r"]), p=int(params["p"])).derive(material)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt,
                info=_HKDF_INFO + store_id.encode("ascii")).derive(material)


def new_key_header(kind: str, store_id: str, material: bytes) -> tuple[dict[str, Any], bytes]:
    """A new store's ``"key"`` header and its (plain) data key: a random key, wrapped under the KEK."""
    header: dict[str, Any] = {"kek": kind, "salt": _b64(os.urandom(SALT_BYTES)), "wrap": "aes-kwp"}
    if kind == KEK_SCRYPT:
        header["scrypt"] = {"n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P}
    data_key = AESGCM.generate_key(bit_length=256)
    header["wrapped_data_key"] = _b64(aes_key_wrap_with_padding(derive_kek(header, store_id, material), data_key))
    return header, data_key


def unwrap_data_key(header: dict[str, Any], store_id: str, material: bytes) -> bytes | None:
    """The data key, or ``None`` when this passphrase or key does not open it."""
    try:
        return aes_key_unwrap_with_padding(derive_kek(header, store_id, material), _unb64(header["wrapped_data_key"]))
    except InvalidUnwrap:
        return None


def _aad(store_id: str, name: str, version: int) -> bytes:
    return json.dumps([_AAD_LABEL, store_id, name, version]).encode("utf-8")


def seal_version(data_key: bytes, store_id: str, name: str, version: int, value: bytes) -> dict[str, str]:
    """A sealed version: its nonce and ciphertext, base64."""
    nonce = os.urandom(NONCE_BYTES)
    return {"nonce": _b64(nonce), "sealed": _b64(AESGCM(data_key).encrypt(nonce, value, _aad(store_id, name, version)))}


def open_version(data_key: bytes, store_id: str, name: str, version: int, entry: dict[str, Any]) -> bytes | None:
    """The value of a sealed version, or ``None`` when it fails authentication."""
    try:
        return AESGCM(data_key).decrypt(_unb64(entry["nonce"]), _unb64(entry["sealed"]), _aad(store_id, name, version))
    except InvalidTag:
        return None
