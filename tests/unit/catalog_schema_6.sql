-- A catalog at schema version 6, written through dwray's Catalog before migration 7
-- (tests/unit/test_catalog_inline.py loads it and sets user_version = 6). Generated, do not edit.
BEGIN TRANSACTION;
CREATE TABLE bucket_usage (
        tenant  TEXT NOT NULL,
        bucket  TEXT NOT NULL,
        objects INTEGER NOT NULL DEFAULT 0,
        bytes   INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, bucket)
    );
INSERT INTO "bucket_usage" VALUES('t1','plain',3,17);
INSERT INTO "bucket_usage" VALUES('t1','kept',2,8);
INSERT INTO "bucket_usage" VALUES('t1','paused',2,7);
INSERT INTO "bucket_usage" VALUES('t2','theirs',1,3);
CREATE TABLE "buckets" (
        tenant     TEXT NOT NULL,
        name       TEXT NOT NULL,
        bucket_id  TEXT NOT NULL UNIQUE,
        created    REAL NOT NULL,
        versioning INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, name)
    );
INSERT INTO "buckets" VALUES('t1','plain','id-plain',1.7964968106156585216e+09,0);
INSERT INTO "buckets" VALUES('t1','kept','id-kept',1.796496810616007328e+09,1);
INSERT INTO "buckets" VALUES('t1','paused','id-paused',1.79649681061619067188e+09,2);
INSERT INTO "buckets" VALUES('t2','theirs','id-theirs',1.7964968106163475513e+09,0);
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
INSERT INTO "completed_uploads" VALUES('up-done','t1','plain','big','v-big','[[1, "p1"], [2, "p2"]]','m-2',8,10.0);
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
        kek_version  INTEGER NOT NULL, part_version TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (upload_id, part_number)
    );
INSERT INTO "multipart_parts" VALUES('up-open',1,6,'q1',11.0,'local','t1/plain/open1',X'4844522D74312F706C61696E2F6F70656E31',X'54424C2D74312F706C61696E2F6F70656E31','tenant:t1',1,'up-open.1.r');
CREATE TABLE multipart_uploads (
        upload_id    TEXT PRIMARY KEY,
        tenant       TEXT NOT NULL,
        bucket       TEXT NOT NULL,
        key          TEXT NOT NULL,
        created      REAL NOT NULL,
        content_type TEXT NOT NULL,
        headers      TEXT NOT NULL DEFAULT '{}',
        metadata     TEXT NOT NULL DEFAULT '{}', tags TEXT NOT NULL DEFAULT '{}',
        FOREIGN KEY (tenant, bucket) REFERENCES buckets(tenant, name) ON DELETE CASCADE
    );
INSERT INTO "multipart_uploads" VALUES('up-open','t1','plain','pending',11.0,'text/plain','{}','{}','{}');
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
INSERT INTO "object_segments" VALUES('t1','plain','big','v-big',0,0,5,'local','t1/plain/part1',X'4844522D74312F706C61696E2F7061727431',X'54424C2D74312F706C61696E2F7061727431','tenant:t1',1,'up-done.1.r');
INSERT INTO "object_segments" VALUES('t1','plain','big','v-big',1,5,3,'local','t1/plain/part2',X'4844522D74312F706C61696E2F7061727432',X'54424C2D74312F706C61696E2F7061727432','tenant:t1',1,'up-done.2.r');
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
        kek_version   INTEGER, parts INTEGER NOT NULL DEFAULT 0, null_version INTEGER NOT NULL DEFAULT 0, tags TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (tenant, bucket, key, version_id),
        FOREIGN KEY (tenant, bucket) REFERENCES buckets(tenant, name)
    );
