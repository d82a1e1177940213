"""The PostgreSQL backend on a real server: the conformance suite, chunk rows, timeouts, secrets, an outage."""
from __future__ import annotations

import os
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from dwray.backends import create_backend
from dwray.backends.postgres import PostgresBackend
from dwray.core.ports import free_port
from dwray.errors import BlobExists, BlobNotFound, InvalidArgument, StorageError
from dwray.testing.backend_conformance import BackendConformance
from tests.postgres_server import PostgresServer

MiB = 1024 * 1024
KiB = 1024
PASSWORD = "pw-Xq7-not-to-be-shown"


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:16]}"


class TestPostgresConformance(BackendConformance):

    @pytest.fixture
    def backend(self, postgres: PostgresServer) -> Iterator[PostgresBackend]:
        store = PostgresBackend(postgres.dsn, table=_table())  # a fresh, empty table per test
        yield store
        store.close()


@pytest.fixture
def small(postgres: PostgresServer) -> Iterator[PostgresBackend]:
    """A backend on fresh tables with 1 KiB chunk rows, so small blobs span many rows."""
    store = PostgresBackend(postgres.dsn, table=_table(), chunk_size=KiB)
    yield store
    store.close()


def _sql(postgres: PostgresServer, query: str, *args: object) -> list[tuple]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        cursor = conn.execute(query, args)
        return cursor.fetchall() if cursor.description else []


def test_registered_by_name_and_repr_shows_no_password(postgres: PostgresServer) -> None:
    dsn = f"{postgres.dsn} password={PASSWORD}"  # trust auth accepts any password
    store = create_backend("postgres", dsn=dsn, table=_table())
    assert isinstance(store, PostgresBackend)
    assert store.put_bytes("a", b"1") == 1
    assert repr(store) == (f"PostgresBackend(server='127.0.0.1:{postgres.port}/postgres', table={store.table!r}, "
                           f"chunk_size={MiB})")
    assert PASSWORD not in repr(store) and PASSWORD not in str(vars(store))
    store.close()


def test_tables_are_created_once_and_shared(postgres: PostgresServer) -> None:
    table = _table()
    first = PostgresBackend(postgres.dsn, table=table)
    first.put_bytes("x/1", b"one")
    second = PostgresBackend(postgres.dsn, table=table, chunk_size=4 * KiB)  # another setting reads old blobs
    assert second.get_blob("x/1") == b"one"
    with pytest.raises(BlobExists):
        second.put_bytes("x/1", b"two")
    assert _sql(postgres, "SELECT attstorage FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'data'",
                f"{table}_chunks") == [("e",)]  # EXTERNAL: sealed bytes are not compressed again
    assert _sql(postgres, "SELECT collation_name FROM information_schema.columns WHERE table_name = %s AND "
                "column_name = 'blob_id'", table) == [("C",)]
    first.close()
    second.close()


def test_blobs_are_fixed_size_chunk_rows(small: PostgresBackend, postgres: PostgresServer) -> None:
    data = os.urandom(2 * KiB + 100)
    assert small.put_blob("c", [data[:7], data[7:1500], b"", data[1500:]]) == len(data)
    assert _sql(postgres, f"SELECT seq, length(data) FROM {small.table}_chunks ORDER BY seq") == [
        (0, KiB), (1, KiB), (2, 100)]
    assert small.get_blob("c") == data


def test_a_range_read_fetches_only_the_rows_that_cover_it(small: PostgresBackend, postgres: PostgresServer) -> None:
    data = os.urandom(10 * KiB)
    small.put_bytes("r", data)
    # Remove every chunk row but 3 and 4: reads inside them still work, so no other row was read.
    _sql(postgres, f"DELETE FROM {small.table}_chunks WHERE seq NOT IN (3, 4)")
    assert small.get_blob("r", 3 * KiB + 5, 5 * KiB) == data[3 * KiB + 5:5 * KiB]
    assert small.get_blob("r", 4 * KiB, 4 * KiB + 1) == data[4 * KiB:4 * KiB + 1]
    assert small.get_blob("r", 20 * KiB) == b""
    with pytest.raises(StorageError, match="chunk rows are missing"):
        small.get_blob("r")


