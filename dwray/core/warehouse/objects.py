"""Writing objects: put, copy and delete, and sealing, the write path that parts share.

Durability order for every write: the sealed blob is durable on the backend,
then the catalog row is committed (the moment the object exists), then the
caller is acknowledged. A crash between the first two leaves an unreferenced
blob, which ``sweep`` removes after the grace period; never a visible partial.
"""
from __future__ import annotations

import hashlib
import itertools
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dwray.core.catalog import INLINE_BACKEND, BucketRecord, ObjectRecord, Placement, WriteCondition
from dwray.core.frames import FrameTable, KeyHeader, ObjectIdentity
from dwray.core.models import DeleteResult, ObjectInfo, TenantContext
from dwray.core.names import validate_bucket_name, validate_key
from dwray.core.pipeline import ObjectCrypto, StoredBlob, plaintext_frames
from dwray.core.tags import validate_tags
from dwray.core.warehouse.access import checked, copy_rule, delete_rule, object_rule, read_rule
from dwray.core.warehouse.base import TenantArg, object_info
from dwray.core.warehouse.inputs import DEFAULT_CONTENT_TYPE, check_headers
from dwray.core.warehouse.reads import ObjectReads
from dwray.core.warehouse.tracing import traced
from dwray.errors import BucketNotFound, DwrayError, EntityTooLarge, InvalidArgument

__all__ = ["ObjectWrites", "Sealed", "new_version_id", "write_condition"]


def new_version_id() -> str:
    # Time-ordered (newest sorts last) and unguessable.
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Sealed:
    """Sealed frames not yet referenced by any catalog row: a durable blob, or (``inline``)
    the records of a small object that its catalog row will hold."""

    blob_id: str
    header: KeyHeader
    stored: StoredBlob
    inline: bytes | None = None
    #: the storage target (pool or backend name) the blob was written to
    target: str = ""

    def placement(self) -> Placement:
        """Where the sealed records are, for the row that will reference them."""
        if self.inline is not None:
            return Placement(INLINE_BACKEND, "", self.header.to_bytes(), self.stored.table.to_bytes(),
                             self.header.kek_id, self.header.kek_version, inline=self.inline)
        return Placement(self.target, self.blob_id, self.header.to_bytes(), self.stored.table.to_bytes(),
                         self.header.kek_id, self.header.kek_version)


