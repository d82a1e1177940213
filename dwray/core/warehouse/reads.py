"""Reading objects: lookups, byte ranges, and the stream of plaintext frames (``ObjectReader``).

Only the frames a range touches are fetched and opened; a frame that fails
authentication raises ``IntegrityError`` and its bytes are never returned.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from dwray.core.catalog import ObjectRecord, SegmentRecord
from dwray.core.frames import FrameTable, KeyHeader, ObjectIdentity, frames_for_range
from dwray.core.models import ObjectInfo, TenantContext
from dwray.core.names import validate_bucket_name, validate_key
from dwray.core.pipeline import ObjectCrypto
from dwray.core.warehouse.access import checked, read_rule
from dwray.core.warehouse.base import TenantArg, WarehouseBase, object_info
from dwray.core.warehouse.tracing import traced, tracer, within
from dwray.errors import DeleteMarkerVersion, IntegrityError, InvalidArgument, InvalidRange, ObjectNotFound

__all__ = ["ObjectReader", "ObjectReads"]

#: segments of a multipart object fetched from the catalog per query while reading it
SEGMENT_PAGE = 32


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


def check_range(range_: Any) -> tuple[int, int | None] | None:
    """An inclusive ``(first, last)`` range's shape, checked before its object's size is known."""
    if range_ is None:
        return None
    try:
        first, last = range_
    except (TypeError, ValueError):
        raise InvalidArgument(f"range must be a (first, last) pair, not {range_!r}") from None
    if not isinstance(first, int) or not (last is None or isinstance(last, int)):
        raise InvalidArgument(f"range bounds must be integers, not {range_!r}")
    return first, last


def resolve_range(range_: tuple[int, int | None] | None, size: int) -> tuple[int, int]:
    """The plaintext bytes ``[start, end)`` an inclusive HTTP-style ``(first, last)`` range names."""
    checked = check_range(range_)
    if checked is None:
        return 0, size
    first, last = checked
    if first < 0 or (last is not None and last < first) or first >= size:
        raise InvalidRange(f"bytes={first}-{'' if last is None else last}", size)
    end = size if last is None else min(last + 1, size)
    return first, end


class ObjectReads(WarehouseBase):
    """The read operations of the warehouse."""

    @traced("head")
    @checked(read_rule())
    def head(self, bucket: str, key: str, *, version_id: str | None = None, tenant: TenantArg = None) -> ObjectInfo:
        """The object's metadata. ``ObjectNotFound``/``BucketNotFound`` if absent."""
        ctx = self._tenant(tenant)
        return object_info(self._lookup(ctx, bucket, key, version_id))

    @traced("part_span")
    @checked(read_rule())
    def part_span(self, bucket: str, key: str, part_number: int, *, version_id: str | None = None,
                  tenant: TenantArg = None) -> tuple[ObjectInfo, tuple[int, int] | None]:
        """The object's metadata and the plaintext bytes ``[start, end)`` of its part ``part_number``.

        The span is None when the object has no such part: a single-part object
        has only part 1 (all of it), a multipart one ``info.parts_count`` parts.
        What to answer then is the caller's (S3 says ``InvalidPartNumber``).
        Parts are counted in the order the completed upload listed them; one
        catalog query finds the part, however many parts precede it.
        """
        if not isinstance(part_number, int) or isinstance(part_number, bool) or part_number < 1:
            raise InvalidArgument(f"a part number is an integer of at least 1, not {part_number!r}")
        ctx = self._tenant(tenant)
        record = self._lookup(ctx, bucket, key, version_id)
        info = object_info(record)
        if record.placement is not None:
            return info, ((0, record.size) if part_number == 1 else None)
        if part_number > info.parts_count:
            return info, None
        page = self.catalog.segments_page(ctx.tenant, record.bucket, record.key, record.version_id, 0, part_number)
        if len(page) < part_number:
            return info, None
        segment = page[part_number - 1]
        return info, (segment.offset, segment.offset + segment.size)

    def _lookup(self, ctx: TenantContext, bucket: str, key: str, version_id: str | None) -> ObjectRecord:
        validate_bucket_name(bucket)
        validate_key(key)
        record = self.catalog.get_object(ctx.tenant, bucket, key, version_id)
        if record.delete_marker:  # named: the catalog answers a latest delete marker with ObjectDeleted
            raise DeleteMarkerVersion(bucket, key, record.public_version_id, record.created)
        return record

    @checked(read_rule())
    def open(self, bucket: str, key: str, *, range: tuple[int, int | None] | None = None,
             version_id: str | None = None, tenant: TenantArg = None) -> ObjectReader:
        """A stream of the object's bytes; ``range=(first, last)`` is inclusive, as HTTP's Range.

        ``last`` may be ``None`` (to the end) or past the end (clipped). Raises
        ``InvalidRange`` when ``first`` is at or past the end. Bytes that fail
        authentication raise ``IntegrityError`` and are never returned. A read
        of at least ``[memory] large_read`` bytes raises ``Backpressure`` while
        memory is critical, before any of it is fetched.
        """
        # The span lasts until the reader closes: the reads happen as it is consumed.
        span = tracer.start_span("dwray.get", attributes={"dwray.operation": "get"})
        context = trace.set_span_in_context(span)
        token = otel_context.attach(context)
        try:
            ctx = self._tenant(tenant)
            record = self._lookup(ctx, bucket, key, version_id)
            start, end = resolve_range(range, record.size)
            if end - start >= self.config.memory.large_read:
                self._refuse_if_critical(f"a large read ({end - start} bytes)")
            placement = record.placement
            if placement is None:  # a multipart object: its bytes are in its segments
                source = self._segments_plaintext(ctx, record, start, end)
            else:
                source = self._blob_plaintext(
                    ctx, record.bucket, record.key, record.version_id, placement.backend, placement.blob_id,
                    KeyHeader.from_bytes(placement.key_header), FrameTable.from_bytes(placement.frame_table),
                    start, end, placement.inline)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            span.end()
            raise
        finally:
            otel_context.detach(token)
        chunks = within(context, source)
        return ObjectReader(object_info(record), chunks, start, end - start, on_close=span.end)

    @checked(read_rule())
    def get(self, bucket: str, key: str, *, range: tuple[int, int | None] | None = None,
            version_id: str | None = None, tenant: TenantArg = None) -> bytes:
        """The object's bytes (or an inclusive ``range`` of them)."""
        with self.open(bucket, key, range=range, version_id=version_id, tenant=tenant) as reader:
            return reader.readall()

    def _blob_plaintext(self, ctx: TenantContext, bucket: str, key: str, version: str, target: str, blob_id: str,
                        header: KeyHeader, table: FrameTable, start: int, end: int,
                        inline: bytes | None = None) -> Iterator[bytes]:
        """Plaintext bytes ``[start, end)`` of one blob sealed under identity (tenant, bucket, key, ``version``).

        ``inline``: the records of a small object that its catalog row holds, opened here.
        """
        dek = self.data_keys.dek_for(header)
        identity = ObjectIdentity(ctx.tenant, bucket, key, version)
        crypto = ObjectCrypto(identity, dek, header.nonce_prefix, header.frame_size)
        last_index = max(len(table) - 1, 0)

        def opened(frames: range) -> Iterator[bytes]:
            if inline is None:
                return self.engine.load(self._storage_named(target), blob_id, table, crypto, frames, last_index)
            return _open_inline(crypto, table, inline, frames, last_index)

        if end <= start:
            # Empty object: still authenticate its single (empty) frame.
            for _ in opened(range(0, 1)):
                pass
            return
        frames = frames_for_range(start, end, header.frame_size)
        position = frames.start * header.frame_size
        for plain in opened(frames):
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
        placement = segment.placement
        header = KeyHeader.from_bytes(placement.key_header)
        what = f"object {record.key!r} version {record.version_id} part {segment.index + 1}"
        if lo < 0:
            raise IntegrityError(what, f"starts at byte {segment.offset}, after the previous part ended")
        if header.plaintext_length != segment.size:
            raise IntegrityError(what, f"sealed {header.plaintext_length} bytes, the catalog says {segment.size}")
        return self._blob_plaintext(ctx, record.bucket, record.key, segment.part_version, placement.backend,
                                    placement.blob_id, header,
                                    FrameTable.from_bytes(placement.frame_table), lo, hi)


def _open_inline(crypto: ObjectCrypto, table: FrameTable, records: bytes, frames: range,
                 last_index: int) -> Iterator[bytes]:
    """The plaintext of ``frames`` of records held inline (a small object's), opened here, in order."""
    view = memoryview(records)
    if len(view) != (table.record_range(last_index)[1] if len(table) else 0):
        raise IntegrityError(crypto.identity.describe(), f"inline records hold {len(view)} bytes, "
                             "not what the frame table says")
    opener = crypto.opener()
    for index in frames:
        lo, hi = table.record_range(index)
        yield opener.open(index, view[lo:hi], index == last_index)
