"""The SQLite catalog: buckets, object versions, multipart uploads and the keys that seal them."""
from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from dwray.core.catalog.outbox import EventOutbox
from dwray.core.catalog.paging import PagedReads
from dwray.core.catalog.quotas import (
    QuotaQueries,
    Usage,
    check_buckets_in,
    check_in,
    usage_in,
)
from dwray.core.catalog.records import (
    INLINE_BACKEND,
    NULL_VERSION,
    VERSIONING_ENABLED,
    VERSIONING_SUSPENDED,
    BucketRecord,
    DeleteOutcome,
    ObjectRecord,
    PartRecord,
    SegmentRecord,
    UploadRecord,
    WrappedKey,
    WriteCondition,
)
from dwray.core.catalog.schema import (
    GLOBAL_NAMES_MIGRATION,
    INLINE_MIGRATION,
    LISTING_COLUMNS,
    MIGRATIONS,
    OBJECT_COLUMNS,
    OBJECT_VALUES,
    PART_COLUMNS,
    SEGMENT_COLUMNS,
    UPLOAD_COLUMNS,
)
from dwray.core.models import PartInfo
from dwray.core.sqlite_store import SqliteStore
from dwray.errors import (
    BucketAccessDenied,
    BucketAlreadyExists,
    BucketAlreadyOwnedByYou,
    BucketNameClash,
    BucketNotEmpty,
    BucketNotFound,
    CatalogError,
    ConditionalRequestConflict,
    DeleteMarkerVersion,
    DwrayError,
    InvalidArgument,
    InvalidPart,
    ObjectDeleted,
    ObjectNotFound,
    PreconditionFailed,
    UploadNotFound,
)

__all__ = ["Catalog"]

R = TypeVar("R", ObjectRecord, UploadRecord)

#: how long a completed upload is remembered, so a retried completion gets its object back
COMPLETION_RETENTION_SECONDS = 24 * 3600
#: what the catalog refusing to upgrade a data dir with shared bucket names tells the operator to do
RENAME_REMEDY = ("Before upgrading, with the dwray that wrote this data dir, copy each clashing bucket of all but one "
                 "tenant into a bucket of a new name (for example `aws s3 sync s3://OLD s3://NEW` with that "
                 "tenant's key) and delete the old one; then start this dwray again.")


