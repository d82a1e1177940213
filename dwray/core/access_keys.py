"""Access keys and admin tokens: creating, resolving, rewrapping and revoking them.

``AccessKeys`` is the logic over an identity service (``IdentityStore`` in one
process, ``actors.remote_services.RemoteIdentity`` on Ray) and a key service:

- an access key's secret is 32 random bytes, stored only wrapped (AES-256-GCM)
  under the KEK ``system:access-keys``; the client sees it as unpadded
  base64url (43 characters), once, when the key is created;
- an admin token is stored only as its SHA-256.
"""
from __future__ import annotations

import base64
import hashlib
import secrets
import string
from dataclasses import dataclass, field

from dwray.core.contracts import IdentityService, KeyService
from dwray.core.identity import AccessKeyInfo
from dwray.core.names import validate_tenant_name

__all__ = ["ACCESS_KEY_KEK", "AccessKeys", "BootstrapResult", "NewAccessKey", "ResolvedKey"]

ACCESS_KEY_KEK = "system:access-keys"
_SECRET_BYTES = 32
_KEY_ID_PREFIX = "DW"
_KEY_ID_LENGTH = 20
_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class NewAccessKey:
    """A key just created: the only time its secret is handed out."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    tenant: str = ""


@dataclass(frozen=True)
class ResolvedKey:
    """An active key with its secret, for verifying a request's signature."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    tenant: str = ""


@dataclass(frozen=True)
class BootstrapResult:
    """What the first start created, to be printed once by ``dw up``."""

    tenant: str
    access_key: NewAccessKey
    admin_token: str = field(repr=False)


class AccessKeys:
    """Creates, resolves, revokes and lists access keys and admin tokens."""

    def __init__(self, store: IdentityService, keyring: KeyService) -> None:
        self.store = store
        self.keyring = keyring
        self._kek_ready = False

    def __repr__(self) -> str:
        return f"AccessKeys({self.store!r})"

    def _wrap_new_secret(self) -> tuple[bytes, int, bytes]:
        """A fresh secret, and its wrapping: ``(secret, kek_version, wrapped)``."""
        if not self._kek_ready:
            self.keyring.ensure(ACCESS_KEY_KEK)
            self._kek_ready = True
        secret = secrets.token_bytes(_SECRET_BYTES)
        version, wrapped = self.keyring.wrap(ACCESS_KEY_KEK, secret)
        return secret, version, wrapped

    def create(self, tenant: str, description: str = "") -> NewAccessKey:
        """A new key for ``tenant`` (which must exist). Its secret is returned now and never again."""
        secret, version, wrapped = self._wrap_new_secret()
        info = self.store.add_access_key(_new_key_id(), tenant, ACCESS_KEY_KEK, version, wrapped, description)
        return NewAccessKey(info.access_key_id, _encode_secret(secret), info.tenant)

    def lookup(self, access_key_id: str) -> ResolvedKey | None:
        """The tenant and secret of an active key, or ``None`` if it is unknown or revoked."""
        stored = self.store.get_access_key(access_key_id)
        if stored is None:
            return None
        secret = self.keyring.unwrap(stored.kek_id, stored.kek_version, stored.wrapped_secret)
        return ResolvedKey(stored.access_key_id, _encode_secret(secret), stored.tenant)

    def revoke(self, access_key_id: str) -> AccessKeyInfo:
        return self.store.revoke_access_key(access_key_id)

    def list(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[AccessKeyInfo]:
        return self.store.list_access_keys(tenant, include_revoked=include_revoked)

    def rewrap(self, batch: int = 500) -> int:
        """Rewrap every active key's secret under the KEK's primary version; returns how many moved.

        Run after rotating ``system:access-keys``. A key changed meanwhile
        (revoked, or rewrapped by another caller) is skipped by the compare-and-set.
        """
        primary = self.keyring.ensure(ACCESS_KEY_KEK)
        moved = 0
        while page := self.store.keys_wrapped_below(ACCESS_KEY_KEK, primary, batch):
            for stored in page:
                secret = self.keyring.unwrap(stored.kek_id, stored.kek_version, stored.wrapped_secret)
                version, wrapped = self.keyring.wrap(ACCESS_KEY_KEK, secret)
                moved += self.store.replace_wrapped_secret(stored, wrapped, version)
            if len(page) < batch:
                break
        return moved

    # Admin tokens -----------------------------------------------------------

    def create_admin_token(self, description: str = "") -> str:
        """A new admin token, returned now and never again; only its hash is stored."""
        token = secrets.token_urlsafe(32)
        self.store.add_admin_token_hash(_token_hash(token), description)
        return token

    def check_admin_token(self, token: str) -> bool:
        """Whether ``token`` is a valid admin token."""
        if not isinstance(token, str) or not token:
            return False
        return self.store.has_admin_token_hash(_token_hash(token))

    def bootstrap(self, default_tenant: str) -> BootstrapResult | None:
        """On the first start (no admin token and no key yet) create the default tenant,
        a key for it and an admin token, and return them; on later starts, ``None``.
        """
        validate_tenant_name(default_tenant)
        secret, version, wrapped = self._wrap_new_secret()
        access_key_id, token = _new_key_id(), secrets.token_urlsafe(32)
        if not self.store.bootstrap(default_tenant, access_key_id, ACCESS_KEY_KEK, version, wrapped,
                                    _token_hash(token)):
            return None
        return BootstrapResult(default_tenant, NewAccessKey(access_key_id, _encode_secret(secret), default_tenant),
                               token)


def _new_key_id() -> str:
    """``DW`` + 18 random uppercase letters and digits: about 93 bits, so collisions do not happen."""
    return _KEY_ID_PREFIX + "".join(secrets.choice(_KEY_ID_ALPHABET)
                                    for _ in range(_KEY_ID_LENGTH - len(_KEY_ID_PREFIX)))


def _encode_secret(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")


def _token_hash(token: str) -> str:
    # A plain SHA-256 suffices: the token is 256 random bits, so there is no
    # dictionary to try and a slow hash (scrypt, argon2) would add nothing but
    # latency to every admin request. Slow hashes are for human passwords.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
