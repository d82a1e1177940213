"""The warehouse core: buckets and objects for tenants, in one process.

Durability order for every write: the sealed blob is durable on the backend,
then the catalog row is committed (the moment the object exists), then the
caller is acknowledged. A crash between the first two leaves an unreferenced
blob, which ``sweep`` removes after the grace period; never a visible partial.

Every operation takes a tenant (``TenantContext``, a tenant name, or ``None``
for the configured default tenant). Catalog rows and blob ids are scoped by it:
blob ids start with the tenant's name and each tenant has its own KEK.

Multipart uploads follow S3: each part is sealed as a blob of its own, under
its own DEK and an identity string of its own (``<upload id>.<part>.<random>``,
bound into every frame's AAD with tenant, bucket and key), so parts cannot be
moved between uploads or objects. Completing an upload commits the object row
and one segment per part in one catalog transaction; reads walk the segments.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

from dwray.backends import create_backend
from dwray.backends.base import StorageBackend
from dwray.config import DwrayConfig, load_config
from dwray.core.catalog import (
    BucketRecord,
    Catalog,
    ObjectRecord,
    PartRecord,
    SegmentRecord,
    UploadRecord,
)
from dwray.core.frames import (
    FORMAT_VERSION,
    FrameTable,
    KeyHeader,
    ObjectIdentity,
    frames_for_range,
    new_object_keys,
)
from dwray.core.keyring import LocalKeyring
from dwray.core.models import (
    BucketInfo,
    DeleteResult,
    ListPage,
    ObjectInfo,
    PartInfo,
    PartsPage,
    SweepReport,
    TenantContext,
    UploadInfo,
    UploadsPage,
)
from dwray.core.names import validate_bucket_name, validate_key
from dwray.core.pipeline import (
    FrameEngine,
    ObjectCrypto,
    StoredBlob,
    ThreadFrameEngine,
    plaintext_frames,
)
from dwray.errors import (
    BucketNotFound,
    DwrayError,
    EntityTooLarge,
    EntityTooSmall,
    IntegrityError,
    InvalidArgument,
    InvalidContinuationToken,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    KeyringError,
    ObjectNotFound,
    UploadNotFound,
)

__all__ = ["ObjectReader", "Warehouse"]

TenantArg = TenantContext | str | None
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: system headers stored with an object and returned on read, as S3 does
STORED_HEADERS = frozenset({"content-encoding", "content-disposition", "content-language",
                            "cache-control", "expires",
                            # flexible checksums, stored as sent and returned with the object
                            "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme",
                            "x-amz-checksum-sha1", "x-amz-checksum-sha256"})
BUCKET_CACHE_SECONDS = 5.0
#: segments of a multipart object fetched from the catalog per query while reading it
SEGMENT_PAGE = 32


_tracer = trace.get_tracer("dwray.core.warehouse")
_F = TypeVar("_F", bound=Callable[..., Any])


def _traced(operation: str) -> Callable[[_F], _F]:
    """Run a warehouse operation in a span ``dwray.<operation>``: the root of its trace,
    whose children are the plugin calls it makes (their hosts join the same trace)."""
    def decorate(method: _F) -> _F:
        @functools.wraps(method)
        def run(self: Any, *args: Any, **kwargs: Any) -> Any:
            with _tracer.start_as_current_span(f"dwray.{operation}", attributes={"dwray.operation": operation}):
                return method(self, *args, **kwargs)
        return run  # type: ignore[return-value]
    return decorate


def _within(context: Any, chunks: Iterator[Any]) -> Iterator[Any]:
    """Iterate ``chunks`` with ``context`` current while each chunk is produced (not between)."""
    while True:
        token = otel_context.attach(context)
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        finally:
            otel_context.detach(token)
        yield chunk


def _new_version_id() -> str:
    # Time-ordered (newest sorts last) and unguessable.
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix``."""
    while prefix:
        code = ord(prefix[-1]) + 1
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:-1] + chr(code)
        prefix = prefix[:-1]
    return None


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


def _clean_metadata(metadata: Mapping[str, str] | None, limit: int) -> dict[str, str]:
    if metadata is None:
        return {}
    clean: dict[str, str] = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidArgument("user metadata names and values must be strings")
        if not name or not name.isascii() or not name.replace("-", "").replace("_", "").isalnum():
            raise InvalidArgument(f"user metadata name {name!r} must be ASCII letters, digits, '-' or '_'")
        clean[name.lower()] = value
    size = sum(len(k.encode()) + len(v.encode()) for k, v in clean.items())
    if size > limit:
        raise InvalidArgument(f"user metadata is {size} bytes; the limit is {limit}")
    return clean


