"""The SQLite backend: the conformance suite, its durability settings, chunk rows, several processes, kill -9."""
from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.backends import create_backend
from dwray.backends.sqlite import SqliteBackend
from dwray.errors import BlobExists, InvalidArgument, StorageError, StorageFull
from dwray.testing.backend_conformance import BackendConformance

MiB = 1024 * 1024
KiB = 1024


class TestSqliteConformance(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[SqliteBackend]:
        store = SqliteBackend(tmp_path / "store" / "blobs.db")
        yield store
        store.close()


@pytest.fixture
def small(tmp_path: Path) -> Iterator[SqliteBackend]:
    """A backend with 1 KiB chunk rows, so small blobs span many rows."""
    store = SqliteBackend(tmp_path / "db" / "blobs.db", chunk_size=KiB)
    yield store
    store.close()


def _rows(path: Path, query: str, *args: object) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute(query, args).fetchall()


def test_registered_by_name(tmp_path: Path) -> None:
    store = create_backend("sqlite", path=tmp_path / "b.db")
    assert isinstance(store, SqliteBackend)
    assert repr(store) == f"SqliteBackend(path={str(tmp_path / 'b.db')!r}, chunk_size={MiB})"
    store.close()


def test_file_0600_folder_0700_wal_and_synchronous_full(tmp_path: Path) -> None:
    path = tmp_path / "new" / "blobs.db"
    store = SqliteBackend(path)
    store.put_bytes("a", b"x")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for name in ("blobs.db", "blobs.db-wal", "blobs.db-shm"):
        assert stat.S_IMODE((path.parent / name).stat().st_mode) == 0o600, name
    assert _rows(path, "PRAGMA journal_mode") == [("wal",)]
    with store._connection("test", "pragma") as conn:
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (10000,)
    store.close()
    relaxed = SqliteBackend(path, synchronous="normal", busy_timeout_ms=250)
    with relaxed._connection("test", "pragma") as conn:
        assert conn.execute("PRAGMA synchronous").fetchone() == (1,)
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (250,)
    relaxed.close()


def test_an_existing_open_file_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "open.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    SqliteBackend(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(("options", "named"), [
    ({"synchronous": "OFF"}, "synchronous"),
    ({"synchronous": 2}, "synchronous"),
    ({"chunk_size": 10}, "chunk_size"),
    ({"chunk_size": True}, "chunk_size"),
    ({"busy_timeout_ms": -1}, "busy_timeout_ms"),
    ({"busy_timeout_ms": 1.5}, "busy_timeout_ms"),
])
def test_bad_options_are_refused(tmp_path: Path, options: dict, named: str) -> None:
    with pytest.raises(InvalidArgument, match=named):
        SqliteBackend(tmp_path / "b.db", **options)


@pytest.mark.parametrize("path", ["", ":memory:", 42])
def test_bad_paths_are_refused(path: object) -> None:
    with pytest.raises(InvalidArgument, match="path"):
        SqliteBackend(path)  # type: ignore[arg-type]


def test_an_unusable_path_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(StorageError):
        SqliteBackend(tmp_path / "folder.db")


def test_blobs_are_fixed_size_chunk_rows(small: SqliteBackend) -> None:
    data = os.urandom(2 * KiB + 100)
    pieces = [data[:7], data[7:1500], data[1500:1500], data[1500:]]
    assert small.put_blob("c", pieces) == len(data)
    rows = _rows(Path(small.path), "SELECT seq, length(data) FROM dwray_blob_chunks WHERE blob_id = 'c' ORDER BY seq")
    assert rows == [(0, KiB), (1, KiB), (2, 100)]
    assert small.get_blob("c") == data


def test_a_range_read_fetches_only_the_rows_that_cover_it(small: SqliteBackend) -> None:
    data = os.urandom(10 * KiB)
    small.put_bytes("r", data)
    # Remove every chunk row but 3 and 4: reads inside them still work, so no other row was read.
    with sqlite3.connect(small.path) as conn:
        conn.execute("DELETE FROM dwray_blob_chunks WHERE blob_id = 'r' AND seq NOT IN (3, 4)")
    assert small.get_blob("r", 3 * KiB + 5, 5 * KiB) == data[3 * KiB + 5:5 * KiB]
    assert small.get_blob("r", 4 * KiB, 4 * KiB + 1) == data[4 * KiB:4 * KiB + 1]
    assert small.get_blob("r", 20 * KiB) == b""
    with pytest.raises(StorageError, match="chunk rows are missing"):
        small.get_blob("r")  # damage is reported, never returned as short data
    with pytest.raises(StorageError, match="chunk rows are missing"):
        small.get_blob("r", 2 * KiB, 4 * KiB)


