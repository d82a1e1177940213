"""A read-only view of a catalog database file, for callers on the catalog actor's node.

Why: a small GET through Ray spends a round trip (several ms under load) only
to ask the catalog actor for one row, while the row is in a SQLite file on
this very machine. SQLite in WAL mode lets any number of readers run beside
the one writer, and a commit is in the WAL (fsynced) before the catalog
answers it, so a read begun after an acknowledged write sees that write.

``CatalogReader`` is the ``Catalog`` itself with a different connection: its
queries, row decoding and errors (``BucketNotFound``, ``BucketAccessDenied``,
``ObjectNotFound``, ``ObjectDeleted``, ...) are the store's own code, not a
copy, so a change to the store (a new column) reaches the reader. What
differs:

- the file is opened ``mode=ro`` (a URI), never created, migrated or written;
- one connection per thread (no lock shared by the gateway's threads), each
  checked to carry the schema version this code knows;
- every statement's rows are read at once, so no read transaction (and its
  WAL snapshot) outlives the statement;
- any SQLite failure (file gone, unreadable, another schema, busy, closed)
  raises ``LocalReadUnavailable``, not ``CatalogError``: the caller then asks
  the catalog actor instead. The catalog's own errors propagate unchanged.
"""
from __future__ import annotations

import contextlib
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dwray.core.catalog.schema import SCHEMA_VERSION
from dwray.core.catalog.store import Catalog
from dwray.errors import CatalogError

__all__ = ["CatalogReader", "LocalReadUnavailable"]

#: how long a read waits on a lock before giving up (and the caller asks the actor)
BUSY_TIMEOUT_SECONDS = 1.0


class LocalReadUnavailable(Exception):
    """This read cannot be answered from the local file; ask the catalog service instead.

    Not a ``DwrayError``: it never reaches a client, it only tells the caller to fall back.
    """


class _Rows:
    """A statement's rows, all read: what the store's code asks of a cursor (``fetchone``, ``fetchall``)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)


class _ReadConnection(sqlite3.Connection):
    """A connection whose failures say "fall back", not "the catalog failed".

    ``shut()`` closes it from any thread, but never under a statement that its
    own thread is running: closing a SQLite connection while another thread
    steps a statement on it crashes the process (a segmentation fault, seen
    when a reader was replaced after a catalog restart under load). The lock
    is its own thread's but for that one moment, so reads do not contend.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_use = threading.Lock()
        self._shut = False

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        with self._in_use:
            if self._shut:
                raise LocalReadUnavailable("the local catalog reader was closed")
            try:
                return _Rows(super().execute(sql, parameters).fetchall())
            except sqlite3.Error as exc:
                raise LocalReadUnavailable(f"local catalog read failed: {exc}") from None

    def shut(self) -> None:
        """Close the connection once no statement runs on it; later reads raise ``LocalReadUnavailable``."""
        with self._in_use:
            self._shut = True
            self.close()


class CatalogReader(Catalog):
    """The catalog at ``path``, read-only, one connection per thread. Thread-safe.

    Raises ``LocalReadUnavailable`` at construction when the file cannot be
    opened or is of another schema version, and from any read that SQLite fails.
    Its write methods refuse (``CatalogError``): only the catalog service writes.
    """

    def __init__(self, path: str | Path) -> None:  # no super().__init__: that would create and migrate
        self.path = Path(path).absolute()
        self._uri = f"{self.path.as_uri()}?mode=ro"
        self._lock = contextlib.nullcontext()  # type: ignore[assignment]  # each thread has its own connection
        self._local = threading.local()
        self._guard = threading.Lock()
        # Weak: a connection goes with its thread (a thread pool's thread that ends), close() ends the rest.
        self._connections: weakref.WeakSet[_ReadConnection] = weakref.WeakSet()
        self._closed = False
        self._connection()  # fail now, not at the first read, if the file is not ours to read

    @property
    def _db(self) -> sqlite3.Connection:  # type: ignore[override]
        db = getattr(self._local, "db", None)
        return db if db is not None else self._connection()

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, opened and checked now."""
        with self._guard:
            if self._closed:
                raise LocalReadUnavailable(f"the local catalog reader of {self.path} is closed")
        try:
            db = sqlite3.connect(self._uri, uri=True, isolation_level=None, check_same_thread=False,
                                 timeout=BUSY_TIMEOUT_SECONDS, factory=_ReadConnection)
        except sqlite3.Error as exc:
            raise LocalReadUnavailable(f"cannot open the catalog {self.path} to read: {exc}") from None
        try:
            found = db.execute("PRAGMA user_version").fetchone()[0]
            if found != SCHEMA_VERSION:
                raise LocalReadUnavailable(f"the catalog {self.path} has schema version {found}; "
                                           f"this code reads version {SCHEMA_VERSION}")
        except BaseException:
            db.shut()
            raise
        with self._guard:
            if self._closed:
                db.shut()
                raise LocalReadUnavailable(f"the local catalog reader of {self.path} is closed")
            self._connections.add(db)
        self._local.db = db
        return db

    def _write(self) -> Any:
        raise CatalogError(f"the catalog reader of {self.path} is read-only; writes go to the catalog service")

    def close(self) -> None:
        """Close every thread's connection; later reads raise ``LocalReadUnavailable``."""
        with self._guard:
            self._closed = True
            connections = list(self._connections)
            self._connections.clear()
        for db in connections:
            db.shut()  # waits for a statement running on it in another thread

    @property
    def schema_version(self) -> int:
        return self._read("PRAGMA user_version")[0][0]
