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

A multipart object is an ``objects`` row without a placement of its own
(``parts`` > 0) and one ``object_segments`` row per part, each a blob sealed
under its own DEK; the segments go when the object row goes (``ON DELETE
CASCADE``). Uploads in progress are ``multipart_uploads`` with their
``multipart_parts``; ``completed_uploads`` remembers recent completions so a
completion retried after a lost reply gets the same object back.

Every row is scoped by tenant; no query reads across tenants except the
sweeper's ``referenced_blobs``, the key rewrap's ``wrapped_below_page`` (both
read placements and key headers only) and ``tenant_stats``.
"""
from __future__ import annotations

import json
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from dwray.core.models import PartInfo
from dwray.core.sqlite_store import SqliteStore
from dwray.errors import (
    BucketAlreadyExists,
    BucketNotEmpty,
    BucketNotFound,
    CatalogError,
    DwrayError,
    InvalidPart,
    ObjectNotFound,
    UploadNotFound,
)

__all__ = [
    "SCHEMA_VERSION",
    "BucketRecord",
    "Catalog",
    "DeleteOutcome",
    "ObjectRecord",
    "PagedReads",
    "PartRecord",
    "SegmentRecord",
    "UploadRecord",
    "WrappedKey",
]

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
    # 2: multipart objects. ``objects.parts`` counts an object's segments (0: one
    # blob of its own); ``part_version`` is the identity string a part's frames
    # are sealed under (their AAD binds it), kept from part row to segment row.
    """
    ALTER TABLE objects ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE multipart_parts ADD COLUMN part_version TEXT NOT NULL DEFAULT '';
    CREATE INDEX multipart_parts_kek ON multipart_parts (kek_id, kek_version);
    CREATE TABLE object_segments (
        tenant       TEXT NOT NULL,
        bucket       TEXT NOT NULL,
        key          TEXT NOT NULL,
        version_id   TEXT NOT NULL,
        part_index   INTEGER NOT NULL,
        part_offset  INTEGER NOT NULL,
        size         INTEGER NOT NULL,
        backend      TEXT NOT NULL,
        blob_id      TEXT NOT NULL,
        key_header   BLOB NOT NULL,
        frame_table  BLOB NOT NULL,
        kek_id       TEXT NOT NULL,
        kek_version  INTEGER NOT NULL,
        part_version TEXT NOT NULL,
        PRIMARY KEY (tenant, bucket, key, version_id, part_index),
        FOREIGN KEY (tenant, bucket, key, version_id)
            REFERENCES objects(tenant, bucket, key, version_id) ON DELETE CASCADE
    );
    CREATE INDEX object_segments_placement ON object_segments (backend, blob_id);
    CREATE INDEX object_segments_kek ON object_segments (kek_id, kek_version);
    CREATE TABLE completed_uploads (
        upload_id  TEXT PRIMARY KEY,
        tenant     TEXT NOT NULL,
        bucket     TEXT NOT NULL,
        key        TEXT NOT NULL,
        version_id TEXT NOT NULL,
        parts      TEXT NOT NULL,
        etag       TEXT NOT NULL,
        size       INTEGER NOT NULL,
        created    REAL NOT NULL
    );
    CREATE INDEX completed_uploads_created ON completed_uploads (created);
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

#: how long a completed upload is remembered, so a retried completion gets its object back
COMPLETION_RETENTION_SECONDS = 24 * 3600

_OBJECT_COLUMNS = (
    "tenant, bucket, key, version_id, is_latest, delete_marker, size, etag, content_type, "
    "headers, metadata, created, backend, blob_id, key_header, frame_table, kek_id, kek_version, parts"
)
_OBJECT_VALUES = ", ".join("?" * 19)
_UPLOAD_COLUMNS = "tenant, bucket, key, upload_id, created, content_type, headers, metadata"
_PART_COLUMNS = ("upload_id, part_number, size, etag, created, backend, blob_id, key_header, frame_table, "
                 "kek_id, kek_version, part_version")
_SEGMENT_COLUMNS = ("part_index, part_offset, size, backend, blob_id, key_header, frame_table, kek_id, "
                    "kek_version, part_version")


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
    #: how many segments (multipart parts) hold the bytes; 0: the one blob above
    parts: int = 0

    def __repr__(self) -> str:
        return (f"ObjectRecord(tenant={self.tenant!r}, bucket={self.bucket!r}, key={self.key!r}, "
                f"version_id={self.version_id!r}, size={self.size}, delete_marker={self.delete_marker}, "
                f"parts={self.parts})")

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
                self.kek_id, self.kek_version, self.parts)


