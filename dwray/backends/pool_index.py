"""The index of a storage pool: which blobs it holds, their block checksums and its pending work.

A pool (``MirrorBackend``, ``TieredBackend``) answers ``list_blobs`` and
``stat_blob`` from here, checks every byte it reads against the checksums kept
here, and records here the work it still owes its members:

``blobs``
    one row per blob: size, block size, the packed CRC-32 of every block,
    creation time, the tier holding it (``""`` for a mirror) and a
    ``cleanup`` flag (a tiered blob moved to cold whose hot copy may remain).
``hints``
    ``(blob_id, member, kind)``: a replica a member missed while it was down,
    ``put`` (copy it there) or ``delete`` (remove it there).
``totals``
    blobs and bytes per tier, kept exact by triggers in the same transactions.
``state``
    small JSON values: the pool kind that made the file, the last scrub.

Blob ids are the only names in the file; no blob data is ever stored here.
The file is SQLite in WAL mode with ``synchronous=FULL`` (a commit survives
power loss), created 0600 in a 0700 folder. One connection is shared by the
process's threads under a lock; every change is one ``BEGIN IMMEDIATE``
transaction. A failure becomes a ``StorageError`` naming the index file
(``StorageFull`` when the disk is full).
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dwray.errors import BlobExists, StorageError, StorageFull

__all__ = ["BlobRow", "Hint", "PoolIndex"]

_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    blob_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    block_size INTEGER NOT NULL,
    crcs BLOB NOT NULL,
    created REAL NOT NULL,
    tier TEXT NOT NULL,
    cleanup INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS blobs_by_age ON blobs (tier, created, blob_id);
CREATE INDEX IF NOT EXISTS blobs_to_clean ON blobs (blob_id) WHERE cleanup = 1;
CREATE TABLE IF NOT EXISTS hints (
    blob_id TEXT NOT NULL,
    member TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('put', 'delete')),
    since REAL NOT NULL,
    PRIMARY KEY (blob_id, member)
);
CREATE INDEX IF NOT EXISTS hints_by_age ON hints (since);
CREATE TABLE IF NOT EXISTS totals (
    tier TEXT PRIMARY KEY,
    blobs INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TRIGGER IF NOT EXISTS blobs_added AFTER INSERT ON blobs BEGIN
    INSERT INTO totals VALUES (NEW.tier, 1, NEW.size)
        ON CONFLICT (tier) DO UPDATE SET blobs = blobs + 1, bytes = bytes + NEW.size;
END;
CREATE TRIGGER IF NOT EXISTS blobs_removed AFTER DELETE ON blobs BEGIN
    UPDATE totals SET blobs = blobs - 1, bytes = bytes - OLD.size WHERE tier = OLD.tier;
END;
CREATE TRIGGER IF NOT EXISTS blobs_moved AFTER UPDATE OF tier ON blobs WHEN OLD.tier != NEW.tier BEGIN
    UPDATE totals SET blobs = blobs - 1, bytes = bytes - OLD.size WHERE tier = OLD.tier;
    INSERT INTO totals VALUES (NEW.tier, 1, NEW.size)
        ON CONFLICT (tier) DO UPDATE SET blobs = blobs + 1, bytes = bytes + NEW.size;
END;
"""
_ROW_COLUMNS = "blob_id, size, block_size, crcs, created, tier, cleanup"
# SQLite caps bound parameters at 32766 (999 before 3.32); stay far below.
_BATCH = 500


@dataclass(frozen=True)
class BlobRow:
    """What the index knows of one blob."""

    blob_id: str
    size: int
    block_size: int
    #: CRC-32 of every block, packed (see ``dwray.backends.pool_blocks``)
    crcs: bytes
    created: float
    tier: str = ""
    #: a copy may remain on the tier the blob left (tiered pools)
    cleanup: bool = False


@dataclass(frozen=True)
class Hint:
    """A replica a member still owes: ``put`` a copy there, or ``delete`` it there."""

    blob_id: str
    member: str
    kind: str
    since: float


def _row(values: tuple[Any, ...]) -> BlobRow:
    blob_id, size, block_size, crcs, created, tier, cleanup = values
    return BlobRow(blob_id, size, block_size, bytes(crcs), created, tier, bool(cleanup))


def _prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """``[low, high)`` of the ids starting with ``prefix`` (ids are ASCII, compared bytewise)."""
    if not prefix:
        return "", None
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _make_private_folder(folder: Path) -> None:
    os.makedirs(folder, mode=0o700, exist_ok=True)
    st = os.stat(folder)
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
        os.chmod(folder, stat.S_IMODE(st.st_mode) & 0o700)


