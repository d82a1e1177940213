"""Key-encryption keys held by Vault/OpenBao Transit: the KEK never leaves Vault.

Each KEK id is one Transit key, named ``key_prefix`` + the id with its ``:``
made ``-`` (``tenant:acme`` -> ``dwray-tenant-acme``). KEK ids are
``scheme:name`` with a scheme of lowercase letters, digits and ``_`` (no
``-``), so the mapping is one to one and ``kek_ids()`` can read it back.

A DEK is wrapped by Transit ``encrypt`` and unwrapped by ``decrypt``; the
wrapped DEK is Transit's ciphertext itself (``vault:vN:<base64>``, ASCII), so
its KEK version is the ``N`` Transit wrote, checked against the version the
catalog holds. Keys are ``aes256-gcm96`` with *derived* keys, and every call
passes the KEK id as the derivation ``context``: a DEK is bound to its KEK id
even if two ids were ever made to share a Transit key. Why context and not
``associated_data``: Transit's ``rewrap`` takes a context but no associated
data, so DEKs sealed with associated data could not be rewrapped inside
Vault. ``ensure`` refuses a key of another type or one that is not derived
(Transit ignores a context it cannot use, which would drop the binding).

Version housekeeping maps onto Transit: ``rotate`` is Transit's rotate;
``rewrap`` is Transit's rewrap (the DEK never leaves Vault); ``retire_below``
sets ``min_decryption_version``, after which Vault refuses older ciphertext
(``KeyRetired``); it may be lowered again, since nothing is trimmed.

Crypto-shredding (``destroy``): rotate once, raise the minimum decryption and
encryption versions to that new version, *trim* every older version (Vault
deletes them for good), delete the key, and put a tombstone in its place: an
``ed25519`` key of the same name. The tombstone is how every process learns
the id was shredded (``KeyShredded`` from every call, ``ensure`` included),
and it keeps Transit's encrypt from silently creating a fresh key under the
old name. Should the process die between the delete and the tombstone, the
old versions are already trimmed: the data stays unreadable, only the marker
is missing (a later ``ensure`` would create a new, empty key; ``destroy``
again puts the marker back).

The token needs this policy on the mount (``transit`` here)::

    path "transit/keys/dwray-*"         { capabilities = ["create", "read", "update", "delete"] }
    path "transit/keys/dwray-*/*"       { capabilities = ["update"] }   # rotate, config, trim
    path "transit/keys"                 { capabilities = ["list"] }
    path "transit/encrypt/dwray-*"      { capabilities = ["update"] }   # not "create": no upserts
    path "transit/decrypt/dwray-*"      { capabilities = ["update"] }
    path "transit/rewrap/dwray-*"       { capabilities = ["update"] }

A refusal names the capability and path that were missing. Vault down,
unreachable, sealed, timing out or failing (5xx) is ``KmsUnavailable``
naming the address: nothing was wrapped or unwrapped, so a write fails before
it is acknowledged, and the next call simply tries again (no restart needed).
The token is asked of its source for every request (the source caches:
a secret resolver), so a rotated token is used from the next call on; after
a refusal the source is told to forget it and asked once more. The token
never appears in a message or repr.
"""
from __future__ import annotations

import base64
import binascii
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests

from dwray.errors import (
    IntegrityError,
    InvalidArgument,
    KeyNotFound,
    KeyRetired,
    KeyringError,
    KeyShredded,
    KmsUnavailable,
)
from dwray.secret_ref import SecretValue

__all__ = ["TransitKeyring"]

_KEK_ID = re.compile(r"^[a-z][a-z0-9_]{0,31}:[A-Za-z0-9_-]{1,200}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{0,64}$")
_MOUNT = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
_ADDRESS = re.compile(r"^https?://[^/\s?#]+/?$")
_CIPHERTEXT = re.compile(r"^vault:v([1-9][0-9]{0,9}):[A-Za-z0-9+/]+={0,2}$")
_KEY_TYPE = "aes256-gcm96"
_TOMBSTONE_TYPE = "ed25519"
_MAX_DEK = 4096
# Vault's own words for its refusals, as OpenBao 2.x and Vault 1.x write them.
_TOO_OLD = "too old"
_TOO_NEW = "too new"
_NOT_FOUND = "not found"
_NOT_SUPPORTED = "not supported for key type"

