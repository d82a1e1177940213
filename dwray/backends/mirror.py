"""A pool that keeps a replica of every blob on several member backends.

put
    streams the chunks to every member at once (``pool_fanout``), computing
    the block CRCs once. It is acknowledged when at least ``write_quorum``
    members (default: all) made their replica durable: then the index row is
    committed (one commit, which also records a hint for every member that
    missed the blob), then ``put_blob`` returns. Short of the quorum, the
    replicas written are deleted and ``StorageError`` names every member that
    failed and why. A member that failed is skipped for
    ``member_retry_after`` seconds, then tried again.
get
    reads from the first member that is up, widened to whole blocks and
    checked against the CRCs; a missing, corrupt or failing replica sends the
    read to the next member, and the bad replica is repaired in the
    background from a good one (read repair, see ``pool_repair``). Every
    replica corrupt: ``IntegrityError``, never wrong bytes.
delete
    removes the index row (recording a ``delete`` hint for every member) in
    one commit, then the replicas, then the hints of the members that
    deleted theirs: a member that is down catches up later.
catch-up
    a background thread (every ``catch_up_interval`` seconds) and
    ``catch_up()`` copy missed blobs to members that are back and apply
    missed deletes. Copies are checked block by block on the way.
scrub
    ``scrub()`` reads every replica of the blobs after a cursor, repairs what
    it can and, when a pass ends, removes replicas the index does not know
    (a crash between the member puts and the index commit leaves those)
    once they are older than a grace period.

``list_blobs`` and ``stat_blob`` answer from the index alone. One process
writes through a pool at a time: its per-blob locks and its index check are
what make one of several racing puts of an id win. The pool closes its
members when it is closed.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from dwray.backends.base import (
    BytesLike,
    StorageBackend,
    validate_blob_id,
)
from dwray.backends.pool_base import IndexedPool
from dwray.backends.pool_blocks import ReplicaBad, check_replica, read_verified
from dwray.backends.pool_fanout import fan_out_put
from dwray.backends.pool_index import BlobRow, PoolIndex
from dwray.backends.pool_members import (
    BlobLocks,
    MemberHealth,
    check_members,
    check_number,
    sweep_members,
)
from dwray.backends.pool_repair import ReplicaRepairer
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
    StorageFull,
)

__all__ = ["MirrorBackend"]

_log = logging.getLogger(__name__)

_KiB = 1024


class MirrorBackend(IndexedPool):
    """Every blob on several members, checked on read, repaired from a good replica."""

    name = "mirror"

    def __init__(self, members: Mapping[str, StorageBackend], index_path: str | os.PathLike[str], *,
                 write_quorum: int | None = None, block_size: int = 64 * _KiB,
                 member_retry_after: float = 5.0, catch_up_interval: float = 5.0) -> None:
        check_members(members, block_size)
        if write_quorum is None:
            write_quorum = len(members)
        check_number("write_quorum", write_quorum, minimum=1, integer=True)
        if write_quorum > len(members):
            raise InvalidArgument(f"write_quorum {write_quorum} is more than the {len(members)} members")
        check_number("member_retry_after", member_retry_after, minimum=0)
        check_number("catch_up_interval", catch_up_interval, minimum=0.01)
        self.members: dict[str, StorageBackend] = dict(members)
        self.write_quorum = write_quorum
        self.block_size = block_size
        self.catch_up_interval = float(catch_up_interval)
        self.durable = all(member.durable for member in self.members.values())
        self.nested_ids_conflict = any(member.nested_ids_conflict for member in self.members.values())
        self._index = PoolIndex(index_path)
        try:
            self._index.claim("mirror")
        except BaseException:
            self._index.close()
            raise
        self._health = MemberHealth(self.members, member_retry_after)
        self._locks = BlobLocks()
        self._executor = ThreadPoolExecutor(max_workers=min(32, 4 * len(self.members)),
                                            thread_name_prefix="dwray-mirror")
        self._repairs = ReplicaRepairer(self.members, self._index, self._health, self._locks,
                                        self.catch_up_interval)
        self._closed = False

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(members={list(self.members)!r}, write_quorum={self.write_quorum}, "
                f"index={str(self._index.path)!r})")

    # Writes -----------------------------------------------------------------

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        validate_blob_id(blob_id)
        with self._locks.hold(blob_id):
            if self._index.exists(blob_id):
                raise BlobExists(blob_id)
            if self.nested_ids_conflict:
                other = self._index.nested_conflict(blob_id)
                if other is not None:
                    raise InvalidBlobId(blob_id, f"{other!r} is a blob, so the two cannot both be blobs")
            up, skipped = self._health.split(self.members)
            if len(up) < self.write_quorum:  # better to try a member that may be back than to fail for sure
                up, skipped = list(self.members), []
            result = fan_out_put({name: self.members[name] for name in up}, blob_id, chunks,
                                 block_size=self.block_size, executor=self._executor, needed=self.write_quorum)
            for name in result.stored:
                self._health.ok(name)
            for name, failure in result.failures.items():
                if isinstance(failure, StorageError):
                    self._health.failed(name, failure)
            refused = [f for f in result.failures.values() if isinstance(f, InvalidBlobId)]
            if refused or len(result.stored) < self.write_quorum:
                self._discard(blob_id, result.stored)
                if refused:
                    raise refused[0]
                raise self._quorum_error(blob_id, result.stored, result.failures, skipped)
            hints = {name: "put" for name in [*result.failures, *skipped]}
            row = BlobRow(blob_id, result.size, self.block_size, result.crcs, time.time())
            try:
                self._index.insert(row, hints)
            except BaseException:
                self._discard(blob_id, result.stored)
                raise
            return result.size

    def _quorum_error(self, blob_id: str, stored: list[str], failures: Mapping[str, Exception],
                      skipped: list[str]) -> StorageError:
        reasons = [f"{name}: {failure}" for name, failure in failures.items()]
        reasons += [f"{name}: skipped, it failed lately ({self._health.reason(name)})" for name in skipped]
        reason = (f"stored on {len(stored)} of {len(self.members)} members, {self.write_quorum} needed; "
                  + "; ".join(reasons))
        full = failures and all(isinstance(f, StorageFull) for f in failures.values())
        return (StorageFull if full else StorageError)("put", blob_id, reason)

    def _discard(self, blob_id: str, names: Iterable[str]) -> None:
        for name in names:
            try:
                self.members[name].delete_blob(blob_id)
            except Exception as exc:  # noqa: BLE001 - an orphan, which the scrub removes
                _log.warning("mirror: could not remove replica %r from member %s: %s", blob_id, name, exc)

    def delete_blob(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        with self._locks.hold(blob_id):
            if self._index.delete(blob_id, {name: "delete" for name in self.members}, time.time()) is None:
                return
            up, _ = self._health.split(self.members)
            futures = {name: self._executor.submit(self.members[name].delete_blob, blob_id) for name in up}
            done = []
            for name, future in futures.items():
                failure = future.exception()
                if failure is None:
                    done.append(name)
                elif isinstance(failure, StorageError):
                    self._health.failed(name, failure)
                else:
                    _log.warning("mirror: member %s could not delete %r: %s", name, blob_id, failure)
            self._index.drop_hints(blob_id, done)

    # Reads ------------------------------------------------------------------

    def _read_within(self, row: BlobRow, start: int, end: int) -> bytes:
        problems: dict[str, Exception] = {}
        for name in self._health.order(self.members):
            try:
                data = read_verified(self.members[name], row, start, end)
            except ReplicaBad as bad:
                problems[name] = bad
                continue
            except StorageError as exc:
                self._health.failed(name, exc)
                problems[name] = exc
                continue
            self._health.ok(name)
            bad_replicas = [other for other, problem in problems.items() if isinstance(problem, ReplicaBad)]
            if bad_replicas:
                self._repairs.schedule(row.blob_id, bad_replicas)
            return data
        if not self._index.exists(row.blob_id):
            raise BlobNotFound(row.blob_id)  # deleted while it was being read
        self._no_good_copy(row, problems, "member")

    # Repairs and catch-up ---------------------------------------------------

    def catch_up(self, max_blobs: int = 1000) -> dict[str, int]:
        """Apply up to ``max_blobs`` hints: copy what members missed, delete what they kept.

        Tries every member, even one that failed lately (this is how one comes
        back). Returns ``{"copied", "deleted", "checked", "failed", "pending"}``:
        replicas copied, replicas deleted, hints found already satisfied,
        hints that could not be applied now, and hints still pending.
        """
        check_number("max_blobs", max_blobs, minimum=1, integer=True)
        return self._repairs.catch_up(max_blobs, probe_down=True)

    # Scrub and status -------------------------------------------------------

    def scrub(self, cursor: str = "", max_bytes: int = 64 * 1024 * 1024,
              grace_seconds: float = 3600) -> dict[str, Any]:
        """Check every replica of the blobs after ``cursor`` (in id order) until about
        ``max_bytes`` were read, repairing bad replicas from good ones; a call that
        ends a pass also removes orphan replicas older than ``grace_seconds``.

        Returns ``{"cursor", "done", "blobs", "bytes", "corrupt", "missing",
        "repaired", "unrepairable", "orphans_removed"}``; call again with the
        returned cursor until ``done``.
        """
        check_scrub_args(cursor, max_bytes, grace_seconds)
        run = ScrubRun(self._index, cursor, max_bytes)
        failing: set[str] = set()  # members that failed in this call are not asked again
        for row in run.rows():
            good, bad = [], {}
            for name in self.members:
                if name in failing:
                    continue
                try:
                    run.bytes += check_replica(self.members[name], row)
                except ReplicaBad as problem:
                    bad[name] = problem.kind
                except StorageError as exc:
                    self._health.failed(name, exc)
                    failing.add(name)
                else:
                    good.append(name)
            if not bad:
                continue
            with self._locks.hold(row.blob_id):
                if self._index.get(row.blob_id) != row:
                    continue  # deleted while it was being read: nothing was wrong
                run.count_bad(bad.values())
                if good:
                    run.repaired += self._repairs.repair(row, list(bad))
                else:
                    run.unrepairable.append(row.blob_id)
        if run.done:
            run.orphans_removed = sum(self._remove_orphans(name, grace_seconds) for name in self.members)
        return run.finish()

    def _remove_orphans(self, name: str, grace_seconds: float) -> int:
        try:
            return remove_orphans(self.members[name], self._index, self._locks, lambda row: row is None, grace_seconds)
        except StorageError as exc:
            self._health.failed(name, exc)
            return 0

    def sweep_temp_files(self, older_than_seconds: float) -> int:
        """The members' own leftovers (temp files, crashed uploads); orphan replicas are ``scrub``'s."""
        return sweep_members(self.members.values(), older_than_seconds)

    def pool_status(self) -> dict[str, Any]:
        """The pool at a glance (JSON-able); see ``pool_scrub.pool_status_base``."""
        hints = self._index.hint_counts()
        members = self._health.status()
        for name, status in members.items():
            status["hints"] = hints.get(name, 0)
        counts = self._repairs.counts()
        status = pool_status_base("mirror", self._index, members, repairs=counts["repairs"], moves=0)
        status.update(write_quorum=self.write_quorum, copied=counts["copied"], repairs_queued=counts["queued"])
        return status

    def close(self) -> None:
        """Stop the background thread, then close the index and the members."""
        if self._closed:
            return
        self._closed = True
        self._repairs.close()
        self._executor.shutdown(wait=True)
        self._index.close()
        for member in self.members.values():
            member.close()
