"""Who may talk to the gateway: tenants, their S3 access keys, and admin tokens (as hashes).

``IdentityStore`` keeps them in SQLite (WAL, ``synchronous=FULL``, like the
catalog) at ``DATA_DIR/identity.db``; the ``service.identity`` plugin serves it
and ``actors.remote_services.RemoteIdentity`` is its proxy, both an
``IdentityService`` (``dwray.core.contracts``). ``dwray.core.access_keys``
makes and resolves the keys over either.

- an access key's secret is stored only wrapped under a KEK;
- an admin token is stored only as its SHA-256, under a unique *name*
  (``ops-laptop``, ``dw-up@host``), with an optional expiry; listings show
  names, ids and times, never a token or its hash. A revoked token's row is
  deleted: the name is free again and nothing can match the token;
- every change bumps an *epoch* in the same transaction, so gateway replicas
  that cache resolved keys can drop their cache when it moves.

A revoked key keeps its row (its id stays taken and shows in listings) but its
wrapped secret is erased, so nothing can ever resolve it again.

Deleting a tenant is refused while it has active access keys: revoke them
first. The identity store knows nothing of buckets; whoever deletes a tenant
(the admin API) checks the catalog for its buckets.

Shredding a tenant (``shred_tenant``, the identity part of crypto-shredding,
``dwray.core.warehouse.tenants``) removes it with all its keys and leaves a
tombstone: its KEK is destroyed, and a new tenant of the same name would get
the same KEK id, so the name can never be used again.
"""
from __future__ import annotations

import dataclasses
import hmac
import math
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from dwray.core.models import TenantContext
from dwray.core.names import validate_tenant_name
from dwray.core.policy import AccessPolicy
from dwray.core.sqlite_store import SqliteStore
from dwray.errors import (
    AccessKeyNotFound,
    AlreadyExists,
    InvalidArgument,
    NotFound,
    TenantAlreadyExists,
    TenantNotFound,
)

__all__ = [
    "AccessKeyInfo",
    "AdminTokenExists",
    "AdminTokenInfo",
    "AdminTokenNotFound",
    "IdentityStore",
    "ShreddedTenant",
    "StoredAccessKey",
    "TenantHasActiveKeys",
    "TenantInfo",
    "TenantShredded",
    "validate_token_name",
]

# AWS allows 16 to 128 word characters; anything else is refused before a query.
_KEY_ID = re.compile(r"^[A-Za-z0-9_]{16,128}$")
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_MAX_DESCRIPTION = 1024
# A token's last use is written at most this often (seconds): it is for "which tokens
# are idle?", and a write per admin request would cost more than that answer is worth.
LAST_USED_RESOLUTION = 60.0


class TenantHasActiveKeys(InvalidArgument):
    """A tenant cannot be deleted while it has active access keys.

    An ``InvalidArgument`` (as before) of its own type, so that the admin API can answer 409.
    """

    fields = ("tenant", "count")
    template = "tenant {tenant!r} still has {count} active access key(s); revoke them first"


class TenantShredded(AlreadyExists):
    """A shredded tenant's name cannot be used again: a new tenant would get its (destroyed) KEK id."""

    fields = ("tenant",)
    template = ("tenant {tenant!r} was crypto-shredded and its key destroyed; "
                "its name cannot be used again, choose another")


class AdminTokenNotFound(NotFound):
    """No admin token of that name (never made, or revoked)."""

    fields = ("name",)
    template = "no admin token named {name!r} (see 'dw admin-token list')"


class AdminTokenExists(AlreadyExists):
    """An admin token of that name exists; names are unique so that revoking one is unambiguous."""

    fields = ("name",)
    template = "an admin token named {name!r} exists; revoke it first or replace it"

