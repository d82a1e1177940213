"""The catalog: which buckets and objects exist, and where their sealed bytes are.

SQLite in WAL mode. A row in ``objects`` is the moment an object exists: the
warehouse commits it only after the blob it points at is durable. Durability
settings, and why:

- ``journal_mode=WAL``: readers never block the writer, and a commit is one
  append to the WAL rather than a rewrite of pages.
- ``synchronous=FULL`` (default; ``EXTRA`` allowed): every commit fsyncs the WAL
  before it returns, so an acknowledged write survives power loss, not only a
  crash of the process (``NORMAL`` in WAL mode may lose the last commits on
  power loss).
- ``foreign_keys=ON`` and ``busy_timeout``: several processes may open the same
  catalog; writers wait for each other instead of failing.

Every row is scoped by tenant; no query reads across tenants except the
sweeper's ``referenced_blobs``, which reads only placements.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dwray.errors import (
    BucketAlreadyExists,
    BucketNotEmpty,
    BucketNotFound,
    CatalogError,
    DwrayError,
    ObjectNotFound,
    SchemaVersionError,
)

__all__ = ["BucketRecord", "Catalog", "ObjectRecord", "PagedReads", "SCHEMA_VERSION"]

# Each entry migrates the schema from version N to N + 1 (N = its index).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE tenants (
        name     TEXT PRIMARY KEY,
        created  REAL NOT NULL
    );
    CREATE TABLE buckets (
        tenant     TEXT NOT NULL REFERENCES tenants(name),
        name       TEXT NOT NULL,
        bucket_id  TEXT NOT NULL UNIQUE,
        created    REAL NOT NULL,
        versioning INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, name)
    );
    CREATE TABLE objects (
        tenant        TEXT NOT NULL,
        bucket        TEXT NOT NULL,
        key           TEXT NOT NULL,
        version_id    TEXT NOT NULL,
        is_latest     INTEGER NOT NULL,
        delete_marker INTEGER NOT NULL DEFAULT 0,
        size          INTEGER NOT NULL,
        etag          TEXT NOT NULL,
        content_type  TEXT NOT NULL,
        headers       TEXT NOT NULL DEFAULT '{}',
        metadata      TEXT NOT NULL DEFAULT '{}',
        created       REAL NOT NULL,
        backend       TEXT,
        blob_id       TEXT,
        key_header    BLOB,
        frame_table   BLOB,
        kek_id        TEXT,
        kek_version   INTEGER,
        PRIMARY KEY (tenant, bucket, key, version_id),
        FOREIGN KEY (tenant, bucket) REFERENCES buckets(tenant, name)
    );
    CREATE UNIQUE INDEX objects_latest ON objects (tenant, bucket, key) WHERE is_latest = 1;
    CREATE INDEX objects_placement ON objects (backend, blob_id);
    CREATE INDEX objects_kek ON objects (kek_id, kek_version);
    CREATE TABLE multipart_uploads (
        upload_id    TEXT PRIMARY KEY,
        tenant       TEXT NOT NULL,
        bucket       TEXT NOT NULL,
        key          TEXT NOT NULL,
        created      REAL NOT NULL,
        content_type TEXT NOT NULL,
        headers      TEXT NOT NULL DEFAULT '{}',
        metadata     TEXT NOT NULL DEFAULT '{}',
        FOREIGN KEY (tenant, bucket) REFERENCES buckets(tenant, name) ON DELETE CASCADE
    );
    CREATE INDEX multipart_uploads_key ON multipart_uploads (tenant, bucket, key, created);
    CREATE TABLE multipart_parts (
        upload_id    TEXT NOT NULL REFERENCES multipart_uploads(upload_id) ON DELETE CASCADE,
        part_number  INTEGER NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
        size         INTEGER NOT NULL,
        etag         TEXT NOT NULL,
        created      REAL NOT NULL,
        backend      TEXT NOT NULL,
        blob_id      TEXT NOT NULL,
        key_header   BLOB NOT NULL,
        frame_table  BLOB NOT NULL,
        kek_id       TEXT NOT NULL,
        kek_version  INTEGER NOT NULL,
        PRIMARY KEY (upload_id, part_number)
    );
    CREATE INDEX multipart_parts_placement ON multipart_parts (backend, blob_id);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_OBJECT_COLUMNS = (
    "tenant, bucket, key, version_id, is_latest, delete_marker, size, etag, content_type, "
    "headers, metadata, created, backend, blob_id, key_header, frame_table, kek_id, kek_version"
)


@dataclass(frozen=True)
class BucketRecord:
    """One bucket of one tenant."""

    tenant: str
    name: str
    bucket_id: str
    created: float
    versioning: bool


@dataclass(frozen=True)
class ObjectRecord:
    """One version of one object (or a delete marker) and where its sealed bytes are."""

    tenant: str
    bucket: str
    key: str
    version_id: str
    is_latest: bool
    delete_marker: bool
    size: int
    etag: str
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    backend: str | None = None
    blob_id: str | None = None
    key_header: bytes | None = None
    frame_table: bytes | None = None
    kek_id: str | None = None
    kek_version: int | None = None

    def __repr__(self) -> str:
        return (f"ObjectRecord(tenant={self.tenant!r}, bucket={self.bucket!r}, key={self.key!r}, "
                f"version_id={self.version_id!r}, size={self.size}, delete_marker={self.delete_marker})")

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> ObjectRecord:
        values = list(row)
        values[4], values[5] = bool(values[4]), bool(values[5])
        values[9], values[10] = json.loads(values[9]), json.loads(values[10])
        return cls(*values)

    def _to_row(self) -> tuple[Any, ...]:
        return (self.tenant, self.bucket, self.key, self.version_id, int(self.is_latest),
                int(self.delete_marker), self.size, self.etag, self.content_type,
                json.dumps(self.headers, sort_keys=True), json.dumps(self.metadata, sort_keys=True),
                self.created, self.backend, self.blob_id, self.key_header, self.frame_table,
                self.kek_id, self.kek_version)


@dataclass(frozen=True)
class DeleteOutcome:
    """What a delete did: removed a version, added a delete marker, or found nothing."""

    removed: ObjectRecord | None
    delete_marker: ObjectRecord | None


class PagedReads(ABC):
    """Iteration built on the two paged queries, shared by ``Catalog`` and its remote proxy."""

    @abstractmethod
    def latest_page(self, tenant: str, bucket: str, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, limit: int = 1000) -> list[ObjectRecord]:
        """Up to ``limit`` live latest versions under ``prefix``, from ``start`` on, in key order."""

    @abstractmethod
    def wrapped_below_page(self, kek_id: str, version: int, limit: int = 500) -> list[ObjectRecord]:
        """Up to ``limit`` rows whose DEK is wrapped under ``kek_id`` below ``version``."""

    def iter_latest(self, tenant: str, bucket: str, *, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, batch: int = 1000) -> Iterator[ObjectRecord]:
        """Every live latest version under ``prefix`` from ``start`` on, in key order, page by page."""
        while True:
            page = self.latest_page(tenant, bucket, prefix, start, inclusive, batch)
            yield from page
            if len(page) < batch:
                return
            start, inclusive = page[-1].key, False

    def iter_wrapped_below(self, kek_id: str, version: int, batch: int = 500) -> Iterator[ObjectRecord]:
        """Rows wrapped below ``version``, re-queried until none is left (callers rewrap them)."""
        while page := self.wrapped_below_page(kek_id, version, batch):
            yield from page


class Catalog(PagedReads):
    """The SQLite catalog. Thread-safe; several processes may share one file."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open catalog {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'EXTRA' if synchronous == 'EXTRA' else 'FULL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise CatalogError(f"cannot open catalog {self.path}: {exc}") from None
            raise

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Transactions -----------------------------------------------------------

    def _write(self) -> _Transaction:
        return _Transaction(self)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise CatalogError(f"catalog read failed: {exc}") from None

    def _migrate(self) -> None:
        with self._write() as db:
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found > SCHEMA_VERSION:
                raise SchemaVersionError(found, SCHEMA_VERSION)
            for version in range(found, SCHEMA_VERSION):
                for statement in MIGRATIONS[version].split(";"):
                    if statement.strip():
                        db.execute(statement)
            if found < SCHEMA_VERSION:
                # Only when something changed: writing the same value still
                # appends to the WAL, and on a full disk that would make the
                # catalog impossible to open even for reading.
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]

    # Buckets ----------------------------------------------------------------

    def create_bucket(self, tenant: str, name: str, bucket_id: str, *, versioning: bool = False) -> BucketRecord:
        record = BucketRecord(tenant, name, bucket_id, time.time(), versioning)
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO tenants VALUES (?, ?)", (tenant, record.created))
            try:
                db.execute("INSERT INTO buckets VALUES (?, ?, ?, ?, ?)",
                           (tenant, name, bucket_id, record.created, int(versioning)))
            except sqlite3.IntegrityError:
                raise BucketAlreadyExists(name) from None
        return record

    def get_bucket(self, tenant: str, name: str) -> BucketRecord:
        rows = self._read("SELECT tenant, name, bucket_id, created, versioning FROM buckets "
                          "WHERE tenant = ? AND name = ?", (tenant, name))
        if not rows:
            raise BucketNotFound(name)
        return _bucket(rows[0])

    def list_buckets(self, tenant: str) -> list[BucketRecord]:
        rows = self._read("SELECT tenant, name, bucket_id, created, versioning FROM buckets "
                          "WHERE tenant = ? ORDER BY name", (tenant,))
        return [_bucket(row) for row in rows]

    def delete_bucket(self, tenant: str, name: str) -> None:
        with self._write() as db:
            if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?", (tenant, name)).fetchone():
                raise BucketNotFound(name)
            if db.execute("SELECT 1 FROM objects WHERE tenant = ? AND bucket = ? LIMIT 1",
                          (tenant, name)).fetchone():
                raise BucketNotEmpty(name)
            db.execute("DELETE FROM buckets WHERE tenant = ? AND name = ?", (tenant, name))

    # Objects ----------------------------------------------------------------

    def commit_object(self, record: ObjectRecord) -> list[ObjectRecord]:
        """Make ``record`` the latest version of its key; return the versions it displaced.

        In a versioned bucket older versions stay (no longer latest); otherwise
        they are removed, and their blobs are left for the sweeper so that
        readers still streaming them can finish. Committing a row that is
        already there changes nothing, so a caller may retry a commit whose
        answer it lost.
        """
        with self._write() as db:
            return self._commit_in(db, record)

    @staticmethod
    def _commit_in(db: sqlite3.Connection, record: ObjectRecord) -> list[ObjectRecord]:
        if db.execute("SELECT 1 FROM objects WHERE tenant = ? AND bucket = ? AND key = ? AND version_id = ?",
                      (record.tenant, record.bucket, record.key, record.version_id)).fetchone():
            return []
        bucket = db.execute("SELECT versioning FROM buckets WHERE tenant = ? AND name = ?",
                            (record.tenant, record.bucket)).fetchone()
        if bucket is None:
            raise BucketNotFound(record.bucket)
        where = ("tenant = ? AND bucket = ? AND key = ?", (record.tenant, record.bucket, record.key))
        if bucket[0]:
            displaced: list[ObjectRecord] = []
            db.execute(f"UPDATE objects SET is_latest = 0 WHERE {where[0]} AND is_latest = 1", where[1])
        else:
            displaced = [ObjectRecord._from_row(row) for row in db.execute(
                f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE {where[0]}", where[1])]
            db.execute(f"DELETE FROM objects WHERE {where[0]}", where[1])
        db.execute(f"INSERT INTO objects ({_OBJECT_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                   record._to_row())
        return displaced

    def commit_many(self, records: list[ObjectRecord]) -> list[list[ObjectRecord] | DwrayError]:
        """Group commit: ``commit_object`` for each record, all in one transaction (one fsync).

        Each record gets its own savepoint, so one that fails (its bucket was
        deleted) returns its error in its place and the others still commit.
        """
        results: list[list[ObjectRecord] | DwrayError] = []
        with self._write() as db:
            for number, record in enumerate(records):
                db.execute(f"SAVEPOINT commit_{number}")
                try:
                    results.append(self._commit_in(db, record))
                except DwrayError as exc:
                    db.execute(f"ROLLBACK TO commit_{number}")
                    results.append(exc)
                db.execute(f"RELEASE commit_{number}")
        return results

    def get_object(self, tenant: str, bucket: str, key: str, version_id: str | None = None) -> ObjectRecord:
        """The latest live version, or the named version. ``ObjectNotFound`` otherwise."""
        if version_id is None:
            rows = self._read(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? "
                              "AND key = ? AND is_latest = 1 AND delete_marker = 0", (tenant, bucket, key))
        else:
            rows = self._read(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? "
                              "AND key = ? AND version_id = ?", (tenant, bucket, key, version_id))
        if not rows:
            self.get_bucket(tenant, bucket)
            raise ObjectNotFound(bucket, key, version_id)
        return ObjectRecord._from_row(rows[0])

    def latest_page(self, tenant: str, bucket: str, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, limit: int = 1000) -> list[ObjectRecord]:
        """Up to ``limit`` live latest versions whose key starts with ``prefix``, from ``start`` on.

        Key order is SQLite's BINARY collation on UTF-8, which is S3's order.
        """
        lower, include = prefix, True
        if start is not None and start >= prefix:
            lower, include = start, inclusive
        rows = self._read(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? AND is_latest = 1 "
            f"AND delete_marker = 0 AND key {'>=' if include else '>'} ? ORDER BY key LIMIT {int(limit)}",
            (tenant, bucket, lower))
        page = []
        for row in rows:
            record = ObjectRecord._from_row(row)
            if not record.key.startswith(prefix):
                break
            page.append(record)
        return page

    def delete_object(self, tenant: str, bucket: str, key: str, version_id: str | None,
                      marker: ObjectRecord | None) -> DeleteOutcome:
        """Delete a key: remove the named version, or add ``marker`` (versioned bucket), or remove it.

        ``marker`` is the delete marker to insert when the bucket is versioned
        and no version is named; it is ignored otherwise.
        """
        with self._write() as db:
            versioned = db.execute("SELECT versioning FROM buckets WHERE tenant = ? AND name = ?",
                                   (tenant, bucket)).fetchone()
            if versioned is None:
                raise BucketNotFound(bucket)
            base = ("tenant = ? AND bucket = ? AND key = ?", (tenant, bucket, key))
            if version_id is not None:
                row = db.execute(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE {base[0]} AND version_id = ?",
                                 (*base[1], version_id)).fetchone()
                if row is None:
                    return DeleteOutcome(None, None)
                removed = ObjectRecord._from_row(row)
                db.execute(f"DELETE FROM objects WHERE {base[0]} AND version_id = ?", (*base[1], version_id))
                if removed.is_latest:
                    db.execute(f"UPDATE objects SET is_latest = 1 WHERE {base[0]} AND version_id = "
                               f"(SELECT version_id FROM objects WHERE {base[0]} ORDER BY created DESC, "
                               "version_id DESC LIMIT 1)", (*base[1], *base[1]))
                return DeleteOutcome(removed, None)
            if versioned[0] and marker is not None:
                db.execute(f"UPDATE objects SET is_latest = 0 WHERE {base[0]} AND is_latest = 1", base[1])
                db.execute(f"INSERT INTO objects ({_OBJECT_COLUMNS}) VALUES ({', '.join('?' * 18)})",
                           marker._to_row())
                return DeleteOutcome(None, marker)
            row = db.execute(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE {base[0]} AND is_latest = 1",
                             base[1]).fetchone()
            db.execute(f"DELETE FROM objects WHERE {base[0]}", base[1])
            return DeleteOutcome(ObjectRecord._from_row(row) if row else None, None)

    def iter_versions(self, tenant: str, bucket: str, key: str) -> list[ObjectRecord]:
        """Every version of one key, newest first."""
        rows = self._read(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? AND key = ? "
                          "ORDER BY created DESC, version_id DESC", (tenant, bucket, key))
        return [ObjectRecord._from_row(row) for row in rows]

    # Keys -------------------------------------------------------------------

    def wrapped_below_page(self, kek_id: str, version: int, limit: int = 500) -> list[ObjectRecord]:
        """Up to ``limit`` rows whose DEK is wrapped under ``kek_id`` at a version below ``version``."""
        rows = self._read(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE kek_id = ? AND kek_version < ? "
                          f"LIMIT {int(limit)}", (kek_id, version))
        return [ObjectRecord._from_row(row) for row in rows]

    def replace_key_header(self, record: ObjectRecord, key_header: bytes, kek_version: int) -> bool:
        """Swap a row's key header if it is still the one in ``record`` (compare and set)."""
        with self._write() as db:
            cursor = db.execute(
                "UPDATE objects SET key_header = ?, kek_version = ? WHERE tenant = ? AND bucket = ? AND "
                "key = ? AND version_id = ? AND key_header = ?",
                (key_header, kek_version, record.tenant, record.bucket, record.key, record.version_id,
                 record.key_header))
            return cursor.rowcount == 1

    def count_wrapped_below(self, kek_id: str, version: int) -> int:
        return self._read("SELECT COUNT(*) FROM objects WHERE kek_id = ? AND kek_version < ?",
                          (kek_id, version))[0][0]

    # Sweeper ----------------------------------------------------------------

    def referenced_blobs(self, backend: str) -> set[str]:
        """Blob ids on ``backend`` that a committed object or multipart part points at."""
        rows = self._read("SELECT blob_id FROM objects WHERE backend = ? AND blob_id IS NOT NULL "
                          "UNION SELECT blob_id FROM multipart_parts WHERE backend = ?", (backend, backend))
        return {row[0] for row in rows}

    def is_referenced(self, backend: str, blob_id: str) -> bool:
        return bool(self._read(
            "SELECT 1 FROM objects WHERE backend = ? AND blob_id = ? UNION ALL "
            "SELECT 1 FROM multipart_parts WHERE backend = ? AND blob_id = ? LIMIT 1",
            (backend, blob_id, backend, blob_id)))

    def stats(self, tenant: str) -> dict[str, int]:
        row = self._read("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects "
                         "WHERE tenant = ? AND delete_marker = 0", (tenant,))[0]
        return {"objects": row[0], "bytes": row[1]}


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the catalog's lock; rollback on error."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def __enter__(self) -> sqlite3.Connection:
        self._catalog._lock.acquire()
        try:
            self._catalog._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._catalog._lock.release()
            raise CatalogError(f"catalog write failed to start: {exc}") from None
        return self._catalog._db

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        db = self._catalog._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    _rollback(db)
                    raise CatalogError(f"catalog commit failed: {error}") from None
            else:
                _rollback(db)
                if issubclass(exc_type, sqlite3.Error):
                    raise CatalogError(f"catalog write failed: {exc}") from None
        finally:
            self._catalog._lock.release()


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so.

    After some errors (SQLITE_FULL, SQLITE_IOERR, ...) SQLite rolls the whole
    transaction back itself, and a ROLLBACK then fails with "no transaction is
    active"; that failure must not replace the error being reported.
    """
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _bucket(row: tuple[Any, ...]) -> BucketRecord:
    return BucketRecord(row[0], row[1], row[2], row[3], bool(row[4]))
