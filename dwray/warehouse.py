"""The warehouse core: buckets and objects for tenants, in one process.

Durability order for every write: the sealed blob is durable on the backend,
then the catalog row is committed (the moment the object exists), then the
caller is acknowledged. A crash between the first two leaves an unreferenced
blob, which ``sweep`` removes after the grace period; never a visible partial.

Every operation takes a tenant (``TenantContext``, a tenant name, or ``None``
for the configured default tenant). Catalog rows and blob ids are scoped by it:
blob ids start with the tenant's name and each tenant has its own KEK.
"""
from __future__ import annotations

import base64
import functools
import io
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace

from dwray.catalog import BucketRecord, Catalog, ObjectRecord
from dwray.config import DwrayConfig, load_config
from dwray.errors import (
    BucketNotFound,
    DwrayError,
    InvalidArgument,
    InvalidContinuationToken,
    InvalidRange,
    KeyringError,
    ObjectNotFound,
)
from dwray.frames import (
    FORMAT_VERSION,
    FrameTable,
    KeyHeader,
    ObjectIdentity,
    frames_for_range,
    new_object_keys,
)
from dwray.keyring import LocalKeyring
from dwray.models import (
    BucketInfo,
    DeleteResult,
    ListPage,
    ObjectInfo,
    SweepReport,
    TenantContext,
)
from dwray.names import validate_bucket_name, validate_key
from dwray.pipeline import (
    FrameEngine,
    ObjectCrypto,
    ThreadFrameEngine,
    plaintext_frames,
)
from dwray.storage import create_backend
from dwray.storage.base import StorageBackend

__all__ = ["ObjectReader", "Warehouse"]

TenantArg = TenantContext | str | None
DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: system headers stored with an object and returned on read, as S3 does
STORED_HEADERS = frozenset({"content-encoding", "content-disposition", "content-language",
                            "cache-control", "expires"})
MAX_METADATA_BYTES = 2048  # S3's limit for user metadata
BUCKET_CACHE_SECONDS = 5.0


_tracer = trace.get_tracer("dwray.warehouse")
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


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
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
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(f"user metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")
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
            tenant: TenantArg = None) -> ObjectInfo:
        """Store ``data`` (bytes, binary file object, or iterable of bytes chunks) under ``key``.

        Returns once the object is durable and committed.
        """
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        validate_key(key)
        clean_metadata, clean_headers = _check_metadata(metadata), _check_headers(headers)
        bucket_record = self._bucket(ctx, bucket)
        try:
            record = self._write_object(ctx, bucket_record, key,
                                        plaintext_frames(data, self.config.pipeline.frame_size),
                                        content_type or DEFAULT_CONTENT_TYPE, clean_metadata, clean_headers)
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

    def _write_object(self, ctx: TenantContext, bucket: BucketRecord, key: str, frames: Any,
                      content_type: str, metadata: dict[str, str], headers: dict[str, str]) -> ObjectRecord:
        version_id = _new_version_id()
        # Folders by time (one per ~69 s of writes) rather than by hash: a
        # durable put into an existing folder skips creating and fsyncing one.
        blob_id = f"{ctx.tenant}/{bucket.bucket_id}/{time.time_ns() >> 36:x}/{secrets.token_hex(16)}"
        keys = new_object_keys()
        if ctx.kek_id not in self._keks_ready:
            self.keyring.ensure(ctx.kek_id)
            self._keks_ready.add(ctx.kek_id)
        kek_version, wrapped = self.keyring.wrap(ctx.kek_id, keys.dek)
        identity = ObjectIdentity(ctx.tenant, bucket.name, key, version_id)
        frame_size = self.config.pipeline.frame_size
        crypto = ObjectCrypto(identity, keys.dek, keys.nonce_prefix, frame_size, self.config.pipeline.zstd_level)
        stored = self.engine.store(self.backend, blob_id, frames, crypto, self.config.limits.max_object_size)
        header = KeyHeader(
            format_version=FORMAT_VERSION, kek_id=ctx.kek_id, kek_version=kek_version, wrapped_dek=wrapped,
            nonce_prefix=keys.nonce_prefix, frame_size=frame_size, plaintext_length=stored.size,
            content_md5=stored.md5)
        record = ObjectRecord(
            tenant=ctx.tenant, bucket=bucket.name, key=key, version_id=version_id, is_latest=True,
            delete_marker=False, size=stored.size, etag=stored.md5.hex(), content_type=content_type,
            headers=headers, metadata=metadata, created=time.time(), backend=self.backend_name,
            blob_id=blob_id, key_header=header.to_bytes(), frame_table=stored.table.to_bytes(),
            kek_id=ctx.kek_id, kek_version=kek_version)
        try:
            self.catalog.commit_object(record)
        except BaseException:
            # Not committed, so nothing references the blob: remove it now
            # rather than leave it to the sweeper (best effort).
            try:
                self.backend.delete_blob(blob_id)
            except DwrayError:
                pass
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
                _check_metadata(metadata) if replace else dict(info.metadata),
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
            header = KeyHeader.from_bytes(record.key_header)
            table = FrameTable.from_bytes(record.frame_table)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        chunks = _within(context, self._plaintext(ctx, record, header, table, start, end))
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

    def _plaintext(self, ctx: TenantContext, record: ObjectRecord, header: KeyHeader, table: FrameTable,
                   start: int, end: int) -> Iterator[bytes]:
        dek = self.keyring.unwrap(header.kek_id, header.kek_version, header.wrapped_dek)
        identity = ObjectIdentity(ctx.tenant, record.bucket, record.key, record.version_id)
        crypto = ObjectCrypto(identity, dek, header.nonce_prefix, header.frame_size)
        last_index = max(len(table) - 1, 0)
        if end <= start:
            # Empty object: still authenticate its single (empty) frame.
            for _ in self.engine.load(self.backend, record.blob_id, table, crypto, range(0, 1), last_index):
                pass
            return
        frames = frames_for_range(start, end, header.frame_size)
        position = frames.start * header.frame_size
        for plain in self.engine.load(self.backend, record.blob_id, table, crypto, frames, last_index):
            lo, hi = max(start - position, 0), min(end - position, len(plain))
            position += len(plain)
            yield plain if (lo == 0 and hi == len(plain)) else plain[lo:hi]

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
        """Object count and bytes of the tenant's live and noncurrent versions."""
        return self.catalog.stats(self._tenant(tenant).tenant)

    def storage_path(self) -> Path | None:
        """Where a local backend keeps blobs (for ``dw demo``), else ``None``."""
        root = getattr(self.backend, "root", None)
        return Path(root) if root is not None else None

