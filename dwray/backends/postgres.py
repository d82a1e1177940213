"""Blobs in PostgreSQL, as ``bytea`` chunk rows, one transaction per put (psycopg 3 and its pool).

Layout (see ``dwray.backends.chunked_rows``): a row per blob in ``<table>``
and its bytes in ``<table>_chunks`` rows of ``chunk_size`` bytes, stored
uncompressed (``STORAGE EXTERNAL``: the blobs are sealed, compressing them is
wasted work). Both tables are created if missing; ids use the "C" collation so
the server sorts them as Python does.

A put inserts the blob row first (``ON CONFLICT DO NOTHING``), so a taken id
is refused before any chunk is read; then it streams the chunk rows and
commits. Nothing is visible before the commit, and a failure, a lost
connection or a server crash part-way rolls it all back. Racing puts of one id:
the primary key makes the others wait on the first's uncommitted row, then
find it (``BlobExists``) if it committed, or take the id if it rolled back
(a wait bounded by ``statement_timeout``: a loser whose winner streams for
longer gets a ``StorageError``, not ``BlobExists``).
A read runs one statement (one snapshot) that fetches the blob row and only
the chunk rows covering the range.

Failures: every SQL text is fixed and parameterized, table names go through
``psycopg.sql.Identifier``. Connections come from a ``psycopg_pool``
pool, checked before use so that connections broken by a server restart are
replaced rather than failing a call; a call waits at most ``connect_timeout``
for a connection and each statement runs at most ``statement_timeout``. A
server that is down, a timeout, or any other database failure is a
``StorageError`` naming the operation, the blob and the server as
``host:port/dbname`` -- never the DSN, which may hold a password.
"""
from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

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
    InvalidArgument,
    StorageError,
    StorageFull,
)

__all__ = ["PostgresBackend"]

_log = logging.getLogger(__name__)

# Lower case, so the name means the same quoted or not; short enough for "<table>_chunks" (63 max).
_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,47}")
_NO_END = 1 << 62
_DISK_FULL = "53100"
_QUERY_CANCELED = "57014"

_CREATE_BLOBS = """
CREATE TABLE IF NOT EXISTS {blobs} (
    blob_id text COLLATE "C" PRIMARY KEY,
    size bigint NOT NULL,
    chunk_size integer NOT NULL,
    mtime double precision NOT NULL
)"""
_CREATE_CHUNKS = """
CREATE TABLE IF NOT EXISTS {chunks} (
    blob_id text COLLATE "C" NOT NULL,
    seq integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (blob_id, seq)
)"""
_READ_RANGE = """
SELECT b.size, b.chunk_size, c.seq, c.data
FROM {blobs} AS b LEFT JOIN {chunks} AS c
  ON c.blob_id = b.blob_id
 AND %(start)s::bigint < LEAST(%(end)s::bigint, b.size)
 AND c.seq BETWEEN %(start)s::bigint / b.chunk_size AND (LEAST(%(end)s::bigint, b.size) - 1) / b.chunk_size
WHERE b.blob_id = %(blob_id)s
ORDER BY c.seq
"""