class Catalog(EventOutbox, QuotaQueries, PagedReads, SqliteStore):
    """The SQLite catalog. Thread-safe; several processes may share one file."""

    label = "catalog"
    migrations = MIGRATIONS

    def _migrate(self) -> None:
        # Migration 3 rebuilds ``buckets``, which objects and uploads reference. With
        # foreign keys on, dropping the old table would first delete its rows: refused
        # while objects point at them, and cascading to every upload in progress. So
        # they are off for the migration, as SQLite's procedure for altering a table
        # says (the pragma does nothing inside a transaction, hence around it). The
        # rows are copied as they are, so no reference breaks meanwhile.
        self._refuse_name_clashes()
        self._refuse_inline_backend()
        self._db.execute("PRAGMA foreign_keys=OFF")
        try:
            super()._migrate()
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    def _refuse_name_clashes(self) -> None:
        """``BucketNameClash`` if the migration to global bucket names would meet a name several tenants own.

        Checked before any migration runs, so a refused data dir is left as it was.
        """
        found = self._db.execute("PRAGMA user_version").fetchone()[0]
        if not 0 < found <= GLOBAL_NAMES_MIGRATION:
            return
        clashes = self._db.execute("SELECT name, group_concat(tenant, ', ') FROM (SELECT name, tenant FROM buckets "
                                   "ORDER BY name, tenant) GROUP BY name HAVING COUNT(*) > 1 ORDER BY name").fetchall()
        if clashes:
            raise BucketNameClash("; ".join(f"{name!r} is owned by tenants {owners}" for name, owners in clashes),
                                  RENAME_REMEDY)

    def _refuse_inline_backend(self) -> None:
        """``CatalogError`` if blobs of a storage backend named ``'inline'`` would meet migration 7.

        From then on that name means "the bytes are in the row": such blobs would
        read as inline objects without their bytes, and the migration's check would
        refuse their rows anyway. Checked before any migration runs.
        """
        found = self._db.execute("PRAGMA user_version").fetchone()[0]
        if not 0 < found <= INLINE_MIGRATION:
            return
        present = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        tables = [table for table in ("objects", "object_segments", "multipart_parts") if table in present
                  and self._db.execute(f"SELECT 1 FROM {table} WHERE backend = ? LIMIT 1",
                                       (INLINE_BACKEND,)).fetchone()]
        if tables:
            raise CatalogError(f"cannot upgrade the catalog: rows of {', '.join(tables)} name a storage backend "
                               f"{INLINE_BACKEND!r}, which now means objects kept in the catalog row")

    # Buckets ----------------------------------------------------------------

    @staticmethod
    def _no_bucket(db: sqlite3.Connection, tenant: str, name: str) -> DwrayError:
        """The error for a bucket ``tenant`` does not have: another tenant's (403, as S3), or nobody's (404)."""
        owner = db.execute("SELECT tenant FROM buckets WHERE name = ?", (name,)).fetchone()
        return BucketAccessDenied(name) if owner is not None and owner[0] != tenant else BucketNotFound(name)

    def create_bucket(self, tenant: str, name: str, bucket_id: str, *, versioning: bool = False) -> BucketRecord:
        record = BucketRecord(tenant, name, bucket_id, time.time(), versioning)
        with self._write() as db:
            owner = db.execute("SELECT tenant FROM buckets WHERE name = ?", (name,)).fetchone()
            if owner is not None:
                raise BucketAlreadyOwnedByYou(name) if owner[0] == tenant else BucketAlreadyExists(name)
            db.execute("INSERT INTO buckets VALUES (?, ?, ?, ?, ?)",
                       (tenant, name, bucket_id, record.created, VERSIONING_ENABLED if versioning else 0))
            check_buckets_in(db, tenant)
        return record

    def get_bucket(self, tenant: str, name: str) -> BucketRecord:
        with self._lock:
            try:
                row = self._db.execute("SELECT tenant, name, bucket_id, created, versioning FROM buckets "
                                       "WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
                if row is None:
                    raise self._no_bucket(self._db, tenant, name)
            except sqlite3.Error as exc:
                raise CatalogError(f"catalog read failed: {exc}") from None
        return BucketRecord._from_row(row)

    def set_versioning(self, tenant: str, name: str, enabled: bool) -> BucketRecord:
        """Enable versioning, or suspend it (S3's PutBucketVersioning); return the bucket as it now is."""
        with self._write() as db:
            cursor = db.execute("UPDATE buckets SET versioning = ? WHERE tenant = ? AND name = ?",
                                (VERSIONING_ENABLED if enabled else VERSIONING_SUSPENDED, tenant, name))
            if cursor.rowcount == 0:
                raise self._no_bucket(db, tenant, name)
            row = db.execute("SELECT tenant, name, bucket_id, created, versioning FROM buckets "
                             "WHERE tenant = ? AND name = ?", (tenant, name)).fetchone()
        return BucketRecord._from_row(row)

    def list_buckets(self, tenant: str) -> list[BucketRecord]:
        rows = self._read("SELECT tenant, name, bucket_id, created, versioning FROM buckets "
                          "WHERE tenant = ? ORDER BY name", (tenant,))
        return [BucketRecord._from_row(row) for row in rows]

    def delete_bucket(self, tenant: str, name: str) -> None:
        with self._write() as db:
            if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?", (tenant, name)).fetchone():
                raise self._no_bucket(db, tenant, name)
            if db.execute("SELECT 1 FROM objects WHERE tenant = ? AND bucket = ? LIMIT 1",
                          (tenant, name)).fetchone():
                raise BucketNotEmpty(name)
            db.execute("DELETE FROM buckets WHERE tenant = ? AND name = ?", (tenant, name))
            # Uploads in progress go with the bucket (cascade); so do memories of completed ones.
            db.execute("DELETE FROM completed_uploads WHERE tenant = ? AND bucket = ?", (tenant, name))

    def drop_bucket(self, tenant: str, name: str) -> int:
        """Delete a bucket with everything in it, in one transaction; return the object versions removed.

        Only for shredding a tenant (``dwray.core.warehouse.tenants``), whose key
        is destroyed next: the rows' blobs are left to the sweeper.
        """
        where, params = "tenant = ? AND bucket = ?", (tenant, name)
        with self._write() as db:
            db.execute(f"DELETE FROM object_segments WHERE {where}", params)
            removed = db.execute(f"DELETE FROM objects WHERE {where}", params).rowcount
            db.execute(f"DELETE FROM multipart_parts WHERE upload_id IN "
                       f"(SELECT upload_id FROM multipart_uploads WHERE {where})", params)
            db.execute(f"DELETE FROM multipart_uploads WHERE {where}", params)
            db.execute(f"DELETE FROM completed_uploads WHERE {where}", params)
            db.execute("DELETE FROM buckets WHERE tenant = ? AND name = ?", params)
        return removed

    # Objects ----------------------------------------------------------------

    def commit_object(self, record: ObjectRecord, condition: WriteCondition | None = None) -> ObjectRecord:
        """Make ``record`` the latest version of its key; return it as committed.

        As S3 does by the bucket's versioning: enabled, older versions stay (no
        longer latest); suspended, the record replaces the key's null version and
        others stay; never enabled, every older version goes. A removed version's
        blob is left for the sweeper, so readers still streaming it can finish. The
        returned record says whether it is the null version. With ``condition`` the
        commit happens only if it holds (``PreconditionFailed`` otherwise), decided
        in the same transaction. Committing a row that is already there changes
        nothing and returns it, so a caller may retry a commit whose answer it lost.
        An inline record (``Placement.inline``) carries its sealed bytes into the row:
        this one durable commit is all there is to storing it, and a removed inline
        version leaves nothing to sweep.
        """
        with self._write() as db:
            return self._commit_in(db, record, usage_in(db, record.tenant, record.bucket), condition)

    def _commit_in(self, db: sqlite3.Connection, record: ObjectRecord, before: Usage | None = None,
                   condition: WriteCondition | None = None) -> ObjectRecord:
        """Commit ``record`` within ``db``'s transaction; ``QuotaExceeded`` if it passes a quota.

        ``before`` is the usage the quota check compares with; a caller that
        changes more rows in the same transaction (a multipart completion)
        passes ``None`` and checks itself once all are changed.
        """
        where = ("tenant = ? AND bucket = ? AND key = ?", (record.tenant, record.bucket, record.key))
        found = db.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE {where[0]} AND version_id = ?",
                           (*where[1], record.version_id)).fetchone()
        if found is not None:
            return ObjectRecord._from_row(found)
        bucket = db.execute("SELECT versioning FROM buckets WHERE tenant = ? AND name = ?",
                            (record.tenant, record.bucket)).fetchone()
        if bucket is None:
            raise self._no_bucket(db, record.tenant, record.bucket)
        if condition is not None:
            self._check_condition_in(db, record, condition)
        if bucket[0] == VERSIONING_ENABLED:
            record = replace(record, null_version=False)
            db.execute(f"UPDATE objects SET is_latest = 0 WHERE {where[0]} AND is_latest = 1", where[1])
        elif bucket[0] == VERSIONING_SUSPENDED:
            record = replace(record, null_version=True)
            db.execute(f"DELETE FROM objects WHERE {where[0]} AND null_version = 1", where[1])
            db.execute(f"UPDATE objects SET is_latest = 0 WHERE {where[0]} AND is_latest = 1", where[1])
        else:
            record = replace(record, null_version=True)
            db.execute(f"DELETE FROM objects WHERE {where[0]}", where[1])
        db.execute(f"INSERT INTO objects ({OBJECT_COLUMNS}) VALUES ({OBJECT_VALUES})", record._to_row())
        if before is not None:
            check_in(db, record.tenant, record.bucket, before)
        return record

    @staticmethod
    def _check_condition_in(db: sqlite3.Connection, record: ObjectRecord, condition: WriteCondition) -> None:
        """Raise unless ``condition`` holds for the key's current version, inside the commit's transaction."""
        latest = db.execute("SELECT etag, delete_marker, created FROM objects WHERE tenant = ? AND bucket = ? "
                            "AND key = ? AND is_latest = 1", (record.tenant, record.bucket, record.key)).fetchone()
        current = latest if latest is not None and not latest[1] else None
        if condition.if_none_match:
            holds = current is None
        else:
            holds = current is not None and current[0] == condition.if_match
        if holds:
            return
        if condition.since is not None and latest is not None and latest[2] > condition.since:
            # The key was written (or deleted) after the multipart upload began: a conflict, not a plain failure.
            raise ConditionalRequestConflict(record.bucket, record.key, condition.describe())
        if current is None and not condition.if_none_match:
            raise ObjectNotFound(record.bucket, record.key)
        raise PreconditionFailed(record.bucket, record.key, condition.describe())

    def commit_many(self, records: list[ObjectRecord]) -> list[ObjectRecord | DwrayError]:
        """Group commit: ``commit_object`` for each record, all in one transaction (one fsync).

        Each record gets its own savepoint, so one that fails (its bucket was
        deleted) returns its error in its place and the others still commit.
        """
        results: list[ObjectRecord | DwrayError] = []
        with self._write() as db:
            for number, record in enumerate(records):
                db.execute(f"SAVEPOINT commit_{number}")
                try:
                    results.append(self._commit_in(db, record, usage_in(db, record.tenant, record.bucket)))
                except DwrayError as exc:
                    db.execute(f"ROLLBACK TO commit_{number}")
                    results.append(exc)
                db.execute(f"RELEASE commit_{number}")
        return results

    @staticmethod
    def _version_where(version_id: str) -> str:
        """The condition naming one version of a key: its own id, or the key's null version."""
        return "null_version = 1" if version_id == NULL_VERSION else "version_id = ?"

    @staticmethod
    def _version_params(version_id: str) -> tuple[str, ...]:
        return () if version_id == NULL_VERSION else (version_id,)

    def get_object(self, tenant: str, bucket: str, key: str, version_id: str | None = None) -> ObjectRecord:
        """The latest version, or the named one (``"null"``: the null version).

        ``ObjectDeleted`` when the latest version is a delete marker, ``ObjectNotFound``
        when there is none; a named delete marker is returned (it says it is one).
        """
        base = (tenant, bucket, key)
        if version_id is None:
            rows = self._read(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? "
                              "AND key = ? AND is_latest = 1", base)
        else:
            rows = self._read(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? "
                              f"AND key = ? AND {self._version_where(version_id)}",
                              (*base, *self._version_params(version_id)))
        if not rows:
            self.get_bucket(tenant, bucket)
            raise ObjectNotFound(bucket, key, version_id)
        record = ObjectRecord._from_row(rows[0])
        if version_id is None and record.delete_marker:
            raise ObjectDeleted(bucket, key, record.public_version_id)
        return record

    def set_tags(self, tenant: str, bucket: str, key: str, version_id: str | None,
                 tags: dict[str, str]) -> ObjectRecord:
        """Replace the tags of the latest (or named) version; return the version as it now is."""
        with self._write() as db:
            where = "tenant = ? AND bucket = ? AND key = ? AND " + (
                "is_latest = 1" if version_id is None else self._version_where(version_id))
            params = (tenant, bucket, key, *(() if version_id is None else self._version_params(version_id)))
            row = db.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE {where}", params).fetchone()
            if row is None:
                if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?", (tenant, bucket)).fetchone():
                    raise self._no_bucket(db, tenant, bucket)
                raise ObjectNotFound(bucket, key, version_id)
            record = ObjectRecord._from_row(row)
            if record.delete_marker:
                if version_id is None:
                    raise ObjectDeleted(bucket, key, record.public_version_id)
                raise DeleteMarkerVersion(bucket, key, record.public_version_id, record.created)
            db.execute(f"UPDATE objects SET tags = ? WHERE {where}", (json.dumps(tags, sort_keys=True), *params))
        return replace(record, tags=dict(tags))

    def latest_page(self, tenant: str, bucket: str, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, limit: int = 1000) -> list[ObjectRecord]:
        """Up to ``limit`` live latest versions whose key starts with ``prefix``, from ``start`` on.

        Key order is SQLite's BINARY collation on UTF-8, which is S3's order.
        Listing records carry no placement (``get_object`` has it).
        """
        lower, include = prefix, True
        if start is not None and start >= prefix:
            lower, include = start, inclusive
        rows = self._read(
            f"SELECT {LISTING_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? AND is_latest = 1 "
            f"AND delete_marker = 0 AND key {'>=' if include else '>'} ? ORDER BY key LIMIT {int(limit)}",
            (tenant, bucket, lower))
        return _under_prefix(rows, ObjectRecord._from_row, prefix)

    def delete_object(self, tenant: str, bucket: str, key: str, version_id: str | None,
                      marker: ObjectRecord | None) -> DeleteOutcome:
        """Delete a key as S3 does by the bucket's versioning, or one version of it for good.

        A named version (``"null"`` for the null version) is removed, and if it was
        the latest the newest remaining version becomes latest. Without one:
        versioning enabled adds ``marker``; suspended adds it as the null version
        (replacing the old null version); never enabled removes the key.
        """
        with self._write() as db:
            versioned = db.execute("SELECT versioning FROM buckets WHERE tenant = ? AND name = ?",
                                   (tenant, bucket)).fetchone()
            if versioned is None:
                raise self._no_bucket(db, tenant, bucket)
            base = ("tenant = ? AND bucket = ? AND key = ?", (tenant, bucket, key))
            if version_id is not None:
                named = (f"{base[0]} AND {self._version_where(version_id)}",
                         (*base[1], *self._version_params(version_id)))
                row = db.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE {named[0]}", named[1]).fetchone()
                if row is None:
                    return DeleteOutcome(None, None)
                removed = ObjectRecord._from_row(row)
                db.execute(f"DELETE FROM objects WHERE {named[0]}", named[1])
                self._outbox_removal_in(db, removed)
                if removed.is_latest:
                    db.execute(f"UPDATE objects SET is_latest = 1 WHERE {base[0]} AND version_id = "
                               f"(SELECT version_id FROM objects WHERE {base[0]} ORDER BY created DESC, "
                               "version_id DESC LIMIT 1)", (*base[1], *base[1]))
                return DeleteOutcome(removed, None)
            if versioned[0] in (VERSIONING_ENABLED, VERSIONING_SUSPENDED) and marker is not None:
                removed = None
                if versioned[0] == VERSIONING_SUSPENDED:
                    marker = replace(marker, null_version=True)
                    row = db.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE {base[0]} AND null_version = 1",
                                     base[1]).fetchone()
                    removed = ObjectRecord._from_row(row) if row is not None else None
                    db.execute(f"DELETE FROM objects WHERE {base[0]} AND null_version = 1", base[1])
                    self._outbox_removal_in(db, removed)
                else:
                    marker = replace(marker, null_version=False)
                db.execute(f"UPDATE objects SET is_latest = 0 WHERE {base[0]} AND is_latest = 1", base[1])
                db.execute(f"INSERT INTO objects ({OBJECT_COLUMNS}) VALUES ({OBJECT_VALUES})",
                           marker._to_row())
                return DeleteOutcome(removed, marker)
            row = db.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE {base[0]} AND is_latest = 1",
                             base[1]).fetchone()
            db.execute(f"DELETE FROM objects WHERE {base[0]}", base[1])
            removed = ObjectRecord._from_row(row) if row else None
            self._outbox_removal_in(db, removed)
            return DeleteOutcome(removed, None)

    def versions_page(self, tenant: str, bucket: str, prefix: str = "", key_marker: str | None = None,
                      version_marker: str | None = None, inclusive: bool = False,
                      limit: int = 1000) -> list[ObjectRecord]:
        """Up to ``limit`` versions and delete markers under ``prefix``, by key, newest first within a key.

        After ``key_marker`` alone: keys above it (or from it, ``inclusive``).
        With ``version_marker`` too (a public version id): that key's versions
        older than the marker's, then the keys above; a marker the key no longer
        has resumes at the next key. Listing records carry no placement (``get_object`` has it).
        """
        self.get_bucket(tenant, bucket)
        where, params = ["tenant = ? AND bucket = ? AND key >= ?"], [tenant, bucket, prefix]
        if key_marker is not None and version_marker is not None:
            found = self._read(f"SELECT created, version_id FROM objects WHERE tenant = ? AND bucket = ? AND key = ? "
                               f"AND {self._version_where(version_marker)}",
                               (tenant, bucket, key_marker, *self._version_params(version_marker)))
            if found:
                where.append("(key > ? OR (key = ? AND (created < ? OR (created = ? AND version_id < ?))))")
                params += [key_marker, key_marker, found[0][0], found[0][0], found[0][1]]
            else:
                where.append("key > ?")
                params.append(key_marker)
        elif key_marker is not None:
            where.append("key >= ?" if inclusive else "key > ?")
            params.append(key_marker)
        rows = self._read(f"SELECT {LISTING_COLUMNS} FROM objects WHERE {' AND '.join(where)} "
                          f"ORDER BY key, created DESC, version_id DESC LIMIT {int(limit)}", tuple(params))
        return _under_prefix(rows, ObjectRecord._from_row, prefix)

    def iter_versions(self, tenant: str, bucket: str, key: str) -> list[ObjectRecord]:
        """Every version of one key, newest first."""
        rows = self._read(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? AND key = ? "
                          "ORDER BY created DESC, version_id DESC", (tenant, bucket, key))
        return [ObjectRecord._from_row(row) for row in rows]

    # Keys -------------------------------------------------------------------

    def wrapped_below_page(self, kek_id: str, version: int,
                           limit: int = 500) -> list[ObjectRecord | WrappedKey]:
        """Up to ``limit`` DEKs wrapped under ``kek_id`` at a version below ``version``:
        objects' own, then multipart objects' segments', then uploads' parts'."""
        rows: list[ObjectRecord | WrappedKey] = [ObjectRecord._from_row(row) for row in self._read(
            f"SELECT {OBJECT_COLUMNS} FROM objects WHERE kek_id = ? AND kek_version < ? LIMIT {int(limit)}",
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
            # An object without a placement has no key header: it matches no row.
            current = record.placement.key_header if record.placement is not None else None
            params = (record.tenant, record.bucket, record.key, record.version_id, current)
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
        """Blob ids on ``backend`` that a committed object, segment or uploaded part points at.

        Inline objects have no blob: their backend is ``INLINE_BACKEND`` (schema migration 7
        keeps that so), so a query by any storage backend's name never meets them, and
        asking for ``INLINE_BACKEND`` itself is refused (it holds no blobs to sweep).
        """
        self._no_blobs_inline(backend)
        rows = self._read("SELECT blob_id FROM objects WHERE backend = ? AND blob_id IS NOT NULL "
                          "UNION SELECT blob_id FROM object_segments WHERE backend = ? "
                          "UNION SELECT blob_id FROM multipart_parts WHERE backend = ?", (backend,) * 3)
        return {row[0] for row in rows}

    def is_referenced(self, backend: str, blob_id: str) -> bool:
        """Whether a committed row points at blob ``blob_id`` on ``backend`` (inline rows point at none)."""
        self._no_blobs_inline(backend)
        return bool(self._read(
            "SELECT 1 FROM objects WHERE backend = ? AND blob_id = ? UNION ALL "
            "SELECT 1 FROM object_segments WHERE backend = ? AND blob_id = ? UNION ALL "
            "SELECT 1 FROM multipart_parts WHERE backend = ? AND blob_id = ? LIMIT 1",
            (backend, blob_id) * 3))

    @staticmethod
    def _no_blobs_inline(backend: str) -> None:
        if backend == INLINE_BACKEND:
            raise InvalidArgument(f"{INLINE_BACKEND!r} names objects kept in catalog rows, not a storage backend "
                                  "with blobs")

    def stats(self, tenant: str) -> dict[str, int]:
        """Object versions and their bytes (delete markers aside), and uploads in progress and their parts' bytes."""
        row = self._read("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM objects "
                         "WHERE tenant = ? AND delete_marker = 0", (tenant,))[0]
        uploads = self._read(
            "SELECT COUNT(DISTINCT u.upload_id), COALESCE(SUM(p.size), 0) FROM multipart_uploads u "
            "LEFT JOIN multipart_parts p ON p.upload_id = u.upload_id WHERE u.tenant = ?", (tenant,))[0]
        return {"objects": row[0], "bytes": row[1], "uploads": uploads[0], "upload_bytes": uploads[1]}

    def tenant_stats(self) -> dict[str, dict[str, int]]:
        """For every tenant that owns a bucket: its live objects (latest versions, delete markers
        aside) and their bytes. Tenants without buckets store nothing; the identity store lists them.

        One row per tenant, kept by triggers in the same transaction as every object change
        (schema migration 4): ``/metrics`` calls this on every scrape, so it never scans objects.
        """
        rows = self._read("SELECT tenant, objects, bytes FROM tenant_usage ORDER BY tenant")
        return {name: {"objects": count, "bytes": size} for name, count, size in rows}

    # Multipart uploads --------------------------------------------------------

    def create_upload(self, upload: UploadRecord) -> None:
        """Record a new upload. Recording the same upload id again for the same key changes nothing."""
        with self._write() as db:
            if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?",
                              (upload.tenant, upload.bucket)).fetchone():
                raise self._no_bucket(db, upload.tenant, upload.bucket)
            existing = db.execute("SELECT tenant, bucket, key FROM multipart_uploads WHERE upload_id = ?",
                                  (upload.upload_id,)).fetchone()
            if existing is not None:
                if existing != (upload.tenant, upload.bucket, upload.key):
                    raise CatalogError("upload id collision")
                return
            db.execute(f"INSERT INTO multipart_uploads ({UPLOAD_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (upload.tenant, upload.bucket, upload.key, upload.upload_id, upload.created,
                        upload.content_type, json.dumps(upload.headers, sort_keys=True),
                        json.dumps(upload.metadata, sort_keys=True), json.dumps(upload.tags, sort_keys=True)))

    def get_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> UploadRecord:
        """The upload, if it belongs to this tenant, bucket and key; ``UploadNotFound`` otherwise."""
        rows = self._read(f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads WHERE upload_id = ? AND tenant = ? "
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
            before = usage_in(db, tenant, bucket)
            # Deleted first, not replaced: REPLACE fires no delete trigger, and the
            # replaced part's bytes must leave the usage (schema migration 5).
            db.execute("DELETE FROM multipart_parts WHERE upload_id = ? AND part_number = ?",
                       (part.upload_id, part.part_number))
            db.execute(f"INSERT INTO multipart_parts ({PART_COLUMNS}) VALUES "
                       f"({', '.join('?' * 12)})",
                       part._to_row())
            check_in(db, tenant, bucket, before)

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
        rows = self._read(f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads WHERE {' AND '.join(where)} "
                          f"ORDER BY key, created, upload_id LIMIT {int(limit)}", tuple(params))
        return _under_prefix(rows, UploadRecord._from_row, prefix)

    def uploads_initiated_before(self, cutoff: float, limit: int = 1000,
                                 tenant: str | None = None) -> list[UploadRecord]:
        """Up to ``limit`` uploads begun before ``cutoff`` (epoch seconds), oldest first, of ``tenant`` or all."""
        where, params = ("created < ?", (cutoff,)) if tenant is None else ("created < ? AND tenant = ?",
                                                                            (cutoff, tenant))
        rows = self._read(f"SELECT {UPLOAD_COLUMNS} FROM multipart_uploads WHERE {where} "
                          f"ORDER BY created, upload_id LIMIT {int(limit)}", params)
        return [UploadRecord._from_row(row) for row in rows]

    def abort_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> None:
        """Forget an upload and its parts; their blobs are left for the sweeper."""
        with self._write() as db:
            cursor = db.execute("DELETE FROM multipart_uploads WHERE upload_id = ? AND tenant = ? AND bucket = ? "
                                "AND key = ?", (upload_id, tenant, bucket, key))
            if cursor.rowcount == 0:
                if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?",
                                  (tenant, bucket)).fetchone():
                    raise self._no_bucket(db, tenant, bucket)
                raise UploadNotFound(upload_id)

    def complete_upload(self, record: ObjectRecord, upload_id: str, parts: list[tuple[int, str]],
                        condition: WriteCondition | None = None) -> ObjectRecord:
        """Turn an upload into the object ``record``, in one transaction.

        ``parts`` are the (number, ETag) pairs the caller checked; each must
        still be there with that ETag (``InvalidPart`` if a concurrent upload
        replaced one) and their sizes must add up to ``record.size``. The
        object row and one segment per named part are committed, the upload
        and all its part rows removed (unnamed parts' blobs are left for the
        sweeper), and the completion remembered: completing the same upload
        with the same parts again returns the same object. With ``condition``,
        only if it holds for the key's current version (see ``commit_object``).
        The object's bytes are its segments' blobs (never inline): ``record`` has
        no placement of its own.
        """
        if record.placement is not None:
            raise InvalidArgument(f"multipart object {record.bucket}/{record.key}: its bytes are in its parts' "
                                  "blobs, so its record has no placement of its own")
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
            before = usage_in(db, record.tenant, record.bucket)
            record = self._commit_in(db, record, None, condition)
            offset = 0
            for index, (number, _) in enumerate(parts):
                db.execute(
                    f"INSERT INTO object_segments (tenant, bucket, key, version_id, {SEGMENT_COLUMNS}) "
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
            # The object's bytes replace its parts' reservation; an overwritten
            # latest version or a versioned bucket may still make it grow.
            check_in(db, record.tenant, record.bucket, before)
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
        found = db.execute(f"SELECT {OBJECT_COLUMNS} FROM objects WHERE tenant = ? AND bucket = ? AND key = ? "
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
        rows = self._read(f"SELECT {SEGMENT_COLUMNS} FROM object_segments WHERE tenant = ? AND bucket = ? "
                          "AND key = ? AND version_id = ? AND (part_offset + size > ? OR part_offset >= ?) "
                          f"ORDER BY part_index LIMIT {int(limit)}", (tenant, bucket, key, version_id, start, start))
        return [SegmentRecord._from_row(row) for row in rows]


def _under_prefix(rows: Any, from_row: Callable[[Any], R], prefix: str) -> list[R]:
    """Records of ``rows`` (in key order) up to the first whose key leaves ``prefix``."""
    return list(itertools.takewhile(lambda record: record.key.startswith(prefix), map(from_row, rows)))
