"""Blobs in one SQLite file, as chunk rows, one transaction per put (stdlib ``sqlite3`` only).

Layout (see ``dwray.backends.chunked_rows``): a row per blob in
``dwray_blobs`` and its bytes in ``dwray_blob_chunks`` rows of ``chunk_size``
bytes. A put inserts the blob row first, under ``BEGIN IMMEDIATE`` (SQLite's
write lock), so a taken id is refused before any chunk is read; then it streams
the chunk rows and commits. Until the commit nothing of it is visible, and a
failure or a kill -9 part-way leaves nothing: SQLite rolls the transaction
back. Of racing puts of one id exactly one wins, since writers are serialised.

Durability: WAL journal, ``synchronous = FULL`` by default (the WAL is fsynced
at every commit; ``NORMAL`` survives a crash of the process but may lose the
last commits on power loss; ``OFF`` is refused). The file and its ``-wal`` and
``-shm`` companions are 0600 (SQLite gives them the file's mode) in a folder
created 0700.

Concurrency: connections are pooled, one per thread at a time. Readers never
wait for writers (WAL snapshots). SQLite has one writer at a time: writers in
this process queue on a lock (fairly, without timing out), writers in other
processes on SQLite's busy handler for up to ``busy_timeout_ms``. A put holds
the write lock while it pulls its stream, so a slow producer delays other
writers; the remote backends do not have that limit.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from dwray.backends.base import (
    BlobStat,
    BytesLike,
    StorageBackend,
    validate_blob_id,
    validate_prefix,
)
from dwray.backends.chunked_rows import (
    DEFAULT_CHUNK_SIZE,
    LIST_PAGE,
    check_chunk_size,
    fixed_chunks,
    join_range,
    prefix_bounds,
)
from dwray.errors import (
    BlobExists,
    BlobNotFound,
    DurabilityError,
    InvalidArgument,
    StorageError,
    StorageFull,
)

__all__ = ["SqliteBackend"]

_log = logging.getLogger(__name__)

_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_FILE_MODE = 0o600
_FOLDER_MODE = 0o700
_IDLE_CONNECTIONS = 8
_NO_END = 1 << 62
_SQLITE_FULL = 13
_SQLITE_IOERR_FSYNC = 1034
# After a checkpoint, trim the WAL back to this size (a 1 GiB put must not leave a 1 GiB WAL).
_WAL_SIZE_LIMIT = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dwray_blobs (
    blob_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    mtime REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dwray_blob_chunks (
    blob_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (blob_id, seq)
);
"""

# One statement, so one snapshot: the blob row and only the chunk rows that cover [start, end).
_READ_RANGE = """
SELECT b.size, b.chunk_size, c.seq, c.data
FROM dwray_blobs AS b LEFT JOIN dwray_blob_chunks AS c
  ON c.blob_id = b.blob_id
 AND :start < min(:end, b.size)
 AND c.seq BETWEEN :start / b.chunk_size AND (min(:end, b.size) - 1) / b.chunk_size
WHERE b.blob_id = :blob_id
ORDER BY c.seq
"""


def _storage_error(operation: str, target: str, exc: sqlite3.Error) -> StorageError:
    """Translate a ``sqlite3`` error into the dwray error for ``operation`` on ``target``."""
    code = getattr(exc, "sqlite_errorcode", None)
    reason = f"{getattr(exc, 'sqlite_errorname', type(exc).__name__)}: {exc}"
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return StorageFull(operation, target, reason)
    if code == _SQLITE_IOERR_FSYNC:
        return DurabilityError(operation, target, reason)
    return StorageError(operation, target, reason)


def _create_private_file(path: str) -> None:
    """Make ``path``'s folder (0700) and the file (0600) before SQLite opens it with its default 0644."""
    folder = os.path.dirname(path)
    if not os.path.isdir(folder):
        os.makedirs(folder, mode=_FOLDER_MODE, exist_ok=True)
        os.chmod(folder, _FOLDER_MODE)  # makedirs' mode is masked by the umask
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StorageError("open", path, "is not a regular file")
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, _FILE_MODE)
        elif st.st_mode & 0o077:
            _log.warning("SQLite blob store %s is mode %o and owned by uid %d, not by this process: others "
                         "may read it", path, stat.S_IMODE(st.st_mode), st.st_uid)
    finally:
        os.close(fd)


