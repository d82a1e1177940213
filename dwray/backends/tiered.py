"""A pool of two tiers: new blobs land on a fast "hot" backend and move to a "cold" one.

put
    streams the chunks to hot, computing the block CRCs on the way; then the
    index row (tier ``hot``) is committed, then ``put_blob`` returns.
get
    reads from the tier the index names, else from the other one (a move in
    flight, or one a crash interrupted), checked against the CRCs: wrong
    bytes are never returned (``IntegrityError``).
move_due
    moves blobs older than ``after_seconds``, then, oldest first, as long as
    hot holds more than ``hot_max_bytes``. Each move takes four steps, each
    safe to crash after:

    1. copy to cold, checked block by block on the way, then read back and
       checked again (a copy an earlier, crashed move left there is checked
       and reused, or replaced if bad);
    2. switch the tier in the index to ``cold`` with a ``cleanup`` flag
       (commit): from here reads go to cold;
    3. delete the hot copy;
    4. clear the flag (commit).

    A crash before 2 leaves the blob hot (the next move reuses the cold
    copy); a crash after 2 leaves a flagged row, whose hot copy the next
    ``move_due`` deletes first. Either way the blob stays readable and ends
    on cold exactly once.
delete
    removes the index row (commit), then the copies on both tiers. A copy a
    crash or a failing tier leaves is an orphan, which ``scrub()`` removes
    after its grace period.

The pool closes both tiers when it is closed. One process writes through a
pool at a time (see ``dwray.backends.mirror``).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from dwray.backends.base import (
    BytesLike,
    StorageBackend,
    validate_blob_id,
)
from dwray.backends.pool_base import IndexedPool
from dwray.backends.pool_blocks import (
    BlockSummer,
    ReplicaBad,
    SourceFailed,
    SourceProblem,
    SummedChunks,
    check_replica,
    copy_replica,
    read_verified,
)
from dwray.backends.pool_index import BlobRow, PoolIndex
from dwray.backends.pool_members import (
    BlobLocks,
    MemberHealth,
    check_members,
    check_number,
    sweep_members,
)
from dwray.backends.pool_scrub import (
    ScrubRun,
    check_scrub_args,
    pool_status_base,
    remove_orphans,
)
from dwray.errors import (
    BlobExists,
    BlobNotFound,
    InvalidArgument,
    InvalidBlobId,
    StorageError,
)

__all__ = ["TieredBackend"]

_log = logging.getLogger(__name__)

HOT, COLD = "hot", "cold"
_OTHER = {HOT: COLD, COLD: HOT}
_PAGE = 256


class TieredBackend(IndexedPool):
    """New blobs on ``hot``; ``move_due()`` moves them to ``cold`` by age and by hot's size."""

    name = "tiered"

    def __init__(self, hot: StorageBackend, cold: StorageBackend, index_path: str | os.PathLike[str], *,
                 after_seconds: float | None = None, hot_max_bytes: int | None = None,
                 block_size: int = 64 * 1024) -> None:
        check_members({HOT: hot, COLD: cold}, block_size)
        check_number("after_seconds", after_seconds, minimum=0, optional=True)
        check_number("hot_max_bytes", hot_max_bytes, minimum=0, integer=True, optional=True)
        self.tiers: dict[str, StorageBackend] = {HOT: hot, COLD: cold}
        self.after_seconds = after_seconds
        self.hot_max_bytes = hot_max_bytes
        self.block_size = block_size
        self.durable = hot.durable and cold.durable
        self.nested_ids_conflict = hot.nested_ids_conflict or cold.nested_ids_conflict
        self._index = PoolIndex(index_path)
        try:
            self._index.claim("tiered")
        except BaseException:
            self._index.close()
            raise
        # Reads always try both tiers; health only tells pool_status() how each tier did last.
        self._health = MemberHealth(self.tiers, float("inf"))
        self._locks = BlobLocks()
        self._move_lock = threading.Lock()
        self._counters_lock = threading.Lock()
        self._counters = {"moves": 0, "repairs": 0}
        self._closed = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(hot={self.tiers[HOT]!r}, cold={self.tiers[COLD]!r})"

    def _count(self, name: str, n: int = 1) -> None:
        with self._counters_lock:
            self._counters[name] += n

    # The contract -----------------------------------------------------------

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        validate_blob_id(blob_id)
        hot = self.tiers[HOT]
        with self._locks.hold(blob_id):
            if self._index.exists(blob_id):
                raise BlobExists(blob_id)
            if self.nested_ids_conflict:
                other = self._index.nested_conflict(blob_id)
                if other is not None:
                    raise InvalidBlobId(blob_id, f"{other!r} is a blob, so the two cannot both be blobs")
            summer = BlockSummer(self.block_size)
            pulled = SummedChunks(chunks, summer)
            try:
                try:
                    hot.put_blob(blob_id, pulled)
                except BlobExists:
                    if pulled.started:
                        raise
                    hot.delete_blob(blob_id)  # an orphan: the index knows no such blob, and we hold its lock
                    hot.put_blob(blob_id, pulled)
            except StorageError as exc:
                self._health.failed(HOT, exc)
                raise
            row = BlobRow(blob_id, summer.size, self.block_size, summer.digest(), time.time(), HOT)
            try:
                self._index.insert(row)
            except BaseException:
                try:
                    hot.delete_blob(blob_id)
                except StorageError as exc:  # an orphan, which the scrub removes
                    _log.warning("tiered: could not remove %r from hot after a failed put: %s", blob_id, exc)
                raise
            return summer.size

    def _read_within(self, row: BlobRow, start: int, end: int) -> bytes:
        problems: dict[str, Exception] = {}
        for tier in (row.tier, _OTHER[row.tier]):
            try:
                data = read_verified(self.tiers[tier], row, start, end)
            except ReplicaBad as bad:
                problems[tier] = bad
                continue
            except StorageError as exc:
                self._health.failed(tier, exc)
                problems[tier] = exc
                continue
            self._health.ok(tier)
            return data
        current = self._index.get(row.blob_id)
        if current is None:
            raise BlobNotFound(row.blob_id)  # deleted while it was being read
        if current.tier != row.tier:
            return self._read_within(current, start, end)  # moved between the lookup and the reads
        self._no_good_copy(row, problems, "tier")

    def delete_blob(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        with self._locks.hold(blob_id):
            if self._index.delete(blob_id) is None:
                return
            for tier, backend in self.tiers.items():
                try:
                    backend.delete_blob(blob_id)
                except StorageError as exc:  # the blob is gone; its copy is an orphan for the scrub
                    self._health.failed(tier, exc)
                    _log.warning("tiered: could not delete the %s copy of %r: %s", tier, blob_id, exc)

    # Moves ------------------------------------------------------------------

    def move_due(self, max_bytes: int | None = None, now: float | None = None) -> dict[str, Any]:
        """Finish interrupted moves, then move what is due to cold (see the module docstring).

        ``max_bytes`` bounds the bytes moved by this call (None: no bound);
        ``now`` is the time ages are measured at (None: the clock). Returns
        ``{"moved", "bytes", "cleaned", "failed", "more", "hot_bytes"}``: blobs
        moved and their bytes, hot copies of earlier moves deleted, blob id ->
        reason for the moves that failed, whether more is due than this call
        moved, and the bytes on hot afterwards.
        """
        check_number("max_bytes", max_bytes, minimum=0, integer=True, optional=True)
        if now is not None and (isinstance(now, bool) or not isinstance(now, (int, float))):
            raise InvalidArgument(f"now must be None or a number (epoch seconds), not {now!r}")
        now = time.time() if now is None else float(now)
        result: dict[str, Any] = {"moved": 0, "bytes": 0, "cleaned": 0, "failed": {}, "more": False}
        with self._move_lock:
            result["cleaned"] = self._finish_cleanups()
            hot_bytes = self._index.totals().get(HOT, (0, 0))[1]
            for row in self._due():
                over = self.hot_max_bytes is not None and hot_bytes > self.hot_max_bytes
                old = self.after_seconds is not None and row.created <= now - self.after_seconds
                if not over and not old:
                    break  # oldest first: no later row is due either
                if max_bytes is not None and result["bytes"] >= max_bytes:
                    result["more"] = True
                    break
                try:
                    moved = self._move(row)
                except (StorageError, SourceProblem) as exc:
                    result["failed"][row.blob_id] = str(exc)
                    _log.warning("tiered: cannot move %r to cold: %s", row.blob_id, exc)
                    if isinstance(exc, StorageError):
                        break  # a tier is failing: leave the rest for the next call
                    continue
                if moved:
                    result["moved"] += 1
                    result["bytes"] += row.size
                    hot_bytes -= row.size
        result["hot_bytes"] = self._index.totals().get(HOT, (0, 0))[1]
        return result

    def _due(self) -> Iterator[BlobRow]:
        """Hot rows, oldest first, paged."""
        after: tuple[float, str] | None = None
        while True:
            rows = self._index.oldest(HOT, _PAGE, after)
            if not rows:
                return
            yield from rows
            after = (rows[-1].created, rows[-1].blob_id)

    def _move(self, row: BlobRow) -> bool:
        """Move one blob (steps 1-4); False if it was deleted or moved meanwhile."""
        with self._locks.hold(row.blob_id):
            current = self._index.get(row.blob_id)
            if current is None or current.tier != HOT:
                return False
            try:
                self._copy_to_cold(current)
            except SourceFailed as exc:
                self._health.failed(HOT, exc.error)
                raise
            except StorageError as exc:
                self._health.failed(COLD, exc)
                raise
            self._health.ok(COLD)
            self._switch_to_cold(current)
            self._count("moves")
            try:
                self._drop_hot_copy(current)
            except StorageError as exc:  # moved; the next move_due deletes the hot copy
                self._health.failed(HOT, exc)
                _log.warning("tiered: moved %r but could not delete its hot copy yet: %s", row.blob_id, exc)
            return True

    def _copy_to_cold(self, row: BlobRow) -> None:
        cold = self.tiers[COLD]
        try:
            check_replica(cold, row)
            return  # an earlier move crashed after its copy: reuse it
        except ReplicaBad as bad:
            if bad.kind == "corrupt":
                cold.delete_blob(row.blob_id)
        copy_replica(row, self.tiers[HOT], cold)
        try:
            check_replica(cold, row)
        except ReplicaBad:
            cold.delete_blob(row.blob_id)
            raise

    def _switch_to_cold(self, row: BlobRow) -> None:
        self._index.set_tier(row.blob_id, COLD, cleanup=True)

    def _drop_hot_copy(self, row: BlobRow) -> None:
        self.tiers[HOT].delete_blob(row.blob_id)
        self._index.cleaned(row.blob_id)

    def _finish_cleanups(self) -> int:
        """Delete the copies that interrupted moves left on the tier a blob left."""
        cleaned = 0
        while True:
            rows = self._index.needing_cleanup(_PAGE)
            for row in rows:
                with self._locks.hold(row.blob_id):
                    current = self._index.get(row.blob_id)
                    if current is None or not current.cleanup:
                        continue
                    left = _OTHER[current.tier]
                    try:
                        self.tiers[left].delete_blob(row.blob_id)
                    except StorageError as exc:
                        self._health.failed(left, exc)
                        _log.warning("tiered: cannot delete the %s copy of moved blob %r: %s", left, row.blob_id, exc)
                        return cleaned
                    self._index.cleaned(row.blob_id)
                    cleaned += 1
            if len(rows) < _PAGE:
                return cleaned

    # Scrub and status -------------------------------------------------------

    def scrub(self, cursor: str = "", max_bytes: int = 64 * 1024 * 1024,
              grace_seconds: float = 3600) -> dict[str, Any]:
        """Check the copy of every blob after ``cursor`` (in id order) until about
        ``max_bytes`` were read. A bad copy is replaced from a good one on the other
        tier where an interrupted move left one; else the blob is unrepairable. A
        call that ends a pass also removes copies the index does not place on
        their tier (orphans) older than ``grace_seconds``. Returns the same dict as
        ``MirrorBackend.scrub``."""
        check_scrub_args(cursor, max_bytes, grace_seconds)
        run = ScrubRun(self._index, cursor, max_bytes)
        for row in run.rows():
            try:
                run.bytes += check_replica(self.tiers[row.tier], row)
                continue
            except ReplicaBad as bad:
                kind = bad.kind
            except StorageError as exc:
                self._health.failed(row.tier, exc)
                continue
            outcome = self._repair(row)
            if outcome == "gone":
                continue  # moved or deleted while it was being read: nothing was wrong
            run.count_bad([kind])
            if outcome == "repaired":
                run.repaired += 1
            else:
                run.unrepairable.append(row.blob_id)
        if run.done:
            run.orphans_removed = sum(self._remove_orphans(tier, grace_seconds) for tier in self.tiers)
        return run.finish()

    def _repair(self, row: BlobRow) -> str:
        """Replace a bad copy on the blob's tier from a good one on the other tier, if any:
        ``"repaired"``, ``"failed"``, or ``"gone"`` (moved or deleted meanwhile)."""
        tier, other = row.tier, _OTHER[row.tier]
        with self._locks.hold(row.blob_id):
            if self._index.get(row.blob_id) != row:
                return "gone"
            try:
                check_replica(self.tiers[other], row)
                self.tiers[tier].delete_blob(row.blob_id)
                copy_replica(row, self.tiers[other], self.tiers[tier])
            except (SourceProblem, StorageError) as exc:
                _log.warning("tiered: cannot repair %r on %s: %s", row.blob_id, tier, exc)
                return "failed"
        self._count("repairs")
        return "repaired"

    def _remove_orphans(self, tier: str, grace_seconds: float) -> int:
        def is_orphan(row: BlobRow | None) -> bool:
            # A copy on the other tier is move_due's to delete while the row is flagged.
            return row is None or (row.tier != tier and not row.cleanup)

        try:
            return remove_orphans(self.tiers[tier], self._index, self._locks, is_orphan, grace_seconds)
        except StorageError as exc:
            self._health.failed(tier, exc)
            return 0

    def catch_up(self, max_blobs: int = 1000) -> dict[str, int]:
        """A tiered pool keeps no hints: nothing to catch up (``{}``)."""
        return {}

    def sweep_temp_files(self, older_than_seconds: float) -> int:
        """The members' own leftovers (temp files, crashed uploads); orphan replicas are ``scrub``'s."""
        return sweep_members(self.tiers.values(), older_than_seconds)

    def pool_status(self) -> dict[str, Any]:
        """The pool at a glance (JSON-able); see ``pool_scrub.pool_status_base``."""
        with self._counters_lock:
            counters = dict(self._counters)
        status = pool_status_base("tiered", self._index, self._health.status(),
                                  repairs=counters["repairs"], moves=counters["moves"])
        for tier in self.tiers:
            status["tiers"].setdefault(tier, {"blobs": 0, "bytes": 0})
        status.update(after_seconds=self.after_seconds, hot_max_bytes=self.hot_max_bytes,
                      cleanups_pending=len(self._index.needing_cleanup(_PAGE)))
        return status

    def close(self) -> None:
        """Close the index and both tiers."""
        if self._closed:
            return
        self._closed = True
        self._index.close()
        for backend in self.tiers.values():
            backend.close()