# Each entry migrates the schema from version N to N + 1 (N = its index).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        epoch  INTEGER NOT NULL
    );
    INSERT INTO meta VALUES (1, 0);
    CREATE TABLE tenants (
        name         TEXT PRIMARY KEY,
        created      REAL NOT NULL,
        description  TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE access_keys (
        access_key_id   TEXT PRIMARY KEY,
        tenant          TEXT NOT NULL REFERENCES tenants(name),
        created         REAL NOT NULL,
        revoked         REAL,
        description     TEXT NOT NULL DEFAULT '',
        kek_id          TEXT NOT NULL,
        kek_version     INTEGER NOT NULL,
        wrapped_secret  BLOB
    );
    CREATE INDEX access_keys_tenant ON access_keys (tenant);
    CREATE INDEX access_keys_kek ON access_keys (kek_id, kek_version) WHERE revoked IS NULL;
    CREATE TABLE admin_tokens (
        token_hash   TEXT PRIMARY KEY,
        created      REAL NOT NULL,
        description  TEXT NOT NULL DEFAULT ''
    );
    """,
    # 2: named admin tokens with an expiry and a last use, and the tombstones of shredded
    # tenants. Tokens made before have no name: each gets 'legacy-<its new id>', so that
    # it can be listed and revoked like any other.
    """
    ALTER TABLE admin_tokens ADD COLUMN token_id TEXT;
    ALTER TABLE admin_tokens ADD COLUMN name TEXT;
    ALTER TABLE admin_tokens ADD COLUMN expires REAL;
    ALTER TABLE admin_tokens ADD COLUMN last_used REAL;
    UPDATE admin_tokens SET token_id = lower(hex(randomblob(8)));
    UPDATE admin_tokens SET name = 'legacy-' || token_id;
    CREATE UNIQUE INDEX admin_tokens_name ON admin_tokens (name);
    CREATE UNIQUE INDEX admin_tokens_id ON admin_tokens (token_id);
    CREATE TABLE shredded_tenants (
        name      TEXT PRIMARY KEY,
        shredded  REAL NOT NULL,
        kek_id    TEXT NOT NULL
    );
    """,
    # 3: an access key's policy (IAM policy JSON, dwray.core.policy); NULL: the tenant's full rights,
    # which is what every key made before had.
    """
    ALTER TABLE access_keys ADD COLUMN policy TEXT;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_KEY_COLUMNS = "access_key_id, tenant, created, revoked, description, kek_id, kek_version, policy"
_STORED_COLUMNS = "access_key_id, tenant, kek_id, kek_version, wrapped_secret, policy"
_TOKEN_COLUMNS = "token_id, name, created, expires, last_used, description"


# Data ------------------------------------------------------------------------

@dataclass(frozen=True)
class TenantInfo:
    """One tenant."""

    name: str
    created: float
    description: str = ""


@dataclass(frozen=True)
class AccessKeyInfo:
    """What may be shown about an access key: never its secret. ``policy`` is its IAM policy JSON
    (``dwray.core.policy``), ``None`` for the tenant's full rights."""

    access_key_id: str
    tenant: str
    created: float
    revoked: float | None
    description: str
    kek_id: str
    kek_version: int
    policy: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked is None

    @property
    def scope(self) -> str:
        """One line on what the key may do: ``full`` or its policy's summary."""
        return "full" if self.policy is None else AccessPolicy.parse(self.policy).summary()


@dataclass(frozen=True)
class StoredAccessKey:
    """An active key as stored: its secret only wrapped under a KEK, and its policy JSON (``None``: full rights)."""

    access_key_id: str
    tenant: str
    kek_id: str
    kek_version: int
    wrapped_secret: bytes = field(repr=False)
    policy: str | None = None


@dataclass(frozen=True)
class AdminTokenInfo:
    """What may be shown about an admin token: never the token or its hash."""

    token_id: str
    name: str
    created: float
    expires: float | None
    last_used: float | None
    description: str = ""

    def expired(self, now: float | None = None) -> bool:
        """Whether the token has passed its expiry (a token without one never expires)."""
        return self.expires is not None and (time.time() if now is None else now) >= self.expires


@dataclass(frozen=True)
class ShreddedTenant:
    """The tombstone of a shredded tenant, and how many access keys went with it (0 on a repeat)."""

    name: str
    kek_id: str
    shredded: float
    access_keys_removed: int = 0


# The store -------------------------------------------------------------------

class IdentityStore(SqliteStore):
    """Tenants, access keys and admin-token hashes in SQLite. Thread-safe; processes may share the file."""

    label = "identity store"
    migrations = MIGRATIONS

    @staticmethod
    def _bump(db: sqlite3.Connection) -> None:
        """Move the epoch, in the transaction that makes the change."""
        db.execute("UPDATE meta SET epoch = epoch + 1 WHERE id = 1")

    def epoch(self) -> int:
        """A number that moves with every change (cache invalidation for gateway replicas)."""
        return self._read("SELECT epoch FROM meta WHERE id = 1")[0][0]

    # Tenants ----------------------------------------------------------------

    def create_tenant(self, name: str, description: str = "") -> TenantInfo:
        validate_tenant_name(name)
        tenant = TenantInfo(name, time.time(), _check_description(description))
        with self._write() as db:
            if db.execute("SELECT 1 FROM shredded_tenants WHERE name = ?", (name,)).fetchone():
                raise TenantShredded(name)
            try:
                db.execute("INSERT INTO tenants VALUES (?, ?, ?)", (name, tenant.created, tenant.description))
            except sqlite3.IntegrityError:
                raise TenantAlreadyExists(name) from None
            self._bump(db)
        return tenant

    def get_tenant(self, name: str) -> TenantInfo:
        rows = self._read("SELECT name, created, description FROM tenants WHERE name = ?", (name,))
        if not rows:
            raise TenantNotFound(name)
        return TenantInfo(*rows[0])

    def list_tenants(self) -> list[TenantInfo]:
        return [TenantInfo(*row) for row in self._read("SELECT name, created, description FROM tenants ORDER BY name")]

    def delete_tenant(self, name: str) -> None:
        """Remove a tenant and its revoked keys; refused while it has active keys."""
        with self._write() as db:
            if not db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise TenantNotFound(name)
            active = db.execute("SELECT COUNT(*) FROM access_keys WHERE tenant = ? AND revoked IS NULL",
                                (name,)).fetchone()[0]
            if active:
                raise TenantHasActiveKeys(name, active)
            db.execute("DELETE FROM access_keys WHERE tenant = ?", (name,))
            db.execute("DELETE FROM tenants WHERE name = ?", (name,))
            self._bump(db)

    def shred_tenant(self, name: str) -> ShreddedTenant:
        """Remove a tenant with every access key it has, active or not, and leave its tombstone.

        One transaction: afterwards none of its keys resolves and its name is
        refused by ``create_tenant``. Shredding a shredded tenant returns its
        tombstone (``access_keys_removed`` 0), so an interrupted shred may be
        run again; ``TenantNotFound`` if there never was such a tenant.
        """
        with self._write() as db:
            tombstone = db.execute("SELECT name, kek_id, shredded FROM shredded_tenants WHERE name = ?",
                                   (name,)).fetchone()
            if tombstone is not None:
                return ShreddedTenant(*tombstone)
            if not db.execute("SELECT 1 FROM tenants WHERE name = ?", (name,)).fetchone():
                raise TenantNotFound(name)
            removed = db.execute("DELETE FROM access_keys WHERE tenant = ?", (name,)).rowcount
            db.execute("DELETE FROM tenants WHERE name = ?", (name,))
            shredded = ShreddedTenant(name, TenantContext(name).kek_id, time.time(), removed)
            db.execute("INSERT INTO shredded_tenants VALUES (?, ?, ?)", (name, shredded.shredded, shredded.kek_id))
            self._bump(db)
        return shredded

    # Access keys ------------------------------------------------------------

    def add_access_key(self, access_key_id: str, tenant: str, kek_id: str, kek_version: int,
                       wrapped_secret: bytes, description: str = "", policy: str | None = None) -> AccessKeyInfo:
        """Store a new key, with its policy JSON if it has one (``None``: the tenant's full rights).
        Adding the very same key again changes nothing (so a lost answer may be retried)."""
        _check_key_id(access_key_id)
        if policy is not None:
            if not isinstance(policy, str):
                raise InvalidArgument("a key's policy is stored as its JSON text")
            policy = AccessPolicy.parse(policy).to_json()  # refuses what dwray would not enforce
        info = AccessKeyInfo(access_key_id, tenant, time.time(), None, _check_description(description),
                             kek_id, int(kek_version), policy)
        with self._write() as db:
            if not db.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone():
                raise TenantNotFound(tenant)
            existing = db.execute("SELECT tenant, wrapped_secret FROM access_keys WHERE access_key_id = ?",
                                  (access_key_id,)).fetchone()
            if existing is not None:
                if existing == (tenant, bytes(wrapped_secret)):
                    return self._key_info(db, access_key_id)
                raise AlreadyExists(f"access key id {access_key_id!r} is taken")
            self._insert_key(db, info, bytes(wrapped_secret))
            self._bump(db)
        return info

    @staticmethod
    def _insert_key(db: sqlite3.Connection, info: AccessKeyInfo, wrapped_secret: bytes) -> None:
        db.execute(f"INSERT INTO access_keys ({_KEY_COLUMNS}, wrapped_secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (info.access_key_id, info.tenant, info.created, None, info.description, info.kek_id,
                    info.kek_version, info.policy, wrapped_secret))

    @staticmethod
    def _key_info(db: sqlite3.Connection, access_key_id: str) -> AccessKeyInfo:
        return AccessKeyInfo(*db.execute(f"SELECT {_KEY_COLUMNS} FROM access_keys WHERE access_key_id = ?",
                                         (access_key_id,)).fetchone())

    def get_access_key(self, access_key_id: str) -> StoredAccessKey | None:
        """The active key of that id, or ``None`` (unknown, revoked, or not an access key id at all)."""
        if not isinstance(access_key_id, str) or not _KEY_ID.match(access_key_id):
            return None
        rows = self._read(f"SELECT {_STORED_COLUMNS} FROM access_keys WHERE access_key_id = ? AND revoked IS NULL",
                          (access_key_id,))
        return StoredAccessKey(*rows[0]) if rows else None

    def list_access_keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[AccessKeyInfo]:
        """Keys (never secrets), of one tenant or all, by tenant then creation time."""
        where, params = ["1"], []
        if tenant is not None:
            self.get_tenant(tenant)
            where.append("tenant = ?")
            params.append(tenant)
        if not include_revoked:
            where.append("revoked IS NULL")
        rows = self._read(f"SELECT {_KEY_COLUMNS} FROM access_keys WHERE {' AND '.join(where)} "
                          "ORDER BY tenant, created, access_key_id", tuple(params))
        return [AccessKeyInfo(*row) for row in rows]

    def revoke_access_key(self, access_key_id: str) -> AccessKeyInfo:
        """Revoke a key and erase its wrapped secret. Revoking a revoked key changes nothing."""
        with self._write() as db:
            row = db.execute("SELECT revoked FROM access_keys WHERE access_key_id = ?", (access_key_id,)).fetchone()
            if row is None:
                raise AccessKeyNotFound(access_key_id)
            if row[0] is None:
                db.execute("UPDATE access_keys SET revoked = ?, wrapped_secret = NULL WHERE access_key_id = ?",
                           (time.time(), access_key_id))
                self._bump(db)
            return self._key_info(db, access_key_id)

    def keys_wrapped_below(self, kek_id: str, version: int, limit: int = 500) -> list[StoredAccessKey]:
        """Up to ``limit`` active keys whose secret is wrapped under ``kek_id`` below ``version``."""
        rows = self._read(f"SELECT {_STORED_COLUMNS} FROM access_keys "
                          f"WHERE kek_id = ? AND kek_version < ? AND revoked IS NULL LIMIT {int(limit)}",
                          (kek_id, version))
        return [StoredAccessKey(*row) for row in rows]

    def replace_wrapped_secret(self, key: StoredAccessKey, wrapped_secret: bytes, kek_version: int) -> bool:
        """Swap a key's wrapped secret if it is still the one in ``key`` (compare and set)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE access_keys SET wrapped_secret = ?, kek_version = ? WHERE access_key_id = ? "
                "AND revoked IS NULL AND kek_id = ? AND wrapped_secret = ?",
                (bytes(wrapped_secret), int(kek_version), key.access_key_id, key.kek_id, key.wrapped_secret))
            if cursor.rowcount != 1:
                return False
            self._bump(db)
            return True

    # Admin tokens -----------------------------------------------------------

    def add_admin_token(self, token_hash: str, name: str, expires: float | None = None, description: str = "",
                        *, replace: bool = False) -> AdminTokenInfo:
        """Remember an admin token by its hash under ``name``, valid until ``expires`` (epoch seconds) if given.

        ``AdminTokenExists`` if another token has that name, unless ``replace``:
        then that token is revoked in the same transaction. Adding the very
        same token again changes nothing and returns it (a lost answer may be retried).
        """
        _check_token_hash(token_hash)
        validate_token_name(name)
        now = time.time()
        expires = _check_expiry(expires, now)
        description = _check_description(description)
        with self._write() as db:
            same = db.execute(f"SELECT name, {_TOKEN_COLUMNS} FROM admin_tokens WHERE token_hash = ?",
                              (token_hash,)).fetchone()
            if same is not None:
                if same[0] != name:
                    raise AlreadyExists("that admin token is stored already, under another name")
                return AdminTokenInfo(*same[1:])
            if db.execute("SELECT 1 FROM admin_tokens WHERE name = ?", (name,)).fetchone():
                if not replace:
                    raise AdminTokenExists(name)
                db.execute("DELETE FROM admin_tokens WHERE name = ?", (name,))
            info = AdminTokenInfo(secrets.token_hex(8), name, now, expires, None, description)
            db.execute(f"INSERT INTO admin_tokens (token_hash, {_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (token_hash, info.token_id, info.name, info.created, info.expires, None, info.description))
            self._bump(db)
        return info

    def find_admin_token(self, token_hash: str) -> AdminTokenInfo | None:
        """The admin token whose hash is ``token_hash`` (expired or not), or ``None``.

        Every stored hash is compared in constant time, with no early exit, so
        the answer's timing tells nothing about how close a guess was. A token
        found unexpired has its last use recorded (at most once a minute, and
        without moving the epoch: it changes nobody's rights).
        """
        if not isinstance(token_hash, str):
            return None
        probe = token_hash.encode("ascii", "replace")
        found = None
        for row in self._read(f"SELECT token_hash, {_TOKEN_COLUMNS} FROM admin_tokens"):
            if hmac.compare_digest(row[0].encode("ascii"), probe):
                found = row
        if found is None:
            return None
        info = AdminTokenInfo(*found[1:])
        now = time.time()
        if not info.expired(now) and (info.last_used is None or now - info.last_used >= LAST_USED_RESOLUTION):
            with self._write() as db:
                db.execute("UPDATE admin_tokens SET last_used = ? WHERE token_id = ?", (now, info.token_id))
            info = dataclasses.replace(info, last_used=now)
        return info

    def list_admin_tokens(self) -> list[AdminTokenInfo]:
        """Every admin token (expired ones included), by name: never a token or its hash."""
        return [AdminTokenInfo(*row) for row in
                self._read(f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens ORDER BY name")]

    def revoke_admin_token(self, name: str) -> AdminTokenInfo:
        """Revoke the admin token ``name`` for good (its row goes); ``AdminTokenNotFound`` if there is none."""
        with self._write() as db:
            row = db.execute(f"SELECT {_TOKEN_COLUMNS} FROM admin_tokens WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise AdminTokenNotFound(name)
            db.execute("DELETE FROM admin_tokens WHERE name = ?", (name,))
            self._bump(db)
        return AdminTokenInfo(*row)

    def count_admin_tokens(self) -> int:
        return self._read("SELECT COUNT(*) FROM admin_tokens")[0][0]

    # First start ------------------------------------------------------------

    def bootstrap(self, tenant: str, access_key_id: str, kek_id: str, kek_version: int, wrapped_secret: bytes,
                  token_hash: str, token_name: str) -> bool:
        """In one transaction: if there is no admin token and no access key yet, create
        ``tenant`` (unless it exists), this key for it and this admin token (named
        ``token_name``, no expiry). Returns whether it did; a store that was set up
        already is left alone.
        """
        validate_tenant_name(tenant)
        _check_key_id(access_key_id)
        _check_token_hash(token_hash)
        validate_token_name(token_name)
        now = time.time()
        with self._write() as db:
            if db.execute("SELECT EXISTS (SELECT 1 FROM admin_tokens) OR EXISTS (SELECT 1 FROM access_keys)"
                          ).fetchone()[0]:
                return False
            db.execute("INSERT OR IGNORE INTO tenants VALUES (?, ?, ?)", (tenant, now, "created on first start"))
            self._insert_key(db, AccessKeyInfo(access_key_id, tenant, now, None, "created on first start", kek_id,
                                               int(kek_version)), bytes(wrapped_secret))
            db.execute(f"INSERT INTO admin_tokens (token_hash, {_TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (token_hash, secrets.token_hex(8), token_name, now, None, None, "created on first start"))
            self._bump(db)
        return True

    def health(self) -> dict[str, Any]:
        return {"ok": True, "schema_version": self._read("PRAGMA user_version")[0][0]}


def _check_key_id(access_key_id: object) -> None:
    if not isinstance(access_key_id, str) or not _KEY_ID.match(access_key_id):
        raise InvalidArgument(f"invalid access key id {access_key_id!r}: use 16 to 128 letters, digits or '_'")


def _check_token_hash(token_hash: object) -> None:
    if not isinstance(token_hash, str) or not re.fullmatch(r"[0-9a-f]{64}", token_hash):
        raise InvalidArgument("an admin token hash must be 64 lowercase hex digits (SHA-256)")


def validate_token_name(name: object) -> str:
    """An admin token's name: 1 to 64 letters, digits and ``. _ @ -``, starting with a letter or digit."""
    if not isinstance(name, str) or not _TOKEN_NAME.match(name):
        raise InvalidArgument(f"invalid admin token name {name!r}: use 1 to 64 letters, digits, '.', '_', '@' "
                              "or '-', starting with a letter or digit")
    return name


def _check_expiry(expires: object, now: float) -> float | None:
    if expires is None:
        return None
    if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not math.isfinite(expires):
        raise InvalidArgument(f"an admin token's expiry must be a time in epoch seconds, not {expires!r}")
    if expires <= now:
        raise InvalidArgument("an admin token's expiry must be in the future")
    return float(expires)


def _check_description(description: object) -> str:
    if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        raise InvalidArgument(f"a description must be a str of at most {_MAX_DESCRIPTION} characters")
    return description
