"""What both pools (mirror, tiered) answer from their index alone, written once.

A pool's index row is the truth about a blob (size, block CRCs, creation
time): lookups, stats, listings and range clipping come from it, and only
``_read_within`` (which copy to read, and what to do with a bad one) differs.
"""
from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from typing import NoReturn

from dwray.backends.base import BlobStat, StorageBackend, validate_blob_id, validate_prefix
from dwray.backends.pool_blocks import ReplicaBad
from dwray.backends.pool_index import BlobRow, PoolIndex
from dwray.errors import BlobNotFound, IntegrityError, StorageError

__all__ = ["IndexedPool"]


class IndexedPool(StorageBackend):
    """A StorageBackend whose reads, stats and listings start from its ``PoolIndex``."""

    _index: PoolIndex

    def _row(self, blob_id: str) -> BlobRow:
        row = self._index.get(validate_blob_id(blob_id))
        if row is None:
            raise BlobNotFound(blob_id)
        return row

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        row = self._row(blob_id)
        self.check_range(start, end, row.size)
        return self._read(row, start, end)

    def get_ranges(self, blob_id: str, ranges: Sequence[tuple[int, int | None]]) -> list[bytes]:
        """One index lookup for all ranges."""
        row = self._row(blob_id)
        for start, end in ranges:
            self.check_range(start, end, row.size)
        return [self._read(row, start, end) for start, end in ranges]

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return self._index.ids(prefix)

    def stat_blob(self, blob_id: str) -> BlobStat:
        row = self._row(blob_id)
        return BlobStat(row.blob_id, row.size, row.created)

    def _read(self, row: BlobRow, start: int, end: int | None) -> bytes:
        start, end = min(start, row.size), row.size if end is None else min(end, row.size)
        if end <= start:
            return b""
        return self._read_within(row, start, end)

    @abstractmethod
    def _read_within(self, row: BlobRow, start: int, end: int) -> bytes:
        """Bytes ``[start, end)`` (inside the blob, not empty), checked against the row's CRCs."""

    @staticmethod
    def _no_good_copy(row: BlobRow, problems: Mapping[str, Exception], holders: str) -> NoReturn:
        """``IntegrityError`` if a copy was corrupt, else ``StorageError``; ``holders``: "member", "tier"."""
        reasons = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        if any(isinstance(p, ReplicaBad) and p.kind == "corrupt" for p in problems.values()):
            raise IntegrityError(f"blob {row.blob_id!r}", f"no {holders} holds a good copy ({reasons})")
        raise StorageError("get", row.blob_id, f"no {holders} returned a good copy ({reasons})")
