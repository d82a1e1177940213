"""Listings: a bucket's keys (S3's ListObjectsV2), a key's versions, and uploads in progress
(S3's ListMultipartUploads), the two paged listings sharing one delimiter roll-up."""
from __future__ import annotations

import base64
import json
from collections.abc import Iterator

from dwray.core.catalog import ObjectRecord, UploadRecord
from dwray.core.models import (
    ListPage,
    ObjectInfo,
    TenantContext,
    UploadInfo,
    UploadsPage,
    VersionsPage,
)
from dwray.core.names import validate_bucket_name, validate_key
from dwray.core.warehouse.access import bucket_rule, checked
from dwray.core.warehouse.base import TenantArg, WarehouseBase, object_info
from dwray.core.warehouse.rollup import next_markers, resume_point, roll_up
from dwray.core.warehouse.tracing import traced
from dwray.errors import InvalidArgument, InvalidContinuationToken

__all__ = ["Listing"]

#: rows fetched from the catalog per query while listing uploads
UPLOADS_BATCH = 1000
#: rows fetched from the catalog per query while listing versions
VERSIONS_BATCH = 1000


def _encode_token(start: str, inclusive: bool) -> str:
    raw = json.dumps({"s": start, "i": inclusive}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, bool]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        value = json.loads(raw)
        start, inclusive = value["s"], value["i"]
        if not isinstance(start, str) or not isinstance(inclusive, bool):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise InvalidContinuationToken(token[:80]) from None
    return start, inclusive