class SqliteBackend(StorageBackend):
    """Blobs as chunk rows in the SQLite file ``path`` (WAL, ``synchronous = FULL``)."""

    name = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 busy_timeout_ms: int = 10000, synchronous: str = "FULL") -> None:
        self.chunk_size = check_chunk_size(chunk_size)
        if not isinstance(busy_timeout_ms, int) or isinstance(busy_timeout_ms, bool) or busy_timeout_ms < 0:
            raise InvalidArgument(f"busy_timeout_ms must be an int >= 0, not {busy_timeout_ms!r}")
        if not isinstance(synchronous, str) or synchronous.upper() not in _SYNCHRONOUS:
            raise InvalidArgument(f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}")
        try:
            raw_path = os.fspath(path)
        except TypeError:
            raise InvalidArgument(f"path must be a str or path-like, not {type(path).__name__}") from None
        if not isinstance(raw_path, str) or not raw_path or raw_path == ":memory:":
            raise InvalidArgument(f"path must name a file, not {raw_path!r}")
        self.path = os.path.abspath(raw_path)
        self.busy_timeout_ms = busy_timeout_ms
        self.synchronous = synchronous.upper()
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()  # guards _idle and _closed
        self._write_lock = threading.Lock()  # this process's writers queue here, not in SQLite's busy handler
        self._closed = False
        try:
            _create_private_file(self.path)
        except OSError as exc:
            raise StorageError("open", self.path, f"{exc.strerror or type(exc).__name__}") from exc
        with self._connection("open", self.path) as conn:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise StorageError("open", self.path, f"SQLite refused WAL mode (journal mode is {mode})")
                with self._write_lock:
                    conn.executescript(_SCHEMA)
            except sqlite3.Error as exc:
                raise _storage_error("open", self.path, exc) from exc

    def __repr__(self) -> str:
        return f"{type(self).__name__}(path={self.path!r}, chunk_size={self.chunk_size})"

    # Connections ------------------------------------------------------------

    def _open_connection(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are begun and ended here, explicitly.
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")  # checked against _SYNCHRONOUS
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _connection(self, operation: str, target: str) -> Iterator[sqlite3.Connection]:
        """A pooled connection for one call; rolled back if the call left a transaction open."""
        with self._lock:
            if self._closed:
                raise StorageError(operation, target, "the backend is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            try:
                conn = self._open_connection()
            except sqlite3.Error as exc:
                raise _storage_error(operation, target, exc) from exc
        try:
            yield conn
        finally:
            keep = True
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    keep = False
            with self._lock:
                if keep and not self._closed and len(self._idle) < _IDLE_CONNECTIONS:
                    self._idle.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    @contextmanager
    def _write(self, conn: sqlite3.Connection, operation: str, target: str) -> Iterator[None]:
        """One write transaction: commit when the block ends, roll back if it raises."""
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _storage_error(operation, target, exc) from exc
            try:
                yield
                conn.execute("COMMIT")
            except BaseException as exc:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite already rolled back (or the connection is unusable: it is dropped)
                if isinstance(exc, sqlite3.Error):
                    raise _storage_error(operation, target, exc) from exc
                raise

    # The contract -----------------------------------------------------------

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        validate_blob_id(blob_id)
        with self._connection("put", blob_id) as conn:
            if self._has(conn, blob_id, "put"):  # before waiting for the write lock
                raise BlobExists(blob_id)
            with self._write(conn, "put", blob_id):
                inserted = conn.execute(
                    "INSERT INTO dwray_blobs (blob_id, size, chunk_size, mtime) VALUES (?, 0, ?, 0) "
                    "ON CONFLICT (blob_id) DO NOTHING", (blob_id, self.chunk_size))
                if inserted.rowcount != 1:
                    raise BlobExists(blob_id)
                size = 0
                for seq, piece in enumerate(fixed_chunks(chunks, self.chunk_size)):
                    conn.execute("INSERT INTO dwray_blob_chunks (blob_id, seq, data) VALUES (?, ?, ?)",
                                 (blob_id, seq, piece))
                    size += len(piece)
                conn.execute("UPDATE dwray_blobs SET size = ?, mtime = ? WHERE blob_id = ?",
                             (size, time.time(), blob_id))
        return size

    def _has(self, conn: sqlite3.Connection, blob_id: str, operation: str) -> bool:
        try:
            return conn.execute("SELECT 1 FROM dwray_blobs WHERE blob_id = ?", (blob_id,)).fetchone() is not None
        except sqlite3.Error as exc:
            raise _storage_error(operation, blob_id, exc) from exc

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        validate_blob_id(blob_id)
        self.check_range(start, end)
        with self._connection("get", blob_id) as conn:
            try:
                rows = conn.execute(_READ_RANGE, {"blob_id": blob_id, "start": min(start, _NO_END),
                                                  "end": _NO_END if end is None else min(end, _NO_END)}).fetchall()
            except sqlite3.Error as exc:
                raise _storage_error("get", blob_id, exc) from exc
        if not rows:
            raise BlobNotFound(blob_id)
        size, chunk_size = rows[0][0], rows[0][1]
        stop = size if end is None else min(end, size)
        chunk_rows = [(seq, data) for _, _, seq, data in rows if seq is not None]
        return join_range(chunk_rows, start // chunk_size, start, stop, chunk_size, blob_id)

    def delete_blob(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        with self._connection("delete", blob_id) as conn:
            if not self._has(conn, blob_id, "delete"):
                return
            with self._write(conn, "delete", blob_id):
                conn.execute("DELETE FROM dwray_blob_chunks WHERE blob_id = ?", (blob_id,))
                conn.execute("DELETE FROM dwray_blobs WHERE blob_id = ?", (blob_id,))

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[str]:
        low, high = prefix_bounds(prefix)
        after = ""
        while True:
            with self._connection("list", prefix or "/") as conn:
                try:
                    page = [row[0] for row in conn.execute(
                        "SELECT blob_id FROM dwray_blobs WHERE blob_id >= ? AND blob_id < ? AND blob_id > ? "
                        "ORDER BY blob_id LIMIT ?", (low, high, after, LIST_PAGE))]
                except sqlite3.Error as exc:
                    raise _storage_error("list", prefix or "/", exc) from exc
            yield from page
            if len(page) < LIST_PAGE:
                return
            after = page[-1]

    def stat_blob(self, blob_id: str) -> BlobStat:
        validate_blob_id(blob_id)
        with self._connection("stat", blob_id) as conn:
            try:
                row = conn.execute("SELECT size, mtime FROM dwray_blobs WHERE blob_id = ?", (blob_id,)).fetchone()
            except sqlite3.Error as exc:
                raise _storage_error("stat", blob_id, exc) from exc
        if row is None:
            raise BlobNotFound(blob_id)
        return BlobStat(blob_id, row[0], row[1])

    def close(self) -> None:
        """Close the pooled connections; later calls raise ``StorageError``."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
