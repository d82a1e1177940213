"""A lock per blob id, for the writers of one process: a pool's puts, deletes and repairs of one
blob, or an S3 backend's commits of one id, take turns without one lock for every blob."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["BlobLocks"]


class BlobLocks:
    """A lock per blob id, created on first use and dropped when no one holds or waits for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: dict[str, list[Any]] = {}

    @contextmanager
    def hold(self, blob_id: str) -> Iterator[None]:
        with self._lock:
            entry = self._held.setdefault(blob_id, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._lock:
                entry[1] -= 1
                if not entry[1]:
                    del self._held[blob_id]