INSERT INTO "objects" VALUES('t1','plain','a','v-a',1,0,3,'e-v-a','text/plain','{"cache-control": "no-cache"}','{"m": "1"}',1.0,'local','t1/plain/v-a',X'4844522D74312F706C61696E2F762D61',X'54424C2D74312F706C61696E2F762D61','tenant:t1',1,0,1,'{}');
INSERT INTO "objects" VALUES('t1','plain','b','v-b',1,0,0,'e-v-b','text/plain','{}','{}',2.0,'local','t1/plain/v-b',X'4844522D74312F706C61696E2F762D62',X'54424C2D74312F706C61696E2F762D62','tenant:t1',1,0,1,'{"colour": "blue"}');
INSERT INTO "objects" VALUES('t1','kept','k','v-k1',0,0,3,'e-v-k1','text/plain','{}','{}',3.0,'local','t1/kept/v-k1',X'4844522D74312F6B6570742F762D6B31',X'54424C2D74312F6B6570742F762D6B31','tenant:t1',1,0,0,'{}');
INSERT INTO "objects" VALUES('t1','kept','k','v-k2',0,0,5,'e-v-k2','text/plain','{}','{}',4.0,'local','t1/kept/v-k2',X'4844522D74312F6B6570742F762D6B32',X'54424C2D74312F6B6570742F762D6B32','tenant:t1',1,0,0,'{}');
INSERT INTO "objects" VALUES('t1','kept','k','v-k3',1,1,0,'','text/plain','{}','{}',5.0,NULL,NULL,NULL,NULL,NULL,NULL,0,0,'{}');
INSERT INTO "objects" VALUES('t1','paused','p','v-p1',0,0,3,'e-v-p1','text/plain','{}','{}',6.0,'local','t1/paused/v-p1',X'4844522D74312F7061757365642F762D7031',X'54424C2D74312F7061757365642F762D7031','tenant:t1',1,0,0,'{}');
INSERT INTO "objects" VALUES('t1','paused','p','v-p2',1,0,4,'e-v-p2','text/plain','{}','{}',7.0,'local','t1/paused/v-p2',X'4844522D74312F7061757365642F762D7032',X'54424C2D74312F7061757365642F762D7032','tenant:t1',1,0,1,'{}');
INSERT INTO "objects" VALUES('t2','theirs','x','v-x',1,0,3,'e-v-x','text/plain','{}','{}',8.0,'local','t2/theirs/v-x',X'4844522D74322F7468656972732F762D78',X'54424C2D74322F7468656972732F762D78','tenant:t2',2,0,1,'{}');
INSERT INTO "objects" VALUES('t1','plain','big','v-big',1,0,8,'m-2','text/plain','{}','{}',10.0,NULL,NULL,NULL,NULL,NULL,NULL,2,1,'{}');
CREATE TABLE quotas (
        tenant      TEXT NOT NULL,
        bucket      TEXT NOT NULL DEFAULT '',
        max_bytes   INTEGER,
        max_objects INTEGER,
        max_buckets INTEGER,
        PRIMARY KEY (tenant, bucket)
    );
INSERT INTO "quotas" VALUES('t1','',10000,100,10);
INSERT INTO "quotas" VALUES('t1','plain',5000,NULL,NULL);
CREATE TABLE tenant_usage (
        tenant  TEXT PRIMARY KEY,
        objects INTEGER NOT NULL DEFAULT 0,
        bytes   INTEGER NOT NULL DEFAULT 0
    );
INSERT INTO "tenant_usage" VALUES('t1',4,15);
INSERT INTO "tenant_usage" VALUES('t2',1,3);
CREATE UNIQUE INDEX objects_latest ON objects (tenant, bucket, key) WHERE is_latest = 1;
CREATE INDEX objects_placement ON objects (backend, blob_id);
CREATE INDEX objects_kek ON objects (kek_id, kek_version);
CREATE INDEX multipart_uploads_key ON multipart_uploads (tenant, bucket, key, created);
CREATE INDEX multipart_parts_placement ON multipart_parts (backend, blob_id);
CREATE INDEX multipart_parts_kek ON multipart_parts (kek_id, kek_version);
CREATE INDEX object_segments_placement ON object_segments (backend, blob_id);
CREATE INDEX object_segments_kek ON object_segments (kek_id, kek_version);
CREATE INDEX completed_uploads_created ON completed_uploads (created);
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
CREATE UNIQUE INDEX objects_null ON objects (tenant, bucket, key) WHERE null_version = 1;
CREATE UNIQUE INDEX buckets_global_name ON buckets (name);
COMMIT;
