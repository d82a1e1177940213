"""What the SQL backends (``sqlite``, ``postgres``) share: blobs as fixed-size chunk rows.

A blob is one row in a blobs table (id, size, chunk size, mtime) plus rows
``(blob_id, seq, data)`` of exactly ``chunk_size`` bytes each (the last one
shorter, an empty blob none). Fixed sizes let a read of ``[start, end)`` fetch
only rows ``start // chunk_size`` to ``(end - 1) // chunk_size``; the chunk
size is stored per blob, so changing the setting never breaks old blobs.

``fixed_chunks`` cuts the caller's stream into such rows with at most one row
buffered; ``join_range`` cuts the fetched rows down to the range asked for.
The databases compare ids bytewise (SQLite's BINARY, PostgreSQL's "C"
collation), which is Python's order for the ASCII characters ids may hold, and
``prefix_bounds`` turns a listing prefix into a key range an index serves.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from dwray.backends.base import BytesLike, as_byte_view
from dwray.errors import InvalidArgument, StorageError

__all__ = ["DEFAULT_CHUNK_SIZE", "LIST_PAGE", "check_chunk_size", "fixed_chunks", "join_range", "prefix_bounds"]

DEFAULT_CHUNK_SIZE = 1024 * 1024
#: ids fetched per query while listing (a listing never holds a connection between pages)
LIST_PAGE = 1000
# Every character an id may hold sorts below DEL, so prefix + DEL bounds every id under prefix.
_ABOVE_ANY_ID_CHAR = "\x7f"
_MAX_CHUNK_SIZE = 64 * 1024 * 1024


def check_chunk_size(chunk_size: object) -> int:
    """Return ``chunk_size`` if it is an int in [1 KiB, 64 MiB], else raise ``InvalidArgument``."""
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or not 1024 <= chunk_size <= _MAX_CHUNK_SIZE:
        raise InvalidArgument(f"chunk_size must be an int from 1024 to {_MAX_CHUNK_SIZE} bytes, not {chunk_size!r}")
    return chunk_size


def fixed_chunks(chunks: Iterable[BytesLike], chunk_size: int) -> Iterator[BytesLike]:
    """Yield ``chunks``' bytes again as pieces of exactly ``chunk_size`` bytes, the last one shorter.

    A piece may be a view into the caller's chunk: store it before asking for
    the next one (callers may reuse their buffer). At most one partial piece is
    copied and held, so memory stays at about one chunk whatever the stream.
    """
    pending = bytearray()
    for chunk in chunks:
        view = as_byte_view(chunk)
        if pending:
            take = min(chunk_size - len(pending), len(view))
            pending += view[:take]
            view = view[take:]
            if len(pending) < chunk_size:
                continue
            yield bytes(pending)
            pending.clear()
        while len(view) >= chunk_size:
            yield view[:chunk_size]
            view = view[chunk_size:]
        pending += view
    if pending:
        yield bytes(pending)


def join_range(rows: Sequence[tuple[int, bytes]], first_seq: int, start: int, stop: int, chunk_size: int,
               blob_id: str) -> bytes:
    """Bytes ``[start, stop)`` of a blob from its rows ``(seq, data)`` covering that range, in order.

    ``first_seq`` is the seq the rows must start at; a gap or a short row means
    the stored blob is damaged, which is a ``StorageError``, never wrong bytes.
    """
    if stop <= start:
        return b""
    want_rows = (stop - 1) // chunk_size - first_seq + 1
    if len(rows) != want_rows or any(seq != first_seq + i for i, (seq, _) in enumerate(rows)):
        raise StorageError("get", blob_id, f"chunk rows are missing: found {len(rows)} of {want_rows}")
    parts = []
    for seq, data in rows:
        offset = seq * chunk_size
        lo, hi = max(start - offset, 0), min(stop - offset, chunk_size)
        if len(data) < hi:
            raise StorageError("get", blob_id, f"chunk row {seq} is {len(data)} bytes, expected at least {hi}")
        parts.append(data[lo:hi] if (lo, hi) != (0, len(data)) else data)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def prefix_bounds(prefix: str) -> tuple[str, str]:
    """``(low, high)`` such that an id starts with ``prefix`` iff ``low <= id < high`` (bytewise)."""
    return prefix, prefix + _ABOVE_ANY_ID_CHAR
