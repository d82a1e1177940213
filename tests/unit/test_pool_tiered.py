"""TieredBackend: the conformance suite, moves by age and by size, reads during moves,
SIGKILL at every step of a move, checked reads, scrub, orphans, status.

Tiers are real LocalDiskBackend folders and MemoryBackends; the crash tests
run a move in a child process (``_pool_crash_child.py``) that kills itself
with SIGKILL at a chosen step, then check what it left from the parent.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import pytest

from dwray.backends.base import BlobStat, BytesLike, StorageBackend
from dwray.backends.local import LocalDiskBackend
from dwray.backends.memory import MemoryBackend
from dwray.backends.mirror import MirrorBackend
from dwray.backends.pool_index import PoolIndex
from dwray.backends.tiered import TieredBackend
from dwray.errors import BlobNotFound, IntegrityError, InvalidArgument, StorageError
from dwray.testing.backend_conformance import BackendConformance
from tests.unit._pool_crash_child import BLOCK_SIZE, STEPS

KiB = 1024
REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("_pool_crash_child.py")


class TestTieredLocal(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[TieredBackend]:
        pool = TieredBackend(LocalDiskBackend(tmp_path / "hot"), LocalDiskBackend(tmp_path / "cold"),
                             tmp_path / "index" / "pool.db")
        yield pool
        pool.close()


class TestTieredMemoryOverDisk(BackendConformance):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[TieredBackend]:
        pool = TieredBackend(MemoryBackend(), LocalDiskBackend(tmp_path / "cold"), tmp_path / "index" / "pool.db",
                             block_size=4096)
        yield pool
        pool.close()


class Switchable(StorageBackend):
    """A real backend that raises StorageError while ``down`` is set."""

    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.nested_ids_conflict = inner.nested_ids_conflict
        self.down = False

    def _check(self, operation: str, target: str) -> None:
        if self.down:
            raise StorageError(operation, target, "the disk went away (test)")

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        self._check("put", blob_id)
        return self.inner.put_blob(blob_id, chunks)

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        self._check("get", blob_id)
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


class Tiers:
    """Local hot and cold folders (behind ``Switchable``) and pools over them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hot = Switchable(LocalDiskBackend(root / "hot"))
        self.cold = Switchable(LocalDiskBackend(root / "cold"))
        self.pools: list[TieredBackend] = []

    def pool(self, **options: object) -> TieredBackend:
        options.setdefault("block_size", BLOCK_SIZE)
        pool = TieredBackend(self.hot, self.cold, self.root / "index" / "pool.db", **options)  # type: ignore[arg-type]
        self.pools.append(pool)
        return pool

    def on(self, tier: str) -> list[str]:
        return list((self.hot if tier == "hot" else self.cold).inner.list_blobs())

    def flip(self, tier: str, blob_id: str, offset: int) -> None:
        path = self.root / tier / blob_id
        path.chmod(0o600)
        with open(path, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0xFF]))
        path.chmod(0o400)


@pytest.fixture
def tiers(tmp_path: Path) -> Iterator[Tiers]:
    made = Tiers(tmp_path)
    yield made
    for pool in made.pools:
        pool.close()


def _data(size: int, seed: int = 0) -> bytes:
    return bytes((i * 13 + seed) % 251 for i in range(size))


def _tier_in_index(root: Path, blob_id: str) -> tuple[str, bool]:
    index = PoolIndex(root / "index" / "pool.db")
    try:
        row = index.get(blob_id)
        assert row is not None
        return row.tier, row.cleanup
    finally:
        index.close()