@dataclass(frozen=True)
class UploadRecord:
    """A multipart upload in progress: what the object will be once completed."""

    tenant: str
    bucket: str
    key: str
    upload_id: str
    created: float
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def _from_row(cls, row: tuple[Any, ...]) -> UploadRecord:
        return cls(*row[:6], json.loads(row[6]), json.loads(row[7]))


@dataclass(frozen=True)
class PartRecord:
    """One uploaded part: its own blob, sealed under its own DEK and identity ``part_version``."""

    upload_id: str
    part_number: int
    size: int
    etag: str
    created: float
    backend: str
    blob_id: str
    key_header: bytes = field(repr=False)
    frame_table: bytes = field(repr=False)
    kek_id: str
    kek_version: int
    part_version: str


@dataclass(frozen=True)
class SegmentRecord:
    """Part ``index`` of a multipart object: plaintext bytes ``[offset, offset + size)`` of it."""

    index: int
    offset: int
    size: int
    backend: str
    blob_id: str
    key_header: bytes = field(repr=False)
    frame_table: bytes = field(repr=False)
    kek_id: str
    kek_version: int
    part_version: str


@dataclass(frozen=True)
class WrappedKey:
    """A DEK in a segment or part row, for the key rewrap (objects' own DEKs come as ``ObjectRecord``)."""

    kind: Literal["segment", "part"]
    #: the row's primary key: (tenant, bucket, key, version_id, index) or (upload_id, part_number)
    row: tuple[Any, ...]
    key_header: bytes = field(repr=False)
    kek_version: int


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
    def wrapped_below_page(self, kek_id: str, version: int,
                           limit: int = 500) -> list[ObjectRecord | WrappedKey]:
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

    def iter_wrapped_below(self, kek_id: str, version: int, batch: int = 500) -> Iterator[ObjectRecord | WrappedKey]:
        """Rows wrapped below ``version``, re-queried until none is left (callers rewrap them)."""
        while page := self.wrapped_below_page(kek_id, version, batch):
            yield from page