def test_a_failing_put_leaves_no_rows(small: PostgresBackend, postgres: PostgresServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a" * 5000
        raise OSError("source failed")

    with pytest.raises(OSError, match="source failed"):
        small.put_blob("broken", chunks())
    with pytest.raises(TypeError):
        small.put_blob("typed", [b"a" * 3000, "text"])  # type: ignore[list-item]
    assert _sql(postgres, f"SELECT count(*) FROM {small.table}_chunks") == [(0,)]
    assert _sql(postgres, f"SELECT count(*) FROM {small.table}") == [(0,)]


def test_a_put_in_progress_is_invisible(small: PostgresBackend) -> None:
    seen: list[object] = []

    def chunks() -> Iterator[bytes]:
        yield b"x" * 3000
        seen.append(small.exists("new"))
        seen.append(list(small.list_blobs()))
        yield b"y"

    small.put_blob("new", chunks())
    assert seen == [False, []]
    assert small.get_blob("new") == b"x" * 3000 + b"y"


def test_a_loser_of_a_race_waits_for_the_winner_to_roll_back(small: PostgresBackend) -> None:
    inserted = threading.Event()
    outcome: list[object] = []

    def slow_then_failing() -> Iterator[bytes]:
        yield b"first"
        inserted.set()  # the blob row is in (uncommitted) before the first chunk is pulled
        time.sleep(0.5)
        raise RuntimeError("first put fails")

    def second() -> None:
        inserted.wait(10)
        started = time.monotonic()
        outcome.append(small.put_bytes("contested", b"second"))
        outcome.append(time.monotonic() - started)

    thread = threading.Thread(target=second)
    thread.start()
    with pytest.raises(RuntimeError):
        small.put_blob("contested", slow_then_failing())
    thread.join(10)
    assert outcome[0] == 6
    assert outcome[1] > 0.3  # it waited on the first put's row rather than fail or write beside it
    assert small.get_blob("contested") == b"second"


def test_bounds_past_any_size_are_clipped(small: PostgresBackend) -> None:
    small.put_bytes("h", b"0123456789")
    assert small.get_blob("h", 10**30) == b""
    assert small.get_blob("h", 3, 10**30) == b"3456789"
    assert small.get_ranges("h", [(2**63, 2**64), (0, 2**63)]) == [b"", b"0123456789"]


def test_streaming_put_holds_about_one_chunk(postgres: PostgresServer) -> None:
    store = PostgresBackend(postgres.dsn, table=_table())
    block = os.urandom(256 * KiB)
    tracemalloc.start()
    try:
        assert store.put_blob("big", (block for _ in range(64))) == 16 * MiB
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB
    assert store.get_blob("big", 15 * MiB, 15 * MiB + 10) == block[:10]
    store.close()


def test_listing_pages_through_many_ids(small: PostgresBackend, postgres: PostgresServer) -> None:
    ids = [f"p/{i:05d}" for i in range(2500)]
    _sql(postgres, f"INSERT INTO {small.table} SELECT unnest(%s::text[]), 0, 1024, 0", ids)
    assert list(small.list_blobs("p/")) == ids
    assert list(small.list_blobs("p/01")) == ids[1000:2000]


def test_a_statement_past_its_timeout_is_a_storage_error(postgres: PostgresServer) -> None:
    store = PostgresBackend(postgres.dsn, table=_table(), statement_timeout=0.5)
    store.put_bytes("a", b"1")
    with psycopg.connect(postgres.dsn) as locker:
        locker.execute(f"LOCK TABLE {store.table} IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        started = time.monotonic()
        with pytest.raises(StorageError, match="statement timeout") as raised:
            store.get_blob("a")
        assert time.monotonic() - started < 5
        assert "'a'" in str(raised.value)
    assert store.get_blob("a") == b"1"
    store.close()


@pytest.mark.parametrize(("options", "named"), [
    ({"table": "Bad-Name"}, "table"),
    ({"table": "x" * 60}, "table"),
    ({"table": 'a"; drop table b'}, "table"),
    ({"chunk_size": 100}, "chunk_size"),
    ({"max_connections": 0}, "max_connections"),
    ({"min_connections": 3, "max_connections": 2}, "min_connections"),
    ({"connect_timeout": 0}, "connect_timeout"),
    ({"statement_timeout": float("inf")}, "statement_timeout"),
])
def test_bad_options_are_refused(options: dict, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        PostgresBackend(f"host=127.0.0.1 port=1 password={PASSWORD}", **options)


def test_a_bad_dsn_is_refused_without_showing_it() -> None:
    for dsn in (f"host=127.0.0.1 password={PASSWORD} =oops", "", 42):
        with pytest.raises(InvalidArgument, match="dsn") as raised:
            PostgresBackend(dsn)  # type: ignore[arg-type]
        assert PASSWORD not in str(raised.value) and PASSWORD not in repr(raised.value)
        assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_a_server_that_is_down_is_a_quick_storage_error_without_the_password(
        caplog: pytest.LogCaptureFixture) -> None:
    dsn = f"postgresql://dw:{PASSWORD}@127.0.0.1:{free_port()}/postgres"  # nothing listens there
    # Opening does not fail (a mirror's other replicas must still serve): it warns, and each call fails.
    started = time.monotonic()
    store = PostgresBackend(dsn, connect_timeout=1.0)
    assert time.monotonic() - started < 5
    assert "127.0.0.1" in caplog.text and PASSWORD not in caplog.text
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        store.put_bytes("a/b", b"x")
    store.close()
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "127.0.0.1" in message and "within 1 s" in message
    assert PASSWORD not in message and PASSWORD not in repr(raised.value)
    assert raised.value.__cause__ is None


# An outage of the real server ------------------------------------------------

def test_puts_across_a_server_crash_and_restart(postgres: PostgresServer) -> None:
    dsn = f"{postgres.dsn} password={PASSWORD}"
    store = PostgresBackend(dsn, table=_table(), chunk_size=16 * KiB, connect_timeout=2.0, statement_timeout=10.0)
    acked: dict[str, bytes] = {}
    ack_times: list[float] = []
    failures: list[StorageError] = []
    slowest_failure = [0.0]
    stop = threading.Event()
    unexpected: list[BaseException] = []

    def writer() -> None:
        n = 0
        deadline = time.monotonic() + 120
        while not stop.is_set() and time.monotonic() < deadline and n < 5000:
            blob_id = f"w/{n:05d}"
            data = os.urandom(1000 + (n * 7919) % (80 * KiB))
            n += 1
            started = time.monotonic()
            try:
                store.put_blob(blob_id, (data[i:i + 7000] for i in range(0, len(data), 7000)))
            except StorageError as exc:
                failures.append(exc)
                slowest_failure[0] = max(slowest_failure[0], time.monotonic() - started)
                time.sleep(0.05)
                continue
            except BaseException as exc:  # noqa: BLE001 - the test reports it
                unexpected.append(exc)
                return
            acked[blob_id] = data
            ack_times.append(time.monotonic())

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(acked) >= 30, unexpected
        postgres.stop("immediate")  # a crash, in the middle of the writer's puts
        deadline = time.monotonic() + 30
        while len(failures) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        acked_while_down = len(acked)
        time.sleep(0.5)
        assert len(acked) == acked_while_down  # nothing is acknowledged while the server is down
    finally:
        if not postgres.pid:
            postgres.start()
    restarted = time.monotonic()
    try:
        deadline = time.monotonic() + 30
        while len(acked) < acked_while_down + 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acked) >= acked_while_down + 20, "puts did not resume after the restart"
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    assert unexpected == []
    recovery = min(t for t in ack_times if t >= restarted) - restarted
    print(f"{len(acked)} puts acknowledged, {len(failures)} failed, slowest failure {slowest_failure[0]:.2f} s, "
          f"first put acknowledged {recovery:.2f} s after the restart; first failure: {failures[0]}")
    assert recovery < 10  # the pool reconnects by itself, without a long backoff
    assert len(failures) >= 5
    assert slowest_failure[0] < 2.0 + 10.0 + 3.0  # bounded by the timeouts, no hang
    for failure in failures:
        assert PASSWORD not in str(failure) and "w/" in str(failure)
    for blob_id, data in acked.items():  # every acknowledged put survived the crash, byte for byte
        assert store.get_blob(blob_id) == data, blob_id
    stored = set(store.list_blobs("w/"))
    assert set(acked) <= stored
    for blob_id in stored - set(acked):  # a put the crash cut off after its commit: whole, never partial
        assert len(store.get_blob(blob_id)) == store.size(blob_id)
    assert store.put_bytes("after", b"recovered") == 9  # the same backend object, its pool recovered
    with pytest.raises(BlobNotFound):
        store.get_blob("never")
    store.close()
