"""``secret://vault/PATH#FIELD``: secrets in a Vault or OpenBao KV version 2 engine, through hvac.

A KV v2 secret is a set of fields, each version a whole new set. A value put
as text or bytes is stored as the one field ``value``; a dict as its fields.
``get`` without a field returns that ``value`` field, or (for several fields)
the canonical JSON of all of them.

- check-and-set writes: ``put(..., cas=V)`` passes Vault's own ``cas``
  (``ABSENT`` is ``cas=0``: create only), so the check is atomic in Vault;
- versions: every kept version is readable by number; soft-deleted and
  destroyed ones are left out;
- auth and renewal: ``dwray.secrets.vault_auth`` (token or AppRole; tokens
  renewed past half their TTL, AppRole logging in again once expired);
- Vault down, slow (``timeout``) or refusing (403) gives ``SecretUnavailable``
  naming the address and what happened; the value or token never appears.
"""
from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import hvac
import hvac.exceptions
import requests

from dwray.errors import InvalidArgument, SecretConflict, SecretNotFound, SecretUnavailable
from dwray.secret_ref import SecretValue
from dwray.secrets.base import ABSENT, SecretInput, SecretManager, SecretVersion, encode_value
from dwray.secrets.vault_auth import VaultLogin

if TYPE_CHECKING:
    from dwray.config import DwrayConfig

__all__ = ["VaultSecretManager"]

T = TypeVar("T")
# A value put as text is kept as this one field.
VALUE_FIELD = "value"


def _timestamp(text: str | None) -> float | None:
    """Unix time of Vault's RFC 3339 times (nanoseconds cut to what ``datetime`` holds)."""
    if not text:
        return None
    head, dot, tail = text.rstrip("Z").partition(".")
    digits = "".join(ch for ch in tail if ch.isdigit())[:6]
    try:
        return datetime.fromisoformat(f"{head}{dot}{digits}+00:00" if dot else f"{head}+00:00").timestamp()
    except ValueError:
        return None


