"""Block checksums of pool blobs, and reads and copies that check them.

A pool keeps the CRC-32 of every ``block_size`` block of a blob (the last
block may be shorter), computed once while the blob streams in. Every read
from a member is widened to whole blocks and checked before a byte is
returned, so a replica with flipped bits, a short one or a missing one is
told apart from a good one and the pool turns to the next replica. Scrubs,
repairs and tier moves read whole replicas the same way, piece by piece.

CRC-32 catches accidental damage (bit rot, torn or misdirected writes), not
tampering: the warehouse's frames are sealed with AES-GCM above this layer.
"""
from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Iterable, Iterator

from dwray.backends.base import BytesLike, StorageBackend, as_byte_view
from dwray.backends.pool_index import BlobRow
from dwray.errors import BlobNotFound, StorageError

__all__ = ["PIECE_SIZE", "BlockSummer", "ReplicaBad", "SourceFailed", "SourceProblem", "SummedChunks",
           "check_replica",
           "copy_replica", "read_replica", "read_verified"]

#: bytes a whole-replica read asks a member for at once
PIECE_SIZE = 8 * 1024 * 1024


def _pack(crcs: array) -> bytes:
    if sys.byteorder == "big":
        crcs = array("I", crcs)
        crcs.byteswap()
    return crcs.tobytes()


def _unpack(packed: bytes) -> array:
    crcs = array("I")
    crcs.frombytes(packed)
    if sys.byteorder == "big":
        crcs.byteswap()
    return crcs


class BlockSummer:
    """CRC-32 per block of a stream, fed chunk by chunk."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.size = 0
        self._crcs = array("I")
        self._crc = 0
        self._filled = 0

    def update(self, data: BytesLike) -> None:
        view = memoryview(data)
        at, length = 0, len(view)
        while at < length:
            take = min(self.block_size - self._filled, length - at)
            self._crc = zlib.crc32(view[at:at + take], self._crc)
            self._filled += take
            at += take
            if self._filled == self.block_size:
                self._crcs.append(self._crc)
                self._crc, self._filled = 0, 0
        self.size += length

    def digest(self) -> bytes:
        """The packed CRCs of every block so far, a partial last block included."""
        crcs = array("I", self._crcs)
        if self._filled:
            crcs.append(self._crc)
        return _pack(crcs)


class SummedChunks:
    """A put's chunks, fed to a ``BlockSummer`` as a backend pulls them. ``started`` tells
    whether the backend pulled any (a put that was refused before may be retried)."""

    def __init__(self, chunks: Iterable[BytesLike], summer: BlockSummer) -> None:
        self._chunks = chunks
        self._summer = summer
        self.started = False

    def __iter__(self) -> Iterator[memoryview]:
        self.started = True
        for chunk in self._chunks:
            view = as_byte_view(chunk)
            self._summer.update(view)
            yield view


class SourceProblem(Exception):
    """The replica being read cannot be used. Not a dwray error: it travels through a
    target backend's ``put_blob`` as its chunk iterator's exception, unchanged."""


class ReplicaBad(SourceProblem):
    """A replica is missing, or fails its block checksums or its size."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(kind, detail)
        #: ``"missing"`` or ``"corrupt"``
        self.kind = kind
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class SourceFailed(SourceProblem):
    """The member holding the replica failed (a ``StorageError``) while it was read."""

    def __init__(self, error: StorageError) -> None:
        super().__init__(error)
        self.error = error

    def __str__(self) -> str:
        return str(self.error)


def _check_blocks(row: BlobRow, first: int, data: bytes) -> None:
    """Raise ``ReplicaBad`` unless ``data`` (which starts at block ``first``) matches its CRCs."""
    crcs = _unpack(row.crcs)
    view = memoryview(data)
    size = row.block_size
    for n in range(-(-len(data) // size)):
        if zlib.crc32(view[n * size:(n + 1) * size]) != crcs[first + n]:
            raise ReplicaBad("corrupt", f"block {first + n} of {row.blob_id!r} fails its CRC-32")


def read_verified(backend: StorageBackend, row: BlobRow, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` (``0 <= start < end <= row.size``) of a replica, checked.

    The read is widened to whole blocks, every one of them is checked, and
    then it is sliced. ``ReplicaBad`` for a missing, short or corrupt replica;
    the backend's ``StorageError`` when the member fails.
    """
    first, last = start // row.block_size, -(-end // row.block_size)
    low, high = first * row.block_size, min(row.size, last * row.block_size)
    try:
        data = backend.get_blob(row.blob_id, low, high)
    except BlobNotFound:
        raise ReplicaBad("missing", f"the replica of {row.blob_id!r} is missing") from None
    if len(data) != high - low:
        raise ReplicaBad("corrupt", f"the replica of {row.blob_id!r} is shorter than its {row.size} bytes")
    _check_blocks(row, first, data)
    if (low, high) == (start, end):
        return data
    return data[start - low:end - low]


def read_replica(backend: StorageBackend, row: BlobRow, piece_size: int = PIECE_SIZE) -> Iterator[bytes]:
    """A whole replica in checked pieces of about ``piece_size`` bytes.

    The last piece is read to the replica's end, so a replica longer than the
    index says is caught too. Raises like ``read_verified``.
    """
    piece = max(1, piece_size // row.block_size) * row.block_size
    low = 0
    while True:
        high = low + piece
        last = high >= row.size
        try:
            data = backend.get_blob(row.blob_id, low, None if last else high)
        except BlobNotFound:
            raise ReplicaBad("missing", f"the replica of {row.blob_id!r} is missing") from None
        if len(data) != ((row.size - low) if last else piece):
            found = f"{low + len(data)} bytes" if last else "shorter"
            raise ReplicaBad("corrupt", f"the replica of {row.blob_id!r} is {found}, not {row.size} bytes")
        _check_blocks(row, low // row.block_size, data)
        yield data
        if last:
            return
        low = high


def copy_replica(row: BlobRow, source: StorageBackend, target: StorageBackend) -> None:
    """Stream a checked replica from ``source`` into a new blob on ``target``.

    A problem with the source raises ``SourceProblem`` (and ``target``, which
    saw it as its chunk iterator failing, keeps nothing); ``target``'s own
    failures raise its dwray errors.
    """
    def pieces() -> Iterator[bytes]:
        try:
            yield from read_replica(source, row)
        except StorageError as exc:
            raise SourceFailed(exc) from exc

    target.put_blob(row.blob_id, pieces())


def check_replica(backend: StorageBackend, row: BlobRow) -> int:
    """Read a whole replica and check it; return the bytes read. Raises like ``read_verified``."""
    return sum(len(piece) for piece in read_replica(backend, row))
