"""Keeping a mirror's replicas complete: read repair, hint catch-up, copies from good replicas.

``ReplicaRepairer`` owns the mirror's background thread. It wakes for every
read repair a read asks for (a bounded queue: past ``REPAIR_QUEUE`` blobs the
scrub finds them instead) and every ``catch_up_interval`` seconds to apply
the hints of members that are up again. Every repair and every hint is
applied under the blob's lock, after reading its index row again, so none of
them races a put or a delete of the same blob. Copies stream a replica from
a good member into the bad one, checked block by block on the way (a source
that turns out bad is abandoned and the target keeps nothing).
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping

from dwray.backends.base import StorageBackend
from dwray.backends.pool_blocks import (
    ReplicaBad,
    SourceProblem,
    check_replica,
    copy_replica,
)
from dwray.backends.pool_index import BlobRow, Hint, PoolIndex
from dwray.backends.pool_members import BlobLocks, MemberHealth
from dwray.errors import BlobExists, StorageError

__all__ = ["REPAIR_QUEUE", "ReplicaRepairer"]

_log = logging.getLogger(__name__)

#: blobs that may wait for a read repair; more are left to the scrub
REPAIR_QUEUE = 1024
_BACKGROUND_HINTS = 1000


class ReplicaRepairer:
    """Read repair, catch-up and the background thread that runs them, for one mirror."""

    def __init__(self, members: Mapping[str, StorageBackend], index: PoolIndex, health: MemberHealth,
                 locks: BlobLocks, catch_up_interval: float) -> None:
        self._members = members
        self._index = index
        self._health = health
        self._locks = locks
        self._interval = catch_up_interval
        self._queue: OrderedDict[str, set[str]] = OrderedDict()
        self._lock = threading.Lock()
        self._counts = {"repairs": 0, "copied": 0}
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dwray-mirror-repairs", daemon=True)
        self._thread.start()

    def counts(self) -> dict[str, int]:
        """``{"repairs", "copied", "queued"}``: replicas repaired and copied by catch-up so far,
        blobs waiting for a read repair."""
        with self._lock:
            return {**self._counts, "queued": len(self._queue)}

    def close(self) -> None:
        """Stop the background thread (a copy in progress finishes first)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    # Read repair ------------------------------------------------------------

    def schedule(self, blob_id: str, names: Iterable[str]) -> None:
        """Ask the background thread to repair ``blob_id``'s replicas on ``names``."""
        with self._lock:
            if blob_id not in self._queue and len(self._queue) >= REPAIR_QUEUE:
                _log.warning("mirror: read-repair queue full; %r is left to the scrub", blob_id)
                return
            self._queue.setdefault(blob_id, set()).update(names)
        self._wake.set()

    def repair(self, row: BlobRow, names: Iterable[str]) -> int:
        """Make the replicas on ``names`` good again, copying from a good one; return how
        many were fixed. The caller holds the blob's lock and has just read ``row``."""
        fixed = 0
        for name in names:
            target = self._members[name]
            try:
                try:
                    check_replica(target, row)
                    continue  # good already (repaired meanwhile, or the failure was passing)
                except ReplicaBad as bad:
                    if bad.kind == "corrupt":
                        target.delete_blob(row.blob_id)
                fixed += self._copy_to(row, name)
            except StorageError as exc:
                self._health.failed(name, exc)
                _log.warning("mirror: cannot repair %r on %s: %s", row.blob_id, name, exc)
        if fixed:
            with self._lock:
                self._counts["repairs"] += fixed
        return fixed

    def _copy_to(self, row: BlobRow, target_name: str) -> bool:
        """Copy a good replica to ``target_name`` from any other member; False if none could
        be read. ``StorageError`` if the target fails."""
        target = self._members[target_name]
        for name in self._health.order(n for n in self._members if n != target_name):
            try:
                try:
                    copy_replica(row, self._members[name], target)
                except BlobExists:  # left by an earlier, interrupted copy: keep it if good
                    try:
                        check_replica(target, row)
                        return True
                    except ReplicaBad:
                        target.delete_blob(row.blob_id)
                    copy_replica(row, self._members[name], target)
            except SourceProblem as problem:
                _log.info("mirror: cannot copy %r from %s: %s", row.blob_id, name, problem)
                continue
            except StorageError as exc:
                self._health.failed(target_name, exc)
                raise
            self._health.ok(target_name)
            if self._index.hint(row.blob_id, target_name) is not None:
                self._index.drop_hints(row.blob_id, [target_name])
            return True
        return False

    def _run_queued(self) -> None:
        while not self._closed.is_set():
            with self._lock:
                if not self._queue:
                    return
                blob_id, names = self._queue.popitem(last=False)
            try:
                with self._locks.hold(blob_id):
                    row = self._index.get(blob_id)
                    if row is not None:
                        self.repair(row, sorted(names))
            except Exception as exc:  # noqa: BLE001 - the scrub will find it again
                _log.warning("mirror: read repair of %r failed: %s", blob_id, exc)

    # Catch-up ---------------------------------------------------------------

    def catch_up(self, max_blobs: int, *, probe_down: bool) -> dict[str, int]:
        """Apply up to ``max_blobs`` hints, oldest first (see ``MirrorBackend.catch_up``).
        Without ``probe_down``, members that failed lately are left for later."""
        result = {"copied": 0, "deleted": 0, "checked": 0, "failed": 0, "pending": 0}
        given_up: set[str] = set()
        # Hints of members that are no longer configured stay until one is back.
        names = [name for name in self._members if probe_down or self._health.is_up(name)]
        for hint in self._index.hints(max_blobs, names):
            if self._closed.is_set():
                break
            member = hint.member
            if member in given_up:
                continue
            try:
                with self._locks.hold(hint.blob_id):
                    outcome = self._apply(hint)
            except StorageError as exc:
                self._health.failed(member, exc)
                given_up.add(member)
                result["failed"] += 1
                continue
            if outcome in result:
                result[outcome] += 1
        result["pending"] = sum(self._index.hint_counts().values())
        return result

    def _apply(self, hint: Hint) -> str:
        """Apply one hint (the caller holds the blob's lock); the outcome's name."""
        if self._index.hint(hint.blob_id, hint.member) != hint:
            return "stale"  # replaced by a put or a delete meanwhile
        row = self._index.get(hint.blob_id)
        target = self._members[hint.member]
        if hint.kind == "delete" or row is None:
            if row is None:
                target.delete_blob(hint.blob_id)
            self._health.ok(hint.member)
            self._index.drop_hints(hint.blob_id, [hint.member])
            return "deleted" if row is None else "stale"
        try:
            check_replica(target, row)
        except ReplicaBad as bad:
            if bad.kind == "corrupt":
                target.delete_blob(row.blob_id)
        else:
            self._health.ok(hint.member)
            self._index.drop_hints(hint.blob_id, [hint.member])
            return "checked"
        if not self._copy_to(row, hint.member):
            _log.warning("mirror: no good replica of %r to copy to %s", hint.blob_id, hint.member)
            return "failed"
        with self._lock:
            self._counts["copied"] += 1
        return "copied"

    # The background thread ----------------------------------------------------

    def _run(self) -> None:
        next_catch_up = time.monotonic() + self._interval
        while not self._closed.is_set():
            self._wake.wait(max(0.0, next_catch_up - time.monotonic()))
            self._wake.clear()
            if self._closed.is_set():
                return
            self._run_queued()
            if time.monotonic() >= next_catch_up:
                try:
                    if self._index.hint_counts():
                        self.catch_up(_BACKGROUND_HINTS, probe_down=False)
                except Exception as exc:  # noqa: BLE001 - try again next interval
                    _log.warning("mirror: catch-up failed: %s", exc)
                next_catch_up = time.monotonic() + self._interval
