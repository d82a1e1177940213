"""The catalog's SQLite schema: its migrations, and the column lists its queries share."""
from __future__ import annotations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION"]

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
    # 3: the identity store is the one registry of tenants. The catalog's ``tenants``
    # table goes, and with it the foreign key from ``buckets`` to it, which SQLite
    # drops only by rebuilding the table: a copy without it takes every row, then
    # the name (its primary key and unique bucket id come with its definition;
    # ``buckets`` has no other index). Tables that reference ``buckets`` name it,
    # so they reference the rebuilt table. ``Catalog._migrate`` turns foreign keys
    # off around the migration, as SQLite's procedure for altering a table asks.
    """
    CREATE TABLE buckets_rebuilt (
        tenant     TEXT NOT NULL,
        name       TEXT NOT NULL,
        bucket_id  TEXT NOT NULL UNIQUE,
        created    REAL NOT NULL,
        versioning INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, name)
    );
    INSERT INTO buckets_rebuilt (tenant, name, bucket_id, created, versioning)
        SELECT tenant, name, bucket_id, created, versioning FROM buckets;
    DROP TABLE buckets;
    ALTER TABLE buckets_rebuilt RENAME TO buckets;
    DROP TABLE tenants;
    """,
    # 4: each tenant's live objects (latest versions, delete markers aside) and their
    # bytes, kept by triggers in the transaction of every change to ``objects``, so
    # ``/metrics`` reads one row per tenant instead of scanning every object per
    # scrape. A tenant has a row while it owns a bucket (objects need one). A later
    # migration that rebuilds ``objects`` or ``buckets`` must create these triggers again.
    """
    CREATE TABLE tenant_usage (
        tenant  TEXT PRIMARY KEY,
        objects INTEGER NOT NULL DEFAULT 0,
        bytes   INTEGER NOT NULL DEFAULT 0
    );
    INSERT INTO tenant_usage (tenant, objects, bytes)
        SELECT b.tenant, COUNT(o.key), COALESCE(SUM(o.size), 0) FROM (SELECT DISTINCT tenant FROM buckets) b
        LEFT JOIN objects o ON o.tenant = b.tenant AND o.is_latest = 1 AND o.delete_marker = 0
        GROUP BY b.tenant;
    CREATE TRIGGER tenant_usage_bucket_created AFTER INSERT ON buckets BEGIN
        INSERT OR IGNORE INTO tenant_usage (tenant) VALUES (NEW.tenant);
    END;
    CREATE TRIGGER tenant_usage_bucket_deleted AFTER DELETE ON buckets
    WHEN NOT EXISTS (SELECT 1 FROM buckets WHERE tenant = OLD.tenant) BEGIN
        DELETE FROM tenant_usage WHERE tenant = OLD.tenant;
    END;
    CREATE TRIGGER tenant_usage_object_added AFTER INSERT ON objects
    WHEN NEW.is_latest = 1 AND NEW.delete_marker = 0 BEGIN
        UPDATE tenant_usage SET objects = objects + 1, bytes = bytes + NEW.size WHERE tenant = NEW.tenant;
    END;
    CREATE TRIGGER tenant_usage_object_removed AFTER DELETE ON objects
    WHEN OLD.is_latest = 1 AND OLD.delete_marker = 0 BEGIN
        UPDATE tenant_usage SET objects = objects - 1, bytes = bytes - OLD.size WHERE tenant = OLD.tenant;
    END;
    CREATE TRIGGER tenant_usage_object_changed AFTER UPDATE OF tenant, is_latest, delete_marker, size ON objects
    BEGIN
        UPDATE tenant_usage SET objects = objects - 1, bytes = bytes - OLD.size
            WHERE tenant = OLD.tenant AND OLD.is_latest = 1 AND OLD.delete_marker = 0;
        UPDATE tenant_usage SET objects = objects + 1, bytes = bytes + NEW.size
            WHERE tenant = NEW.tenant AND NEW.is_latest = 1 AND NEW.delete_marker = 0;
    END;
    """,
    # 5: hard quotas. ``quotas`` holds the limits, per tenant (bucket '') and per
    # bucket; NULL is no limit. ``bucket_usage`` is what each bucket holds against
    # them: every stored version (delete markers aside, they hold no bytes) and the
    # bytes of uploaded multipart parts, kept by triggers in the transaction of each
    # change, so a write checks its quota in the transaction that commits it. A
    # tenant's usage is the sum over its buckets. Parts are released in a trigger
    # before their upload row goes (deleting it cascades to them, but by then the
    # upload naming their bucket would be gone). ``commit_part`` deletes a replaced
    # part before inserting its successor: REPLACE fires no delete trigger.
    """
    CREATE TABLE quotas (
        tenant      TEXT NOT NULL,
        bucket      TEXT NOT NULL DEFAULT '',
        max_bytes   INTEGER,
        max_objects INTEGER,
        max_buckets INTEGER,
        PRIMARY KEY (tenant, bucket)
    );
    CREATE TABLE bucket_usage (
        tenant  TEXT NOT NULL,
        bucket  TEXT NOT NULL,
        objects INTEGER NOT NULL DEFAULT 0,
        bytes   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, bucket)
    );
    INSERT INTO bucket_usage (tenant, bucket, objects, bytes)
        SELECT b.tenant, b.name,
            (SELECT COUNT(*) FROM objects o WHERE o.tenant = b.tenant AND o.bucket = b.name
                AND o.delete_marker = 0),
            (SELECT COALESCE(SUM(o.size), 0) FROM objects o WHERE o.tenant = b.tenant AND o.bucket = b.name
                AND o.delete_marker = 0)
            + (SELECT COALESCE(SUM(p.size), 0) FROM multipart_parts p JOIN multipart_uploads u
                ON u.upload_id = p.upload_id WHERE u.tenant = b.tenant AND u.bucket = b.name)
        FROM buckets b;
    CREATE TRIGGER bucket_usage_bucket_created AFTER INSERT ON buckets BEGIN
        INSERT OR IGNORE INTO bucket_usage (tenant, bucket) VALUES (NEW.tenant, NEW.name);
    END;
    CREATE TRIGGER bucket_usage_bucket_deleted AFTER DELETE ON buckets BEGIN
        DELETE FROM bucket_usage WHERE tenant = OLD.tenant AND bucket = OLD.name;
        DELETE FROM quotas WHERE tenant = OLD.tenant AND bucket = OLD.name;
    END;
    CREATE TRIGGER bucket_usage_object_added AFTER INSERT ON objects WHEN NEW.delete_marker = 0 BEGIN
        UPDATE bucket_usage SET objects = objects + 1, bytes = bytes + NEW.size
            WHERE tenant = NEW.tenant AND bucket = NEW.bucket;
    END;
    CREATE TRIGGER bucket_usage_object_removed AFTER DELETE ON objects WHEN OLD.delete_marker = 0 BEGIN
        UPDATE bucket_usage SET objects = objects - 1, bytes = bytes - OLD.size
            WHERE tenant = OLD.tenant AND bucket = OLD.bucket;
    END;
    CREATE TRIGGER bucket_usage_object_changed AFTER UPDATE OF tenant, bucket, delete_marker, size ON objects
    BEGIN
        UPDATE bucket_usage SET objects = objects - 1, bytes = bytes - OLD.size
            WHERE tenant = OLD.tenant AND bucket = OLD.bucket AND OLD.delete_marker = 0;
        UPDATE bucket_usage SET objects = objects + 1, bytes = bytes + NEW.size
            WHERE tenant = NEW.tenant AND bucket = NEW.bucket AND NEW.delete_marker = 0;
    END;
    CREATE TRIGGER bucket_usage_part_added AFTER INSERT ON multipart_parts BEGIN
        UPDATE bucket_usage SET bytes = bytes + NEW.size WHERE (tenant, bucket) =
            (SELECT tenant, bucket FROM multipart_uploads WHERE upload_id = NEW.upload_id);
    END;
    CREATE TRIGGER bucket_usage_part_removed AFTER DELETE ON multipart_parts BEGIN
        UPDATE bucket_usage SET bytes = bytes - OLD.size WHERE (tenant, bucket) =
            (SELECT tenant, bucket FROM multipart_uploads WHERE upload_id = OLD.upload_id);
    END;
    CREATE TRIGGER bucket_usage_upload_removed BEFORE DELETE ON multipart_uploads BEGIN
        DELETE FROM multipart_parts WHERE upload_id = OLD.upload_id;
    END;
    """,
    # 6: S3 versioning as S3 has it, object tags, and global bucket names.
    # ``buckets.versioning`` is 0 (never enabled), 1 (Enabled) or 2 (Suspended).
    # ``objects.null_version`` marks the key's "null" version: what a write makes
    # while the bucket is unversioned or suspended, and what replaces it; at most
    # one per key. Its row keeps a unique ``version_id`` of its own, because the
    # frames' AAD binds it. Objects written before are null versions if their bucket
    # never kept versions. ``tags`` are S3 object tags, per version (and an upload's,
    # for the object it will make). Bucket names are unique across tenants (the
    # catalog refuses to migrate a data dir where they are not: ``BucketNameClash``).
    """
    ALTER TABLE objects ADD COLUMN null_version INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE objects ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE multipart_uploads ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
    UPDATE objects SET null_version = 1 WHERE EXISTS (SELECT 1 FROM buckets b
        WHERE b.tenant = objects.tenant AND b.name = objects.bucket AND b.versioning = 0);
    CREATE UNIQUE INDEX objects_null ON objects (tenant, bucket, key) WHERE null_version = 1;
    CREATE UNIQUE INDEX buckets_global_name ON buckets (name);
    """,
    # 7: small objects inline. ``objects.inline_data`` holds an object's sealed records
    # (what its blob would hold) when they are kept in the row: backend 'inline', blob
    # id '', and no blob anywhere, so the sweeper's queries by backend never meet them.
    # The check keeps that so for every row: inline bytes exactly when the backend is
    # 'inline', and never empty. Earlier rows all have blobs (NULL); a data dir where a
    # storage backend was named 'inline' is refused before this runs (``INLINE_MIGRATION``).
    # Parts and segments are never inline: their tables get no such column.
    """
    ALTER TABLE objects ADD COLUMN inline_data BLOB
        CHECK ((inline_data IS NULL) = (backend IS NOT 'inline') AND (inline_data IS NULL OR length(inline_data) > 0));
    """,
    # 8: the event outbox and bucket notification configurations. ``event_outbox``
    # gets a row in the very transaction of each change the message bus reports (an
    # acknowledged write always has its event, whether or not the bus runs): triggers
    # add bucket creations and removals and every new version or delete marker; the
    # store adds removed versions itself (``dwray.core.catalog.outbox``), since a
    # trigger cannot tell a removal from the replacement an overwrite makes. The bus
    # reads the rows in ``seq`` order and deletes those it has taken. ``name`` is S3's
    # event name; the kernel's other events the catalog sees (``quota.near_limit`` in the
    # write that crosses the threshold, ``key.rotated``) carry a JSON ``payload``.
    # ``bucket_notifications`` holds a bucket's rules (JSON) and goes with it.
    """
    CREATE TABLE event_outbox (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        topic      TEXT NOT NULL,
        name       TEXT NOT NULL,
        tenant     TEXT NOT NULL,
        bucket     TEXT NOT NULL,
        key        TEXT NOT NULL DEFAULT '',
        version_id TEXT,
        size       INTEGER NOT NULL DEFAULT 0,
        etag       TEXT NOT NULL DEFAULT '',
        created    REAL NOT NULL,
        payload    TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE bucket_notifications (
        tenant TEXT NOT NULL,
        bucket TEXT NOT NULL,
        rules  TEXT NOT NULL,
        PRIMARY KEY (tenant, bucket)
    );
    CREATE TRIGGER event_bucket_created AFTER INSERT ON buckets BEGIN
        INSERT INTO event_outbox (topic, name, tenant, bucket, created)
            VALUES ('bucket.created', 'BucketCreated', NEW.tenant, NEW.name, NEW.created);
    END;
    CREATE TRIGGER event_bucket_removed AFTER DELETE ON buckets BEGIN
        INSERT INTO event_outbox (topic, name, tenant, bucket, created)
            VALUES ('bucket.removed', 'BucketRemoved', OLD.tenant, OLD.name, (julianday('now') - 2440587.5) * 86400.0);
        DELETE FROM bucket_notifications WHERE tenant = OLD.tenant AND bucket = OLD.name;
    END;
    CREATE TRIGGER event_object_created AFTER INSERT ON objects WHEN NEW.delete_marker = 0 BEGIN
        INSERT INTO event_outbox (topic, name, tenant, bucket, key, version_id, size, etag, created)
            VALUES ('object.created',
                    CASE WHEN NEW.parts > 0 THEN 'ObjectCreated:CompleteMultipartUpload' ELSE 'ObjectCreated:Put' END,
                    NEW.tenant, NEW.bucket, NEW.key, CASE WHEN NEW.null_version THEN 'null' ELSE NEW.version_id END,
                    NEW.size, NEW.etag, NEW.created);
    END;
    CREATE TRIGGER event_marker_created AFTER INSERT ON objects WHEN NEW.delete_marker = 1 BEGIN
        INSERT INTO event_outbox (topic, name, tenant, bucket, key, version_id, created)
            VALUES ('object.removed', 'ObjectRemoved:DeleteMarkerCreated', NEW.tenant, NEW.bucket, NEW.key,
                    CASE WHEN NEW.null_version THEN 'null' ELSE NEW.version_id END, NEW.created);
    END;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
#: the migration that makes bucket names global (its index in ``MIGRATIONS``)
GLOBAL_NAMES_MIGRATION = 5
#: the migration that adds inline objects (its index in ``MIGRATIONS``)
INLINE_MIGRATION = 6

OBJECT_COLUMNS = (
    "tenant, bucket, key, version_id, is_latest, delete_marker, size, etag, content_type, "
    "headers, metadata, created, backend, blob_id, key_header, frame_table, kek_id, kek_version, parts, "
    "null_version, tags, inline_data"
)
OBJECT_VALUES = ", ".join("?" * 22)
#: ``OBJECT_COLUMNS`` for listings: the same shape with no placement (what to list is all a
#: listing needs; a page of small objects would otherwise carry their inline bytes)
LISTING_COLUMNS = (
    "tenant, bucket, key, version_id, is_latest, delete_marker, size, etag, content_type, "
    "headers, metadata, created, NULL, NULL, NULL, NULL, NULL, NULL, parts, null_version, tags, NULL"
)
UPLOAD_COLUMNS = "tenant, bucket, key, upload_id, created, content_type, headers, metadata, tags"
PART_COLUMNS = ("upload_id, part_number, size, etag, created, backend, blob_id, key_header, frame_table, "
                "kek_id, kek_version, part_version")
SEGMENT_COLUMNS = ("part_index, part_offset, size, backend, blob_id, key_header, frame_table, kek_id, "
                   "kek_version, part_version")
