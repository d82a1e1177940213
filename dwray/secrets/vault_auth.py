"""How the Vault secret manager keeps a valid token: token or AppRole auth, renewal, re-login.

Its own credentials come from ``secret://env/`` or ``secret://file/``
references only: a token kept in the Vault it opens could never be read.

- Token auth: the token is read from its reference at login. A token that
  stops working (expired, revoked) is read again, so a rotated token file or
  variable is picked up without a restart.
- AppRole auth: ``role_id`` and ``secret_id`` log in at
  ``auth/<approle_mount>/login``; an expired token means a new login.
- Renewal: a renewable token with a TTL is renewed (``renew-self``) on the
  first use past half its TTL, so an active client never lets it lapse; past
  its maximum TTL Vault refuses renewal and the client logs in again (AppRole)
  or re-reads the token.

Tokens never appear in reprs, logs or errors.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import hvac
import hvac.exceptions

from dwray.errors import InvalidArgument
from dwray.secrets.credentials import credential_ref, read_credential

__all__ = ["VaultLogin"]


class VaultLogin:
    """Keeps ``client`` holding a usable token; see the module docstring."""

    def __init__(self, client: hvac.Client, *, token: str | None, role_id: str | None, secret_id: str | None,
                 approle_mount: str, clock: Callable[[], float] = time.monotonic) -> None:
        if token is None and (role_id is None or secret_id is None):
            raise InvalidArgument("Vault needs credentials: set [secrets.vault] token, or role_id and secret_id "
                                  "(secret://env/ or secret://file/ references)")
        if token is not None and (role_id is not None or secret_id is not None):
            raise InvalidArgument("set [secrets.vault] token or role_id and secret_id, not both")
        for ref, what in ((token, "[secrets.vault] token"), (role_id, "[secrets.vault] role_id"),
                          (secret_id, "[secrets.vault] secret_id")):
            if ref is not None:
                credential_ref(ref, what)
        self._client = client
        self._token_ref, self._role_id_ref, self._secret_id_ref = token, role_id, secret_id
        self._approle_mount = approle_mount
        self._clock = clock
        self._lock = threading.Lock()
        self._logged_in = False
        self._renew_at: float | None = None  # None: the token does not expire
        self._expires_at: float | None = None
        self._renewable = False
        self.logins = 0
        self.renewals = 0

    @property
    def method(self) -> str:
        return "token" if self._token_ref is not None else "approle"

    def _lease(self, ttl: float, renewable: bool) -> None:
        now = self._clock()
        self._renewable = renewable
        self._renew_at = now + ttl / 2 if ttl > 0 else None
        self._expires_at = now + ttl if ttl > 0 else None

    def login(self) -> None:
        """Log in afresh: read the token (token auth) or log in with AppRole."""
        if self._token_ref is not None:
            self._client.token = read_credential(self._token_ref, "[secrets.vault] token")
            data: dict[str, Any] = self._client.auth.token.lookup_self()["data"]
            self._lease(float(data.get("ttl") or 0), bool(data.get("renewable")))
        else:
            role_id = read_credential(self._role_id_ref or "", "[secrets.vault] role_id")
            secret_id = read_credential(self._secret_id_ref or "", "[secrets.vault] secret_id")
            auth = self._client.auth.approle.login(role_id=role_id, secret_id=secret_id,
                                                   mount_point=self._approle_mount)["auth"]
            self._lease(float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
        self._logged_in = True
        self.logins += 1

    def ensure(self) -> None:
        """Before a request: log in if needed; renew past half the TTL; log in again once expired."""
        with self._lock:
            if not self._logged_in:
                self.login()
                return
            now = self._clock()
            if self._renew_at is None or now < self._renew_at:
                return
            if self._renewable and (self._expires_at is None or now < self._expires_at):
                try:
                    auth = self._client.auth.token.renew_self()["auth"]
                except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
                    self.login()  # past its maximum TTL, or revoked
                    return
                self.renewals += 1
                self._lease(float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))
                return
            if self._expires_at is not None and now >= self._expires_at:
                self.login()

    def recover(self) -> bool:
        """After Vault refused the token: log in again; ``True`` when a retry may help."""
        with self._lock:
            previous = self._client.token
            try:
                self.login()
            except hvac.exceptions.Forbidden:
                return False
            # A re-read static token that did not change will be refused again.
            return self._token_ref is None or self._client.token != previous
