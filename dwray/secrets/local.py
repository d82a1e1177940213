"""``secret://local/NAME``: an encrypted secret store in one file, for laptops and single hosts.

The file (default ``$XDG_CONFIG_HOME/dwray/secrets.json``, ``[secrets.local]
path``) is JSON, 0600 in a 0700 folder::

    {"format": "dwray-secret-store", "format_version": 1, "store_id": "<hex>",
     "key": {"kek": "scrypt", "scrypt": {"n": 32768, "r": 8, "p": 1},
             "salt": "<base64, 16 bytes>", "wrap": "aes-kwp", "wrapped_data_key": "<base64>"},
     "secrets": {"NAME": {"versions": [{"version": 1, "created": <unix time>,
                                        "nonce": "<base64>", "sealed": "<base64>"}, ...]}}}

Names, version numbers and times are in the clear; values only sealed. How
the data key is wrapped (scrypt n=2**15, r=8, p=1 from a passphrase, or
HKDF-SHA256 from a 256-bit key file; AES-KWP) and how values are sealed
(AES-256-GCM, AAD = store id, name, version) is in ``dwray.secrets.local_keys``.

The KEK comes from, in order: ``[secrets.local] passphrase`` (a
``secret://env/`` or ``secret://file/`` reference: the store cannot hold its
own key), ``[secrets.local] key_file``, or the master key (``[keys] master``,
by default the key file ``$XDG_CONFIG_HOME/dwray/master.key``, created 0600
on first use like the keyring does).

Writes take an exclusive ``flock`` on ``<file>.lock``, read the file again,
change it and replace it atomically (temp file, fsync, rename, fsync of the
folder), so concurrent writers in any process serialize and a crash leaves
the old file or the new one. Readers need no lock. The last
``keep_versions`` (at least 10) versions of each secret are kept; older ones
are dropped from the file (a dropped version's bytes may linger on disk until
overwritten: rotate the key file or passphrase if that matters).
"""
from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

from dwray.config import default_master_key_path
from dwray.errors import (
    IntegrityError,
    InvalidArgument,
    SecretConflict,
    SecretNotFound,
    SecretUnavailable,
)
from dwray.secret_ref import SecretValue, parse_secret_ref
from dwray.secrets.base import ABSENT, SecretInput, SecretManager, SecretVersion, encode_value
from dwray.secrets.env import EnvSecretManager
from dwray.secrets.file import FileSecretManager
from dwray.secrets.key_file import (
    create_key_file,
    fsync_dir,
    make_private_dir,
    parse_key_material,
    read_key_file,
)
from dwray.secrets.local_keys import (
    KEK_HKDF,
    KEK_SCRYPT,
    new_key_header,
    open_version,
    seal_version,
    unwrap_data_key,
)

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = ["KEEP_VERSIONS", "LocalSecretStore", "default_secret_store_path"]

FORMAT = "dwray-secret-store"
FORMAT_VERSION = 1
KEEP_VERSIONS = 10
T = TypeVar("T")


def default_secret_store_path() -> Path:
    """``$XDG_CONFIG_HOME/dwray/secrets.json`` (``~/.config/dwray/secrets.json``): next to the master key."""
    return default_master_key_path().with_name("secrets.json")