class ObjectWrites(ObjectReads):
    """The write operations of the warehouse (a copy reads its source, hence the reads)."""

    @traced("put")
    @checked(object_rule("s3:PutObject"))
    def put(self, bucket: str, key: str, data: Any, *, content_type: str | None = None,
            metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            tenant: TenantArg = None, finalize: Callable[[], Mapping[str, str]] | None = None,
            tags: Mapping[str, str] | None = None, if_match: str | None = None,
            if_none_match: bool = False) -> ObjectInfo:
        """Store ``data`` (bytes, binary file object, or iterable of bytes chunks) under ``key``.

        Returns once the object is durable and committed. ``finalize``, if given,
        is called once all of ``data`` is stored and before the commit; it returns
        headers known only then (checksums of the body) to store with the object.
        ``if_none_match`` (no current version) and ``if_match`` (the current
        version's ETag) make the write conditional, decided in the commit
        (``PreconditionFailed``; ``ObjectNotFound`` for ``if_match`` on no object).
        ``Backpressure`` while memory is critical, before any of ``data`` is read.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        clean_metadata, clean_headers = self._check_metadata(metadata), check_headers(headers)
        clean_tags = validate_tags(tags or {})
        condition = write_condition(if_match, if_none_match)
        self._refuse_if_critical("a new write (put)")
        bucket_record = self._bucket(ctx, bucket)
        try:
            record = self._write_object(ctx, bucket_record, key,
                                        plaintext_frames(data, self.config.pipeline.frame_size),
                                        content_type or DEFAULT_CONTENT_TYPE, clean_metadata, clean_headers,
                                        finalize, clean_tags, condition)
        except BucketNotFound:
            self._forget_bucket(ctx, bucket)
            raise
        return object_info(record)

    def _seal(self, ctx: TenantContext, bucket: BucketRecord, key: str, version: str, frames: Any, *,
              inline: bool = True) -> Sealed:
        """Seal ``frames`` under a fresh DEK and identity (tenant, bucket, key, ``version``).

        The DEK is derived from the bucket key this process holds for the
        tenant's KEK and the bucket (``DataKeys``), so sealing costs no key
        service round trip. An object of one frame of at most
        ``pipeline.inline_max_bytes`` (when ``inline``) is sealed here, by the
        built-in frame code, for its catalog row to hold: no blob, no storage
        round trip, one durable commit. Anything larger becomes a durable blob.
        """
        if ctx.kek_id not in self._keks_ready:
            self.keyring.ensure(ctx.kek_id)
            self._keks_ready.add(ctx.kek_id)
        keys = self.data_keys.for_sealing(ctx.kek_id, bucket.bucket_id)
        identity = ObjectIdentity(ctx.tenant, bucket.name, key, version)
        frame_size = self.config.pipeline.frame_size
        crypto = ObjectCrypto(identity, keys.dek, keys.nonce_prefix, frame_size, self.config.pipeline.zstd_level)
        max_size = self.config.limits.max_object_size
        frames = iter(frames)
        first = next(frames)
        inline_max = self.config.pipeline.inline_max_bytes  # 0: never inline, not even an empty object
        if inline and inline_max and first[1] and len(first[0]) <= min(inline_max, max_size):
            codec, body = crypto.sealer().seal(0, first[0], True)
            records = codec + body
            stored = StoredBlob(len(first[0]), hashlib.md5(first[0]).digest(), FrameTable([len(records)]))
            return Sealed("", keys.header(frame_size, stored.size, stored.md5), stored, records)
        if first[1] and len(first[0]) > max_size:
            raise EntityTooLarge(len(first[0]), max_size)
        # Folders by time (one per ~69 s of writes) rather than by hash: a
        # durable put into an existing folder skips creating and fsyncing one.
        blob_id = f"{ctx.tenant}/{bucket.bucket_id}/{time.time_ns() >> 36:x}/{secrets.token_hex(16)}"
        target, backend = self._storage_for(ctx.tenant, bucket.name)
        stored = self.engine.store(backend, blob_id, itertools.chain((first,), frames), crypto, max_size)
        return Sealed(blob_id, keys.header(frame_size, stored.size, stored.md5), stored, target=target)

    def _forget_blob(self, sealed: Sealed) -> None:
        """Remove a blob whose row was not committed, so nothing references it (best effort:
        the sweeper gets it otherwise). An inline object has none (``blob_id`` is empty)."""
        if not sealed.blob_id:
            return
        try:
            self._storage_named(sealed.target).delete_blob(sealed.blob_id)
        except DwrayError:
            pass

    def _write_object(self, ctx: TenantContext, bucket: BucketRecord, key: str, frames: Any,
                      content_type: str, metadata: dict[str, str], headers: dict[str, str],
                      finalize: Callable[[], Mapping[str, str]] | None = None, tags: dict[str, str] | None = None,
                      condition: WriteCondition | None = None) -> ObjectRecord:
        version_id = new_version_id()
        sealed = self._seal(ctx, bucket, key, version_id, frames)
        if finalize is not None:
            try:
                headers = {**headers, **check_headers(finalize())}
            except BaseException:
                self._forget_blob(sealed)
                raise
        record = ObjectRecord(
            tenant=ctx.tenant, bucket=bucket.name, key=key, version_id=version_id, is_latest=True,
            delete_marker=False, size=sealed.stored.size, etag=sealed.stored.md5.hex(), content_type=content_type,
            headers=headers, metadata=metadata, created=time.time(), placement=sealed.placement(),
            tags=dict(tags or {}))
        try:
            return self.catalog.commit_object(record, condition) if condition is not None else \
                self.catalog.commit_object(record)
        except BaseException:
            self._forget_blob(sealed)
            raise

    @traced("copy")
    @checked(copy_rule("version_id"))
    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *,
             version_id: str | None = None, content_type: str | None = None,
             metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
             tenant: TenantArg = None, tags: Mapping[str, str] | None = None, if_match: str | None = None,
             if_none_match: bool = False) -> ObjectInfo:
        """Copy an object. Metadata, content type and headers are copied unless given (S3's REPLACE);
        so are tags unless ``tags`` is given. ``if_match``/``if_none_match`` concern the destination, as in ``put``.

        The copy is sealed afresh under its own DEK: the AAD binds each frame
        to its key and version, so frames cannot be shared between objects.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(dst_bucket)
        validate_key(dst_key)
        condition = write_condition(if_match, if_none_match)
        new_tags = None if tags is None else validate_tags(tags)
        self._refuse_if_critical("a new write (copy)")
        replace = metadata is not None or content_type is not None or headers is not None
        source = self.open(src_bucket, src_key, version_id=version_id, tenant=ctx)
        with source:
            info = source.info
            dest = self._bucket(ctx, dst_bucket)
            frames = plaintext_frames(iter(source), self.config.pipeline.frame_size)
            record = self._write_object(
                ctx, dest, dst_key, frames,
                (content_type or DEFAULT_CONTENT_TYPE) if replace else info.content_type,
                self._check_metadata(metadata) if replace else dict(info.metadata),
                check_headers(headers) if replace else dict(info.headers), None,
                dict(info.tags) if new_tags is None else new_tags, condition)
        return object_info(record)

    @traced("delete")
    @checked(delete_rule)
    def delete(self, bucket: str, key: str, *, version_id: str | None = None,
               tenant: TenantArg = None) -> DeleteResult:
        """Delete a key (S3 semantics: deleting a missing key succeeds).

        In a versioned bucket without ``version_id`` a delete marker is added;
        with ``version_id`` that version is removed for good.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        marker = ObjectRecord(ctx.tenant, bucket, key, new_version_id(), True, True, 0, "",
                              DEFAULT_CONTENT_TYPE, created=time.time())
        outcome = self.catalog.delete_object(ctx.tenant, bucket, key, version_id, marker)
        if outcome.delete_marker is not None:
            return DeleteResult(bucket, key, outcome.delete_marker.public_version_id, True, True)
        removed = outcome.removed
        return DeleteResult(bucket, key, removed.public_version_id if removed else version_id,
                            bool(removed and removed.delete_marker), removed is not None)

    # Tags and ACLs ---------------------------------------------------------------

    @checked(read_rule(action="s3:GetObjectTagging"))
    def get_tags(self, bucket: str, key: str, *, version_id: str | None = None,
                 tenant: TenantArg = None) -> tuple[str, dict[str, str]]:
        """The tags of the latest (or named) version, and that version's id (S3's GetObjectTagging)."""
        ctx = self._tenant(tenant)
        record = self._lookup(ctx, bucket, key, version_id)
        return record.public_version_id, dict(record.tags)

    @traced("put_tags")
    @checked(read_rule(action="s3:PutObjectTagging"))
    def put_tags(self, bucket: str, key: str, tags: Mapping[str, str], *, version_id: str | None = None,
                 tenant: TenantArg = None) -> str:
        """Replace the tags of the latest (or named) version; return its version id (S3's PutObjectTagging)."""
        return self._set_tags(self._tenant(tenant), bucket, key, validate_tags(tags), version_id)

    @traced("delete_tags")
    @checked(read_rule(action="s3:DeleteObjectTagging"))
    def delete_tags(self, bucket: str, key: str, *, version_id: str | None = None, tenant: TenantArg = None) -> str:
        """Remove every tag of the latest (or named) version; return its version id (S3's DeleteObjectTagging)."""
        return self._set_tags(self._tenant(tenant), bucket, key, {}, version_id)

    def _set_tags(self, ctx: TenantContext, bucket: str, key: str, tags: dict[str, str],
                  version_id: str | None) -> str:
        validate_bucket_name(bucket)
        validate_key(key)
        return self.catalog.set_tags(ctx.tenant, bucket, key, version_id, tags).public_version_id

    @checked(read_rule(action="s3:GetObjectAcl"))
    def object_acl(self, bucket: str, key: str, *, version_id: str | None = None,
                   tenant: TenantArg = None) -> ObjectInfo:
        """The object whose ACL is asked for: only its owner, the bucket's tenant, has access (S3's GetObjectAcl)."""
        ctx = self._tenant(tenant)
        return object_info(self._lookup(ctx, bucket, key, version_id))

    @traced("put_object_acl")
    @checked(read_rule(action="s3:PutObjectAcl"))
    def put_object_acl(self, bucket: str, key: str, *, version_id: str | None = None,
                       tenant: TenantArg = None) -> ObjectInfo:
        """S3's PutObjectAcl with the one ACL dwray has, ``private``: checks the object, changes nothing."""
        ctx = self._tenant(tenant)
        return object_info(self._lookup(ctx, bucket, key, version_id))


def write_condition(if_match: str | None, if_none_match: bool) -> WriteCondition | None:
    """The precondition of a conditional write, or ``None``; one of the two at a time."""
    if if_match is not None and if_none_match:
        raise InvalidArgument("a write may carry If-Match or If-None-Match, not both")
    if if_none_match:
        return WriteCondition(if_none_match=True)
    if if_match is None:
        return None
    if not isinstance(if_match, str) or not if_match.strip().strip('"'):
        raise InvalidArgument(f"If-Match must name an ETag, not {if_match!r}")
    return WriteCondition(if_match=if_match.strip().strip('"').lower())