def test_a_failing_put_leaves_no_rows(small: SqliteBackend) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"a" * 5000
        raise OSError("source failed")

    with pytest.raises(OSError, match="source failed"):
        small.put_blob("broken", chunks())
    assert _rows(Path(small.path), "SELECT count(*) FROM dwray_blob_chunks") == [(0,)]
    assert _rows(Path(small.path), "SELECT count(*) FROM dwray_blobs") == [(0,)]


def test_a_put_in_progress_is_invisible_to_readers_who_do_not_wait(small: SqliteBackend) -> None:
    small.put_bytes("old", b"old")
    seen: list[object] = []

    def chunks() -> Iterator[bytes]:
        yield b"x" * 3000
        started = time.monotonic()
        seen.append(small.exists("new"))  # another connection, while the write transaction is open
        seen.append(small.get_blob("old"))
        seen.append(list(small.list_blobs()))
        seen.append(time.monotonic() - started)
        yield b"y" * 10

    small.put_blob("new", chunks())
    assert seen[:3] == [False, b"old", ["old"]]
    assert seen[3] < 1.0
    assert small.get_blob("new") == b"x" * 3000 + b"y" * 10


def test_streaming_put_holds_about_one_chunk(tmp_path: Path) -> None:
    store = SqliteBackend(tmp_path / "big.db", chunk_size=MiB, synchronous="NORMAL")
    block = os.urandom(256 * KiB)
    tracemalloc.start()
    try:
        store.put_blob("big", (block for _ in range(128)))  # 32 MiB
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB
    assert store.size("big") == 32 * MiB
    assert store.get_blob("big", 31 * MiB, 31 * MiB + 10) == block[:10]
    store.close()


def test_closed_backend_refuses_calls(small: SqliteBackend) -> None:
    small.put_bytes("a", b"1")
    small.close()
    with pytest.raises(StorageError, match="closed"):
        small.get_blob("a")


def test_listing_pages_through_many_ids(small: SqliteBackend) -> None:
    ids = [f"p/{i:05d}" for i in range(2500)]
    with sqlite3.connect(small.path) as conn:  # fast: one transaction
        conn.executemany("INSERT INTO dwray_blobs VALUES (?, 0, 1024, 0)", [(i,) for i in ids])
    assert list(small.list_blobs("p/")) == ids
    assert list(small.list_blobs("p/01")) == ids[1000:2000]


# Several processes on one file ----------------------------------------------

_RACER = textwrap.dedent("""
    import os, sys, time
    from dwray.backends.sqlite import SqliteBackend
    from dwray.errors import BlobExists
    store = SqliteBackend(sys.argv[1], chunk_size=4096)
    me = int(sys.argv[2])
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not os.path.exists(sys.argv[4]) and time.monotonic() < deadline:  # start together
        time.sleep(0.001)
    for n in range(int(sys.argv[3])):
        try:
            store.put_blob(f"race/{n}", (bytes([me]) * 4096 for _ in range(8)))
        except BlobExists:
            print("lost", n, flush=True)
        else:
            print("won", n, flush=True)
        store.put_bytes(f"own/{me}/{n}", bytes([me]) * (n + 1))
    store.close()
""")


def test_several_processes_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    SqliteBackend(path).close()
    processes, rounds = 3, 15
    go = tmp_path / "go"
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(path), str(me), str(rounds), str(go)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for me in range(1, processes + 1)]
    for racer in racers:
        assert racer.stdout.readline() == "ready\n", racer.stderr.read()
    go.touch()
    outcomes: dict[int, list[int]] = {n: [] for n in range(rounds)}
    for me, racer in enumerate(racers, 1):
        out, err = racer.communicate(timeout=120)
        assert racer.returncode == 0, err
        for line in out.splitlines():
            outcome, n = line.split()
            if outcome == "won":
                outcomes[int(n)].append(me)
        assert out.count("\n") == rounds
    store = SqliteBackend(path)
    for n, winners in outcomes.items():
        assert len(winners) == 1, (n, winners)
        assert store.get_blob(f"race/{n}") == bytes([winners[0]]) * 4096 * 8
    for me in range(1, processes + 1):
        for n in range(rounds):
            assert store.get_blob(f"own/{me}/{n}") == bytes([me]) * (n + 1)
    store.close()


