"""MirrorBackend: the conformance suite, quorum writes with members down, hints and
catch-up, checked reads and read repair, scrub, orphans, the index file, status and threads.

Members are real LocalDiskBackend folders and MemoryBackends. A member that is
"down" is a real backend behind ``Switchable``, whose calls raise StorageError
while its flag is set: a test double for a disk that went away.
"""
from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from dwray.backends.base import BlobStat, BytesLike, StorageBackend
from dwray.backends.local import LocalDiskBackend
from dwray.backends.memory import MemoryBackend
from dwray.backends.mirror import MirrorBackend
from dwray.backends.pool_index import BlobRow, PoolIndex
from dwray.backends.tiered import TieredBackend
from dwray.errors import (
    BlobExists,
    BlobNotFound,
    IntegrityError,
    InvalidArgument,
    InvalidBlobId,
    StorageError,
)
from dwray.testing.backend_conformance import BackendConformance

KiB = 1024
MiB = 1024 * KiB
BLOCK = 4 * KiB


def _pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(("dwray-mirror", "dwray-pool"))}


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = _pool_threads()
    yield
    assert _pool_threads() - before == set()


class TestMirrorOfTwo(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[MirrorBackend]:
        pool = MirrorBackend({"a": LocalDiskBackend(tmp_path / "a"), "b": LocalDiskBackend(tmp_path / "b")},
                             tmp_path / "index" / "pool.db")
        yield pool
        pool.close()


class TestMirrorOfThreeQuorumTwo(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[MirrorBackend]:
        members = {name: LocalDiskBackend(tmp_path / name) for name in ("a", "b", "c")}
        pool = MirrorBackend(members, tmp_path / "index" / "pool.db", write_quorum=2)
        yield pool
        pool.close()


class TestMirrorOfDiskAndMemory(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[MirrorBackend]:
        pool = MirrorBackend({"disk": LocalDiskBackend(tmp_path / "a"), "ram": MemoryBackend()},
                             tmp_path / "index" / "pool.db")
        yield pool
        pool.close()


class Switchable(StorageBackend):
    """A real backend that raises StorageError while ``down`` is set; records the ranges it serves."""

    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.nested_ids_conflict = inner.nested_ids_conflict
        self.down = False
        self.reads: list[tuple[str, int, int | None]] = []
        self.before_put: Callable[[], None] | None = None
        #: fail a put after this many chunks (a disk that dies mid-write)
        self.fail_after_chunks: int | None = None

    def _check(self, operation: str, target: str) -> None:
        if self.down:
            raise StorageError(operation, target, "the disk went away (test)")

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        self._check("put", blob_id)
        if self.before_put is not None:
            self.before_put()
        if self.fail_after_chunks is not None:
            chunks = self._failing(blob_id, chunks, self.fail_after_chunks)
        return self.inner.put_blob(blob_id, chunks)

    @staticmethod
    def _failing(blob_id: str, chunks: Iterable[BytesLike], count: int) -> Iterator[BytesLike]:
        for n, chunk in enumerate(chunks):
            if n == count:
                raise StorageError("put", blob_id, "the disk died mid-write (test)")
            yield chunk

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        self._check("get", blob_id)
        self.reads.append((blob_id, start, end))
        return self.inner.get_blob(blob_id, start, end)

    def delete_blob(self, blob_id: str) -> None:
        self._check("delete", blob_id)
        self.inner.delete_blob(blob_id)

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        self._check("list", prefix)
        return self.inner.list_blobs(prefix)

    def stat_blob(self, blob_id: str) -> BlobStat:
        self._check("stat", blob_id)
        return self.inner.stat_blob(blob_id)


class Disks:
    """Local-disk members behind ``Switchable``, and pools over them."""

    def __init__(self, root: Path, names: Iterable[str]) -> None:
        self.root = root
        self.members = {name: Switchable(LocalDiskBackend(root / name)) for name in names}
        self.pools: list[MirrorBackend] = []

    def pool(self, **options: object) -> MirrorBackend:
        options.setdefault("block_size", BLOCK)
        pool = MirrorBackend(self.members, self.root / "index" / "pool.db", **options)  # type: ignore[arg-type]
        self.pools.append(pool)
        return pool

    def file(self, name: str, blob_id: str) -> Path:
        return self.root / name / blob_id

    def replica(self, name: str, blob_id: str) -> bytes:
        return self.members[name].inner.get_blob(blob_id)

    def flip(self, name: str, blob_id: str, offset: int) -> None:
        """Damage one byte of a replica on disk (LocalDiskBackend makes blobs 0400)."""
        path = self.file(name, blob_id)
        path.chmod(0o600)
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
        path.chmod(0o400)


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[Callable[..., Disks]]:
    made: list[Disks] = []

    def make(*names: str) -> Disks:
        made.append(Disks(tmp_path, names or ("a", "b")))
        return made[-1]

    yield make
    for group in made:
        for pool in group.pools:
            pool.close()


def _data(size: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed) % 251 for i in range(size))


def _wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _replica_is(group: Disks, name: str, blob_id: str, data: bytes) -> bool:
    try:
        return group.replica(name, blob_id) == data
    except BlobNotFound:
        return False


# Writes -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [10 * KiB, 3 * MiB], ids=["buffered", "streamed"])
def test_members_are_written_at_the_same_time(disks: Callable[..., Disks], size: int) -> None:
    group = disks("a", "b", "c")
    barrier = threading.Barrier(3, timeout=10)
    for member in group.members.values():
        member.before_put = barrier.wait  # a serial writer would break the barrier
    pool = group.pool()
    data = _data(size)
    chunks = [data[i:i + 256 * KiB] for i in range(0, size, 256 * KiB)]
    assert pool.put_blob("together", chunks) == size
    assert not barrier.broken
    for name in group.members:
        assert group.replica(name, "together") == data


@pytest.mark.parametrize("size", [10 * KiB, 3 * MiB], ids=["buffered", "streamed"])
def test_member_down_put_acknowledged_by_quorum_then_caught_up(disks: Callable[..., Disks], size: int) -> None:
    group = disks("a", "b", "c")
    pool = group.pool(write_quorum=2)
    pool.put_bytes("early", b"put while c was up")
    group.members["c"].down = True
    blobs = {f"missed/{n}": _data(size, n) for n in range(3)}
    for blob_id, data in blobs.items():
        assert pool.put_bytes(blob_id, data) == size
        assert pool.get_blob(blob_id) == data
    pool.delete_blob("early")
    status = pool.pool_status()
    assert status["members"]["c"]["hints"] == 4
    assert status["members"]["c"]["up"] is False
    assert "went away" in status["members"]["c"]["last_error"]
    assert status["hints_pending"] == 4

    group.members["c"].down = False
    assert group.replica("c", "early") == b"put while c was up"
    result = pool.catch_up()
    assert result == {"copied": 3, "deleted": 1, "checked": 0, "failed": 0, "pending": 0}
    for blob_id, data in blobs.items():
        assert group.replica("c", blob_id) == data
    with pytest.raises(BlobNotFound):
        group.replica("c", "early")
    assert pool.pool_status()["hints_pending"] == 0
    assert pool.catch_up()["pending"] == 0


def test_catch_up_while_member_still_down_keeps_hints(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool(write_quorum=1)
    group.members["b"].down = True
    pool.put_bytes("x", b"x")
    result = pool.catch_up()
    assert result["failed"] == 1 and result["pending"] == 1
    group.members["b"].down = False
    assert pool.catch_up()["copied"] == 1
    assert group.replica("b", "x") == b"x"


def test_background_thread_catches_up(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool(write_quorum=1, member_retry_after=0.05, catch_up_interval=0.05)
    group.members["b"].down = True
    pool.put_bytes("later", b"copied by the background thread")
    pool.put_bytes("gone", b"deleted while b was down")
    group.members["b"].down = False
    assert _wait_for(lambda: _replica_is(group, "b", "later", b"copied by the background thread"))
    assert _wait_for(lambda: pool.pool_status()["hints_pending"] == 0)
    group.members["b"].down = True
    pool.delete_blob("gone")  # b never had it; the hint is harmless
    group.members["b"].down = False
    assert _wait_for(lambda: pool.pool_status()["hints_pending"] == 0)


def test_a_put_after_a_member_failed_skips_it_until_retry_after(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool(write_quorum=1, member_retry_after=3600)
    group.members["b"].down = True
    pool.put_bytes("first", b"1")
    group.members["b"].down = False  # back, but the pool does not know yet
    pool.put_bytes("second", b"2")
    with pytest.raises(BlobNotFound):
        group.replica("b", "second")
    assert pool.pool_status()["members"]["b"]["hints"] == 2
    assert pool.catch_up()["copied"] == 2  # catch-up always tries: that is how a member comes back
    pool.put_bytes("third", b"3")
    assert group.replica("b", "third") == b"3"


@pytest.mark.parametrize("size", [10 * KiB, 3 * MiB], ids=["buffered", "streamed"])
def test_quorum_missed_leaves_nothing_and_names_the_members(disks: Callable[..., Disks], size: int) -> None:
    group = disks("a", "b", "c")
    pool = group.pool(write_quorum=2)
    group.members["b"].down = True
    group.members["c"].down = True
    with pytest.raises(StorageError) as raised:
        pool.put_bytes("lost", _data(size))
    message = str(raised.value)
    assert "'lost'" in message and "2 needed" in message
    assert "b: " in message and "c: " in message and "went away" in message
    assert list(pool.list_blobs()) == []
    assert not pool.exists("lost")
    assert list(group.members["a"].inner.list_blobs()) == []
    assert pool.pool_status()["hints_pending"] == 0
    group.members["b"].down = group.members["c"].down = False
    assert pool.put_bytes("lost", b"retried") == 7


def test_a_member_dying_mid_stream_is_caught_up_later(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b", "c")
    pool = group.pool(write_quorum=2)
    group.members["c"].fail_after_chunks = 3
    data = _data(3 * MiB)
    pool.put_blob("big", (data[i:i + 128 * KiB] for i in range(0, len(data), 128 * KiB)))
    assert pool.get_blob("big") == data
    with pytest.raises(BlobNotFound):
        group.replica("c", "big")  # nothing partial either
    group.members["c"].fail_after_chunks = None
    assert pool.catch_up()["copied"] == 1
    assert group.replica("c", "big") == data


def test_a_put_stops_reading_once_the_quorum_is_lost(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    group.members["b"].fail_after_chunks = 20
    pulled = [0]

    def chunks() -> Iterator[bytes]:
        for n in range(200):  # 25 MiB if read to the end
            pulled[0] += 1
            yield bytes([n]) * (128 * KiB)

    with pytest.raises(StorageError, match="b: .*died mid-write"):
        pool.put_blob("doomed", chunks())
    assert pulled[0] < 60
    assert list(group.members["a"].inner.list_blobs()) == []
    assert list(pool.list_blobs()) == []


def test_threads_put_and_delete_while_a_member_flaps(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b", "c")
    pool = group.pool(write_quorum=2, member_retry_after=0.01)
    flapping = group.members["c"]
    stop = threading.Event()

    def flap() -> None:
        while not stop.wait(0.005):
            flapping.down = not flapping.down

    def work(thread: int) -> dict[str, bytes]:
        kept = {}
        for n in range(20):
            blob_id = f"t{thread}/{n}"
            data = _data(5 * KiB + n, thread * 100 + n)
            pool.put_bytes(blob_id, data)
            assert pool.get_blob(blob_id) == data
            if n % 4 == 0:
                pool.delete_blob(blob_id)
            else:
                kept[blob_id] = data
        return kept

    flapper = threading.Thread(target=flap)
    flapper.start()
    kept: dict[str, bytes] = {}
    try:
        results: list[dict[str, bytes]] = [{} for _ in range(4)]
        workers = [threading.Thread(target=lambda t=t: results.__setitem__(t, work(t))) for t in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        for result in results:
            kept.update(result)
    finally:
        stop.set()
        flapper.join()
    flapping.down = False
    assert len(kept) == 4 * 15
    assert list(pool.list_blobs()) == sorted(kept)
    for _ in range(5):
        if pool.catch_up()["pending"] == 0:
            break
    assert pool.pool_status()["hints_pending"] == 0
    for name in group.members:
        assert sorted(group.members[name].inner.list_blobs()) == sorted(kept)
        for blob_id, data in kept.items():
            assert group.replica(name, blob_id) == data


def test_default_quorum_is_every_member(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    group.members["a"].down = True
    with pytest.raises(StorageError, match="a: "):
        pool.put_bytes("x", b"x")
    assert list(group.members["b"].inner.list_blobs()) == []


def test_orphan_replicas_do_not_block_a_put(disks: Callable[..., Disks]) -> None:
    # A crash between the member puts and the index commit leaves replicas the index does not know.
    group = disks("a", "b")
    for member in group.members.values():
        member.inner.put_bytes("orphan", b"from a crashed put")
    pool = group.pool()
    pool.put_bytes("orphan", b"the real one")
    assert pool.get_blob("orphan") == b"the real one"
    assert group.replica("a", "orphan") == group.replica("b", "orphan") == b"the real one"


# Reads --------------------------------------------------------------------------


def test_corrupt_replica_is_read_around_and_repaired(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    data = _data(10 * BLOCK + 100)
    pool.put_bytes("blob", data)
    group.flip("a", "blob", 5 * BLOCK + 3)
    assert group.replica("a", "blob") != data
    assert pool.get_blob("blob") == data
    assert _wait_for(lambda: _replica_is(group, "a", "blob", data))
    assert stat.S_IMODE(os.stat(group.file("a", "blob")).st_mode) == 0o400
    assert _wait_for(lambda: pool.pool_status()["repairs"] == 1)


def test_deleted_replica_is_read_around_and_repaired(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    data = _data(3 * BLOCK)
    pool.put_bytes("dir/blob", data)
    os.unlink(group.file("a", "dir/blob"))
    assert pool.get_blob("dir/blob", 10, 20) == data[10:20]
    assert _wait_for(lambda: _replica_is(group, "a", "dir/blob", data))


def test_range_reads_check_only_the_blocks_they_cover(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    data = _data(10 * BLOCK)
    pool.put_bytes("blob", data)
    group.flip("a", "blob", 7 * BLOCK + 1)
    group.members["a"].reads.clear()
    start, end = 2 * BLOCK + 10, 3 * BLOCK + 20
    assert pool.get_blob("blob", start, end) == data[start:end]
    assert group.members["a"].reads == [("blob", 2 * BLOCK, 4 * BLOCK)]  # widened to blocks 2-3, no more
    assert group.members["b"].reads == []
    assert pool.pool_status()["repairs_queued"] == 0
    assert group.replica("a", "blob") != data  # block 7 was not read, so not found yet
    assert pool.get_ranges("blob", [(7 * BLOCK, 7 * BLOCK + 5), (0, 3)]) == [data[7 * BLOCK:7 * BLOCK + 5], data[:3]]
    assert group.members["b"].reads[0] == ("blob", 7 * BLOCK, 8 * BLOCK)
    assert _wait_for(lambda: _replica_is(group, "a", "blob", data))


def test_every_replica_corrupt_is_an_integrity_error(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    data = _data(4 * BLOCK)
    pool.put_bytes("ruined", data)
    group.flip("a", "ruined", 100)
    group.flip("b", "ruined", 100)
    for read in (lambda: pool.get_blob("ruined"), lambda: pool.get_ranges("ruined", [(0, 10)])):
        with pytest.raises(IntegrityError) as raised:
            read()
        assert "'ruined'" in str(raised.value)
    assert pool.get_blob("ruined", BLOCK, 2 * BLOCK) == data[BLOCK:2 * BLOCK]  # the good blocks still read


def test_a_replica_that_grew_or_shrank_is_corrupt(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    data = _data(2 * BLOCK + 10)
    pool.put_bytes("blob", data)
    path = group.file("a", "blob")
    path.chmod(0o600)
    with open(path, "r+b") as f:
        f.truncate(2 * BLOCK)
    assert pool.get_blob("blob") == data
    assert _wait_for(lambda: _replica_is(group, "a", "blob", data))


def test_every_replica_missing_or_member_down_is_a_storage_error(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    pool.put_bytes("blob", b"x" * 100)
    os.unlink(group.file("a", "blob"))
    group.members["b"].down = True
    with pytest.raises(StorageError) as raised:
        pool.get_blob("blob")
    assert "'blob'" in str(raised.value) and "a: " in str(raised.value) and "b: " in str(raised.value)


def test_member_down_reads_from_the_other(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    pool.put_bytes("blob", b"data")
    group.members["a"].down = True
    assert pool.get_blob("blob") == b"data"
    assert pool.pool_status()["members"]["a"]["up"] is False


# Scrub --------------------------------------------------------------------------


def test_scrub_finds_and_repairs_corrupt_and_missing_replicas(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    blobs = {f"s/{n}": _data(3 * BLOCK + n, n) for n in range(6)}
    for blob_id, data in blobs.items():
        pool.put_bytes(blob_id, data)
    group.flip("a", "s/1", 2 * BLOCK)
    os.unlink(group.file("b", "s/4"))
    result = pool.scrub()
    good_bytes = 2 * sum(map(len, blobs.values())) - len(blobs["s/4"]) - len(blobs["s/1"])
    assert result == {
        "cursor": "", "done": True, "blobs": 6, "bytes": good_bytes,
        "corrupt": 1, "missing": 1, "repaired": 2, "unrepairable": [], "orphans_removed": 0,
    }
    for blob_id, data in blobs.items():
        assert group.replica("a", blob_id) == data
        assert group.replica("b", blob_id) == data
    again = pool.scrub()
    assert (again["corrupt"], again["missing"], again["repaired"]) == (0, 0, 0)
    last = pool.pool_status()["last_scrub"]
    assert last["done"] is True and last["pass_finished_at"] >= last["at"] - 1


def test_scrub_walks_with_a_cursor_and_a_byte_budget(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    ids = [f"w/{n:02d}" for n in range(10)]
    for n, blob_id in enumerate(ids):
        pool.put_bytes(blob_id, _data(25 * KiB, n))
    group.flip("b", "w/07", 1)
    cursor, calls, seen, corrupt = "", 0, 0, 0
    while True:
        result = pool.scrub(cursor, max_bytes=120 * KiB)
        calls += 1
        seen += result["blobs"]
        corrupt += result["corrupt"]
        assert result["bytes"] <= 120 * KiB + 50 * KiB
        if result["done"]:
            break
        assert result["cursor"] > cursor
        cursor = result["cursor"]
        assert calls < 20
    assert calls >= 4
    assert seen == 10 and corrupt == 1
    assert group.replica("b", "w/07") == _data(25 * KiB, 7)


def test_scrub_removes_orphans_only_after_the_grace_period(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    pool.put_bytes("kept", b"indexed")
    group.members["a"].inner.put_bytes("orphan/one", b"left by a crash")
    group.members["b"].inner.put_bytes("orphan/two", b"left by a crash")
    assert pool.scrub(grace_seconds=3600)["orphans_removed"] == 0
    assert group.replica("a", "orphan/one") == b"left by a crash"
    assert pool.scrub(grace_seconds=0)["orphans_removed"] == 2
    assert list(group.members["a"].inner.list_blobs()) == ["kept"]
    assert list(group.members["b"].inner.list_blobs()) == ["kept"]
    assert pool.get_blob("kept") == b"indexed"


def test_scrub_reports_unrepairable_blobs(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    pool.put_bytes("fine", b"f" * 100)
    pool.put_bytes("ruined", b"r" * 100)
    group.flip("a", "ruined", 1)
    group.flip("b", "ruined", 2)
    result = pool.scrub()
    assert result["unrepairable"] == ["ruined"]
    assert (result["corrupt"], result["repaired"]) == (2, 0)


def test_scrub_refuses_bad_arguments(disks: Callable[..., Disks]) -> None:
    pool = disks().pool()
    with pytest.raises(InvalidBlobId):
        pool.scrub("../x")
    for bad in ({"max_bytes": 0}, {"max_bytes": "1"}, {"grace_seconds": -1}, {"cursor": 5}):
        with pytest.raises(InvalidArgument):
            pool.scrub(**bad)  # type: ignore[arg-type]


# The index, status and lifecycle ----------------------------------------------------


def test_index_is_private_and_holds_no_blob_data(tmp_path: Path, disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    marker = b"PAYLOAD-MARKER-" * 64
    pool.put_bytes("secret/blob", marker)
    folder = tmp_path / "index"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = sorted(folder.iterdir())
    assert [f.name for f in files] == ["pool.db", "pool.db-shm", "pool.db-wal"]
    stored = b""
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        stored += f.read_bytes()
    assert b"secret/blob" in stored
    assert b"PAYLOAD-MARKER" not in stored


def test_index_is_wal_with_full_sync_and_pages_its_listings(tmp_path: Path) -> None:
    index = PoolIndex(tmp_path / "index" / "pool.db")
    try:
        assert index._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert index._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        ids = [f"p/{n:04d}" for n in range(25)] + ["p", "p0", "q"]
        for blob_id in ids:
            index.insert(BlobRow(blob_id, 3, BLOCK, b"", 0.0))
        assert list(index.ids("", page=4)) == sorted(ids)
        assert list(index.ids("p/", page=4)) == sorted(i for i in ids if i.startswith("p/"))
        assert list(index.ids("p", page=1000)) == sorted(i for i in ids if i.startswith("p"))
        assert index.totals() == {"": (28, 84)}
        with pytest.raises(BlobExists):
            index.insert(BlobRow("q", 1, BLOCK, b"", 0.0))
    finally:
        index.close()


def test_reopened_pool_keeps_blobs_and_hints(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool(write_quorum=1)
    pool.put_bytes("before", b"1")
    group.members["b"].down = True
    pool.put_bytes("missed", b"2")
    pool.close()
    group.members["b"].down = False
    again = group.pool(write_quorum=1)
    assert list(again.list_blobs()) == ["before", "missed"]
    assert again.stat_blob("missed").size == 1
    assert again.catch_up()["copied"] == 1
    assert group.replica("b", "missed") == b"2"


def test_an_index_of_another_pool_kind_is_refused(tmp_path: Path) -> None:
    tiered = TieredBackend(MemoryBackend(), MemoryBackend(), tmp_path / "index" / "pool.db")
    tiered.close()
    with pytest.raises(StorageError, match="tiered pool"):
        MirrorBackend({"a": MemoryBackend()}, tmp_path / "index" / "pool.db")


def test_pool_status_is_json(disks: Callable[..., Disks]) -> None:
    group = disks("a", "b")
    pool = group.pool()
    pool.put_bytes("x", b"12345")
    status = json.loads(json.dumps(pool.pool_status()))
    assert status["kind"] == "mirror"
    assert (status["blobs"], status["bytes"], status["write_quorum"]) == (1, 5, 2)
    assert set(status["members"]) == {"a", "b"}
    assert status["members"]["a"] == {"up": True, "last_error": "", "hints": 0}
    assert {"hints_pending", "tiers", "repairs", "moves", "last_scrub"} <= set(status)


def test_close_stops_the_background_thread(disks: Callable[..., Disks]) -> None:
    before = _pool_threads()
    pool = disks().pool()
    pool.put_bytes("big", _data(3 * MiB))  # streamed: starts writer threads too
    assert len(_pool_threads() - before) >= 1
    pool.close()
    pool.close()
    assert _pool_threads() - before == set()


def test_bad_construction_is_refused(tmp_path: Path) -> None:
    index = tmp_path / "i" / "pool.db"
    memory = MemoryBackend()
    for members, options in [
        ({}, {}),
        ({"a b": memory}, {}),
        ({"a": object()}, {}),
        ({"a": memory, "b": memory}, {}),
        ({"a": memory}, {"write_quorum": 2}),
        ({"a": memory}, {"write_quorum": 0}),
        ({"a": memory}, {"block_size": 10}),
        ({"a": memory}, {"member_retry_after": -1}),
    ]:
        with pytest.raises(InvalidArgument):
            MirrorBackend(members, index, **options)  # type: ignore[arg-type]