def _move_and_die(root: Path, step: str) -> None:
    """Run a move in a child process that SIGKILLs itself at ``step``."""
    child = subprocess.run([sys.executable, str(CHILD), str(root), step], cwd=REPO, capture_output=True, text=True,
                           timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.returncode == -signal.SIGKILL, child.stderr


# Moves ---------------------------------------------------------------------------


def test_move_by_age(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=60)
    blobs = {f"age/{n}": _data(10 * KiB, n) for n in range(3)}
    for blob_id, data in blobs.items():
        pool.put_bytes(blob_id, data)
    nothing = pool.move_due()
    assert (nothing["moved"], nothing["bytes"], nothing["more"]) == (0, 0, False)
    assert tiers.on("hot") == sorted(blobs)
    result = pool.move_due(now=time.time() + 61)
    assert result == {"moved": 3, "bytes": 30 * KiB, "cleaned": 0, "failed": {}, "more": False, "hot_bytes": 0}
    assert tiers.on("hot") == []
    assert tiers.on("cold") == sorted(blobs)
    for blob_id, data in blobs.items():
        assert pool.get_blob(blob_id) == data
        assert pool.get_blob(blob_id, 5000, 9000) == data[5000:9000]
    status = pool.pool_status()
    assert status["tiers"] == {"cold": {"blobs": 3, "bytes": 30 * KiB}, "hot": {"blobs": 0, "bytes": 0}}
    assert status["moves"] == 3
    assert pool.move_due(now=time.time() + 61)["moved"] == 0


def test_move_by_size_oldest_first(tiers: Tiers) -> None:
    pool = tiers.pool(hot_max_bytes=250 * KiB)
    for n in range(5):
        pool.put_bytes(f"size/{n}", _data(100 * KiB, n))
        time.sleep(0.01)  # distinct creation times
    result = pool.move_due()
    assert (result["moved"], result["hot_bytes"]) == (3, 200 * KiB)
    assert tiers.on("cold") == ["size/0", "size/1", "size/2"]
    assert tiers.on("hot") == ["size/3", "size/4"]
    assert pool.move_due()["moved"] == 0
    for n in range(5):
        assert pool.get_blob(f"size/{n}") == _data(100 * KiB, n)


def test_move_due_bounded_by_max_bytes(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=0)
    for n in range(3):
        pool.put_bytes(f"b/{n}", _data(10 * KiB, n))
    first = pool.move_due(max_bytes=1)
    assert (first["moved"], first["more"]) == (1, True)
    second = pool.move_due(max_bytes=15 * KiB)
    assert (second["moved"], second["more"]) == (2, False)
    assert tiers.on("hot") == []


def test_no_policy_moves_nothing(tiers: Tiers) -> None:
    pool = tiers.pool()
    pool.put_bytes("stay", b"hot forever")
    assert pool.move_due(now=time.time() + 10**9)["moved"] == 0
    assert tiers.on("hot") == ["stay"]


def test_reads_are_transparent_during_moves(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=0)
    blobs = {f"r/{n}": _data(20 * KiB + n, n) for n in range(30)}
    for blob_id, data in blobs.items():
        pool.put_bytes(blob_id, data)
    stop = threading.Event()
    errors: list[str] = []
    reads = [0]

    def reader() -> None:
        rng = random.Random(1)
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline:
            blob_id = rng.choice(list(blobs))
            start = rng.randrange(0, 20 * KiB)
            got = pool.get_blob(blob_id, start, start + 3000)
            if got != blobs[blob_id][start:start + 3000]:
                errors.append(blob_id)
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(30):  # one blob per call, so that reads interleave with every step
            if pool.move_due(max_bytes=1)["moved"] == 0:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert reads[0] > 0
    assert tiers.on("hot") == [] and tiers.on("cold") == sorted(blobs)


def test_a_failing_cold_tier_leaves_the_blob_hot(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=0)
    pool.put_bytes("x", b"stays readable")
    tiers.cold.down = True
    result = pool.move_due()
    assert result["moved"] == 0 and "went away" in result["failed"]["x"]
    assert pool.get_blob("x") == b"stays readable"
    assert pool.pool_status()["members"]["cold"]["up"] is False
    tiers.cold.down = False
    assert pool.move_due()["moved"] == 1
    assert tiers.on("cold") == ["x"]


def test_a_corrupt_hot_copy_is_not_moved(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=0)
    pool.put_bytes("bad", _data(3 * BLOCK_SIZE))
    tiers.flip("hot", "bad", BLOCK_SIZE + 1)
    result = pool.move_due()
    assert result["moved"] == 0 and "CRC" in result["failed"]["bad"]
    assert tiers.on("cold") == []


@pytest.mark.parametrize("step", STEPS)
def test_a_move_killed_at_any_step_ends_moved_exactly_once(tmp_path: Path, step: str) -> None:
    blobs = {f"crash/{n}": _data(5 * BLOCK_SIZE + 123, n) for n in range(3)}
    first = TieredBackend(LocalDiskBackend(tmp_path / "hot"), LocalDiskBackend(tmp_path / "cold"),
                          tmp_path / "index" / "pool.db", block_size=BLOCK_SIZE)
    for blob_id, data in blobs.items():
        first.put_bytes(blob_id, data)
    first.close()

    _move_and_die(tmp_path, step)

    hot, cold = LocalDiskBackend(tmp_path / "hot"), LocalDiskBackend(tmp_path / "cold")
    pool = TieredBackend(hot, cold, tmp_path / "index" / "pool.db", after_seconds=0, block_size=BLOCK_SIZE)
    try:
        for blob_id, data in blobs.items():  # readable as the crash left it
            assert pool.get_blob(blob_id) == data
        assert list(pool.list_blobs()) == sorted(blobs)
        result = pool.move_due()
        assert result["failed"] == {}
        assert result["cleaned"] == (1 if step in ("after-switch", "before-hot-delete", "after-hot-delete") else 0)
        for blob_id, data in blobs.items():
            assert pool.get_blob(blob_id) == data
        assert list(cold.list_blobs()) == sorted(blobs)  # each exactly once
        assert list(hot.list_blobs()) == []
        status = pool.pool_status()
        assert status["tiers"]["cold"] == {"blobs": 3, "bytes": sum(map(len, blobs.values()))}
        assert status["cleanups_pending"] == 0
    finally:
        pool.close()
    for blob_id in blobs:
        assert _tier_in_index(tmp_path, blob_id) == ("cold", False)


# Reads, scrub, deletes -------------------------------------------------------------------


def test_a_corrupt_copy_is_an_integrity_error(tiers: Tiers) -> None:
    pool = tiers.pool()
    data = _data(4 * BLOCK_SIZE)
    pool.put_bytes("ruined", data)
    tiers.flip("hot", "ruined", 2 * BLOCK_SIZE + 5)
    with pytest.raises(IntegrityError, match="'ruined'"):
        pool.get_blob("ruined")
    assert pool.get_blob("ruined", 0, BLOCK_SIZE) == data[:BLOCK_SIZE]
    result = pool.scrub()
    assert (result["corrupt"], result["unrepairable"]) == (1, ["ruined"])


def test_a_missing_copy_is_a_storage_error_and_scrub_counts_it(tiers: Tiers) -> None:
    pool = tiers.pool()
    pool.put_bytes("gone", b"x" * 10)
    os.unlink(tiers.root / "hot" / "gone")
    with pytest.raises(StorageError, match="'gone'"):
        pool.get_blob("gone")
    assert pool.scrub()["missing"] == 1


def test_a_leftover_copy_serves_reads_and_repairs(tmp_path: Path, tiers: Tiers) -> None:
    # A move killed after the index switch leaves the hot copy beside the cold one.
    data = _data(6 * BLOCK_SIZE)
    pool = tiers.pool(after_seconds=0)
    pool.put_bytes("crash/0", data)
    pool.close()
    _move_and_die(tmp_path, "after-switch")
    pool = tiers.pool()
    tiers.flip("cold", "crash/0", 3 * BLOCK_SIZE)
    assert pool.get_blob("crash/0") == data  # from the hot copy
    result = pool.scrub()
    assert (result["corrupt"], result["repaired"], result["unrepairable"]) == (1, 1, [])
    assert tiers.cold.inner.get_blob("crash/0") == data


def test_scrub_walks_with_a_cursor_and_removes_orphans(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=0)
    for n in range(8):
        pool.put_bytes(f"s/{n}", _data(10 * KiB, n))
    pool.move_due(max_bytes=30 * KiB)
    tiers.hot.inner.put_bytes("orphan/hot", b"left by a crashed put")
    tiers.cold.inner.put_bytes("orphan/cold", b"left by a crashed delete")
    cursor, calls, seen = "", 0, 0
    while True:
        result = pool.scrub(cursor, max_bytes=25 * KiB, grace_seconds=0)
        calls += 1
        seen += result["blobs"]
        if result["done"]:
            assert result["orphans_removed"] == 2
            break
        assert result["orphans_removed"] == 0
        cursor = result["cursor"]
        assert calls < 20
    assert calls >= 3 and seen == 8
    assert "orphan/hot" not in tiers.on("hot") and "orphan/cold" not in tiers.on("cold")
    assert len(tiers.on("hot")) + len(tiers.on("cold")) == 8


def test_scrub_keeps_young_orphans(tiers: Tiers) -> None:
    pool = tiers.pool()
    tiers.hot.inner.put_bytes("young", b"maybe a put in flight")
    assert pool.scrub(grace_seconds=3600)["orphans_removed"] == 0
    assert tiers.on("hot") == ["young"]


def test_delete_removes_both_copies(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=0)
    pool.put_bytes("moved", b"1")
    pool.move_due()
    pool.put_bytes("hot", b"2")
    pool.delete_blob("moved")
    pool.delete_blob("hot")
    assert tiers.on("hot") == [] and tiers.on("cold") == []
    with pytest.raises(BlobNotFound):
        pool.get_blob("moved")


def test_an_orphan_on_hot_does_not_block_a_put(tiers: Tiers) -> None:
    tiers.hot.inner.put_bytes("x", b"left by a crash")
    pool = tiers.pool()
    pool.put_bytes("x", b"the real one")
    assert pool.get_blob("x") == b"the real one"


# Status and lifecycle ----------------------------------------------------------------


def test_pool_status_is_json(tiers: Tiers) -> None:
    pool = tiers.pool(after_seconds=5, hot_max_bytes=1000)
    pool.put_bytes("x", b"12345")
    status = json.loads(json.dumps(pool.pool_status()))
    assert status["kind"] == "tiered"
    assert (status["blobs"], status["bytes"]) == (1, 5)
    assert status["tiers"]["hot"] == {"blobs": 1, "bytes": 5}
    assert set(status["members"]) == {"hot", "cold"}
    assert (status["after_seconds"], status["hot_max_bytes"]) == (5, 1000)
    assert pool.catch_up() == {}


def test_an_index_of_another_pool_kind_is_refused(tmp_path: Path) -> None:
    mirror = MirrorBackend({"a": MemoryBackend()}, tmp_path / "index" / "pool.db")
    mirror.close()
    with pytest.raises(StorageError, match="mirror pool"):
        TieredBackend(MemoryBackend(), MemoryBackend(), tmp_path / "index" / "pool.db")


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    index = tmp_path / "i" / "pool.db"
    one = MemoryBackend()
    bad: list[tuple[Callable[[], object], str]] = [
        (lambda: TieredBackend(one, one, index), "distinct"),
        (lambda: TieredBackend(one, MemoryBackend(), index, after_seconds=-1), "after_seconds"),
        (lambda: TieredBackend(one, MemoryBackend(), index, hot_max_bytes=1.5), "hot_max_bytes"),
        (lambda: TieredBackend(one, "cold", index), "StorageBackend"),  # type: ignore[arg-type]
    ]
    for make, named in bad:
        with pytest.raises(InvalidArgument, match=named):
            make()
    pool = TieredBackend(one, MemoryBackend(), index)
    try:
        with pytest.raises(InvalidArgument, match="max_bytes"):
            pool.move_due(max_bytes=-1)
        with pytest.raises(InvalidArgument, match="now"):
            pool.move_due(now="soon")  # type: ignore[arg-type]
    finally:
        pool.close()
