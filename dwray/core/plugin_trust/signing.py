"""Ed25519 keys and signatures over a plugin's manifest of file hashes.

A *manifest* is what a signature vouches for: where the plugin comes from
(``"folder"`` or ``"distribution"``), its name and version, and the SHA-256
of every file, keyed by relative path with ``/`` separators. It is signed in
one canonical form (JSON, keys sorted, no spaces, UTF-8), so that signer and
verifier hash the same bytes whatever the order files were listed in.

The *signature file* (``dwray-plugin.sig``, JSON) holds the manifest, the
signer's public key (``ed25519:<base64>``) and the signature (base64). The
embedded key only says *who* signed; whether that signer is trusted is
decided by the verifier's list of trusted keys, never by the file.

Keys: ``dw plugin keygen OUT`` writes the private key to ``OUT`` (PKCS#8 PEM,
0600) and the public key to ``OUT.pub`` (one line, ``ed25519:<base64>``), the
form ``[plugin_trust] trusted_keys`` takes. The cryptography itself is the
``cryptography`` package's; this module only frames it.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dwray.errors import InvalidArgument

__all__ = [
    "KEY_PREFIX",
    "MANIFEST_FORMAT",
    "SIGNATURE_FILE",
    "SignatureCheck",
    "canonical_bytes",
    "check_signature",
    "fingerprint",
    "generate_key_pair",
    "load_private_key",
    "make_manifest",
    "parse_public_key",
    "public_key_text",
    "read_public_key",
    "sha256_hex",
    "sign_manifest",
    "write_owner_only",
]

KEY_PREFIX = "ed25519:"
MANIFEST_FORMAT = "dwray-plugin-manifest/1"
SIGNATURE_FILE = "dwray-plugin.sig"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def make_manifest(source: str, name: str, version: str, files: Mapping[str, str]) -> dict[str, Any]:
    """The manifest a signature covers: ``files`` maps relative paths to SHA-256 hex digests."""
    return {"format": MANIFEST_FORMAT, "source": source, "name": name, "version": version,
            "files": dict(sorted(files.items()))}


def canonical_bytes(manifest: Mapping[str, Any]) -> bytes:
    """The one byte form of ``manifest`` that is signed and verified."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex, as manifests list it."""
    return hashlib.sha256(data).hexdigest()


# -- keys --------------------------------------------------------------------------


def public_key_text(key: Ed25519PublicKey) -> str:
    """``ed25519:<base64 of the 32 raw bytes>``."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str, where: str = "public key") -> Ed25519PublicKey:
    """An Ed25519 public key from ``ed25519:<base64>``; ``InvalidArgument`` naming ``where`` if it is not one."""
    text = text.strip()
    if not text.startswith(KEY_PREFIX):
        raise InvalidArgument(f"{where}: not an Ed25519 public key (write {KEY_PREFIX}<base64 of 32 bytes>)")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{where}: the key after {KEY_PREFIX} is not base64") from None
    if len(raw) != 32:
        raise InvalidArgument(f"{where}: an Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def read_public_key(entry: str, where: str = "trusted key") -> str:
    """A trusted-key entry (``ed25519:<base64>`` or the path of a ``.pub`` file) as ``ed25519:<base64>``."""
    if entry.strip().startswith(KEY_PREFIX):
        return public_key_text(parse_public_key(entry, where))
    path = Path(entry).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise InvalidArgument(f"{where}: cannot read public key file {path}: {reason}") from None
    return public_key_text(parse_public_key(text, f"{where} ({path})"))


def fingerprint(public_key: str) -> str:
    """A short name for a public key in messages: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = parse_public_key(public_key).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + hashlib.sha256(raw).hexdigest()[:16]