def test_a_second_process_waits_for_the_write_lock_then_gives_up_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    SqliteBackend(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's long write
    store = SqliteBackend(path, busy_timeout_ms=300)
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="locked"):
            store.put_bytes("a", b"1")
        assert 0.25 < time.monotonic() - started < 5
        assert not store.exists("a")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.put_bytes("a", b"1") == 1
    store.close()


# kill -9 of a writer ----------------------------------------------------------

def _content(n: int) -> bytes:
    """Blob n's bytes, from its number alone: about 40-200 KiB, several 16 KiB chunk rows."""
    seed = hashlib.sha256(str(n).encode()).digest()
    return (seed * (1 + (n * 7919) % 6000))[: 40 * KiB + (n * 4099) % (160 * KiB)]


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from tests.unit.test_backend_sqlite import _content
    from dwray.backends.sqlite import SqliteBackend
    store = SqliteBackend(sys.argv[1], chunk_size=16384)
    first = int(sys.argv[3])
    for n in range(first, first + 100000):
        data = _content(n)
        store.put_blob(f"k/{n:06d}", (data[i:i + 5000] for i in range(0, len(data), 5000)))
        print("ack", n, flush=True)
""")


def test_kill_9_of_a_writer_leaves_only_whole_acknowledged_blobs(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    root = str(Path(__file__).resolve().parents[2])
    acked: list[int] = []
    for round_ in range(3):
        # Each round kills a writer mid-stream; rounds after the first reopen the file a kill left.
        writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), root, str(round_ * 100000)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            want = 20 + 13 * round_
            count = 0
            while count < want and time.monotonic() < deadline:
                line = writer.stdout.readline()
                assert line, writer.stderr.read()
                word, n = line.split()
                assert word == "ack"
                acked.append(int(n))
                count += 1
            time.sleep(0.003 * (round_ + 1))  # land the kill at various points of the next put
            os.kill(writer.pid, signal.SIGKILL)
            rest, _ = writer.communicate(timeout=30)
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        assert writer.returncode == -signal.SIGKILL
        acked += [int(line.split()[1]) for line in rest.splitlines() if line.startswith("ack ")]
        assert count == want
    store = SqliteBackend(path, chunk_size=16384)
    stored = list(store.list_blobs("k/"))
    for n in acked:
        assert store.get_blob(f"k/{n:06d}") == _content(n), n
    # Whatever is stored is whole: an acknowledged blob, or at most the one put the kill hit after its commit.
    unacked = sorted(set(stored) - {f"k/{n:06d}" for n in acked})
    assert len(unacked) <= 3
    for blob_id in stored:
        assert store.get_blob(blob_id) == _content(int(blob_id[2:]))
    assert _rows(path, "SELECT count(*) FROM dwray_blob_chunks WHERE blob_id NOT IN (SELECT blob_id FROM "
                       "dwray_blobs)") == [(0,)]
    assert _rows(path, "PRAGMA integrity_check") == [("ok",)]
    # The same file takes new puts after the kills.
    with pytest.raises(BlobExists):
        store.put_bytes(f"k/{acked[0]:06d}", b"again")
    assert store.put_bytes("after", b"ok") == 2
    store.close()


def test_bounds_past_any_size_are_clipped(small: SqliteBackend) -> None:
    small.put_bytes("h", b"0123456789")
    assert small.get_blob("h", 10**30) == b""
    assert small.get_blob("h", 3, 10**30) == b"3456789"
    assert small.get_ranges("h", [(2**63, 2**64), (0, 2**63)]) == [b"", b"0123456789"]


def test_a_full_database_is_storage_full_and_stores_nothing(small: SqliteBackend) -> None:
    small.put_bytes("first", b"x")
    with small._connection("test", "limit") as conn:  # the connection the next call gets back
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(StorageFull) as raised:
        small.put_blob("big", (b"y" * KiB for _ in range(64)))
    assert "'big'" in str(raised.value)
    assert list(small.list_blobs()) == ["first"]