def _positive(name: str, value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < math.inf:
        raise InvalidArgument(f"{name} must be a number of seconds > 0, not {value!r}")
    return float(value)


class _Redactor:
    """Holds the DSN's password only to cut it out of error texts; shows nothing of it."""

    __slots__ = ("_secret",)

    def __init__(self, secret: str) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "_Redactor(<hidden>)"

    def scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text


def _parse_dsn(dsn: object) -> dict[str, str]:
    if not isinstance(dsn, str) or not dsn.strip():
        raise InvalidArgument("dsn must be a non-empty PostgreSQL connection string")
    try:
        return {key: str(value) for key, value in conninfo_to_dict(dsn).items()}
    except psycopg.Error:
        pass
    # Raised outside the handler so that psycopg's error, which may quote the password, is not its context.
    raise InvalidArgument("dsn is not a valid PostgreSQL connection string (not shown: it may hold a password)")


class PostgresBackend(StorageBackend):
    """Blobs as chunk rows in the PostgreSQL tables ``table`` and ``<table>_chunks``."""

    name = "postgres"

    def __init__(self, dsn: str, *, table: str = "dwray_blobs", chunk_size: int = DEFAULT_CHUNK_SIZE,
                 min_connections: int = 1, max_connections: int = 8, connect_timeout: float = 5.0,
                 statement_timeout: float = 60.0) -> None:
        params = _parse_dsn(dsn)
        if not isinstance(table, str) or not _TABLE.fullmatch(table):
            raise InvalidArgument(f"table must match {_TABLE.pattern} (lower case), not {table!r}")
        self.chunk_size = check_chunk_size(chunk_size)
        for what, count in (("min_connections", min_connections), ("max_connections", max_connections)):
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise InvalidArgument(f"{what} must be an int >= 0, not {count!r}")
        if not 1 <= max_connections or min_connections > max_connections:
            raise InvalidArgument(f"need 0 <= min_connections <= max_connections and max_connections >= 1, not "
                                  f"{min_connections} and {max_connections}")
        self.connect_timeout = _positive("connect_timeout", connect_timeout)
        self.statement_timeout = _positive("statement_timeout", statement_timeout)
        self.table = table
        #: where the server is, for reprs and errors: host, port and database, never the password
        self.server = (f"{params.get('host') or params.get('hostaddr') or 'localhost'}:"
                       f"{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}")
        self._redactor = _Redactor(params.get("password", ""))
        self._blobs = sql.Identifier(table)
        self._chunks = sql.Identifier(f"{table}_chunks")
        kwargs: dict[str, object] = {"connect_timeout": max(2, math.ceil(self.connect_timeout)),
                                     "application_name": params.get("application_name") or "dwray"}
        # A server that vanishes without closing the socket is noticed within about a statement timeout.
        if "keepalives" not in params:
            idle = max(1, math.ceil(self.statement_timeout / 4))
            kwargs.update(keepalives=1, keepalives_idle=idle, keepalives_interval=idle, keepalives_count=3)
        self._pool = ConnectionPool(
            dsn, kwargs=kwargs, min_size=min_connections, max_size=max_connections, open=False,
            timeout=self.connect_timeout, configure=self._configure, check=ConnectionPool.check_connection,
            # Give up a reconnection round soon, so the next call starts a fresh one at once (rather than
            # wait out a long backoff) when the server is back.
            reconnect_timeout=self.connect_timeout, name=f"dwray-postgres-{table}")
        self._tables_ready = False
        self._tables_lock = threading.Lock()
        self._pool.open(wait=False)
        # Tables are made on the first connection, now if the server answers. A server that is down
        # when the backend opens must not keep the warehouse (or a mirror's other replicas) from
        # starting: its tables are then made on first use, once it is back.
        try:
            with self._connection("open", self.table):
                pass
        except StorageError as exc:
            _log.warning("PostgreSQL backend: %s; its tables are made when it answers", exc)
        except BaseException:
            self._pool.close(timeout=1)
            raise

    def __repr__(self) -> str:
        return f"{type(self).__name__}(server={self.server!r}, table={self.table!r}, chunk_size={self.chunk_size})"

    # Connections ------------------------------------------------------------

    def _configure(self, conn: psycopg.Connection) -> None:
        conn.autocommit = True  # transactions are explicit: ``with conn.transaction()``
        conn.execute("SELECT set_config('statement_timeout', %s, false)",
                     (f"{math.ceil(self.statement_timeout * 1000)}ms",))

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, PoolTimeout):
            return (f"no connection to PostgreSQL at {self.server} within {self.connect_timeout:g} s "
                    f"(the server is down or unreachable, or all {self._pool.max_size} connections are busy)")
        sqlstate = getattr(exc, "sqlstate", None)
        if sqlstate == _QUERY_CANCELED:
            return f"statement ran past the {self.statement_timeout:g} s statement timeout at {self.server}"
        text = " ".join(str(exc).split())
        text = self._redactor.scrub(text)
        return f"{type(exc).__name__} at {self.server}: {text}"

    def _error(self, operation: str, target: str, exc: BaseException) -> StorageError:
        if getattr(exc, "sqlstate", None) == _DISK_FULL:
            return StorageFull(operation, target, self._reason(exc))
        return StorageError(operation, target, self._reason(exc))

    @contextmanager
    def _connection(self, operation: str, target: str) -> Iterator[psycopg.Connection]:
        """A pooled connection; any database failure inside becomes a ``StorageError``."""
        try:
            with self._pool.connection() as conn:
                if not self._tables_ready:
                    self._create_tables(conn)
                yield conn
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(operation, target, exc) from None

    def _create_tables(self, conn: psycopg.Connection) -> None:
        """Create the tables if missing, once per backend object (on its first connection)."""
        with self._tables_lock:
            if self._tables_ready:
                return
            self._create_tables_in(conn)
            self._tables_ready = True

    def _create_tables_in(self, conn: psycopg.Connection) -> None:
        names = {"blobs": self._blobs, "chunks": self._chunks}
        with conn.transaction():
            # Concurrent CREATE TABLE IF NOT EXISTS of one name can still collide: take turns.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"dwray-backend-{self.table}",))
            existed = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self.table}_chunks",)).fetchone()[0]
            conn.execute(sql.SQL(_CREATE_BLOBS).format(**names))
            conn.execute(sql.SQL(_CREATE_CHUNKS).format(**names))
            if not existed:
                conn.execute(sql.SQL("ALTER TABLE {chunks} ALTER COLUMN data SET STORAGE EXTERNAL").format(**names))

    # The contract -----------------------------------------------------------

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        validate_blob_id(blob_id)
        insert_blob = sql.SQL("INSERT INTO {} (blob_id, size, chunk_size, mtime) VALUES (%s, 0, %s, 0) "
                              "ON CONFLICT (blob_id) DO NOTHING").format(self._blobs)
        insert_chunk = sql.SQL("INSERT INTO {} (blob_id, seq, data) VALUES (%s, %s, %b)").format(self._chunks)
        finish = sql.SQL("UPDATE {} SET size = %s, mtime = %s WHERE blob_id = %s").format(self._blobs)
        with self._connection("put", blob_id) as conn, conn.transaction():
            if conn.execute(insert_blob, (blob_id, self.chunk_size)).rowcount != 1:
                raise BlobExists(blob_id)
            size = 0
            for seq, piece in enumerate(fixed_chunks(chunks, self.chunk_size)):
                conn.execute(insert_chunk, (blob_id, seq, piece))
                size += len(piece)
            conn.execute(finish, (size, time.time(), blob_id))
        return size

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        validate_blob_id(blob_id)
        self.check_range(start, end)
        query = sql.SQL(_READ_RANGE).format(blobs=self._blobs, chunks=self._chunks)
        # Bounds past any size are clamped so that they fit a bigint.
        args = {"blob_id": blob_id, "start": min(start, _NO_END), "end": _NO_END if end is None else min(end, _NO_END)}
        with self._connection("get", blob_id) as conn:
            rows = conn.cursor(binary=True).execute(query, args).fetchall()
        if not rows:
            raise BlobNotFound(blob_id)
        size, chunk_size = rows[0][0], rows[0][1]
        stop = size if end is None else min(end, size)
        chunk_rows = [(seq, data) for _, _, seq, data in rows if seq is not None]
        return join_range(chunk_rows, start // chunk_size, start, stop, chunk_size, blob_id)

    def delete_blob(self, blob_id: str) -> None:
        validate_blob_id(blob_id)
        with self._connection("delete", blob_id) as conn, conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE blob_id = %s").format(self._blobs), (blob_id,))
            conn.execute(sql.SQL("DELETE FROM {} WHERE blob_id = %s").format(self._chunks), (blob_id,))

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        return self._list(prefix)

    def _list(self, prefix: str) -> Iterator[str]:
        low, high = prefix_bounds(prefix)
        query = sql.SQL("SELECT blob_id FROM {} WHERE blob_id >= %s AND blob_id < %s AND blob_id > %s "
                        "ORDER BY blob_id LIMIT %s").format(self._blobs)
        after = ""
        while True:
            with self._connection("list", prefix or "/") as conn:
                page = [row[0] for row in conn.execute(query, (low, high, after, LIST_PAGE))]
            yield from page
            if len(page) < LIST_PAGE:
                return
            after = page[-1]

    def stat_blob(self, blob_id: str) -> BlobStat:
        validate_blob_id(blob_id)
        query = sql.SQL("SELECT size, mtime FROM {} WHERE blob_id = %s").format(self._blobs)
        with self._connection("stat", blob_id) as conn:
            row = conn.execute(query, (blob_id,)).fetchone()
        if row is None:
            raise BlobNotFound(blob_id)
        return BlobStat(blob_id, row[0], row[1])

    def close(self) -> None:
        """Close the pool's connections; later calls raise ``StorageError``."""
        self._pool.close(timeout=self.connect_timeout)
