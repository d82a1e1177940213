"""Blobs in process memory: a byte-capped LRU cache, for tests and as a cache tier.

Not durable (``durable = False``): blobs live only as long as the process, and
inserting a blob evicts the least recently used ones until the new one fits
under ``max_bytes``. Reading a blob makes it the most recently used. Under
memory pressure ``shrink`` gives back the least recently used half of the
bytes it holds (what it holds, not its cap: the cap may be far above the use,
and halving it would free nothing).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator

from dwray.backends.base import (
    BlobStat,
    BytesLike,
    StorageBackend,
    as_byte_view,
    validate_blob_id,
    validate_prefix,
)
from dwray.errors import BlobExists, BlobNotFound, InvalidArgument, StorageFull

__all__ = ["DEFAULT_MAX_BYTES", "MemoryBackend"]

DEFAULT_MAX_BYTES = 256 * 1024 * 1024


class MemoryBackend(StorageBackend):
    """Blobs in an ``OrderedDict``, least recently used first, capped at ``max_bytes``."""

    name = "memory"
    durable = False

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise InvalidArgument(f"max_bytes must be an int >= 0, not {max_bytes!r}")
        self.max_bytes = max_bytes
        self._blobs: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_bytes={self.max_bytes})"

    @property
    def used_bytes(self) -> int:
        """Bytes held by stored blobs."""
        with self._lock:
            return self._used

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        validate_blob_id(blob_id)
        with self._lock:
            if blob_id in self._blobs:  # fail before reading a possibly huge stream
                raise BlobExists(blob_id)
        buffer = bytearray()
        for chunk in chunks:
            view = as_byte_view(chunk)
            if len(buffer) + len(view) > self.max_bytes:
                # Stop reading at once; nothing is evicted for a blob that cannot fit.
                raise StorageFull("put", blob_id, f"the blob is larger than the {self.max_bytes}-byte memory cap")
            buffer += view
        data = bytes(buffer)
        del buffer
        with self._lock:
            if blob_id in self._blobs:
                raise BlobExists(blob_id)
            while self._used + len(data) > self.max_bytes:
                _, (evicted, _) = self._blobs.popitem(last=False)
                self._used -= len(evicted)
            self._blobs[blob_id] = (data, time.time())
            self._used += len(data)
        return len(data)

    def shrink(self, keep: float = 0.5) -> int:
        """Evict least recently used blobs until at most ``keep`` of the bytes held now remain;
        returns the bytes freed. The cap is unchanged: later puts may fill it again."""
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 <= keep <= 1:
            raise InvalidArgument(f"keep must be a fraction in [0, 1], not {keep!r}")
        with self._lock:
            before = self._used
            target = int(before * keep)
            while self._used > target:
                _, (evicted, _) = self._blobs.popitem(last=False)
                self._used -= len(evicted)
            return before - self._used

    def _touch(self, blob_id: str) -> bytes:
        validate_blob_id(blob_id)
        with self._lock:
            try:
                data, _ = self._blobs[blob_id]
            except KeyError:
                raise BlobNotFound(blob_id) from None
            self._blobs.move_to_end(blob_id)
        return data

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        data = self._touch(blob_id)
        self.check_range(start, end, len(data))
        return data[start:end]

    def delete_blob(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        with self._lock:
            entry = self._blobs.pop(blob_id, None)
            if entry is not None:
                self._used -= len(entry[0])

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        with self._lock:
            ids = [blob_id for blob_id in self._blobs if blob_id.startswith(prefix)]
        return iter(sorted(ids))

    def stat_blob(self, blob_id: str) -> BlobStat:
        validate_blob_id(blob_id)
        with self._lock:
            try:
                data, mtime = self._blobs[blob_id]
            except KeyError:
                raise BlobNotFound(blob_id) from None
        return BlobStat(blob_id, len(data), mtime)