def _make_private_file(path: Path) -> None:
    """Create ``path`` 0600 before SQLite opens it: SQLite gives its -wal and -shm the same mode."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) & 0o177 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class PoolIndex:
    """A pool's SQLite index at ``path``; thread-safe."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))
        self._lock = threading.Lock()
        try:
            _make_private_folder(self.path.parent)
            _make_private_file(self.path)
        except OSError as exc:
            raise StorageError("open", str(self.path), f"cannot create the pool index: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise StorageError("open", str(self.path), f"cannot open the pool index: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self._write("open") as db:
                found = db.execute("PRAGMA user_version").fetchone()[0]
                if found > _SCHEMA_VERSION:
                    raise StorageError("open", str(self.path),
                                       f"the pool index is schema version {found}, newer than this dwray "
                                       f"({_SCHEMA_VERSION})")
                if found < _SCHEMA_VERSION:
                    for statement in _statements(_SCHEMA):
                        db.execute(statement)
                    db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Plumbing ---------------------------------------------------------------

    def _error(self, operation: str, exc: Exception) -> StorageError:
        full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        return (StorageFull if full else StorageError)(operation, str(self.path), f"pool index: {exc}")

    @contextmanager
    def _write(self, operation: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction under the lock; rolled back on any error."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise self._error(operation, exc) from None
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # no transaction left to roll back (COMMIT failed after ending it)
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                if isinstance(exc, sqlite3.Error):
                    raise self._error(operation, exc) from None
                raise

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params)).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from None

    # Blobs ------------------------------------------------------------------

    def get(self, blob_id: str) -> BlobRow | None:
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM blobs WHERE blob_id = ?", (blob_id,))
        return _row(rows[0]) if rows else None

    def exists(self, blob_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM blobs WHERE blob_id = ?", (blob_id,)))

    def nested_conflict(self, blob_id: str) -> str | None:
        """An indexed id that is a folder of ``blob_id`` or a blob under it, if any.

        Pools over filesystems must refuse ``a/b`` next to ``a`` (see
        ``StorageBackend.nested_ids_conflict``) whichever member holds ``a``.
        """
        parts = blob_id.split("/")
        ancestors = ["/".join(parts[:n]) for n in range(1, len(parts))]
        low, high = _prefix_bounds(blob_id + "/")
        marks = ",".join("?" * len(ancestors)) or "NULL"
        rows = self._read(
            f"SELECT blob_id FROM blobs WHERE blob_id IN ({marks}) OR (blob_id >= ? AND blob_id < ?) LIMIT 1",
            (*ancestors, low, high),
        )
        return rows[0][0] if rows else None

    def insert(self, row: BlobRow, hints: Mapping[str, str] | None = None) -> None:
        """Add a blob and replace its hints with ``hints`` (member -> kind); one commit.

        ``BlobExists`` if the id is indexed already.
        """
        try:
            with self._write("put") as db:
                db.execute(f"INSERT INTO blobs ({_ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (row.blob_id, row.size, row.block_size, row.crcs, row.created, row.tier, int(row.cleanup)))
                self._replace_hints(db, row.blob_id, hints or {}, row.created)
        except sqlite3.IntegrityError:
            raise BlobExists(row.blob_id) from None

    def delete(self, blob_id: str, hints: Mapping[str, str] | None = None, now: float = 0.0) -> BlobRow | None:
        """Remove a blob and replace its hints with ``hints``; one commit. The removed row, or
        None (and nothing changed) if it was not indexed."""
        with self._write("delete") as db:
            found = db.execute(f"SELECT {_ROW_COLUMNS} FROM blobs WHERE blob_id = ?", (blob_id,)).fetchall()
            if not found:
                return None
            db.execute("DELETE FROM blobs WHERE blob_id = ?", (blob_id,))
            self._replace_hints(db, blob_id, hints or {}, now)
        return _row(found[0])

    @staticmethod
    def _replace_hints(db: sqlite3.Connection, blob_id: str, hints: Mapping[str, str], since: float) -> None:
        db.execute("DELETE FROM hints WHERE blob_id = ?", (blob_id,))
        db.executemany("INSERT INTO hints (blob_id, member, kind, since) VALUES (?, ?, ?, ?)",
                       [(blob_id, member, kind, since) for member, kind in hints.items()])

    def ids(self, prefix: str = "", page: int = 1000) -> Iterator[str]:
        """Indexed ids starting with ``prefix``, sorted; read ``page`` at a time."""
        low, high = _prefix_bounds(prefix)
        after, inclusive = low, True
        while True:
            rows = self._read(
                f"SELECT blob_id FROM blobs WHERE blob_id {'>=' if inclusive else '>'} ? "
                f"{'' if high is None else 'AND blob_id < ?'} ORDER BY blob_id LIMIT ?",
                (after, page) if high is None else (after, high, page),
            )
            yield from (blob_id for (blob_id,) in rows)
            if len(rows) < page:
                return
            after, inclusive = rows[-1][0], False

    def rows_after(self, cursor: str, limit: int) -> list[BlobRow]:
        """Up to ``limit`` rows with ids after ``cursor``, in id order."""
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM blobs WHERE blob_id > ? ORDER BY blob_id LIMIT ?",
                          (cursor, limit))
        return [_row(values) for values in rows]

    def rows_for(self, blob_ids: Iterable[str]) -> dict[str, BlobRow]:
        """The rows of those of ``blob_ids`` that are indexed."""
        wanted = list(blob_ids)
        found: dict[str, BlobRow] = {}
        for at in range(0, len(wanted), _BATCH):
            batch = wanted[at:at + _BATCH]
            marks = ",".join("?" * len(batch))
            for values in self._read(f"SELECT {_ROW_COLUMNS} FROM blobs WHERE blob_id IN ({marks})", batch):
                found[values[0]] = _row(values)
        return found

    def oldest(self, tier: str, limit: int, after: tuple[float, str] | None = None) -> list[BlobRow]:
        """Up to ``limit`` rows of ``tier``, oldest first, after ``(created, blob_id)``."""
        created, blob_id = after if after is not None else (float("-inf"), "")
        rows = self._read(
            f"SELECT {_ROW_COLUMNS} FROM blobs WHERE tier = ? AND (created, blob_id) > (?, ?) "
            "ORDER BY created, blob_id LIMIT ?",
            (tier, created, blob_id, limit),
        )
        return [_row(values) for values in rows]

    def set_tier(self, blob_id: str, tier: str, *, cleanup: bool) -> None:
        """Record that a blob now lives on ``tier``; one commit."""
        with self._write("move") as db:
            db.execute("UPDATE blobs SET tier = ?, cleanup = ? WHERE blob_id = ?", (tier, int(cleanup), blob_id))

    def cleaned(self, blob_id: str) -> None:
        """Clear a blob's cleanup flag: no copy remains on the tier it left."""
        with self._write("move") as db:
            db.execute("UPDATE blobs SET cleanup = 0 WHERE blob_id = ?", (blob_id,))

    def needing_cleanup(self, limit: int) -> list[BlobRow]:
        rows = self._read(f"SELECT {_ROW_COLUMNS} FROM blobs WHERE cleanup = 1 ORDER BY blob_id LIMIT ?", (limit,))
        return [_row(values) for values in rows]

    def totals(self) -> dict[str, tuple[int, int]]:
        """``tier -> (blobs, bytes)``; a mirror's single tier is ``""``."""
        return {tier: (blobs, size) for tier, blobs, size in self._read("SELECT tier, blobs, bytes FROM totals")}

    # Hints ------------------------------------------------------------------

    def hints(self, limit: int, members: Iterable[str]) -> list[Hint]:
        """Up to ``limit`` hints of ``members``, oldest first."""
        names = list(members)
        if not names:
            return []
        marks = ",".join("?" * len(names))
        rows = self._read(f"SELECT blob_id, member, kind, since FROM hints WHERE member IN ({marks}) "
                          "ORDER BY since, blob_id LIMIT ?", (*names, limit))
        return [Hint(*values) for values in rows]

    def hint(self, blob_id: str, member: str) -> Hint | None:
        rows = self._read("SELECT blob_id, member, kind, since FROM hints WHERE blob_id = ? AND member = ?",
                          (blob_id, member))
        return Hint(*rows[0]) if rows else None

    def drop_hints(self, blob_id: str, members: Iterable[str]) -> None:
        """Forget what ``members`` owed for ``blob_id``; one commit (none if ``members`` is empty)."""
        names = list(members)
        if not names:
            return
        with self._write("hint") as db:
            db.executemany("DELETE FROM hints WHERE blob_id = ? AND member = ?", [(blob_id, name) for name in names])

    def hint_counts(self) -> dict[str, int]:
        """Pending hints per member."""
        return {member: count for member, count in self._read("SELECT member, COUNT(*) FROM hints GROUP BY member")}

    # State ------------------------------------------------------------------

    def state(self, key: str) -> Any:
        rows = self._read("SELECT value FROM state WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_state(self, key: str, value: Any) -> None:
        with self._write("state") as db:
            db.execute("INSERT INTO state (key, value) VALUES (?, ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                       (key, json.dumps(value, sort_keys=True)))

    def claim(self, kind: str) -> None:
        """Record which kind of pool owns the file; refuse a file another kind made."""
        with self._write("open") as db:
            rows = db.execute("SELECT value FROM state WHERE key = 'kind'").fetchall()
            if not rows:
                db.execute("INSERT INTO state (key, value) VALUES ('kind', ?)", (json.dumps(kind),))
                return
        found = json.loads(rows[0][0])
        if found != kind:
            raise StorageError("open", str(self.path), f"this pool index belongs to a {found} pool, not a {kind} pool")


def _statements(script: str) -> list[str]:
    """Split a script at the semicolons that end a statement (triggers hold their own)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending)
            pending = ""
    return statements
