"""A SQLite database file with dwray's durability settings and versioned migrations.

The catalog and the identity store are both one of these: WAL journal,
``synchronous=FULL`` (an acknowledged commit survives power loss; ``EXTRA``
on request), foreign keys on, one connection shared by the process's threads
under a lock, writes in ``BEGIN IMMEDIATE`` transactions, and a schema
migrated forward from ``PRAGMA user_version`` (a newer file than the code is
refused). Every SQLite error becomes a ``CatalogError`` naming the store.

The database, its ``-wal`` and ``-shm`` are 0600 whoever creates them first
and whatever the umask: the database file is created 0600 before SQLite
opens it, and SQLite gives the files it adds the database file's mode. Files
an older dwray left looser are tightened when they are ours.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from dwray.core.private_files import create_private_file, make_private_dir, tighten
from dwray.errors import CatalogError, SchemaVersionError

__all__ = ["SqliteStore"]


class SqliteStore:
    """Base of the SQLite-backed stores. Subclasses set ``label`` and ``migrations``.

    Each entry of ``migrations`` takes the schema from version N to N + 1 (N
    its index); entries are never edited once released, only appended.
    """

    label: ClassVar[str] = "store"
    migrations: ClassVar[tuple[str, ...]] = ()

    def __init__(self, path: str | Path, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            make_private_dir(self.path.parent)
            create_private_file(self.path, self.label)
            for companion in ("-wal", "-shm", "-journal"):
                tighten(self.path.with_name(self.path.name + companion), 0o600, self.label)
        except OSError as exc:
            raise CatalogError(f"cannot open {self.label} {self.path}: {exc.strerror or exc}") from None
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                       timeout=busy_timeout_ms / 1000)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open {self.label} {self.path}: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'EXTRA' if synchronous == 'EXTRA' else 'FULL'}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise CatalogError(f"cannot open {self.label} {self.path}: {exc}") from None
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self) -> _Transaction:
        return _Transaction(self)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise CatalogError(f"{self.label} read failed: {exc}") from None

    def _migrate(self) -> None:
        latest = len(self.migrations)
        with self._write() as db:
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found > latest:
                raise SchemaVersionError(found, latest)
            for version in range(found, latest):
                for statement in _statements(self.migrations[version]):
                    db.execute(statement)
            if found < latest:
                # Only when something changed: writing the same value still
                # appends to the WAL, and on a full disk that would make the
                # store impossible to open even for reading.
                db.execute(f"PRAGMA user_version={latest}")

    @property
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]


def _statements(script: str) -> list[str]:
    """The statements of a migration, split at the semicolons that end one: a trigger's
    ``BEGIN ... END`` holds semicolons of its own (``executescript`` would split right,
    but it commits first, and a migration must run inside the store's transaction)."""
    statements, pending = [], ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                statements.append(pending)
            pending = ""
    if pending.strip(" \t\n;"):
        statements.append(pending)  # unfinished: SQLite's error names it
    return statements


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the store's lock; rollback on error."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __enter__(self) -> sqlite3.Connection:
        self._store._lock.acquire()
        try:
            self._store._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._store._lock.release()
            raise CatalogError(f"{self._store.label} write failed to start: {exc}") from None
        return self._store._db

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        db = self._store._db
        try:
            if exc_type is None:
                try:
                    db.execute("COMMIT")
                except sqlite3.Error as error:
                    _rollback(db)
                    raise CatalogError(f"{self._store.label} commit failed: {error}") from None
            else:
                _rollback(db)
                if issubclass(exc_type, sqlite3.Error):
                    raise CatalogError(f"{self._store.label} write failed: {exc}") from None
        finally:
            self._store._lock.release()


def _rollback(db: sqlite3.Connection) -> None:
    """Roll back the open transaction, if SQLite has not already done so.

    After some errors (SQLITE_FULL, SQLITE_IOERR, ...) SQLite rolls the whole
    transaction back itself, and a ROLLBACK then fails with "no transaction is
    active"; that failure must not replace the error being reported.
    """
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:
            pass