def write_owner_only(path: Path, data: bytes, replace: bool = False) -> None:
    """Write ``data`` to ``path``, mode 0600, whole or not at all; an existing file is replaced only if asked."""
    if not replace and (path.exists() or path.is_symlink()):
        raise InvalidArgument(f"{path} exists; it is not overwritten")
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(temp, path) if replace else os.link(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def generate_key_pair(out: Path) -> tuple[Path, str]:
    """Write a new private key to ``out`` (0600) and its public key to ``out.pub``; return (pub path, key)."""
    pub_path = out.with_name(out.name + ".pub")
    for existing in (out, pub_path):
        if existing.exists() or existing.is_symlink():
            raise InvalidArgument(f"{existing} exists; keygen never overwrites a key")
    if not out.parent.is_dir():
        raise InvalidArgument(f"cannot write {out}: folder {out.parent} does not exist")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    write_owner_only(out, pem)
    public = public_key_text(key.public_key())
    write_owner_only(pub_path, (public + "\n").encode("ascii"))
    return pub_path, public


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in ``path``, which only its owner may read (like every key file here)."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"cannot read signing key {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise InvalidArgument(f"signing key {path} is readable by others (mode {mode & 0o777:04o}); "
                              "chmod 600 it")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise InvalidArgument(f"{path} is not an unencrypted PEM private key (make one with dw plugin keygen)") \
            from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgument(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


# -- signatures ----------------------------------------------------------------------


def sign_manifest(manifest: Mapping[str, Any], key: Ed25519PrivateKey) -> bytes:
    """The signature file's content for ``manifest``, signed with ``key``."""
    document = {"manifest": dict(manifest), "public_key": public_key_text(key.public_key()),
                "signature": base64.b64encode(key.sign(canonical_bytes(manifest))).decode("ascii")}
    return (json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


@dataclass(frozen=True)
class SignatureCheck:
    """What checking a signature file against a plugin's actual manifest found.

    ``problems`` is empty when the plugin is signed by a trusted key and no
    file changed since; otherwise each entry says one thing that is wrong.
    """

    signer: str | None  # the signer's key fingerprint, when the file names a valid key
    trusted: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _parse_signature_file(raw: bytes) -> tuple[dict[str, Any], str, bytes]:
    try:
        document = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(f"{SIGNATURE_FILE} is not JSON") from None
    if not isinstance(document, dict) or set(document) != {"manifest", "public_key", "signature"}:
        raise InvalidArgument(f"{SIGNATURE_FILE} must hold exactly manifest, public_key and signature")
    manifest, public_key, signature = document["manifest"], document["public_key"], document["signature"]
    if not isinstance(manifest, dict) or not isinstance(public_key, str) or not isinstance(signature, str):
        raise InvalidArgument(f"{SIGNATURE_FILE}: manifest must be an object, public_key and signature text")
    _check_manifest_shape(manifest)
    parse_public_key(public_key, f"{SIGNATURE_FILE} public_key")
    try:
        return manifest, public_key, base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(f"{SIGNATURE_FILE}: signature is not base64") from None


def _check_manifest_shape(manifest: Mapping[str, Any]) -> None:
    if manifest.get("format") != MANIFEST_FORMAT:
        raise InvalidArgument(f"{SIGNATURE_FILE}: manifest format is {manifest.get('format')!r}, "
                              f"this dwray reads {MANIFEST_FORMAT!r}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise InvalidArgument(f"{SIGNATURE_FILE}: manifest files must be an object of path: sha256")
    for path, digest in files.items():
        parts = path.split("/")
        # A signed path that climbs out ("..") or is absolute never names a file of this plugin.
        if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise InvalidArgument(f"{SIGNATURE_FILE}: manifest names the path {path!r}, which is not a plain "
                                  "relative path inside the plugin")
        if not isinstance(digest, str) or not _SHA256_HEX.match(digest):
            raise InvalidArgument(f"{SIGNATURE_FILE}: the hash of {path!r} is not a SHA-256 hex digest")


def _differences(signed: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    problems = []
    for field in ("source", "name", "version"):
        if signed.get(field) != actual.get(field):
            problems.append(f"{field} is {actual.get(field)!r} but the signature is for {signed.get(field)!r}")
    signed_files, actual_files = signed["files"], actual["files"]
    changed = sorted(p for p in signed_files.keys() & actual_files.keys() if signed_files[p] != actual_files[p])
    added = sorted(actual_files.keys() - signed_files.keys())
    removed = sorted(signed_files.keys() - actual_files.keys())
    for label, paths in (("changed since signing", changed), ("added since signing", added),
                         ("removed since signing", removed)):
        if paths:
            problems.append(f"tampered: file(s) {label}: {', '.join(paths)}")
    return problems


def check_signature(raw: bytes | None, actual: Mapping[str, Any], trusted_keys: Iterable[str]) -> SignatureCheck:
    """Check a signature file's bytes (``None``: there is none) against the plugin's ``actual`` manifest."""
    if raw is None:
        return SignatureCheck(None, False, (f"unsigned: it has no {SIGNATURE_FILE}",))
    try:
        signed, public_key, signature = _parse_signature_file(raw)
    except InvalidArgument as exc:
        return SignatureCheck(None, False, (f"bad signature file: {exc}",))
    signer = fingerprint(public_key)
    try:
        parse_public_key(public_key).verify(signature, canonical_bytes(signed))
    except InvalidSignature:
        return SignatureCheck(signer, False, (f"wrongly signed: the signature does not match its manifest "
                                              f"for key {signer} (forged or corrupted)",))
    trusted = public_key in {public_key_text(parse_public_key(k)) for k in trusted_keys}
    problems = [] if trusted else [f"wrongly signed: signed by key {signer}, which is not a trusted key"]
    problems += _differences(signed, actual)
    return SignatureCheck(signer, trusted, tuple(problems))