class Catalog(PagedReads, SqliteStore):
    """The SQLite catalog. Thread-safe; several processes may share one file."""

    label = "catalog"
    migrations = MIGRATIONS

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
            # Uploads in progress go with the bucket (cascade); so do memories of completed ones.
            db.execute("DELETE FROM completed_uploads WHERE tenant = ? AND bucket = ?", (tenant, name))

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
        db.execute(f"INSERT INTO objects ({_OBJECT_COLUMNS}) VALUES ({_OBJECT_VALUES})",
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
                db.execute(f"INSERT INTO objects ({_OBJECT_COLUMNS}) VALUES ({_OBJECT_VALUES})",
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

    def wrapped_below_page(self, kek_id: str, version: int,
                           limit: int = 500) -> list[ObjectRecord | WrappedKey]:
        """Up to ``limit`` DEKs wrapped under ``kek_id`` at a version below ``version``:
        objects' own, then multipart objects' segments', then uploads' parts'."""
        rows: list[ObjectRecord | WrappedKey] = [ObjectRecord._from_row(row) for row in self._read(
            f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE kek_id = ? AND kek_version < ? LIMIT {int(limit)}",
            (kek_id, version))]
        if len(rows) < limit:
            rows += [WrappedKey("segment", tuple(row[:5]), row[5], row[6]) for row in self._read(
                "SELECT tenant, bucket, key, version_id, part_index, key_header, kek_version FROM object_segments "
                f"WHERE kek_id = ? AND kek_version < ? LIMIT {int(limit) - len(rows)}", (kek_id, version))]
        if len(rows) < limit:
            rows += [WrappedKey("part", tuple(row[:2]), row[2], row[3]) for row in self._read(
                "SELECT upload_id, part_number, key_header, kek_version FROM multipart_parts "
                f"WHERE kek_id = ? AND kek_version < ? LIMIT {int(limit) - len(rows)}", (kek_id, version))]
        return rows

    def replace_key_header(self, record: ObjectRecord | WrappedKey, key_header: bytes, kek_version: int) -> bool:
        """Swap a row's key header if it is still the one in ``record`` (compare and set)."""
        if isinstance(record, WrappedKey):
            if record.kind == "segment":
                table = "object_segments"
                where = "tenant = ? AND bucket = ? AND key = ? AND version_id = ? AND part_index = ?"
            else:
                table, where = "multipart_parts", "upload_id = ? AND part_number = ?"
            params: tuple[Any, ...] = (*record.row, record.key_header)
        else:
            table, where = "objects", "tenant = ? AND bucket = ? AND key = ? AND version_id = ?"
            params = (record.tenant, record.bucket, record.key, record.version_id, record.key_header)
        with self._write() as db:
            cursor = db.execute(f"UPDATE {table} SET key_header = ?, kek_version = ? WHERE {where} "
                                "AND key_header = ?", (key_header, kek_version, *params))
            return cursor.rowcount == 1

    def count_wrapped_below(self, kek_id: str, version: int) -> int:
        """DEKs (of objects, segments and parts) still wrapped below ``version``."""
        return sum(self._read(f"SELECT COUNT(*) FROM {table} WHERE kek_id = ? AND kek_version < ?",
                              (kek_id, version))[0][0]
                   for table in ("objects", "object_segments", "multipart_parts"))

    # Sweeper ----------------------------------------------------------------

    def referenced_blobs(self, backend: str) -> set[str]:
        """Blob ids on ``backend`` that a committed object, segment or uploaded part points at."""
        rows = self._read("SELECT blob_id FROM objects WHERE backend = ? AND blob_id IS NOT NULL "
                          "UNION SELECT blob_id FROM object_segments WHERE backend = ? "
                          "UNION SELECT blob_id FROM multipart_parts WHERE backend = ?", (backend,) * 3)
        return {row[0] for row in rows}

    def is_referenced(self, backend: str, blob_id: str) -> bool:
        return bool(self._read(
            "SELECT 1 FROM objects WHERE backend = ? AND blob_id = ? UNION ALL "
            "SELECT 1 FROM object_segments WHERE backend = ? AND blob_id = ? UNION ALL "
            "SELECT 1 FROM multipart_parts WHERE backend = ? AND blob_id = ? LIMIT 1",
            (backend, blob_id) * 3))

    def stats(self, tenant: str) -> dict[str, int]:
        """Object versions and their bytes (delete markers aside), and uploads in progress and their parts' bytes."""
        row = self._read("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects "
                         "WHERE tenant = ? AND delete_marker = 0", (tenant,))[0]
        uploads = self._read(
            "SELECT COUNT(DISTINCT u.upload_id), COALESCE(SUM(p.size), 0) FROM multipart_uploads u "
            "LEFT JOIN multipart_parts p ON p.upload_id = u.upload_id WHERE u.tenant = ?", (tenant,))[0]
        return {"objects": row[0], "bytes": row[1], "uploads": uploads[0], "upload_bytes": uploads[1]}

    def tenant_stats(self) -> dict[str, dict[str, int]]:
        """For every tenant: its live objects (latest versions, delete markers aside) and their bytes."""
        rows = self._read(
            "SELECT t.name, COUNT(o.key), COALESCE(SUM(o.size), 0) FROM tenants t LEFT JOIN objects o "
            "ON o.tenant = t.name AND o.is_latest = 1 AND o.delete_marker = 0 GROUP BY t.name ORDER BY t.name")
        return {name: {"objects": count, "bytes": size} for name, count, size in rows}

    # Multipart uploads --------------------------------------------------------

    def create_upload(self, upload: UploadRecord) -> None:
        """Record a new upload. Recording the same upload id again for the same key changes nothing."""
        with self._write() as db:
            if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?",
                              (upload.tenant, upload.bucket)).fetchone():
                raise BucketNotFound(upload.bucket)
            existing = db.execute("SELECT tenant, bucket, key FROM multipart_uploads WHERE upload_id = ?",
                                  (upload.upload_id,)).fetchone()
            if existing is not None:
                if existing != (upload.tenant, upload.bucket, upload.key):
                    raise CatalogError("upload id collision")
                return
            db.execute(f"INSERT INTO multipart_uploads ({_UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (upload.tenant, upload.bucket, upload.key, upload.upload_id, upload.created,
                        upload.content_type, json.dumps(upload.headers, sort_keys=True),
                        json.dumps(upload.metadata, sort_keys=True)))

    def get_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> UploadRecord:
        """The upload, if it belongs to this tenant, bucket and key; ``UploadNotFound`` otherwise."""
        rows = self._read(f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = ? AND tenant = ? "
                          "AND bucket = ? AND key = ?", (upload_id, tenant, bucket, key))
        if not rows:
            self.get_bucket(tenant, bucket)
            raise UploadNotFound(upload_id)
        return UploadRecord._from_row(rows[0])

    @staticmethod
    def _upload_in(db: sqlite3.Connection, tenant: str, bucket: str, key: str, upload_id: str) -> None:
        if not db.execute("SELECT 1 FROM multipart_uploads WHERE upload_id = ? AND tenant = ? AND bucket = ? "
                          "AND key = ?", (upload_id, tenant, bucket, key)).fetchone():
            raise UploadNotFound(upload_id)

    def commit_part(self, tenant: str, bucket: str, key: str, part: PartRecord) -> None:
        """Make ``part`` the upload's part of its number, replacing any earlier one.

        The replaced part's blob is left for the sweeper. Committing the same
        part (same blob) again changes nothing, so a lost answer may be retried.
        """
        with self._write() as db:
            self._upload_in(db, tenant, bucket, key, part.upload_id)
            db.execute(f"INSERT OR REPLACE INTO multipart_parts ({_PART_COLUMNS}) VALUES "
                       f"({', '.join('?' * 12)})",
                       (part.upload_id, part.part_number, part.size, part.etag, part.created, part.backend,
                        part.blob_id, part.key_header, part.frame_table, part.kek_id, part.kek_version,
                        part.part_version))

    def list_parts(self, tenant: str, bucket: str, key: str, upload_id: str, marker: int = 0,
                   limit: int = 1000) -> list[PartInfo]:
        """Up to ``limit`` parts numbered above ``marker``, in order (no key material)."""
        self.get_upload(tenant, bucket, key, upload_id)
        rows = self._read("SELECT part_number, etag, size, created FROM multipart_parts WHERE upload_id = ? "
                          f"AND part_number > ? ORDER BY part_number LIMIT {int(limit)}", (upload_id, marker))
        return [PartInfo(*row) for row in rows]

    def uploads_page(self, tenant: str, bucket: str, prefix: str = "", key_marker: str | None = None,
                     upload_id_marker: str | None = None, inclusive: bool = False,
                     limit: int = 1000) -> list[UploadRecord]:
        """Up to ``limit`` uploads under ``prefix`` in (key, initiation time) order, after the markers.

        After ``key_marker`` alone: keys above it (or from it, ``inclusive``).
        With ``upload_id_marker`` too: also that key's uploads begun after the
        marker's; if the marker upload is gone, those whose id sorts after it.
        """
        self.get_bucket(tenant, bucket)
        where, params = ["tenant = ? AND bucket = ? AND key >= ?"], [tenant, bucket, prefix]
        if key_marker is not None and upload_id_marker is not None:
            found = self._read("SELECT created FROM multipart_uploads WHERE upload_id = ? AND tenant = ? "
                               "AND bucket = ? AND key = ?", (upload_id_marker, tenant, bucket, key_marker))
            after = "(created, upload_id) > (?, ?)" if found else "upload_id > ?"
            where.append(f"(key > ? OR (key = ? AND {after}))")
            params += [key_marker, key_marker, *((found[0][0],) if found else ()), upload_id_marker]
        elif key_marker is not None:
            where.append("key >= ?" if inclusive else "key > ?")
            params.append(key_marker)
        rows = self._read(f"SELECT {_UPLOAD_COLUMNS} FROM multipart_uploads WHERE {' AND '.join(where)} "
                          f"ORDER BY key, created, upload_id LIMIT {int(limit)}", tuple(params))
        page = []
        for row in rows:
            upload = UploadRecord._from_row(row)
            if not upload.key.startswith(prefix):
                break
            page.append(upload)
        return page

    def abort_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> None:
        """Forget an upload and its parts; their blobs are left for the sweeper."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM multipart_uploads WHERE upload_id = ? AND tenant = ? AND bucket = ? "
                                "AND key = ?", (upload_id, tenant, bucket, key))
            if cursor.rowcount == 0:
                if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?",
                                  (tenant, bucket)).fetchone():
                    raise BucketNotFound(bucket)
                raise UploadNotFound(upload_id)

    def complete_upload(self, record: ObjectRecord, upload_id: str,
                        parts: list[tuple[int, str]]) -> ObjectRecord:
        """Turn an upload into the object ``record``, in one transaction.

        ``parts`` are the (number, ETag) pairs the caller checked; each must
        still be there with that ETag (``InvalidPart`` if a concurrent upload
        replaced one) and their sizes must add up to ``record.size``. The
        object row and one segment per named part are committed, the upload
        and all its part rows removed (unnamed parts' blobs are left for the
        sweeper), and the completion remembered: completing the same upload
        with the same parts again returns the same object.
        """
        with self._write() as db:
            done = self._completion_in(db, record.tenant, record.bucket, record.key, upload_id, parts)
            if done is not None:
                return done
            self._upload_in(db, record.tenant, record.bucket, record.key, upload_id)
            stored = {number: (etag, size) for number, etag, size in db.execute(
                "SELECT part_number, etag, size FROM multipart_parts WHERE upload_id = ?", (upload_id,))}
            offset = 0
            for number, etag in parts:
                if number not in stored or stored[number][0] != etag:
                    raise InvalidPart(upload_id, number, "was replaced while the upload was being completed")
                offset += stored[number][1]
            if offset != record.size:
                raise InvalidPart(upload_id, parts[-1][0], "part sizes changed while the upload was completed")
            self._commit_in(db, record)
            offset = 0
            for index, (number, _) in enumerate(parts):
                db.execute(
                    f"INSERT INTO object_segments (tenant, bucket, key, version_id, {_SEGMENT_COLUMNS}) "
                    "SELECT ?, ?, ?, ?, ?, ?, size, backend, blob_id, key_header, frame_table, kek_id, kek_version, "
                    "part_version FROM multipart_parts WHERE upload_id = ? AND part_number = ?",
                    (record.tenant, record.bucket, record.key, record.version_id, index, offset, upload_id, number))
                offset += stored[number][1]
            db.execute("DELETE FROM multipart_uploads WHERE upload_id = ?", (upload_id,))
            db.execute("DELETE FROM completed_uploads WHERE created < ?",
                       (record.created - COMPLETION_RETENTION_SECONDS,))
            db.execute("INSERT INTO completed_uploads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (upload_id, record.tenant, record.bucket, record.key, record.version_id,
                        json.dumps(parts), record.etag, record.size, record.created))
            return record

    def completed_upload(self, tenant: str, bucket: str, key: str, upload_id: str,
                         parts: list[tuple[int, str]]) -> ObjectRecord | None:
        """The object a recent completion of this upload with these same parts made, else ``None``."""
        with self._lock:
            try:
                return self._completion_in(self._db, tenant, bucket, key, upload_id, parts)
            except sqlite3.Error as exc:
                raise CatalogError(f"catalog read failed: {exc}") from None

    @staticmethod
    def _completion_in(db: sqlite3.Connection, tenant: str, bucket: str, key: str, upload_id: str,
                       parts: list[tuple[int, str]]) -> ObjectRecord | None:
        row = db.execute("SELECT version_id, parts, etag, size, created FROM completed_uploads WHERE upload_id = ? "
                         "AND tenant = ? AND bucket = ? AND key = ?", (upload_id, tenant, bucket, key)).fetchone()
        if row is None or [tuple(part) for part in json.loads(row[1])] != [tuple(part) for part in parts]:
            return None
        version_id, _, etag, size, created = row
        found = db.execute(f"SELECT {_OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? AND key = ? "
                           "AND version_id = ?", (tenant, bucket, key, version_id)).fetchone()
        if found is not None:
            return ObjectRecord._from_row(found)
        # Since deleted or overwritten: what the completion answered is still the answer.
        return ObjectRecord(tenant, bucket, key, version_id, False, False, size, etag, "", created=created,
                            parts=len(parts))

    def segments_page(self, tenant: str, bucket: str, key: str, version_id: str, start: int = 0,
                      limit: int = 64) -> list[SegmentRecord]:
        """Up to ``limit`` segments of a multipart object, in order, from the one holding
        plaintext byte ``start`` (or beginning at it: an empty last part) on."""
        rows = self._read(f"SELECT {_SEGMENT_COLUMNS} FROM object_segments WHERE tenant = ? AND bucket = ? "
                          "AND key = ? AND version_id = ? AND (part_offset + size > ? OR part_offset >= ?) "
                          f"ORDER BY part_index LIMIT {int(limit)}", (tenant, bucket, key, version_id, start, start))
        return [SegmentRecord(*row) for row in rows]


def _bucket(row: tuple[Any, ...]) -> BucketRecord:
    return BucketRecord(row[0], row[1], row[2], row[3], bool(row[4]))
