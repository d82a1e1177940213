"""Who may talk to the gateway: tenants, their S3 access keys, and admin-token hashes.

``IdentityStore`` keeps them in SQLite (WAL, ``synchronous=FULL``, like the
catalog) at ``DATA_DIR/identity.db``; the ``service.identity`` plugin serves it
and ``actors.remote_services.RemoteIdentity`` is its proxy, both an
``IdentityService`` (``dwray.core.contracts``). ``dwray.core.access_keys``
makes and resolves the keys over either.

- an access key's secret is stored only wrapped under a KEK;
- an admin token is stored only as its SHA-256;
- every change bumps an *epoch* in the same transaction, so gateway replicas
  that cache resolved keys can drop their cache when it moves.

A revoked key keeps its row (its id stays taken and shows in listings) but its
wrapped secret is erased, so nothing can ever resolve it again.

Deleting a tenant is refused while it has active access keys: revoke them
first. The identity store knows nothing of buckets; whoever deletes a tenant
(the admin API) checks the catalog for its buckets.
"""
from __future__ import annotations

import hmac
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from dwray.core.names import validate_tenant_name
from dwray.core.sqlite_store import SqliteStore
from dwray.errors import (
    AccessKeyNotFound,
    AlreadyExists,
    InvalidArgument,
    TenantAlreadyExists,
    TenantNotFound,
)

__all__ = [
    "AccessKeyInfo",
    "IdentityStore",
    "StoredAccessKey",
    "TenantHasActiveKeys",
    "TenantInfo",
]

# AWS allows 16 to 128 word characters; anything else is refused before a query.
_KEY_ID = re.compile(r"^[A-Za-z0-9_]{16,128}$")
_MAX_DESCRIPTION = 1024


class TenantHasActiveKeys(InvalidArgument):
    """A tenant cannot be deleted while it has active access keys.

    An ``InvalidArgument`` (as before) of its own type, so that the admin API can answer 409.
    """

    fields = ("tenant", "count")
    template = "tenant {tenant!r} still has {count} active access key(s); revoke them first"

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
)
SCHEMA_VERSION = len(MIGRATIONS)

_KEY_COLUMNS = "access_key_id, tenant, created, revoked, description, kek_id, kek_version"


# Data ------------------------------------------------------------------------

@dataclass(frozen=True)
class TenantInfo:
    """One tenant."""

    name: str
    created: float
    description: str = ""


@dataclass(frozen=True)
class AccessKeyInfo:
    """What may be shown about an access key: never its secret."""

    access_key_id: str
    tenant: str
    created: float
    revoked: float | None
    description: str
    kek_id: str
    kek_version: int

    @property
    def active(self) -> bool:
        return self.revoked is None


@dataclass(frozen=True)
class StoredAccessKey:
    """An active key as stored: its secret only wrapped under a KEK."""

    access_key_id: str
    tenant: str
    kek_id: str
    kek_version: int
    wrapped_secret: bytes = field(repr=False)


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

    # Access keys ------------------------------------------------------------

    def add_access_key(self, access_key_id: str, tenant: str, kek_id: str, kek_version: int,
                       wrapped_secret: bytes, description: str = "") -> AccessKeyInfo:
        """Store a new key. Adding the very same key again changes nothing (so a lost answer may be retried)."""
        _check_key_id(access_key_id)
        info = AccessKeyInfo(access_key_id, tenant, time.time(), None, _check_description(description),
                             kek_id, int(kek_version))
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
        db.execute(f"INSERT INTO access_keys ({_KEY_COLUMNS}, wrapped_secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (info.access_key_id, info.tenant, info.created, None, info.description, info.kek_id,
                    info.kek_version, wrapped_secret))

    @staticmethod
    def _key_info(db: sqlite3.Connection, access_key_id: str) -> AccessKeyInfo:
        return AccessKeyInfo(*db.execute(f"SELECT {_KEY_COLUMNS} FROM access_keys WHERE access_key_id = ?",
                                         (access_key_id,)).fetchone())

    def get_access_key(self, access_key_id: str) -> StoredAccessKey | None:
        """The active key of that id, or ``None`` (unknown, revoked, or not an access key id at all)."""
        if not isinstance(access_key_id, str) or not _KEY_ID.match(access_key_id):
            return None
        rows = self._read("SELECT access_key_id, tenant, kek_id, kek_version, wrapped_secret FROM access_keys "
                          "WHERE access_key_id = ? AND revoked IS NULL", (access_key_id,))
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
        rows = self._read("SELECT access_key_id, tenant, kek_id, kek_version, wrapped_secret FROM access_keys "
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

    def add_admin_token_hash(self, token_hash: str, description: str = "") -> None:
        """Remember an admin token by its hash. Adding a known hash changes nothing."""
        _check_token_hash(token_hash)
        with self._write() as db:
            cursor = db.execute("INSERT OR IGNORE INTO admin_tokens VALUES (?, ?, ?)",
                                (token_hash, time.time(), _check_description(description)))
            if cursor.rowcount:
                self._bump(db)

    def has_admin_token_hash(self, token_hash: str) -> bool:
        """Whether ``token_hash`` is a known admin token's hash.

        Every stored hash is compared in constant time, with no early exit, so
        the answer's timing tells nothing about how close a guess was.
        """
        if not isinstance(token_hash, str):
            return False
        probe = token_hash.encode("ascii", "replace")
        found = False
        for (stored,) in self._read("SELECT token_hash FROM admin_tokens"):
            found |= hmac.compare_digest(stored.encode("ascii"), probe)
        return found

    def count_admin_tokens(self) -> int:
        return self._read("SELECT COUNT(*) FROM admin_tokens")[0][0]

    # First start ------------------------------------------------------------

    def bootstrap(self, tenant: str, access_key_id: str, kek_id: str, kek_version: int, wrapped_secret: bytes,
                  token_hash: str) -> bool:
        """In one transaction: if there is no admin token and no access key yet, create
        ``tenant`` (unless it exists), this key for it and this admin token. Returns
        whether it did; a store that was set up already is left alone.
        """
        validate_tenant_name(tenant)
        _check_key_id(access_key_id)
        _check_token_hash(token_hash)
        now = time.time()
        with self._write() as db:
            if db.execute("SELECT EXISTS (SELECT 1 FROM admin_tokens) OR EXISTS (SELECT 1 FROM access_keys)"
                          ).fetchone()[0]:
                return False
            db.execute("INSERT OR IGNORE INTO tenants VALUES (?, ?, ?)", (tenant, now, "created on first start"))
            self._insert_key(db, AccessKeyInfo(access_key_id, tenant, now, None, "created on first start", kek_id,
                                               int(kek_version)), bytes(wrapped_secret))
            db.execute("INSERT INTO admin_tokens VALUES (?, ?, ?)", (token_hash, now, "created on first start"))
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


def _check_description(description: object) -> str:
    if not isinstance(description, str) or len(description) > _MAX_DESCRIPTION:
        raise InvalidArgument(f"a description must be a str of at most {_MAX_DESCRIPTION} characters")
    return description
