"""Access keys and admin tokens: creating, resolving, rewrapping and revoking them.

``AccessKeys`` is the logic over an identity service (``IdentityStore`` in one
process, ``actors.remote_services.RemoteIdentity`` on Ray) and a key service:

- an access key's secret is 32 random bytes, stored only wrapped (AES-256-GCM)
  under the KEK ``system:access-keys``; the client sees it as unpadded
  base64url (43 characters), once, when the key is created;
- an admin token is 256 random bits (unpadded base64url, 43 characters),
  handed out once and stored only as its SHA-256, under a name, with an
  optional expiry (``parse_expiry`` reads ``30d`` or an ISO time).
"""
from __future__ import annotations

import base64
import hashlib
import math
import re
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dwray.core.contracts import IdentityService, KeyService
from dwray.core.identity import AccessKeyInfo, AdminTokenInfo, validate_token_name
from dwray.core.names import validate_tenant_name
from dwray.core.policy import AccessPolicy
from dwray.errors import InvalidArgument

__all__ = ["ACCESS_KEY_KEK", "AccessKeys", "BootstrapResult", "NewAccessKey", "NewAdminToken", "ResolvedKey",
           "iso_timestamp", "parse_expiry"]

ACCESS_KEY_KEK = "system:access-keys"
_SECRET_BYTES = 32
_KEY_ID_PREFIX = "DW"
_KEY_ID_LENGTH = 20
_KEY_ID_ALPHABET = string.ascii_uppercase + string.digits
_TOKEN_BYTES = 32
_DURATION = re.compile(r"^([0-9]{1,9})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class NewAccessKey:
    """A key just created: the only time its secret is handed out."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    tenant: str = ""
    policy: AccessPolicy | None = None


@dataclass(frozen=True)
class ResolvedKey:
    """An active key with its secret, for verifying a request's signature, and its policy
    (``None``: the tenant's full rights), which the kernel enforces on what the request does."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    tenant: str = ""
    policy: AccessPolicy | None = None


@dataclass(frozen=True)
class NewAdminToken:
    """An admin token just created: the only time the token itself is handed out."""

    info: AdminTokenInfo
    token: str = field(repr=False)


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

    def create(self, tenant: str, description: str = "",
               policy: AccessPolicy | Mapping[str, Any] | str | None = None) -> NewAccessKey:
        """A new key for ``tenant`` (which must exist). Its secret is returned now and never again.

        ``policy`` (an ``AccessPolicy``, or its IAM JSON as text or a decoded
        document) limits what the key may do; ``None`` gives it the tenant's
        full rights. A policy dwray cannot enforce exactly is refused here
        (``InvalidArgument`` naming what), before any key exists.
        """
        parsed = policy if isinstance(policy, AccessPolicy) or policy is None else AccessPolicy.parse(policy)
        secret, version, wrapped = self._wrap_new_secret()
        info = self.store.add_access_key(_new_key_id(), tenant, ACCESS_KEY_KEK, version, wrapped, description,
                                         None if parsed is None else parsed.to_json())
        return NewAccessKey(info.access_key_id, _encode_secret(secret), info.tenant, parsed)

    def lookup(self, access_key_id: str) -> ResolvedKey | None:
        """The tenant, secret and policy of an active key, or ``None`` if it is unknown or revoked."""
        stored = self.store.get_access_key(access_key_id)
        if stored is None:
            return None
        secret = self.keyring.unwrap(stored.kek_id, stored.kek_version, stored.wrapped_secret)
        policy = None if stored.policy is None else AccessPolicy.parse(stored.policy)
        return ResolvedKey(stored.access_key_id, _encode_secret(secret), stored.tenant, policy)

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
                # Inside the key service: the secret never reaches this process (Transit rewraps in Vault).
                version, wrapped = self.keyring.rewrap(stored.kek_id, stored.kek_version, stored.wrapped_secret)
                moved += self.store.replace_wrapped_secret(stored, wrapped, version)
            if len(page) < batch:
                break
        return moved

    # Admin tokens -----------------------------------------------------------

    def create_admin_token(self, name: str, *, expires: float | None = None, description: str = "",
                           replace: bool = False) -> NewAdminToken:
        """A new admin token named ``name``, returned now and never again; only its hash is stored.

        ``expires`` is a time in epoch seconds (``parse_expiry`` reads one);
        ``replace`` revokes the token that has the name now, in the same step.
        """
        validate_token_name(name)
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        info = self.store.add_admin_token(_token_hash(token), name, expires, description, replace=replace)
        return NewAdminToken(info, token)

    def find_admin_token(self, token: str) -> AdminTokenInfo | None:
        """The admin token ``token`` is, expired or not (the caller says which was refused), or ``None``."""
        if not isinstance(token, str) or not token:
            return None
        return self.store.find_admin_token(_token_hash(token))

    def check_admin_token(self, token: str) -> bool:
        """Whether ``token`` is a valid admin token: known, not revoked, not expired."""
        info = self.find_admin_token(token)
        return info is not None and not info.expired()

    def list_admin_tokens(self) -> list[AdminTokenInfo]:
        return self.store.list_admin_tokens()

    def revoke_admin_token(self, name: str) -> AdminTokenInfo:
        return self.store.revoke_admin_token(name)

    def bootstrap(self, default_tenant: str, token_name: str = "admin") -> BootstrapResult | None:
        """On the first start (no admin token and no key yet) create the default tenant,
        a key for it and an admin token named ``token_name``, and return them; on
        later starts, ``None``.
        """
        validate_tenant_name(default_tenant)
        validate_token_name(token_name)
        secret, version, wrapped = self._wrap_new_secret()
        access_key_id, token = _new_key_id(), secrets.token_urlsafe(_TOKEN_BYTES)
        if not self.store.bootstrap(default_tenant, access_key_id, ACCESS_KEY_KEK, version, wrapped,
                                    _token_hash(token), token_name):
            return None
        return BootstrapResult(default_tenant, NewAccessKey(access_key_id, _encode_secret(secret), default_tenant),
                               token)


def parse_expiry(text: str, now: float | None = None) -> float:
    """An expiry as epoch seconds, from a duration (``90s``, ``15m``, ``12h``, ``30d``, ``2w``) counted
    from ``now``, or an ISO 8601 time (``2030-01-31``, ``2030-01-31T18:00:00+01:00``; UTC unless it
    says otherwise). It must lie in the future.

    Durations are counted by the gateway's clock, not the caller's, so a
    client with a wrong clock still gets the lifetime it asked for.
    """
    now = time.time() if now is None else now
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("an expiry is a duration such as '30d' or an ISO time such as '2030-01-31T18:00Z'")
    text = text.strip()
    duration = _DURATION.match(text)
    if duration:
        seconds = int(duration.group(1)) * _UNIT_SECONDS[duration.group(2)]
        if seconds <= 0:
            raise InvalidArgument(f"expiry {text!r}: a duration must be longer than zero")
        return now + seconds
    expires = iso_timestamp(text)
    if expires is None:
        raise InvalidArgument(f"expiry {text!r} is neither a duration (a number and s, m, h, d or w: '30d') "
                              "nor an ISO time ('2030-01-31T18:00Z')")
    if not math.isfinite(expires) or expires <= now:
        raise InvalidArgument(f"expiry {text!r} is not in the future")
    return expires


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


def iso_timestamp(text: str) -> float | None:
    """``text`` as an ISO 8601 time in epoch seconds (UTC when it names no zone); ``None`` if it is not one."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