class VaultSecretManager(SecretManager):
    """Vault/OpenBao KV v2 at ``address``, engine mounted at ``mount``; see the module docstring."""

    scheme = "vault"
    binary = False

    def __init__(self, address: str, *, mount: str = "secret", namespace: str | None = None,
                 ca_cert: str | Path | None = None, token: str | None = None, role_id: str | None = None,
                 secret_id: str | None = None, approle_mount: str = "approle", timeout: float = 10.0) -> None:
        """``token``, ``role_id`` and ``secret_id`` are ``secret://env/`` or ``secret://file/`` references."""
        if not address:
            raise InvalidArgument("the Vault secret manager needs an address: set [secrets.vault] address")
        self.address = address.rstrip("/")
        self.mount = mount
        self._client = hvac.Client(url=self.address, namespace=namespace, timeout=timeout,
                                   verify=str(ca_cert) if ca_cert else True)
        self._login = VaultLogin(self._client, token=token, role_id=role_id, secret_id=secret_id,
                                 approle_mount=approle_mount)

    @classmethod
    def from_config(cls, config: DwrayConfig) -> Self:
        vault = config.secrets.vault
        return cls(vault.address or "", mount=vault.mount, namespace=vault.namespace, ca_cert=vault.ca_cert,
                   token=vault.token, role_id=vault.role_id, secret_id=vault.secret_id,
                   approle_mount=vault.approle_mount, timeout=vault.timeout)

    def __repr__(self) -> str:
        return f"VaultSecretManager({self.address!r}, mount={self.mount!r}, auth={self._login.method!r})"

    def auth_status(self) -> dict[str, Any]:
        """How this manager authenticates and how often it logged in and renewed (no token)."""
        return {"method": self._login.method, "logins": self._login.logins, "renewals": self._login.renewals}

    def check_name(self, name: str, field: str | None = None) -> str:
        # A reference needs #FIELD; a name alone (put, versions, delete) is checked with the text field's.
        return super().check_name(name, field or VALUE_FIELD)

    # -- one request, with auth and errors handled ------------------------------------------------

    def _call(self, ref: str, request: Callable[[], T]) -> T:
        for attempt in (1, 2):
            try:
                self._login.ensure()
                return request()
            except hvac.exceptions.Forbidden:
                if attempt == 1 and self._recover(ref):
                    continue
                raise SecretUnavailable(ref, f"Vault at {self.address} refused access (403): the token has "
                                             f"expired or its policy does not allow this") from None
            except hvac.exceptions.Unauthorized:
                raise SecretUnavailable(ref, f"Vault at {self.address} refused the credentials (401)") from None
            except hvac.exceptions.VaultDown:
                raise SecretUnavailable(ref, f"Vault at {self.address} is sealed or down (503)") from None
            except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway,
                    hvac.exceptions.RateLimitExceeded, hvac.exceptions.UnexpectedError) as exc:
                raise SecretUnavailable(ref, f"Vault at {self.address} failed: {type(exc).__name__}") from None
            except requests.Timeout:
                raise SecretUnavailable(ref, f"Vault at {self.address} did not answer in time") from None
            except requests.RequestException as exc:
                raise SecretUnavailable(ref, f"Vault at {self.address} cannot be reached "
                                             f"({type(exc).__name__})") from None
        raise AssertionError("unreachable")

    def _recover(self, ref: str) -> bool:
        try:
            return self._login.recover()
        except (hvac.exceptions.VaultError, requests.RequestException):
            return False

    def _metadata(self, name: str) -> dict[str, Any]:
        ref = self.ref(name)

        def read() -> dict[str, Any]:
            try:
                return self._client.secrets.kv.v2.read_secret_metadata(path=name, mount_point=self.mount)["data"]
            except hvac.exceptions.InvalidPath:
                raise SecretNotFound(ref, f"no such secret in Vault at {self.address} "
                                          f"(KV v2 engine {self.mount!r})") from None
        return self._call(ref, read)

    # -- the contract ------------------------------------------------------------------------------

    def get(self, name: str, field: str | None = None, version: str | None = None) -> SecretValue:
        self.check_name(name, field)
        ref = self.ref(name, field)
        if version is not None and not str(version).isdigit():
            raise SecretNotFound(ref, f"version {version!r}: Vault versions are numbers")

        def read() -> dict[str, Any]:
            try:
                return self._client.secrets.kv.v2.read_secret_version(
                    path=name, version=int(version) if version is not None else None, mount_point=self.mount,
                    raise_on_deleted_version=True)["data"]
            except hvac.exceptions.InvalidPath:
                which = f"version {version}" if version is not None else "it"
                raise SecretNotFound(ref, f"{which} is not in Vault at {self.address} (KV v2 engine "
                                          f"{self.mount!r}), or was deleted") from None
        answer = self._call(ref, read)
        data: dict[str, Any] = answer.get("data") or {}
        number = str(answer["metadata"]["version"])
        if field is not None:
            if field not in data:
                raise SecretNotFound(ref, f"it has no field {field!r}")
            item = data[field]
            raw = item.encode("utf-8") if isinstance(item, str) else json.dumps(item).encode("utf-8")
        elif set(data) == {VALUE_FIELD} and isinstance(data[VALUE_FIELD], str):
            raw = data[VALUE_FIELD].encode("utf-8")
        else:
            raw = json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")
        return SecretValue(raw, ref=ref, version=number)

    def versions(self, name: str) -> builtins.list[SecretVersion]:
        self.check_name(name)
        metadata = self._metadata(name)
        current = str(metadata.get("current_version"))
        kept = []
        for number, info in sorted((metadata.get("versions") or {}).items(), key=lambda item: int(item[0])):
            if info.get("destroyed") or info.get("deletion_time"):
                continue
            kept.append(SecretVersion(str(number), _timestamp(info.get("created_time")), str(number) == current))
        if not any(entry.current for entry in kept):
            raise SecretNotFound(self.ref(name), "its current version was deleted")
        return kept

    def list(self, prefix: str = "") -> builtins.list[str]:
        folder = prefix[:prefix.rfind("/") + 1]
        names: builtins.list[str] = []
        self._walk(folder, prefix, names)
        return sorted(names)

    def _walk(self, folder: str, prefix: str, names: builtins.list[str]) -> None:
        def read() -> builtins.list[str]:
            try:
                return self._client.secrets.kv.v2.list_secrets(path=folder, mount_point=self.mount)["data"]["keys"]
            except hvac.exceptions.InvalidPath:
                return []
        for key in self._call(self.ref(folder + "*"), read):
            path = folder + key
            if key.endswith("/"):
                if path.startswith(prefix) or prefix.startswith(path):
                    self._walk(path, prefix, names)
            elif path.startswith(prefix):
                names.append(path)

    def put(self, name: str, value: SecretInput, cas: str | None = None) -> str:
        self.check_name(name)
        ref = self.ref(name)
        raw = encode_value(value, ref)
        if isinstance(value, Mapping):
            data = dict(value)
        else:
            try:
                data = {VALUE_FIELD: raw.decode("utf-8")}
            except UnicodeDecodeError:
                raise InvalidArgument(f"secret {ref}: Vault KV holds text, and this value is binary "
                                      f"(encode it, e.g. as base64)") from None
        if cas is not None and not str(cas).isdigit():
            raise InvalidArgument(f"secret {ref}: check-and-set version {cas!r} is not a Vault version number")
        expected = None if cas is None else int(cas if str(cas) != ABSENT else 0)

        def write() -> dict[str, Any]:
            try:
                return self._client.secrets.kv.v2.create_or_update_secret(
                    path=name, secret=data, cas=expected, mount_point=self.mount)["data"]
            except hvac.exceptions.InvalidRequest as exc:
                if "check-and-set" in str(exc):
                    found = "it exists" if expected == 0 else "another version is current"
                    raise SecretConflict(ref, f"expected version {cas}, but {found}") from None
                raise SecretUnavailable(ref, f"Vault at {self.address} refused the write (400)") from None
        return str(self._call(ref, write)["version"])

    def delete(self, name: str) -> None:
        self.check_name(name)
        self._metadata(name)
        self._call(self.ref(name), lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(
            path=name, mount_point=self.mount))

    def current_version(self, name: str) -> str:
        return next(entry.version for entry in self.versions(name) if entry.current)

    def close(self) -> None:
        self._client.adapter.close()