class LocalSecretStore(SecretManager):
    """Secrets sealed in one local file; see the module docstring."""

    scheme = "local"

    def __init__(self, path: str | Path, *, passphrase: str | None = None, key_file: str | Path | None = None,
                 master: str | None = None, create_key_file: bool = False,
                 keep_versions: int = KEEP_VERSIONS) -> None:
        """``passphrase``: a ``secret://env/`` or ``secret://file/`` reference; ``key_file``: a 256-bit key
        file; ``master``: the master key's reference, used when neither is given (``create_key_file``: make
        that key file if it does not exist, as for the default master key)."""
        if keep_versions < KEEP_VERSIONS:
            raise InvalidArgument(f"the local secret store keeps at least {KEEP_VERSIONS} versions, "
                                  f"not {keep_versions}")
        self.path = Path(path)
        self.keep_versions = keep_versions
        self._lock_path = self.path.with_name(self.path.name + ".lock")
        self._kind, self._key_source, self._material = self._choose_key(passphrase, key_file, master,
                                                                        create_key_file)
        self._data_key: tuple[tuple[str, str], bytes] | None = None

    @classmethod
    def from_config(cls, config: DwrayConfig) -> Self:
        local = config.secrets.local
        return cls(local.path or default_secret_store_path(), passphrase=local.passphrase,
                   key_file=local.key_file, master=config.master_key_ref,
                   create_key_file=config.keys.master is None)

    def __repr__(self) -> str:
        return f"LocalSecretStore({str(self.path)!r}, key={self._key_source!r})"

    # -- the key-encryption key -------------------------------------------------------

    def _choose_key(self, passphrase: str | None, key_file: str | Path | None, master: str | None,
                    create: bool) -> tuple[str, str, Callable[[str], bytes]]:
        """(KEK kind, a description for errors, a loader of the passphrase or key bytes)."""
        if passphrase is not None:
            ref = parse_secret_ref(passphrase)
            if ref.scheme not in ("env", "file"):
                raise InvalidArgument("[secrets.local] passphrase must be a secret://env/ or secret://file/ "
                                      "reference: the local store cannot hold its own passphrase")
            manager = EnvSecretManager() if ref.scheme == "env" else FileSecretManager()

            def passphrase_bytes(_: str) -> bytes:
                value = manager.get(ref.name).reveal_bytes()
                if not value:
                    raise SecretUnavailable(str(ref), "the passphrase of the local secret store is empty")
                return value
            return KEK_SCRYPT, f"the passphrase {ref}", passphrase_bytes
        if key_file is not None:
            path = Path(key_file)
            return KEK_HKDF, f"the key file {path}", lambda why: read_key_file(path, why)
        if master is None:
            raise InvalidArgument("the local secret store needs a key: set [secrets.local] passphrase or key_file, "
                                  "or a master key ([keys] master)")
        ref = parse_secret_ref(master)
        if ref.scheme == "file":
            path = Path(ref.name)

            def master_file(why: str) -> bytes:
                if create and not path.exists():
                    return create_key_file(path, why)
                return read_key_file(path, why)
            return KEK_HKDF, f"the master key file {path}", master_file
        if ref.scheme == "env":
            def master_env(why: str) -> bytes:
                key = parse_key_material(EnvSecretManager().get(ref.name).reveal_bytes())
                if key is None:
                    raise SecretUnavailable(why, f"the master key {ref} is not a 256-bit key")
                return key
            return KEK_HKDF, f"the master key {ref}", master_env
        raise InvalidArgument(f"the local secret store cannot take its key from the master key {ref}: set "
                              f"[secrets.local] key_file or passphrase (a file or env reference)")

    def _open_data_key(self, document: dict[str, Any], ref: str) -> bytes:
        header, store_id = document["key"], document["store_id"]
        cache_key = (store_id, header["wrapped_data_key"])
        if self._data_key is not None and self._data_key[0] == cache_key:
            return self._data_key[1]
        if header["kek"] != self._kind:
            made = "a passphrase" if header["kek"] == KEK_SCRYPT else "a key file"
            raise SecretUnavailable(ref, f"the secret store {self.path} was created with {made}, but "
                                         f"{self._key_source} is configured")
        data_key = unwrap_data_key(header, store_id, self._material(ref))
        if data_key is None:
            raise SecretUnavailable(ref, f"{self._key_source} does not open the secret store {self.path} "
                                         f"(wrong passphrase or key)")
        self._data_key = (cache_key, data_key)
        return data_key

    # -- the file -----------------------------------------------------------------------

    def _load(self, ref: str) -> dict[str, Any] | None:
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SecretUnavailable(ref, f"cannot read the secret store {self.path}: {exc.strerror}") from None
        try:
            document = json.loads(text)
            valid = (document.get("format") == FORMAT and isinstance(document.get("secrets"), dict)
                     and isinstance(document.get("key"), dict) and isinstance(document.get("store_id"), str))
        except (ValueError, AttributeError):
            valid = False
        if not valid:
            raise SecretUnavailable(ref, f"{self.path} is not a dwray secret store file")
        if document.get("format_version") != FORMAT_VERSION:
            raise SecretUnavailable(ref, f"{self.path} has format version {document.get('format_version')!r}; "
                                         f"this dwray reads version {FORMAT_VERSION}")
        return document

    def _new_document(self, ref: str) -> dict[str, Any]:
        store_id = secrets.token_hex(16)
        header, data_key = new_key_header(self._kind, store_id, self._material(ref))
        self._data_key = ((store_id, header["wrapped_data_key"]), data_key)
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "store_id": store_id, "key": header,
                "secrets": {}}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        make_private_dir(self.path.parent)
        descriptor = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    def _write(self, document: dict[str, Any]) -> None:
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        try:
            descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                json.dump(document, handle, indent=1, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)
        fsync_dir(self.path.parent)

    def _update(self, ref: str, change: Callable[[dict[str, Any], bytes], T]) -> T:
        """Under the lock: read the file (or start one), ``change`` it with the data key, write it back."""
        with self._locked():
            document = self._load(ref) or self._new_document(ref)
            result = change(document, self._open_data_key(document, ref))
            self._write(document)
            return result

    def _entry(self, document: dict[str, Any] | None, name: str) -> list[dict[str, Any]]:
        if document is None:
            raise SecretNotFound(self.ref(name), f"the secret store {self.path} does not exist yet "
                                                 f"(dw secret set {name} creates it)")
        entry = document["secrets"].get(name)
        if entry is None:
            raise SecretNotFound(self.ref(name), f"no such secret in {self.path}")
        return entry["versions"]

    # -- the contract -------------------------------------------------------------------------

    def get(self, name: str, field: str | None = None, version: str | None = None) -> SecretValue:
        self.check_name(name, field)
        ref = self.ref(name, field)
        document = self._load(ref)
        kept = self._entry(document, name)
        if version is None:
            chosen = kept[-1]
        else:
            chosen = next((entry for entry in kept if str(entry["version"]) == str(version)), None)
            if chosen is None:
                raise SecretNotFound(ref, f"version {version!r} is not kept (kept: "
                                          f"{', '.join(str(entry['version']) for entry in kept)})")
        assert document is not None
        raw = open_version(self._open_data_key(document, ref), document["store_id"], name, chosen["version"],
                           chosen)
        if raw is None:
            raise IntegrityError(self.ref(name), f"version {chosen['version']} in {self.path} fails authentication "
                                                 f"(the file was altered or damaged)")
        return self.value(raw, name, field, str(chosen["version"]))

    def versions(self, name: str) -> builtins.list[SecretVersion]:
        self.check_name(name)
        kept = self._entry(self._load(self.ref(name)), name)
        return [SecretVersion(str(entry["version"]), entry["created"], index == len(kept) - 1)
                for index, entry in enumerate(kept)]

    def current_version(self, name: str) -> str:
        self.check_name(name)
        return str(self._entry(self._load(self.ref(name)), name)[-1]["version"])

    def list(self, prefix: str = "") -> builtins.list[str]:
        document = self._load(self.ref(prefix or "*"))
        return sorted(name for name in (document or {}).get("secrets", {}) if name.startswith(prefix))

    def put(self, name: str, value: SecretInput, cas: str | None = None) -> str:
        self.check_name(name)
        ref = self.ref(name)
        raw = encode_value(value, ref)

        def change(document: dict[str, Any], data_key: bytes) -> str:
            entry = document["secrets"].get(name)
            current = str(entry["versions"][-1]["version"]) if entry else None
            if cas is not None and current != (None if str(cas) == ABSENT else str(cas)):
                raise SecretConflict(ref, f"expected version {cas}, found "
                                          f"{current if current else 'no secret (it does not exist)'}")
            number = int(current) + 1 if current else 1
            sealed = {"version": number, "created": time.time(),
                      **seal_version(data_key, document["store_id"], name, number, raw)}
            versions = (entry["versions"] if entry else []) + [sealed]
            document["secrets"][name] = {"versions": versions[-self.keep_versions:]}
            return str(number)
        return self._update(ref, change)

    def delete(self, name: str) -> None:
        self.check_name(name)
        ref = self.ref(name)
        if self._load(ref) is None:
            self._entry(None, name)

        def change(document: dict[str, Any], _: bytes) -> None:
            self._entry(document, name)
            del document["secrets"][name]
        self._update(ref, change)