class Listing(WarehouseBase):
    """The listing operations of the warehouse."""

    @traced("list")
    @checked(bucket_rule("s3:ListBucket"))
    def list(self, bucket: str, *, prefix: str = "", delimiter: str | None = None, max_keys: int = 1000,
             continuation_token: str | None = None, start_after: str | None = None,
             tenant: TenantArg = None) -> ListPage:
        """One page of keys in S3's order and with S3's ListObjectsV2 semantics."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        if not isinstance(max_keys, int) or max_keys < 0:
            raise InvalidArgument(f"max_keys must be a non-negative integer, not {max_keys!r}")
        self.catalog.get_bucket(ctx.tenant, bucket)
        if continuation_token:
            start, inclusive = _decode_token(continuation_token)
        else:
            start, inclusive = (start_after, False) if start_after else (None, True)

        def scan(after: str | None) -> Iterator[ObjectRecord]:
            first, include = (start, inclusive) if after is None else (after, True)
            return self.catalog.iter_latest(ctx.tenant, bucket, prefix=prefix, start=first, inclusive=include)

        page = roll_up(scan, lambda record: record.key, prefix=prefix, delimiter=delimiter,
                       limit=min(max_keys, 1000))
        # The token says where the next page starts, exactly as the roll-up resumes.
        token = _encode_token(*page.resume) if page.is_truncated and page.resume is not None else None
        return ListPage([object_info(record) for record in page.entries], page.common_prefixes,
                        page.is_truncated, token)

    def iter_objects(self, bucket: str, *, prefix: str = "", tenant: TenantArg = None) -> Iterator[ObjectInfo]:
        """Every live object under ``prefix``, following continuation tokens."""
        token: str | None = None
        while True:
            page = self.list(bucket, prefix=prefix, continuation_token=token, tenant=tenant)
            yield from page.objects
            if not page.is_truncated:
                return
            token = page.next_continuation_token

    @checked(bucket_rule("s3:ListBucketVersions"))
    def versions(self, bucket: str, key: str, *, tenant: TenantArg = None) -> list[ObjectInfo]:
        """Every version of a key (delete markers included), newest first."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        self.catalog.get_bucket(ctx.tenant, bucket)
        return [object_info(r) for r in self.catalog.iter_versions(ctx.tenant, bucket, key)]

    @traced("list_multipart_uploads")
    @checked(bucket_rule("s3:ListBucketMultipartUploads"))
    def list_multipart_uploads(self, bucket: str, *, prefix: str = "", delimiter: str | None = None,
                               key_marker: str | None = None, upload_id_marker: str | None = None,
                               max_uploads: int = 1000, tenant: TenantArg = None) -> UploadsPage:
        """One page of uploads in progress, by key then initiation time, as S3's ListMultipartUploads.

        ``upload_id_marker`` counts only with ``key_marker``. A ``key_marker``
        that is a common prefix of this listing (a previous page's
        ``next_key_marker``) resumes after every key under it.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        if isinstance(max_uploads, bool) or not isinstance(max_uploads, int) or max_uploads < 0:
            raise InvalidArgument(f"max_uploads must be a non-negative integer, not {max_uploads!r}")
        key_marker = key_marker or None
        upload_id_marker = upload_id_marker if key_marker else None
        start = resume_point(key_marker, upload_id_marker, prefix, delimiter)
        if start is None:
            return UploadsPage([], [], False)
        key_marker, inclusive = start

        def scan(after: str | None) -> Iterator[UploadRecord]:
            if after is None:
                return self._uploads_from(ctx, bucket, prefix, key_marker, upload_id_marker, inclusive)
            return self._uploads_from(ctx, bucket, prefix, after, None, True)

        page = roll_up(scan, lambda upload: upload.key, prefix=prefix, delimiter=delimiter,
                       limit=min(max_uploads, 1000))
        uploads = [UploadInfo(u.bucket, u.key, u.upload_id, u.created, u.content_type) for u in page.entries]
        prefixes = page.common_prefixes
        if not page.is_truncated:
            return UploadsPage(uploads, prefixes, False)
        last = (uploads[-1].key, uploads[-1].upload_id) if uploads else None
        return UploadsPage(uploads, prefixes, True, *next_markers(last, prefixes))

    @traced("list_versions")
    @checked(bucket_rule("s3:ListBucketVersions"))
    def list_versions(self, bucket: str, *, prefix: str = "", delimiter: str | None = None,
                      key_marker: str | None = None, version_id_marker: str | None = None, max_keys: int = 1000,
                      tenant: TenantArg = None) -> VersionsPage:
        """One page of every version and delete marker, by key then newest first, as S3's ListObjectVersions.

        Works on every bucket (in one that never kept versions, each key has its
        null version). ``version_id_marker`` counts only with ``key_marker``; a
        ``key_marker`` that is a common prefix of this listing (a previous page's
        ``next_key_marker``) resumes after every key under it.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 0:
            raise InvalidArgument(f"max_keys must be a non-negative integer, not {max_keys!r}")
        key_marker = key_marker or None
        version_id_marker = version_id_marker if key_marker else None
        if version_id_marker is not None and not version_id_marker:
            version_id_marker = None
        start = resume_point(key_marker, version_id_marker, prefix, delimiter)
        if start is None:
            self.catalog.get_bucket(ctx.tenant, bucket)
            return VersionsPage([], [], False)
        key_marker, inclusive = start

        def scan(after: str | None) -> Iterator[ObjectRecord]:
            if after is None:
                return self._versions_from(ctx, bucket, prefix, key_marker, version_id_marker, inclusive)
            return self._versions_from(ctx, bucket, prefix, after, None, True)

        page = roll_up(scan, lambda record: record.key, prefix=prefix, delimiter=delimiter,
                       limit=min(max_keys, 1000))
        versions = [object_info(record) for record in page.entries]
        prefixes = page.common_prefixes
        if not page.is_truncated:
            return VersionsPage(versions, prefixes, False)
        last = (versions[-1].key, versions[-1].version_id) if versions else None
        return VersionsPage(versions, prefixes, True, *next_markers(last, prefixes))

    def _versions_from(self, ctx: TenantContext, bucket: str, prefix: str, key_marker: str | None,
                       version_marker: str | None, inclusive: bool) -> Iterator[ObjectRecord]:
        """Versions under ``prefix`` after the markers, by key then newest first, page by page."""
        while True:
            batch = self.catalog.versions_page(ctx.tenant, bucket, prefix, key_marker, version_marker,
                                               inclusive, VERSIONS_BATCH)
            yield from batch
            if len(batch) < VERSIONS_BATCH:
                return
            key_marker, version_marker, inclusive = batch[-1].key, batch[-1].public_version_id, False

    def _uploads_from(self, ctx: TenantContext, bucket: str, prefix: str, key_marker: str | None,
                      upload_id_marker: str | None, inclusive: bool) -> Iterator[UploadRecord]:
        """Uploads under ``prefix`` after the markers, in (key, initiation time) order, page by page."""
        while True:
            batch = self.catalog.uploads_page(ctx.tenant, bucket, prefix, key_marker, upload_id_marker,
                                              inclusive, UPLOADS_BATCH)
            yield from batch
            if len(batch) < UPLOADS_BATCH:
                return
            key_marker, upload_id_marker, inclusive = batch[-1].key, batch[-1].upload_id, False
