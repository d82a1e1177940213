"""The audit log's writer: append-only entries in SQLite, a Merkle root per group commit, signed.

One writer per data dir (the warehouse's process, or the ``service.audit``
plugin on Ray). Each ``append`` is durable before it returns: concurrent
callers are grouped (leader/follower, like the catalog's group commit) into
one SQLite transaction, so one fsync (WAL, ``synchronous=FULL``) serves them
all. The same transaction stores a checkpoint of the new tree signed with
Ed25519; so in a log nobody touched, the newest signed checkpoint covers
every entry, and an entry beyond it was not written by the writer.

Checkpoints are kept in the log for good every ``checkpoint_every`` entries
(the newest one always), and copied to ``copy_dir`` (outside the data dir)
every ``copy_every`` entries or ``copy_interval`` seconds and on close.

Tables: ``entries(seq, record, leaf)`` where ``seq`` is the leaf index
(from 0), ``record`` the entry's canonical JSON (it repeats ``seq``, so a
moved record is caught) and ``leaf`` its RFC 6962 leaf hash, kept so that
proofs need no re-hashing; ``checkpoints(size, body, signature, key_id, kept)``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dwray.core.audit.checkpoints import (
    Checkpoint,
    CheckpointSigner,
    SignedCheckpoint,
    canonical_json,
    write_checkpoint_copy,
)
from dwray.core.audit.locations import AuditLocations
from dwray.core.audit.merkle import CompactRange, leaf_hash
from dwray.core.audit.records import make_record
from dwray.core.private_files import make_private_dir, tighten
from dwray.core.sqlite_store import SqliteStore
from dwray.errors import CatalogError

__all__ = ["AuditLog", "SCHEMA"]

_log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE entries (seq INTEGER PRIMARY KEY, record TEXT NOT NULL, leaf BLOB NOT NULL);
CREATE TABLE checkpoints (size INTEGER PRIMARY KEY, body TEXT NOT NULL, signature BLOB NOT NULL,
                          key_id TEXT NOT NULL, kept INTEGER NOT NULL);
"""