T = TypeVar("T")
# What Transit answers when it refuses an encrypt, decrypt or rewrap (the meaning is in its words).
_REFUSALS = (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath)


class TransitKeyring:
    """KEKs as Transit keys of one Vault/OpenBao. Thread-safe: each thread has its own HTTP session.

    ``token`` returns the token (a ``SecretValue``) and is called for every
    request, so it should be cheap (a resolver's cached value); a rotated
    token is then used without a restart. ``forget_token``, if given, is
    called when Vault refuses the token, before it is asked for once more.
    """

    def __init__(self, address: str, token: Callable[[], SecretValue], *, mount: str = "transit",
                 key_prefix: str = "dwray-", namespace: str | None = None, ca_cert: str | Path | None = None,
                 timeout: float = 10.0, forget_token: Callable[[], None] | None = None) -> None:
        if not isinstance(address, str) or not _ADDRESS.match(address):
            raise InvalidArgument(f"vault-transit address must be http(s)://HOST[:PORT], not {address!r}")
        mount = mount.strip("/") if isinstance(mount, str) else mount
        if not isinstance(mount, str) or not _MOUNT.match(mount):
            raise InvalidArgument(f"vault-transit mount must be a path of letters, digits, '_' and '-', not {mount!r}")
        if not isinstance(key_prefix, str) or not _PREFIX.match(key_prefix):
            raise InvalidArgument(f"vault-transit key_prefix must be up to 64 letters, digits, '_', '.' or '-', "
                                  f"not {key_prefix!r}")
        if not timeout > 0:
            raise InvalidArgument(f"vault-transit timeout must be positive, not {timeout!r}")
        self.address = address.rstrip("/")
        self.mount = mount
        self.key_prefix = key_prefix
        self.namespace = namespace
        self.service = f"vault-transit at {self.address}"
        self._verify: str | bool = str(ca_cert) if ca_cert else True
        self._timeout = float(timeout)
        self._token = token
        self._forget_token = forget_token
        self._local = threading.local()
        # KEK ids seen to exist (as live keys) in this process: wrap then needs no extra look.
        self._known: set[str] = set()

    def __repr__(self) -> str:
        return f"TransitKeyring({self.address!r}, mount={self.mount!r}, key_prefix={self.key_prefix!r})"

    # The KeyService contract ------------------------------------------------

    def ensure(self, kek_id: str) -> int:
        """Create the Transit key of ``kek_id`` (derived aes256-gcm96) if it has none; return its latest version."""
        name = self._name(kek_id)
        key = self._read_key(kek_id)
        if key is None:
            created = self._call("create", f"keys/{name}", lambda c: c.secrets.transit.create_key(
                name, key_type=_KEY_TYPE, derived=True, mount_point=self.mount))
            # OpenBao answers with the key; Vault answers 204: read it then.
            key = _data(created) or self._read_key(kek_id)
            if key is None:
                raise KeyringError(f"{self.service}: Transit key {name!r} was created but cannot be read back")
        self._check_live(kek_id, key)
        self._known.add(kek_id)
        return int(key["latest_version"])

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        """Wrap ``dek`` with Transit encrypt under the key's latest version; return ``(version, ciphertext)``."""
        return self.wrap_many([(kek_id, dek)])[0]

    def wrap_many(self, items: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
        """``wrap`` for each ``(kek_id, dek)`` pair, in order: one Transit batch per KEK id."""
        groups: dict[str, list[int]] = {}
        for index, (kek_id, dek) in enumerate(items):
            _check_dek(dek)
            groups.setdefault(kek_id, []).append(index)
        results: list[tuple[int, bytes]] = [(0, b"")] * len(items)
        for kek_id, indexes in groups.items():
            name = self._name(kek_id)
            self._require_live(kek_id)
            context = _context(kek_id)
            batch = [{"plaintext": base64.b64encode(bytes(items[i][1])).decode("ascii"), "context": context}
                     for i in indexes]
            try:
                reply = self._call("update", f"encrypt/{name}", lambda c: c.secrets.transit.encrypt_data(
                    name, batch_input=batch, mount_point=self.mount), expect=_REFUSALS)
            except _REFUSALS as exc:
                raise self._refusal(kek_id, None, _batch_message(exc)) from None
            answers = reply["data"]["batch_results"]
            for index, answer in zip(indexes, answers, strict=True):
                if answer.get("error"):
                    raise self._refusal(kek_id, None, str(answer["error"]))
                ciphertext = answer["ciphertext"]
                results[index] = (_version_of(kek_id, ciphertext), ciphertext.encode("ascii"))
        return results

    def unwrap(self, kek_id: str, version: int, wrapped: bytes) -> bytes:
        """Recover a DEK with Transit decrypt.

        ``KeyNotFound`` if that version is absent, ``KeyRetired`` if it is
        below ``min_decryption_version``, ``IntegrityError`` if ``wrapped`` was
        altered, ``KeyShredded`` after ``destroy``.
        """
        name = self._name(kek_id)
        ciphertext = _ciphertext(kek_id, version, wrapped)
        try:
            reply = self._call("update", f"decrypt/{name}", lambda c: c.secrets.transit.decrypt_data(
                name, ciphertext=ciphertext, context=_context(kek_id), mount_point=self.mount), expect=_REFUSALS)
        except _REFUSALS as exc:
            raise self._refusal(kek_id, version, _message(exc)) from None
        try:
            return base64.b64decode(reply["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise IntegrityError(f"DEK wrapped under {kek_id!r} version {version}",
                                 f"{self.service} answered decrypt without a valid plaintext") from None

    def rotate(self, kek_id: str) -> int:
        """Rotate the Transit key: a new latest version wraps new DEKs; return it."""
        name = self._name(kek_id)
        self._require_live(kek_id, fresh=True)
        reply = self._call("update", f"keys/{name}/rotate", lambda c: c.secrets.transit.rotate_key(
            name, mount_point=self.mount))
        key = _data(reply) or self._read_key(kek_id)
        if key is None:
            raise KeyNotFound(kek_id, "any")
        return int(key["latest_version"])

    def retire_below(self, kek_id: str, minimum: int) -> None:
        """Set Transit's ``min_decryption_version`` (1..latest): Vault refuses older ciphertext from now on."""
        key = self._require_live(kek_id, fresh=True)
        primary = int(key["latest_version"])
        if isinstance(minimum, bool) or not isinstance(minimum, int) or not 1 <= minimum <= primary:
            raise InvalidArgument(f"minimum version for {kek_id!r} must be 1..{primary} (the primary), not {minimum}")
        self._configure(kek_id, {"min_decryption_version": minimum})

    def rewrap(self, kek_id: str, version: int, wrapped: bytes) -> tuple[int, bytes]:
        """Transit rewrap: decrypt and encrypt under the latest version inside Vault; return ``(primary, wrapped)``."""
        name = self._name(kek_id)
        ciphertext = _ciphertext(kek_id, version, wrapped)
        try:
            reply = self._call("update", f"rewrap/{name}", lambda c: c.secrets.transit.rewrap_data(
                name, ciphertext=ciphertext, context=_context(kek_id), mount_point=self.mount), expect=_REFUSALS)
        except _REFUSALS as exc:
            raise self._refusal(kek_id, version, _message(exc)) from None
        ciphertext = reply["data"]["ciphertext"]
        return _version_of(kek_id, ciphertext), ciphertext.encode("ascii")

    def destroy(self, kek_id: str) -> None:
        """Trim every version of the Transit key, delete it and leave a tombstone (see the module docstring)."""
        name = self._name(kek_id)
        self._known.discard(kek_id)
        key = self._read_key(kek_id)
        if key is not None and key.get("type") == _TOMBSTONE_TYPE:
            return  # already destroyed
        if key is None:
            # Never created: nothing to trim, but the id is dead all the same.
            self._call("create", f"keys/{name}", lambda c: c.secrets.transit.create_key(
                name, key_type=_TOMBSTONE_TYPE, mount_point=self.mount))
            return
        # Every version up to the latest may have wrapped DEKs, and Transit keeps
        # its latest: a fresh latest (which wrapped nothing) lets all of them go.
        self._call("update", f"keys/{name}/rotate", lambda c: c.secrets.transit.rotate_key(
            name, mount_point=self.mount))
        latest = int(key["latest_version"]) + 1
        self._configure(kek_id, {"min_decryption_version": latest, "min_encryption_version": latest,
                                 "deletion_allowed": True})
        self._call("update", f"keys/{name}/trim", lambda c: c.secrets.transit.trim_key(
            name, min_version=latest, mount_point=self.mount))
        self._call("delete", f"keys/{name}", lambda c: c.secrets.transit.delete_key(name, mount_point=self.mount))
        self._call("create", f"keys/{name}", lambda c: c.secrets.transit.create_key(
            name, key_type=_TOMBSTONE_TYPE, mount_point=self.mount))

    def describe(self, kek_id: str) -> dict[str, Any]:
        """Versions, primary and minimum of ``kek_id`` and its Transit key's name; never key material."""
        key = self._read_key(kek_id)
        if key is None:
            raise KeyNotFound(kek_id, "any")
        name = self._name(kek_id)
        if key.get("type") == _TOMBSTONE_TYPE:
            return {"kek_id": kek_id, "versions": [], "primary": None, "minimum": None, "shredded": True,
                    "transit_key": name}
        self._check_live(kek_id, key)
        return {"kek_id": kek_id, "versions": sorted(int(v) for v in key.get("keys", {})),
                "primary": int(key["latest_version"]), "minimum": int(key["min_decryption_version"]),
                "shredded": False, "transit_key": name}

    def kek_ids(self) -> list[str]:
        """Every live KEK id whose Transit key carries this prefix, sorted (tombstones are not keys any more).

        One read per key besides the list, to tell tombstones apart: for
        maintenance (``dw keys rotate --all``), not for a hot path.
        """
        try:
            reply = self._call("list", "keys", lambda c: c.secrets.transit.list_keys(mount_point=self.mount),
                               expect=(hvac.exceptions.InvalidPath,))
        except hvac.exceptions.InvalidPath:
            return []  # Vault answers 404 when the mount holds no key at all
        ids = []
        for name in (_data(reply) or {}).get("keys") or []:
            if not name.startswith(self.key_prefix):
                continue
            scheme, _, rest = name[len(self.key_prefix):].partition("-")
            kek_id = f"{scheme}:{rest}"
            if not _KEK_ID.match(kek_id):
                continue  # not a name this mapping makes: another application's key
            key = self._read_key(kek_id)
            if key is not None and key.get("type") != _TOMBSTONE_TYPE:
                ids.append(kek_id)
        return sorted(ids)

    # Keys ------------------------------------------------------------------

    def _name(self, kek_id: str) -> str:
        if not isinstance(kek_id, str) or not _KEK_ID.match(kek_id):
            raise InvalidArgument(f"a KEK id for vault-transit must be SCHEME:NAME (scheme: lowercase letters, "
                                  f"digits, '_'; name: letters, digits, '_', '-'), not {kek_id!r}")
        return self.key_prefix + kek_id.replace(":", "-", 1)

    def _read_key(self, kek_id: str) -> dict[str, Any] | None:
        """The Transit key's description, or ``None`` if there is no key of that name."""
        name = self._name(kek_id)
        try:
            return _data(self._call("read", f"keys/{name}", lambda c: c.secrets.transit.read_key(
                name, mount_point=self.mount), expect=(hvac.exceptions.InvalidPath,)))
        except hvac.exceptions.InvalidPath:
            return None

    def _check_live(self, kek_id: str, key: dict[str, Any]) -> None:
        """``KeyShredded`` for a tombstone; ``KeyringError`` for a key dwray did not make and cannot bind."""
        if key.get("type") == _TOMBSTONE_TYPE:
            self._known.discard(kek_id)
            raise KeyShredded(kek_id)
        if key.get("type") != _KEY_TYPE or not key.get("derived"):
            raise KeyringError(f"{self.service}: Transit key {self._name(kek_id)!r} is a {key.get('type')} key "
                               f"{'with' if key.get('derived') else 'without'} derivation; dwray needs a derived "
                               f"{_KEY_TYPE} key (to bind each DEK to its KEK id): choose another key_prefix")

    def _require_live(self, kek_id: str, *, fresh: bool = False) -> dict[str, Any]:
        """Check that ``kek_id``'s key exists and is live: ``KeyNotFound`` / ``KeyShredded`` otherwise.

        Without ``fresh``, a KEK id already seen in this process is taken on
        trust (its wrap then costs one round trip); its tombstone still stops
        the wrap, in Vault.
        """
        if not fresh and kek_id in self._known:
            return {}
        key = self._read_key(kek_id)
        if key is None:
            raise KeyNotFound(kek_id, "any")
        self._check_live(kek_id, key)
        self._known.add(kek_id)
        return key

    def _configure(self, kek_id: str, settings: dict[str, Any]) -> None:
        name = self._name(kek_id)
        # Posted as is: hvac's own check of these fields refuses what Vault accepts
        # (min_encryption_version equal to min_decryption_version).
        try:
            self._call("update", f"keys/{name}/config", lambda c: c.adapter.post(
                f"/v1/{self.mount}/keys/{name}/config", json=settings), expect=(hvac.exceptions.InvalidRequest,))
        except hvac.exceptions.InvalidRequest as exc:
            raise KeyringError(f"{self.service} refused the settings {sorted(settings)} of Transit key "
                               f"{name!r}: {_message(exc)}") from None

    def _refusal(self, kek_id: str, version: int | None, message: str) -> KeyringError | IntegrityError:
        """The error for a Transit refusal of encrypt, decrypt or rewrap."""
        lowered = message.lower()
        if _NOT_SUPPORTED in lowered or _NOT_FOUND in lowered:
            key = self._read_key(kek_id)
            if key is not None and key.get("type") == _TOMBSTONE_TYPE:
                self._known.discard(kek_id)
                return KeyShredded(kek_id)
            if key is None:
                self._known.discard(kek_id)
                return KeyNotFound(kek_id, "any" if version is None else version)
        if version is None:
            return KeyringError(f"{self.service} refused to wrap under {kek_id!r}: {message}")
        if _TOO_OLD in lowered:
            key = self._read_key(kek_id)
            minimum = int(key.get("min_decryption_version", version + 1)) if key else version + 1
            return KeyRetired(kek_id, version, minimum)
        if _TOO_NEW in lowered:
            return KeyNotFound(kek_id, version)
        return IntegrityError(f"DEK wrapped under {kek_id!r} version {version}", f"{self.service}: {message}")

    # Calls -----------------------------------------------------------------

    def _call(self, capability: str, path: str, operation: Callable[[hvac.Client], T], *,
              expect: tuple[type[Exception], ...] = ()) -> T:
        """Run ``operation`` with this thread's client; Vault's absence or refusal as dwray errors.

        The hvac errors in ``expect`` reach the caller, which knows what they
        mean there. A refusal (403) is tried once more with the token asked
        again of its source, in case it was rotated; then it names what the
        policy lacks.
        """
        for attempt in (1, 2):
            client, used = self._client()
            try:
                return operation(client)
            except expect:
                raise
            except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
                if attempt == 1:
                    if self._forget_token is not None:
                        self._forget_token()
                    if self._token() != used:
                        continue  # the token was rotated meanwhile: try the new one
                raise KmsUnavailable(self.service, f"permission denied: the token's policy must grant "
                                                   f"{capability!r} on {self.mount}/{path}") from None
            except hvac.exceptions.VaultDown:
                raise KmsUnavailable(self.service, "Vault is sealed or unavailable (503)") from None
            except (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway,
                    hvac.exceptions.VaultNotInitialized, hvac.exceptions.RateLimitExceeded,
                    hvac.exceptions.UnexpectedError) as exc:
                raise KmsUnavailable(self.service, f"{type(exc).__name__}: {_message(exc)}") from None
            except requests.exceptions.Timeout:
                raise KmsUnavailable(self.service, f"no answer within {self._timeout:g} s") from None
            except requests.exceptions.RequestException as exc:
                raise KmsUnavailable(self.service, f"cannot connect ({type(exc).__name__})") from None
            except hvac.exceptions.VaultError as exc:
                raise KeyringError(f"{self.service} refused {capability!r} on {self.mount}/{path}: "
                                   f"{_message(exc)}") from None
        raise AssertionError("unreachable")

    def _client(self) -> tuple[hvac.Client, SecretValue]:
        """This thread's client, carrying the current token, and that token."""
        token = self._token()
        local = self._local
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = hvac.Client(url=self.address, token=token.reveal(), namespace=self.namespace,
                                                verify=self._verify, timeout=self._timeout)
        elif local.token != token:
            client.token = token.reveal()
        local.token = token
        return client, token


def _data(reply: Any) -> dict[str, Any] | None:
    """The ``data`` of a Vault answer (``None`` for an empty 204)."""
    if isinstance(reply, dict):
        data = reply.get("data")
        return data if isinstance(data, dict) else None
    return None


def _context(kek_id: str) -> str:
    return base64.b64encode(kek_id.encode("utf-8")).decode("ascii")


def _check_dek(dek: bytes) -> None:
    if not isinstance(dek, (bytes, bytearray, memoryview)) or not 0 < len(dek) <= _MAX_DEK:
        raise InvalidArgument(f"a DEK must be 1..{_MAX_DEK} bytes")


def _version_of(kek_id: str, ciphertext: str) -> int:
    match = _CIPHERTEXT.match(ciphertext) if isinstance(ciphertext, str) else None
    if match is None:
        raise IntegrityError(f"DEK wrapped under {kek_id!r}", "Transit ciphertext is not vault:vN:<base64>")
    return int(match.group(1))


def _ciphertext(kek_id: str, version: int, wrapped: bytes) -> str:
    """The Transit ciphertext in ``wrapped``, checked to be of ``version``."""
    what = f"DEK wrapped under {kek_id!r} version {version}"
    try:
        text = bytes(wrapped).decode("ascii")
    except (UnicodeDecodeError, TypeError):
        raise IntegrityError(what, "not a Transit ciphertext (vault:vN:<base64>)") from None
    if _version_of(kek_id, text) != version:
        raise IntegrityError(what, f"the ciphertext says version {_version_of(kek_id, text)}")
    return text


def _message(exc: hvac.exceptions.VaultError) -> str:
    """Vault's own error words (never a request's data), cut short."""
    errors = exc.errors if isinstance(exc.errors, list) else [str(exc.args[0]) if exc.args else ""]
    return "; ".join(str(error) for error in errors)[:300] or type(exc).__name__


def _batch_message(exc: hvac.exceptions.VaultError) -> str:
    """The first item error of a refused batch (Vault answers 400 with per-item errors)."""
    body = exc.json if isinstance(exc.json, dict) else {}
    for answer in ((body.get("data") or {}).get("batch_results") or []):
        if isinstance(answer, dict) and answer.get("error"):
            return str(answer["error"])[:300]
    return _message(exc) if exc.errors else type(exc).__name__