def _check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    clean: dict[str, str] = {}
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if lowered not in STORED_HEADERS:
            raise InvalidArgument(f"header {name!r} is not stored with objects; allowed: {sorted(STORED_HEADERS)}")
        if not isinstance(value, str):
            raise InvalidArgument(f"header {name!r} must be a string")
        clean[lowered] = value
    return clean


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


@dataclass(frozen=True)
class _Sealed:
    """A durable blob of sealed frames, not yet referenced by any catalog row."""

    blob_id: str
    header: KeyHeader
    stored: StoredBlob


def _info(record: ObjectRecord) -> ObjectInfo:
    return ObjectInfo(record.bucket, record.key, record.version_id, record.size, record.etag,
                      record.created, record.content_type, dict(record.metadata), dict(record.headers),
                      record.delete_marker, record.is_latest)


class ObjectReader(io.RawIOBase):
    """A readable, iterable stream of one object's (range of) plaintext.

    ``read()``/``readinto()`` as a binary file; iterating yields decoded
    chunks (about one frame each) without extra copies.
    """

    def __init__(self, info: ObjectInfo, chunks: Iterator[bytes], start: int, length: int,
                 on_close: Callable[[], None] | None = None) -> None:
        super().__init__()
        self.info = info
        self.start = start
        self.length = length
        self._chunks = chunks
        self._current = memoryview(b"")
        self._on_close = on_close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        while not self._current:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._current = memoryview(chunk)
        count = min(len(target), len(self._current))
        target[:count] = self._current[:count]
        self._current = self._current[count:]
        return count

    def __iter__(self) -> Iterator[bytes]:  # type: ignore[override]
        if self._current:
            yield bytes(self._current)
            self._current = memoryview(b"")
        yield from self._chunks

    def readall(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        if self._on_close is not None:
            self._on_close()
            self._on_close = None
        super().close()


class Warehouse:
    """Buckets and objects of every tenant, stored sealed on one storage backend."""

    def __init__(self, config: DwrayConfig | None = None, *, backend: StorageBackend | None = None,
                 catalog: Catalog | None = None, keyring: LocalKeyring | None = None,
                 engine: FrameEngine | None = None) -> None:
        """Open the warehouse of ``config``; the Ray runtime passes remote ``backend``,
        ``catalog``, ``keyring`` and ``engine`` objects with the same interfaces."""
        self.config = config if config is not None else load_config()
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if backend is None:
            if self.config.storage.backend == "local":
                backend = create_backend("local", root=self.config.blob_root)
            else:
                backend = create_backend("memory", max_bytes=self.config.storage.memory_max_bytes)
        self.backend = backend
        self.backend_name = backend.name or self.config.storage.backend
        try:
            self.catalog = catalog if catalog is not None else Catalog(
                self.config.catalog_path, synchronous=self.config.catalog.synchronous,
                busy_timeout_ms=self.config.catalog.busy_timeout_ms)
        except BaseException:
            backend.close()
            raise
        try:
            self.keyring = keyring if keyring is not None else LocalKeyring(self.config.keyring_path)
        except BaseException:
            self.catalog.close()
            backend.close()
            raise
        self.engine = engine if engine is not None else ThreadFrameEngine(self.config.worker_threads)
        self._closed = threading.Event()
        self._keks_ready: set[str] = set()
        self._buckets: dict[tuple[str, str], tuple[float, BucketRecord]] = {}

    @classmethod
    def load(cls, data_dir: str | Path | None = None, config_path: str | Path | None = None,
             **overrides: Any) -> Warehouse:
        """A warehouse from the config file and environment, optionally with a data dir."""
        config = load_config(config_path)
        if data_dir is not None:
            config = config.model_copy(update={"data_dir": Path(data_dir)})
        if overrides:
            config = config.model_copy(update=overrides)
        return cls(config)

    def __repr__(self) -> str:
        return f"Warehouse(data_dir={str(self.config.data_dir)!r}, backend={self.backend_name!r})"

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self.engine.close()
        self.catalog.close()
        self.backend.close()

    def _tenant(self, tenant: TenantArg) -> TenantContext:
        if isinstance(tenant, TenantContext):
            return tenant
        return TenantContext(tenant if tenant is not None else self.config.default_tenant)

    def _check_metadata(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        return _clean_metadata(metadata, self.config.limits.max_metadata_bytes)

    # Buckets ----------------------------------------------------------------

    @_traced("create_bucket")
    def create_bucket(self, bucket: str, *, versioning: bool = False, tenant: TenantArg = None) -> BucketInfo:
        """Create a bucket. ``BucketAlreadyExists`` if this tenant has it."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        record = self.catalog.create_bucket(ctx.tenant, bucket, secrets.token_hex(8), versioning=versioning)
        return BucketInfo(record.name, record.created, record.versioning)

    def head_bucket(self, bucket: str, *, tenant: TenantArg = None) -> BucketInfo:
        """``BucketNotFound`` unless the tenant has the bucket."""
        ctx = self._tenant(tenant)
        record = self.catalog.get_bucket(ctx.tenant, validate_bucket_name(bucket))
        return BucketInfo(record.name, record.created, record.versioning)

    def list_buckets(self, *, tenant: TenantArg = None) -> list[BucketInfo]:
        ctx = self._tenant(tenant)
        return [BucketInfo(r.name, r.created, r.versioning) for r in self.catalog.list_buckets(ctx.tenant)]

    @_traced("delete_bucket")
    def delete_bucket(self, bucket: str, *, tenant: TenantArg = None) -> None:
        """Delete an empty bucket. ``BucketNotEmpty`` while it holds any object version."""
        ctx = self._tenant(tenant)
        self._buckets.pop((ctx.tenant, bucket), None)
        self.catalog.delete_bucket(ctx.tenant, validate_bucket_name(bucket))

    # Writes -----------------------------------------------------------------

    @_traced("put")
    def put(self, bucket: str, key: str, data: Any, *, content_type: str | None = None,
            metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
            tenant: TenantArg = None, finalize: Callable[[], Mapping[str, str]] | None = None) -> ObjectInfo:
        """Store ``data`` (bytes, binary file object, or iterable of bytes chunks) under ``key``.

        Returns once the object is durable and committed. ``finalize``, if given,
        is called once all of ``data`` is stored and before the commit; it returns
        headers known only then (checksums of the body) to store with the object.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        clean_metadata, clean_headers = self._check_metadata(metadata), _check_headers(headers)
        bucket_record = self._bucket(ctx, bucket)
        try:
            record = self._write_object(ctx, bucket_record, key,
                                        plaintext_frames(data, self.config.pipeline.frame_size),
                                        content_type or DEFAULT_CONTENT_TYPE, clean_metadata, clean_headers,
                                        finalize)
        except BucketNotFound:
            self._buckets.pop((ctx.tenant, bucket), None)
            raise
        return _info(record)

    def _bucket(self, ctx: TenantContext, bucket: str) -> BucketRecord:
        """The bucket's record, cached for a few seconds to spare writes a catalog round trip.

        Safe because the commit checks that the bucket still exists; a stale
        entry only means a blob path with an older bucket id, which nothing reads.
        """
        now = time.monotonic()
        cached = self._buckets.get((ctx.tenant, bucket))
        if cached is not None and now - cached[0] < BUCKET_CACHE_SECONDS:
            return cached[1]
        record = self.catalog.get_bucket(ctx.tenant, bucket)
        self._buckets[(ctx.tenant, bucket)] = (now, record)
        return record

    def _seal(self, ctx: TenantContext, bucket: BucketRecord, key: str, version: str, frames: Any) -> _Sealed:
        """Seal ``frames`` under a fresh DEK and identity (tenant, bucket, key, ``version``) into a durable blob."""
        # Folders by time (one per ~69 s of writes) rather than by hash: a
        # durable put into an existing folder skips creating and fsyncing one.
        blob_id = f"{ctx.tenant}/{bucket.bucket_id}/{time.time_ns() >> 36:x}/{secrets.token_hex(16)}"
        keys = new_object_keys()
        if ctx.kek_id not in self._keks_ready:
            self.keyring.ensure(ctx.kek_id)
            self._keks_ready.add(ctx.kek_id)
        kek_version, wrapped = self.keyring.wrap(ctx.kek_id, keys.dek)
        identity = ObjectIdentity(ctx.tenant, bucket.name, key, version)
        frame_size = self.config.pipeline.frame_size
        crypto = ObjectCrypto(identity, keys.dek, keys.nonce_prefix, frame_size, self.config.pipeline.zstd_level)
        stored = self.engine.store(self.backend, blob_id, frames, crypto, self.config.limits.max_object_size)
        header = KeyHeader(
            format_version=FORMAT_VERSION, kek_id=ctx.kek_id, kek_version=kek_version, wrapped_dek=wrapped,
            nonce_prefix=keys.nonce_prefix, frame_size=frame_size, plaintext_length=stored.size,
            content_md5=stored.md5)
        return _Sealed(blob_id, header, stored)

    def _forget_blob(self, blob_id: str) -> None:
        """Remove a blob whose row was not committed, so nothing references it (best effort:
        the sweeper gets it otherwise)."""
        try:
            self.backend.delete_blob(blob_id)
        except DwrayError:
            pass

    def _write_object(self, ctx: TenantContext, bucket: BucketRecord, key: str, frames: Any,
                      content_type: str, metadata: dict[str, str], headers: dict[str, str],
                      finalize: Callable[[], Mapping[str, str]] | None = None) -> ObjectRecord:
        version_id = _new_version_id()
        sealed = self._seal(ctx, bucket, key, version_id, frames)
        stored, header = sealed.stored, sealed.header
        if finalize is not None:
            try:
                headers = {**headers, **_check_headers(finalize())}
            except BaseException:
                self._forget_blob(sealed.blob_id)
                raise
        record = ObjectRecord(
            tenant=ctx.tenant, bucket=bucket.name, key=key, version_id=version_id, is_latest=True,
            delete_marker=False, size=stored.size, etag=stored.md5.hex(), content_type=content_type,
            headers=headers, metadata=metadata, created=time.time(), backend=self.backend_name,
            blob_id=sealed.blob_id, key_header=header.to_bytes(), frame_table=stored.table.to_bytes(),
            kek_id=ctx.kek_id, kek_version=header.kek_version)
        try:
            self.catalog.commit_object(record)
        except BaseException:
            self._forget_blob(sealed.blob_id)
            raise
        return record

    @_traced("copy")
    def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *,
             version_id: str | None = None, content_type: str | None = None,
             metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
             tenant: TenantArg = None) -> ObjectInfo:
        """Copy an object. Metadata, content type and headers are copied unless given (S3's REPLACE).

        The copy is sealed afresh under its own DEK: the AAD binds each frame
        to its key and version, so frames cannot be shared between objects.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(dst_bucket)
        validate_key(dst_key)
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
                _check_headers(headers) if replace else dict(info.headers))
        return _info(record)

    @_traced("delete")
    def delete(self, bucket: str, key: str, *, version_id: str | None = None,
               tenant: TenantArg = None) -> DeleteResult:
        """Delete a key (S3 semantics: deleting a missing key succeeds).

        In a versioned bucket without ``version_id`` a delete marker is added;
        with ``version_id`` that version is removed for good.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        marker = ObjectRecord(ctx.tenant, bucket, key, _new_version_id(), True, True, 0, "",
                              DEFAULT_CONTENT_TYPE, created=time.time())
        outcome = self.catalog.delete_object(ctx.tenant, bucket, key, version_id, marker)
        if outcome.delete_marker is not None:
            return DeleteResult(bucket, key, outcome.delete_marker.version_id, True, True)
        removed = outcome.removed
        return DeleteResult(bucket, key, removed.version_id if removed else version_id,
                            bool(removed and removed.delete_marker), removed is not None)

    # Reads ------------------------------------------------------------------

    @_traced("head")
    def head(self, bucket: str, key: str, *, version_id: str | None = None, tenant: TenantArg = None) -> ObjectInfo:
        """The object's metadata. ``ObjectNotFound``/``BucketNotFound`` if absent."""
        ctx = self._tenant(tenant)
        return _info(self._lookup(ctx, bucket, key, version_id))

    def _lookup(self, ctx: TenantContext, bucket: str, key: str, version_id: str | None) -> ObjectRecord:
        validate_bucket_name(bucket)
        validate_key(key)
        record = self.catalog.get_object(ctx.tenant, bucket, key, version_id)
        if record.delete_marker:
            raise ObjectNotFound(bucket, key, version_id)
        return record

    def open(self, bucket: str, key: str, *, range: tuple[int, int | None] | None = None,
             version_id: str | None = None, tenant: TenantArg = None) -> ObjectReader:
        """A stream of the object's bytes; ``range=(first, last)`` is inclusive, as HTTP's Range.

        ``last`` may be ``None`` (to the end) or past the end (clipped). Raises
        ``InvalidRange`` when ``first`` is at or past the end. Bytes that fail
        authentication raise ``IntegrityError`` and are never returned.
        """
        # The span lasts until the reader closes: the reads happen as it is consumed.
        span = _tracer.start_span("dwray.get", attributes={"dwray.operation": "get"})
        context = trace.set_span_in_context(span)
        token = otel_context.attach(context)
        try:
            ctx = self._tenant(tenant)
            record = self._lookup(ctx, bucket, key, version_id)
            start, end = self._resolve_range(range, record.size)
            if record.parts:
                source = self._segments_plaintext(ctx, record, start, end)
            else:
                source = self._blob_plaintext(
                    ctx, record.bucket, record.key, record.version_id, record.blob_id,
                    KeyHeader.from_bytes(record.key_header), FrameTable.from_bytes(record.frame_table), start, end)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        chunks = _within(context, source)
        return ObjectReader(_info(record), chunks, start, end - start, on_close=span.end)

    def get(self, bucket: str, key: str, *, range: tuple[int, int | None] | None = None,
            version_id: str | None = None, tenant: TenantArg = None) -> bytes:
        """The object's bytes (or an inclusive ``range`` of them)."""
        with self.open(bucket, key, range=range, version_id=version_id, tenant=tenant) as reader:
            return reader.readall()

    @staticmethod
    def _resolve_range(range_: tuple[int, int | None] | None, size: int) -> tuple[int, int]:
        if range_ is None:
            return 0, size
        try:
            first, last = range_
        except (TypeError, ValueError):
            raise InvalidArgument(f"range must be a (first, last) pair, not {range_!r}") from None
        if not isinstance(first, int) or not (last is None or isinstance(last, int)):
            raise InvalidArgument(f"range bounds must be integers, not {range_!r}")
        if first < 0 or (last is not None and last < first) or first >= size:
            raise InvalidRange(f"bytes={first}-{'' if last is None else last}", size)
        end = size if last is None else min(last + 1, size)
        return first, end

    def _blob_plaintext(self, ctx: TenantContext, bucket: str, key: str, version: str, blob_id: str | None,
                        header: KeyHeader, table: FrameTable, start: int, end: int) -> Iterator[bytes]:
        """Plaintext bytes ``[start, end)`` of one blob sealed under identity (tenant, bucket, key, ``version``)."""
        dek = self.keyring.unwrap(header.kek_id, header.kek_version, header.wrapped_dek)
        identity = ObjectIdentity(ctx.tenant, bucket, key, version)
        crypto = ObjectCrypto(identity, dek, header.nonce_prefix, header.frame_size)
        last_index = max(len(table) - 1, 0)
        if end <= start:
            # Empty object: still authenticate its single (empty) frame.
            for _ in self.engine.load(self.backend, blob_id, table, crypto, range(0, 1), last_index):
                pass
            return
        frames = frames_for_range(start, end, header.frame_size)
        position = frames.start * header.frame_size
        for plain in self.engine.load(self.backend, blob_id, table, crypto, frames, last_index):
            lo, hi = max(start - position, 0), min(end - position, len(plain))
            position += len(plain)
            yield plain if (lo == 0 and hi == len(plain)) else plain[lo:hi]

    def _segments_plaintext(self, ctx: TenantContext, record: ObjectRecord, start: int,
                            end: int) -> Iterator[bytes]:
        """Plaintext bytes ``[start, end)`` of a multipart object: only the segments (and in
        them only the frames) the range touches, a page of segment rows at a time."""
        position = start
        while True:
            page = self.catalog.segments_page(ctx.tenant, record.bucket, record.key, record.version_id,
                                              position, SEGMENT_PAGE)
            if not page:  # the version was deleted while this reader was open
                raise ObjectNotFound(record.bucket, record.key, record.version_id)
            for segment in page:
                lo, hi = position - segment.offset, min(end, segment.offset + segment.size) - segment.offset
                yield from self._segment_plaintext(ctx, record, segment, lo, hi)
                position = segment.offset + hi
                if position >= end:
                    return

    def _segment_plaintext(self, ctx: TenantContext, record: ObjectRecord, segment: SegmentRecord,
                           lo: int, hi: int) -> Iterator[bytes]:
        header = KeyHeader.from_bytes(segment.key_header)
        what = f"object {record.key!r} version {record.version_id} part {segment.index + 1}"
        if lo < 0:
            raise IntegrityError(what, f"starts at byte {segment.offset}, after the previous part ended")
        if header.plaintext_length != segment.size:
            raise IntegrityError(what, f"sealed {header.plaintext_length} bytes, the catalog says {segment.size}")
        return self._blob_plaintext(ctx, record.bucket, record.key, segment.part_version, segment.blob_id, header,
                                    FrameTable.from_bytes(segment.frame_table), lo, hi)

    # Multipart uploads ----------------------------------------------------------

    @_traced("create_multipart_upload")
    def create_multipart_upload(self, bucket: str, key: str, *, content_type: str | None = None,
                                metadata: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None,
                                tenant: TenantArg = None) -> UploadInfo:
        """Begin a multipart upload of ``key``; the object gets these content type, metadata and headers."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        upload = UploadRecord(ctx.tenant, bucket, key, secrets.token_urlsafe(32), time.time(),
                              content_type or DEFAULT_CONTENT_TYPE, _check_headers(headers),
                              self._check_metadata(metadata))
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

    @_traced("upload_part")
    def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, data: Any, *,
                    tenant: TenantArg = None) -> PartInfo:
        """Store part ``part_number`` (bytes, binary file object or iterable of chunks), replacing
        any earlier part of that number. Returns once the part is durable and recorded."""
        ctx = self._tenant(tenant)
        self._check_part_number(part_number)
        upload = self._upload(ctx, bucket, key, upload_id)
        return self._store_part(ctx, upload, part_number, plaintext_frames(data, self.config.pipeline.frame_size))

    @_traced("upload_part_copy")
    def upload_part_copy(self, bucket: str, key: str, upload_id: str, part_number: int, src_bucket: str,
                         src_key: str, *, src_version_id: str | None = None,
                         range: tuple[int, int | None] | None = None, tenant: TenantArg = None) -> PartInfo:
        """Store part ``part_number`` from (an inclusive ``range`` of) another object of the tenant.

        The bytes stream from the source's frames into the part's, sealed afresh.
        """
        ctx = self._tenant(tenant)
        self._check_part_number(part_number)
        upload = self._upload(ctx, bucket, key, upload_id)
        with self.open(src_bucket, src_key, range=range, version_id=src_version_id, tenant=ctx) as source:
            frames = plaintext_frames(iter(source), self.config.pipeline.frame_size)
            return self._store_part(ctx, upload, part_number, frames)

    def _store_part(self, ctx: TenantContext, upload: UploadRecord, part_number: int, frames: Any) -> PartInfo:
        # A version string of its own per stored part: the AAD binds it, so no
        # part's frames open as another part's, upload's or object's.
        part_version = f"{upload.upload_id}.{part_number}.{secrets.token_hex(8)}"
        try:
            sealed = self._seal(ctx, self._bucket(ctx, upload.bucket), upload.key, part_version, frames)
        except BucketNotFound:
            self._buckets.pop((ctx.tenant, upload.bucket), None)
            raise
        part = PartRecord(upload.upload_id, part_number, sealed.stored.size, sealed.stored.md5.hex(), time.time(),
                          self.backend_name, sealed.blob_id, sealed.header.to_bytes(),
                          sealed.stored.table.to_bytes(), ctx.kek_id, sealed.header.kek_version, part_version)
        try:
            self.catalog.commit_part(ctx.tenant, upload.bucket, upload.key, part)
        except BaseException:
            self._forget_blob(sealed.blob_id)
            raise
        return PartInfo(part_number, part.etag, part.size, part.created)

    @_traced("complete_multipart_upload")
    def complete_multipart_upload(self, bucket: str, key: str, upload_id: str, parts: Sequence[tuple[int, str]],
                                  *, tenant: TenantArg = None) -> ObjectInfo:
        """Make the object from the named ``(part number, ETag)`` parts, in S3's rules.

        Parts must ascend without repeats (``InvalidPartOrder``), each must have
        been uploaded with that ETag (``InvalidPart``) and all but the last be
        at least ``limits.min_part_size`` (``EntityTooSmall``). Parts not named
        are dropped. Completing again with the same parts (a retry after a lost
        answer) returns the same object.
        """
        ctx = self._tenant(tenant)
        named = self._check_completion_parts(upload_id, parts)
        try:
            upload = self._upload(ctx, bucket, key, upload_id)
        except UploadNotFound:
            done = self.catalog.completed_upload(ctx.tenant, bucket, key, upload_id, named)
            if done is None:
                raise
            return _info(done)
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
            tenant=ctx.tenant, bucket=bucket, key=key, version_id=_new_version_id(), is_latest=True,
            delete_marker=False, size=size, etag=_multipart_etag([etag for _, etag in named]),
            content_type=upload.content_type, headers=upload.headers, metadata=upload.metadata,
            created=time.time(), backend=self.backend_name, parts=len(named))
        return _info(self.catalog.complete_upload(record, upload_id, named))

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

    @_traced("abort_multipart_upload")
    def abort_multipart_upload(self, bucket: str, key: str, upload_id: str, *, tenant: TenantArg = None) -> None:
        """Drop an upload and its parts (``UploadNotFound`` if unknown); the sweeper removes their blobs."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        self.catalog.abort_upload(ctx.tenant, bucket, key, upload_id)

    @_traced("list_parts")
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

    @_traced("list_multipart_uploads")
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
        limit = min(max_uploads, 1000)
        delimiter = delimiter or None
        key_marker = key_marker or None
        upload_id_marker = upload_id_marker if key_marker else None
        inclusive = False
        if key_marker and delimiter and upload_id_marker is None and key_marker.startswith(prefix) \
                and key_marker.find(delimiter, len(prefix)) == len(key_marker) - len(delimiter):
            after = _successor(key_marker)
            if after is None:
                return UploadsPage([], [], False)
            key_marker, inclusive = after, True
        uploads: list[UploadInfo] = []
        prefixes: list[str] = []
        while True:
            batch = self.catalog.uploads_page(ctx.tenant, bucket, prefix, key_marker, upload_id_marker,
                                              inclusive, 1000)
            for upload in batch:
                common = None
                if delimiter:
                    cut = upload.key.find(delimiter, len(prefix))
                    if cut >= 0:
                        common = upload.key[:cut + len(delimiter)]
                if len(uploads) + len(prefixes) >= limit:
                    return self._uploads_page(uploads, prefixes, limit > 0)
                if common is None:
                    uploads.append(UploadInfo(upload.bucket, upload.key, upload.upload_id, upload.created,
                                              upload.content_type))
                    key_marker, upload_id_marker, inclusive = upload.key, upload.upload_id, False
                    continue
                prefixes.append(common)
                after = _successor(common)
                if after is None:
                    return self._uploads_page(uploads, prefixes, False)
                key_marker, upload_id_marker, inclusive = after, None, True
                break
            else:
                if len(batch) < 1000:
                    return self._uploads_page(uploads, prefixes, False)

    @staticmethod
    def _uploads_page(uploads: list[UploadInfo], prefixes: list[str], truncated: bool) -> UploadsPage:
        if not truncated:
            return UploadsPage(uploads, prefixes, False)
        last_upload = uploads[-1] if uploads else None
        last_prefix = prefixes[-1] if prefixes else None
        if last_prefix is not None and (last_upload is None or last_prefix > last_upload.key):
            return UploadsPage(uploads, prefixes, True, last_prefix, None)
        if last_upload is None:
            return UploadsPage(uploads, prefixes, True)
        return UploadsPage(uploads, prefixes, True, last_upload.key, last_upload.upload_id)

    # Tables -----------------------------------------------------------------

    @_traced("put_table")
    def put_table(self, bucket: str, key: str, table: Any, *, metadata: Mapping[str, str] | None = None,
                  compression: str = "zstd", tenant: TenantArg = None) -> ObjectInfo:
        """Store a ``pyarrow.Table`` as a Parquet object."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(table, pa.Table):
            raise InvalidArgument(f"put_table takes a pyarrow.Table, not {type(table).__name__}")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression=compression)
        buffer = sink.getvalue()
        return self.put(bucket, key, memoryview(buffer), content_type="application/vnd.apache.parquet",
                        metadata=metadata, tenant=tenant)

    @_traced("get_table")
    def get_table(self, bucket: str, key: str, *, columns: list[str] | None = None,
                  version_id: str | None = None, tenant: TenantArg = None) -> Any:
        """Read a Parquet object back as a ``pyarrow.Table``.

        The object's bytes are wrapped, not copied, as an Arrow buffer; the
        table's columns are decoded from it by Parquet.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = self.get(bucket, key, version_id=version_id, tenant=tenant)
        try:
            return pq.read_table(pa.BufferReader(pa.py_buffer(data)), columns=columns)
        except pa.ArrowInvalid as exc:
            raise InvalidArgument(f"object {key!r} in bucket {bucket!r} is not a Parquet table: {exc}") from None

    # Listing ----------------------------------------------------------------

    @_traced("list")
    def list(self, bucket: str, *, prefix: str = "", delimiter: str | None = None, max_keys: int = 1000,
             continuation_token: str | None = None, start_after: str | None = None,
             tenant: TenantArg = None) -> ListPage:
        """One page of keys in S3's order and with S3's ListObjectsV2 semantics."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        if not isinstance(max_keys, int) or max_keys < 0:
            raise InvalidArgument(f"max_keys must be a non-negative integer, not {max_keys!r}")
        max_keys = min(max_keys, 1000)
        if delimiter == "":
            delimiter = None
        self.catalog.get_bucket(ctx.tenant, bucket)
        if continuation_token:
            start, inclusive = _decode_token(continuation_token)
        else:
            start, inclusive = (start_after, False) if start_after else (None, True)
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        last_entry: tuple[str, bool] | None = None
        while True:
            restarted = False
            for record in self.catalog.iter_latest(ctx.tenant, bucket, prefix=prefix, start=start,
                                                   inclusive=inclusive):
                common = None
                if delimiter:
                    cut = record.key.find(delimiter, len(prefix))
                    if cut >= 0:
                        common = record.key[:cut + len(delimiter)]
                if len(objects) + len(prefixes) >= max_keys:
                    token = _encode_token(*last_entry) if last_entry else None
                    return ListPage(objects, prefixes, max_keys > 0, token if max_keys > 0 else None)
                if common is None:
                    objects.append(_info(record))
                    last_entry = (record.key, False)
                    continue
                prefixes.append(common)
                after = _successor(common)
                if after is None:
                    return ListPage(objects, prefixes, False, None)
                last_entry = (after, True)
                start, inclusive, restarted = after, True, True
                break
            if not restarted:
                return ListPage(objects, prefixes, False, None)

    def iter_objects(self, bucket: str, *, prefix: str = "", tenant: TenantArg = None) -> Iterator[ObjectInfo]:
        """Every live object under ``prefix``, following continuation tokens."""
        token: str | None = None
        while True:
            page = self.list(bucket, prefix=prefix, continuation_token=token, tenant=tenant)
            yield from page.objects
            if not page.is_truncated:
                return
            token = page.next_continuation_token

    def versions(self, bucket: str, key: str, *, tenant: TenantArg = None) -> list[ObjectInfo]:
        """Every version of a key (delete markers included), newest first."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        self.catalog.get_bucket(ctx.tenant, bucket)
        return [_info(r) for r in self.catalog.iter_versions(ctx.tenant, bucket, key)]

    # Keys -------------------------------------------------------------------

    @_traced("rotate_keys")
    def rotate_keys(self, *, tenant: TenantArg = None) -> int:
        """Make a new primary KEK version for the tenant's new writes; return it."""
        ctx = self._tenant(tenant)
        self.keyring.ensure(ctx.kek_id)
        return self.keyring.rotate(ctx.kek_id)

    @_traced("rewrap")
    def rewrap(self, *, tenant: TenantArg = None) -> int:
        """Re-wrap every DEK under the tenant's primary KEK version, touching no data; return how many."""
        ctx = self._tenant(tenant)
        primary = self.keyring.ensure(ctx.kek_id)
        count = 0
        for record in self.catalog.iter_wrapped_below(ctx.kek_id, primary):
            header = KeyHeader.from_bytes(record.key_header)
            dek = self.keyring.unwrap(header.kek_id, header.kek_version, header.wrapped_dek)
            version, wrapped = self.keyring.wrap(ctx.kek_id, dek)
            if self.catalog.replace_key_header(record, header.with_wrapped(version, wrapped).to_bytes(), version):
                count += 1
        return count

    def retire_keys(self, minimum: int, *, tenant: TenantArg = None) -> None:
        """Refuse to decrypt with KEK versions below ``minimum`` from now on.

        Refused while any object's DEK is still wrapped under such a version
        (run ``rewrap`` first), so retiring never makes data unreadable.
        """
        ctx = self._tenant(tenant)
        remaining = self.catalog.count_wrapped_below(ctx.kek_id, minimum)
        if remaining:
            raise KeyringError(f"{remaining} object(s) of tenant {ctx.tenant!r} are still wrapped under KEK "
                               f"versions below {minimum}; run rewrap first")
        self.keyring.retire_below(ctx.kek_id, minimum)

    # Maintenance ------------------------------------------------------------

    @_traced("sweep")
    def sweep(self, *, grace_seconds: float | None = None, tenant: TenantArg | str = "*") -> SweepReport:
        """Delete blobs that no committed row references and that are older than the grace period.

        ``tenant="*"`` (default) sweeps the whole backend; a tenant sweeps only its blobs.
        """
        grace = self.config.sweeper.grace_seconds if grace_seconds is None else grace_seconds
        cutoff = time.time() - grace
        prefix = "" if tenant == "*" else f"{self._tenant(tenant).tenant}/"
        referenced = self.catalog.referenced_blobs(self.backend_name)
        deleted = young = kept = 0
        for blob_id in list(self.backend.list_blobs(prefix)):
            if blob_id in referenced:
                kept += 1
                continue
            try:
                stat = self.backend.stat_blob(blob_id)
            except DwrayError:
                continue
            if stat.mtime > cutoff:
                young += 1
            elif not self.catalog.is_referenced(self.backend_name, blob_id):
                self.backend.delete_blob(blob_id)
                deleted += 1
        temp_files = 0
        sweep_temp = getattr(self.backend, "sweep_temp_files", None)
        if sweep_temp is not None:
            temp_files = sweep_temp(grace)
        return SweepReport(deleted, young, kept, temp_files)

    def stats(self, *, tenant: TenantArg = None) -> dict[str, int]:
        """The tenant's object versions (live and noncurrent) and their bytes, and its uploads in
        progress and their parts' bytes: ``objects``, ``bytes``, ``uploads``, ``upload_bytes``."""
        return self.catalog.stats(self._tenant(tenant).tenant)

    def storage_path(self) -> Path | None:
        """Where a local backend keeps blobs (for ``dw demo``), else ``None``."""
        root = getattr(self.backend, "root", None)
        return Path(root) if root is not None else None