class AuditLog(SqliteStore):
    """The writer of one data dir's audit log (``AuditLocations``)."""

    label: ClassVar[str] = "audit log"
    migrations: ClassVar[tuple[str, ...]] = (SCHEMA,)

    def __init__(self, locations: AuditLocations, *, checkpoint_every: int = 64, copy_every: int = 1000,
                 copy_interval: float = 60.0) -> None:
        make_private_dir(locations.folder)
        tighten(locations.folder, 0o700, "audit log folder")
        self.locations = locations
        self._signer = CheckpointSigner(locations.signing_key)
        super().__init__(locations.database)
        self._checkpoint_every = checkpoint_every
        self._copy_every = copy_every
        self._copy_interval = copy_interval
        self._tree = CompactRange()
        for (leaf,) in self._read("SELECT leaf FROM entries ORDER BY seq"):
            self._tree.append(bytes(leaf))
        kept = self._read("SELECT max(size) FROM checkpoints WHERE kept = 1")[0][0]
        self._last_kept = kept or 0
        self._latest: SignedCheckpoint | None = None
        latest = self._read("SELECT body, signature, key_id FROM checkpoints ORDER BY size DESC LIMIT 1")
        if latest:
            self._latest = _signed(*latest[0])
        self._check_head()
        self._copied_size = -1  # nothing copied by this writer yet: the first commit copies
        self._copied_at = 0.0
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._leading = False
        self.commits = 0  # group commits made by this writer (each one fsync)

    def _check_head(self) -> None:
        """Refuse a log whose entries are not those its newest signed checkpoint covers.

        Appending would sign whatever an intruder changed or added; the log is left as found
        for ``dw audit verify`` to name what is wrong.
        """
        latest = self._latest
        if latest is None and self._tree.size == 0:
            return
        fits = (latest is not None and latest.verify(self._signer.public_key)
                and latest.checkpoint.log_id == self.locations.log_id
                and latest.checkpoint.size == self._tree.size and latest.checkpoint.root == self._tree.root())
        if latest is not None and latest.checkpoint.log_id != self.locations.log_id:
            super().close()
            raise CatalogError(f"the audit log {self.locations.database} is the log {latest.checkpoint.log_id!r}, "
                               f"not {self.locations.log_id!r}: if the data dir was moved, set [audit] log_id = "
                               f"\"{latest.checkpoint.log_id}\"")
        if not fits:
            super().close()
            raise CatalogError(f"the audit log {self.locations.database} does not match its newest signed "
                               "checkpoint: it was changed outside dwray; run 'dw audit verify' to see where")

    def __repr__(self) -> str:
        return f"AuditLog({str(self.locations.folder)!r})"

    def kept_checkpoints(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """The checkpoints kept for good (every ``checkpoint_every`` entries) covering more than
        ``after`` entries, oldest first, at most ``limit``: each its body's fields, key id and signature
        (hex). Public data: what ``dw audit verify`` and an outside monitor check."""
        rows = self._read("SELECT body, signature, key_id FROM checkpoints WHERE kept = 1 AND size > ? "
                          "ORDER BY size LIMIT ?", (int(after), max(0, int(limit))))
        return [{**json.loads(body), "key_id": key_id, "signature": bytes(signature).hex()}
                for body, signature, key_id in rows]

    @property
    def size(self) -> int:
        return self._tree.size

    def append(self, fields: Mapping[str, Any]) -> int:
        """Append one record (``records.make_record``'s fields); return its seq once it is durable."""
        return self.append_many([fields])[0]

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        """Append records in order, durable and signed before this returns; their seqs.

        Callers that arrive while a commit is running are committed together
        by whichever of them leads next (group commit).
        """
        pending = _Pending([make_record(fields) for fields in records])
        with self._queue_lock:
            self._queue.append(pending)
            lead = not self._leading
            self._leading = True
        if lead:
            self._lead()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.seqs

    def close(self) -> None:
        """Copy the newest checkpoint out (if not yet), then close the database."""
        try:
            if self._latest is not None and self._copied_size != self._latest.checkpoint.size:
                write_checkpoint_copy(self.locations.copy_dir, self._latest)
        finally:
            super().close()

    def _lead(self) -> None:
        while True:
            with self._queue_lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._leading = False
                    return
            try:
                seqs = self._commit([record for pending in batch for record in pending.records])
            except BaseException as exc:  # noqa: BLE001 - every waiter of the batch gets its error
                for pending in batch:
                    pending.error = exc
                    pending.done.set()
                continue
            start = 0
            for pending in batch:
                pending.seqs = seqs[start:start + len(pending.records)]
                start += len(pending.records)
                pending.done.set()
            self._maybe_copy()

    def _commit(self, records: list[dict[str, Any]]) -> list[int]:
        tree = self._tree.copy()  # the writer's tree grows only once the batch is committed
        rows = []
        for record in records:
            record["seq"] = tree.size
            text = canonical_json(record)
            leaf = leaf_hash(text.encode())
            rows.append((tree.size, text, leaf))
            tree.append(leaf)
        signed = self._signer.sign(Checkpoint(self.locations.log_id, tree.size, tree.root(), time.time()))
        keep = tree.size // self._checkpoint_every > self._last_kept // self._checkpoint_every
        with self._write() as db:
            db.executemany("INSERT INTO entries (seq, record, leaf) VALUES (?, ?, ?)", rows)
            db.execute("DELETE FROM checkpoints WHERE kept = 0")
            db.execute("INSERT INTO checkpoints (size, body, signature, key_id, kept) VALUES (?, ?, ?, ?, ?)",
                       (tree.size, signed.checkpoint.body(), signed.signature, signed.key_id, int(keep)))
        self._tree = tree
        self._latest = signed
        self.commits += 1
        if keep:
            self._last_kept = tree.size
        return [row[0] for row in rows]

    def _maybe_copy(self) -> None:
        latest = self._latest
        if latest is None:
            return
        due = (self._copied_size < 0 or latest.checkpoint.size - self._copied_size >= self._copy_every
               or time.monotonic() - self._copied_at >= self._copy_interval)
        if not due:
            return
        try:
            write_checkpoint_copy(self.locations.copy_dir, latest)
        except OSError as exc:
            # The entries are durable and signed in the log; a copy that fails is retried at the next commit.
            _log.warning("cannot copy audit checkpoint %d to %s: %s", latest.checkpoint.size,
                         self.locations.copy_dir, exc.strerror or exc)
            return
        self._copied_size = latest.checkpoint.size
        self._copied_at = time.monotonic()


def _signed(body: str, signature: bytes, key_id: str) -> SignedCheckpoint:
    return SignedCheckpoint.from_json(canonical_json({"checkpoint": json.loads(body),
                                                      "signature": bytes(signature).hex(), "key_id": key_id}))


class _Pending:
    __slots__ = ("done", "error", "records", "seqs")

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self.records = records
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.seqs: list[int] = []
