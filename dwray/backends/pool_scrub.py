"""The bookkeeping both pools share for ``scrub()`` and ``pool_status()``.

A scrub walks the index in id order from a cursor, a slice of about
``max_bytes`` per call, so that a scheduler can spread a pass over time and
resume it after a restart; the pool checks each blob the walk yields.
``ScrubRun`` keeps the walk and the counts and records the last call in the
index, where ``pool_status()`` shows it. ``remove_orphans`` deletes the
copies on a member that the index does not place there, once they are older
than a grace period (younger ones may belong to a put still in flight).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from dwray.backends.base import StorageBackend, validate_blob_id
from dwray.backends.pool_index import BlobRow, PoolIndex
from dwray.backends.pool_members import BlobLocks
from dwray.errors import BlobNotFound, InvalidArgument

__all__ = ["MAX_BLOBS_PER_SCRUB", "ScrubRun", "check_scrub_args", "pool_status_base", "remove_orphans"]

#: a scrub call stops after this many blobs even if they were small
MAX_BLOBS_PER_SCRUB = 10_000
_PAGE = 64
_ORPHAN_BATCH = 500


def check_scrub_args(cursor: object, max_bytes: object, grace_seconds: object) -> None:
    """``InvalidArgument`` (or ``InvalidBlobId`` for the cursor) naming the bad argument."""
    if not isinstance(cursor, str):
        raise InvalidArgument(f"cursor must be a str, not {type(cursor).__name__}")
    if cursor:
        validate_blob_id(cursor)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise InvalidArgument(f"max_bytes must be an int >= 1, not {max_bytes!r}")
    if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, (int, float)) or grace_seconds < 0:
        raise InvalidArgument(f"grace_seconds must be a number >= 0, not {grace_seconds!r}")


class ScrubRun:
    """One ``scrub()`` call: the walk over the index and what it found."""

    def __init__(self, index: PoolIndex, cursor: str, max_bytes: int) -> None:
        self._index = index
        self.cursor = cursor
        self.max_bytes = max_bytes
        self.done = False
        self.blobs = 0
        self.bytes = 0
        self.corrupt = 0
        self.missing = 0
        self.repaired = 0
        self.unrepairable: list[str] = []
        self.orphans_removed = 0

    def rows(self) -> Iterator[BlobRow]:
        """The rows to check, in id order; sets ``done`` when the index has no more."""
        while self.bytes < self.max_bytes and self.blobs < MAX_BLOBS_PER_SCRUB:
            rows = self._index.rows_after(self.cursor, _PAGE)
            if not rows:
                self.done = True
                return
            for row in rows:
                yield row
                self.blobs += 1
                self.cursor = row.blob_id
                if self.bytes >= self.max_bytes or self.blobs >= MAX_BLOBS_PER_SCRUB:
                    return

    def count_bad(self, kinds: Iterable[str]) -> None:
        for kind in kinds:
            if kind == "missing":
                self.missing += 1
            else:
                self.corrupt += 1

    def finish(self) -> dict[str, Any]:
        """The call's result; also recorded in the index as the last scrub."""
        result = {
            "cursor": "" if self.done else self.cursor,
            "done": self.done,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "corrupt": self.corrupt,
            "missing": self.missing,
            "repaired": self.repaired,
            "unrepairable": list(self.unrepairable),
            "orphans_removed": self.orphans_removed,
        }
        now = time.time()
        last = dict(result, at=now, unrepairable=result["unrepairable"][:100])
        previous = self._index.state("last_scrub") or {}
        last["pass_finished_at"] = now if self.done else previous.get("pass_finished_at")
        self._index.set_state("last_scrub", last)
        return result


def remove_orphans(backend: StorageBackend, index: PoolIndex, locks: BlobLocks,
                   is_orphan: Callable[[BlobRow | None], bool], grace_seconds: float) -> int:
    """Delete the blobs on ``backend`` for whose index row (None: not indexed)
    ``is_orphan`` says so and whose mtime is ``grace_seconds`` old; return how many.

    The row is read again under the blob's lock before the delete, so a put
    or a move that commits meanwhile keeps its copy. ``StorageError`` from
    ``backend`` propagates.
    """
    removed = 0
    batch: list[str] = []
    for blob_id in backend.list_blobs():
        batch.append(blob_id)
        if len(batch) >= _ORPHAN_BATCH:
            removed += _remove_orphan_batch(backend, index, locks, is_orphan, grace_seconds, batch)
            batch = []
    return removed + _remove_orphan_batch(backend, index, locks, is_orphan, grace_seconds, batch)


def _remove_orphan_batch(backend: StorageBackend, index: PoolIndex, locks: BlobLocks,
                         is_orphan: Callable[[BlobRow | None], bool], grace_seconds: float, batch: list[str]) -> int:
    removed = 0
    rows = index.rows_for(batch)
    for blob_id in batch:
        if not is_orphan(rows.get(blob_id)):
            continue
        try:
            if time.time() - backend.stat_blob(blob_id).mtime < grace_seconds:
                continue
        except BlobNotFound:
            continue
        with locks.hold(blob_id):
            if is_orphan(index.get(blob_id)):
                backend.delete_blob(blob_id)
                removed += 1
    return removed


def pool_status_base(kind: str, index: PoolIndex, members: Mapping[str, dict[str, Any]], *,
                     repairs: int, moves: int) -> dict[str, Any]:
    """The keys every pool's ``pool_status()`` has: ``kind``, ``members`` (name -> ``{"up",
    "last_error", ...}``), ``hints_pending``, ``blobs``, ``bytes``, ``tiers`` (tier ->
    ``{"blobs", "bytes"}``, empty for a mirror), ``repairs`` and ``moves`` (since the
    pool was opened) and ``last_scrub`` (the last ``scrub()`` result with ``at`` and
    ``pass_finished_at`` timestamps, or None)."""
    totals = index.totals()
    return {
        "kind": kind,
        "members": dict(members),
        "hints_pending": sum(index.hint_counts().values()),
        "blobs": sum(blobs for blobs, _ in totals.values()),
        "bytes": sum(size for _, size in totals.values()),
        "tiers": {tier: {"blobs": blobs, "bytes": size} for tier, (blobs, size) in sorted(totals.items()) if tier},
        "repairs": repairs,
        "moves": moves,
        "last_scrub": index.state("last_scrub"),
    }
