"""Multipart uploads, as S3 has them: parts sealed one by one, then completed into one object.

Each part is sealed as a blob of its own, under its own DEK and an identity
string of its own (``<upload id>.<part>.<random>``, bound into every frame's
AAD with tenant, bucket and key), so parts cannot be moved between uploads or
objects. Completing an upload commits the object row and one segment per part
in one catalog transaction; reads walk the segments. Listing uploads in
progress is with the other listings, in ``listing``.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dwray.core.catalog import ObjectRecord, PartRecord, UploadRecord
from dwray.core.models import ObjectInfo, PartInfo, PartsPage, TenantContext, UploadInfo
from dwray.core.names import validate_bucket_name, validate_key
from dwray.core.pipeline import plaintext_frames
from dwray.core.tags import validate_tags
from dwray.core.warehouse.access import checked, copy_rule, object_rule
from dwray.core.warehouse.base import TenantArg, object_info
from dwray.core.warehouse.inputs import DEFAULT_CONTENT_TYPE, check_headers
from dwray.core.warehouse.objects import ObjectWrites, new_version_id, write_condition
from dwray.core.warehouse.tracing import traced
from dwray.errors import (
    BucketNotFound,
    EntityTooLarge,
    EntityTooSmall,
    InvalidArgument,
    InvalidPart,
    InvalidPartOrder,
    UploadNotFound,
)

__all__ = ["MultipartUploads"]


def _normalize_etag(etag: Any) -> str:
    """An ETag as stored: lowercase hex, quotes (which S3 clients send) dropped."""
    if not isinstance(etag, str):
        raise InvalidArgument(f"a part's ETag must be a string, not {type(etag).__name__}")
    return etag.strip().strip('"').lower()


def _multipart_etag(etags: Sequence[str]) -> str:
    """S3's ETag of a multipart object: MD5 of the parts' binary MD5s, then ``-<count>``."""
    digest = hashlib.md5()
    for etag in etags:
        digest.update(bytes.fromhex(etag))
    return f"{digest.hexdigest()}-{len(etags)}"


class MultipartUploads(ObjectWrites):
    """The multipart operations of the warehouse (parts are sealed as objects are)."""

    @traced("create_multipart_upload")
    @checked(object_rule("s3:PutObject"))
    def create_multipart_upload(self, bucket: str, key: str, *, content_type: str | None = None,
                                metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                                tenant: TenantArg = None, tags: Mapping[str, str] | None = None) -> UploadInfo:
        """Begin a multipart upload of ``key``; the object gets these content type, metadata, headers and tags."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        upload = UploadRecord(ctx.tenant, bucket, key, secrets.token_urlsafe(32), time.time(),
                              content_type or DEFAULT_CONTENT_TYPE, check_headers(headers),
                              self._check_metadata(metadata), validate_tags(tags or {}))
        self.catalog.create_upload(upload)
        return UploadInfo(bucket, key, upload.upload_id, upload.created, upload.content_type)

    def _upload(self, ctx: TenantContext, bucket: str, key: str, upload_id: str) -> UploadRecord:
        validate_bucket_name(bucket)
        validate_key(key)
        if not isinstance(upload_id, str) or not upload_id:
            raise InvalidArgument(f"upload id must be a non-empty string, not {upload_id!r}")
        return self.catalog.get_upload(ctx.tenant, bucket, key, upload_id)

    def _check_part_number(self, part_number: Any) -> int:
        limit = self.config.limits.max_parts
        if isinstance(part_number, bool) or not isinstance(part_number, int) or not 1 <= part_number <= limit:
            raise InvalidArgument(f"part number must be an integer from 1 to {limit}, not {part_number!r}")
        return part_number

    @traced("upload_part")
    @checked(object_rule("s3:PutObject"))
    def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, data: Any, *,
                    tenant: TenantArg = None) -> PartInfo:
        """Store part ``part_number`` (bytes, binary file object or iterable of chunks), replacing
        any earlier part of that number. Returns once the part is durable and recorded.
        ``Backpressure`` while memory is critical, before any of ``data`` is read."""
        ctx = self._tenant(tenant)
        self._check_part_number(part_number)
        upload = self._upload(ctx, bucket, key, upload_id)
        self._refuse_if_critical("a new write (upload_part)")
        return self._store_part(ctx, upload, part_number, plaintext_frames(data, self.config.pipeline.frame_size))

    @traced("upload_part_copy")
    @checked(copy_rule("src_version_id"))
    def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int, src_bucket: str,
                         src_key: str, *, src_version_id: str | None = None,
                         range: tuple[int, int | None] | None = None, tenant: TenantArg = None) -> PartInfo:
        """Store part ``part_number`` from (an inclusive ``range`` of) another object of the tenant.

        The bytes stream from the source's frames into the part's, sealed afresh.
        """
        ctx = self._tenant(tenant)
        self._check_part_number(part_number)
        upload = self._upload(ctx, bucket, key, upload_id)
        self._refuse_if_critical("a new write (upload_part_copy)")
        with self.open(src_bucket, src_key, range=range, version_id=src_version_id, tenant=ctx) as source:
            frames = plaintext_frames(iter(source), self.config.pipeline.frame_size)
            return self._store_part(ctx, upload, part_number, frames)

    def _store_part(self, ctx: TenantContext, upload: UploadRecord, part_number: int, frames: Any) -> PartInfo:
        # A version string of its own per stored part: the AAD binds it, so no
        # part's frames open as another part's, upload's or object's.
        part_version = f"{upload.upload_id}.{part_number}.{secrets.token_hex(8)}"
        try:
            # Parts always get blobs: their rows (and the segments they become) hold no inline bytes.
            sealed = self._seal(ctx, self._bucket(ctx, upload.bucket), upload.key, part_version, frames,
                                inline=False)
        except BucketNotFound:
            self._forget_bucket(ctx, upload.bucket)
            raise
        part = PartRecord(upload.upload_id, part_number, sealed.stored.size, sealed.stored.md5.hex(), time.time(),
                          sealed.placement(), part_version)
        try:
            self.catalog.commit_part(ctx.tenant, upload.bucket, upload.key, part)
        except BaseException:
            self._forget_blob(sealed)
            raise
        return PartInfo(part_number, part.etag, part.size, part.created)

    @traced("complete_multipart_upload")
    @checked(object_rule("s3:PutObject"))
    def complete_multipart_upload(self, bucket: str, key: str, upload_id: str, parts: Sequence[tuple[int, str]],
                                  *, tenant: TenantArg = None, if_match: str | None = None,
                                  if_none_match: bool = False) -> ObjectInfo:
        """Make the object from the named ``(part number, ETag)`` parts, in S3's rules.

        Parts must ascend without repeats (``InvalidPartOrder``), each must have
        been uploaded with that ETag (``InvalidPart``) and all but the last be
        at least ``limits.min_part_size`` (``EntityTooSmall``). Parts not named
        are dropped. Completing again with the same parts (a retry after a lost
        answer) returns the same object. ``if_match``/``if_none_match`` make it
        conditional as ``put``; a condition that fails because the key was written
        after the upload began is ``ConditionalRequestConflict`` (begin a new upload).
        """
        ctx = self._tenant(tenant)
        condition = write_condition(if_match, if_none_match)
        named = self._check_completion_parts(upload_id, parts)
        try:
            upload = self._upload(ctx, bucket, key, upload_id)
        except UploadNotFound:
            done = self.catalog.completed_upload(ctx.tenant, bucket, key, upload_id, named)
            if done is None:
                raise
            return object_info(done)
        uploaded = {part.part_number: part for part in self._all_parts(ctx, upload)}
        minimum = self.config.limits.min_part_size
        # Every named part must exist with its ETag before sizes are judged (as S3 does).
        for number, etag in named:
            found = uploaded.get(number)
            if found is None:
                raise InvalidPart(upload_id, number, "was not uploaded")
            if found.etag != etag:
                raise InvalidPart(upload_id, number, f"its ETag is {found.etag!r}, not {etag!r}")
        for number, _ in named[:-1]:
            if uploaded[number].size < minimum:
                raise EntityTooSmall(number, uploaded[number].size, minimum)
        size = sum(uploaded[number].size for number, _ in named)
        if size > self.config.limits.max_object_size:
            raise EntityTooLarge(size, self.config.limits.max_object_size)
        record = ObjectRecord(
            tenant=ctx.tenant, bucket=bucket, key=key, version_id=new_version_id(), is_latest=True,
            delete_marker=False, size=size, etag=_multipart_etag([etag for _, etag in named]),
            content_type=upload.content_type, headers=upload.headers, metadata=upload.metadata,
            created=time.time(), parts=len(named), tags=dict(upload.tags))
        if condition is not None:
            condition = replace(condition, since=upload.created)
            return object_info(self.catalog.complete_upload(record, upload_id, named, condition))
        return object_info(self.catalog.complete_upload(record, upload_id, named))

    def _check_completion_parts(self, upload_id: str, parts: Any) -> list[tuple[int, str]]:
        if isinstance(parts, (str, bytes)) or not isinstance(parts, Sequence) or not parts:
            raise InvalidArgument("a multipart completion must name at least one (part number, ETag) pair")
        named: list[tuple[int, str]] = []
        for entry in parts:
            if not isinstance(entry, (tuple, list)) or len(entry) != 2:
                raise InvalidArgument(f"each completed part must be a (part number, ETag) pair, not {entry!r}")
            number = self._check_part_number(entry[0])
            if named and number <= named[-1][0]:
                raise InvalidPartOrder(upload_id, f"part {number} follows part {named[-1][0]}")
            named.append((number, _normalize_etag(entry[1])))
        return named

    def _all_parts(self, ctx: TenantContext, upload: UploadRecord) -> Iterator[PartInfo]:
        marker = 0
        while True:
            page = self.catalog.list_parts(ctx.tenant, upload.bucket, upload.key, upload.upload_id, marker, 1000)
            yield from page
            if len(page) < 1000:
                return
            marker = page[-1].part_number

    @traced("abort_multipart_upload")
    @checked(object_rule("s3:AbortMultipartUpload"))
    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str, *, tenant: TenantArg = None) -> None:
        """Drop an upload and its parts (``UploadNotFound`` if unknown); the sweeper removes their blobs."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        self.catalog.abort_upload(ctx.tenant, bucket, key, upload_id)

    @traced("list_parts")
    @checked(object_rule("s3:ListMultipartUploadParts"))
    def list_parts(self, bucket: str, key: str, upload_id: str, *, max_parts: int = 1000,
                   part_number_marker: int = 0, tenant: TenantArg = None) -> PartsPage:
        """One page of an upload's parts numbered above ``part_number_marker``, as S3's ListParts."""
        ctx = self._tenant(tenant)
        if isinstance(max_parts, bool) or not isinstance(max_parts, int) or max_parts < 0:
            raise InvalidArgument(f"max_parts must be a non-negative integer, not {max_parts!r}")
        if isinstance(part_number_marker, bool) or not isinstance(part_number_marker, int) or part_number_marker < 0:
            raise InvalidArgument(f"part_number_marker must be a non-negative integer, not {part_number_marker!r}")
        upload = self._upload(ctx, bucket, key, upload_id)
        limit = min(max_parts, 1000)
        found = self.catalog.list_parts(ctx.tenant, bucket, key, upload.upload_id, part_number_marker, limit + 1)
        page, truncated = found[:limit], len(found) > limit
        marker = (page[-1].part_number if page else part_number_marker) if truncated else None
        return PartsPage(page, truncated, marker)
