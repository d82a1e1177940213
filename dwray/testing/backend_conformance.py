"""The storage backend conformance suite.

Every backend's tests subclass ``BackendConformance`` and provide a ``backend``
fixture that returns a fresh, empty backend; the whole suite then runs against
it (in the spirit of fsspec's abstract tests)::

    from dwray.testing.backend_conformance import BackendConformance

    class TestLocalDisk(BackendConformance):
        @pytest.fixture
        def backend(self, tmp_path):
            return LocalDiskBackend(tmp_path / "blobs")

Class attributes scale the heavy tests for slow backends.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from dwray.backends.base import BlobStat, StorageBackend
from dwray.errors import BlobExists, BlobNotFound, InvalidBlobId, InvalidRange

__all__ = ["BAD_BLOB_IDS", "BAD_PREFIXES", "BackendConformance"]

MiB = 1024 * 1024

#: ids every backend must refuse with ``InvalidBlobId``, in every method
BAD_BLOB_IDS: list[object] = [
    "",
    "/",
    "/etc/passwd",
    "..",
    "../x",
    "a/../b",
    "a/..",
    ".",
    "./a",
    "a/./b",
    "a//b",
    "a/",
    ".hidden",
    ".tmp-0123456789abcdef",
    "a/.tmp-1",
    "a\x00b",
    "a\nb",
    "abc\n",
    "a\tb",
    "a\\b",
    "\\",
    "..\\x",
    "C:\\x",
    "C:",
    "a b",
    "a*",
    "~root",
    "%2e%2e",
    "\u00e9",  # é
    "\uff41",  # fullwidth a
    "a\u200bb",  # zero-width space
    "\u202eabc",  # right-to-left override
    "a\u0301",  # combining acute accent
    "\ufb01le",  # "fi" ligature
    "\u2024\u2024",  # one-dot leaders that look like ".."
    "a\u2215b",  # division slash
    "a\uff0fb",  # fullwidth solidus
    "\u0430",  # Cyrillic a
    "x" * 129,
    "/".join(["a"] * 600),
    b"bytes",
    None,
    42,
    ("a",),
]

#: listing prefixes every backend must refuse with ``InvalidBlobId``
BAD_PREFIXES: list[object] = [
    "/",
    "/etc",
    "..",
    "../",
    "a/../",
    "a//",
    ".",
    "./",
    "a\x00",
    "a\\",
    "\u00e9/",
    None,
    b"a",
]

_DATA = bytes(range(256)) * 4  # 1 KiB, every offset distinct mod 256


def _ids_with(backend: StorageBackend, prefix: str = "") -> list[str]:
    return list(backend.list_blobs(prefix))


class BackendConformance:
    """Tests every ``StorageBackend`` must pass. Subclass and define ``backend``."""

    #: size of the large streamed blob
    large_blob_size = 64 * MiB
    #: threads and blobs per thread in the concurrency tests
    threads = 8
    blobs_per_thread = 25

    @pytest.fixture
    def backend(self) -> StorageBackend:
        raise NotImplementedError("subclasses provide a `backend` fixture returning an empty backend")

    # Round trips ----------------------------------------------------------

    def test_put_get_round_trip(self, backend: StorageBackend) -> None:
        assert backend.put_blob("obj", [b"hello ", b"world"]) == 11
        data = backend.get_blob("obj")
        assert data == b"hello world"
        assert type(data) is bytes

    def test_put_accepts_every_bytes_like(self, backend: StorageBackend) -> None:
        ints = array("I", [1, 2, 3])
        chunks = [
            b"ab",
            bytearray(b"cd"),
            memoryview(b"ef"),
            memoryview(b"0123456789")[2:5],
            memoryview(b"abcdef")[::2],  # not contiguous
            memoryview(ints),  # items wider than a byte
        ]
        expected = b"abcdef234ace" + ints.tobytes()
        assert backend.put_blob("mixed", chunks) == len(expected)
        assert backend.get_blob("mixed") == expected

    def test_reused_chunk_buffer_is_copied_as_it_comes(self, backend: StorageBackend) -> None:
        buffer = bytearray(4)

        def refill() -> Iterator[bytearray]:
            for letter in b"abc":
                buffer[:] = bytes([letter]) * 4
                yield buffer

        backend.put_blob("reused", refill())
        assert backend.get_blob("reused") == b"aaaabbbbcccc"

    def test_many_chunks(self, backend: StorageBackend) -> None:
        chunks = [bytes([i % 251]) * (i % 97) for i in range(2000)]
        expected = b"".join(chunks)
        assert backend.put_blob("many", iter(chunks)) == len(expected)
        assert backend.get_blob("many") == expected
        assert backend.size("many") == len(expected)

    def test_empty_blob(self, backend: StorageBackend) -> None:
        assert backend.put_blob("empty", []) == 0
        assert backend.put_blob("empty-chunks", [b"", bytearray(), memoryview(b"")]) == 0
        assert backend.get_blob("empty") == b""
        assert backend.get_blob("empty", 0, 10) == b""
        assert backend.stat_blob("empty-chunks").size == 0
        assert backend.exists("empty")
        assert _ids_with(backend) == ["empty", "empty-chunks"]

    def test_put_bytes(self, backend: StorageBackend) -> None:
        assert backend.put_bytes("one", b"single buffer") == 13
        assert backend.put_bytes("two", bytearray(b"array")) == 5
        assert backend.get_blob("one") == b"single buffer"
        assert backend.get_blob("two") == b"array"

    def test_non_bytes_chunk_is_a_type_error_and_stores_nothing(self, backend: StorageBackend) -> None:
        for bad in ("text", 5, [1, 2]):
            with pytest.raises(TypeError):
                backend.put_blob("typed", [b"ok", bad])
            assert not backend.exists("typed")
        assert _ids_with(backend) == []

    # Ranges ---------------------------------------------------------------

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, None), (1000, None), (10, 20), (0, 1024), (1000, 5000), (5, 5), (1024, None), (2000, None), (2000, 3000)],
    )
    def test_ranges_clip_like_slicing(self, backend: StorageBackend, start: int, end: int | None) -> None:
        backend.put_bytes("ranged", _DATA)
        assert backend.get_blob("ranged", start, end) == _DATA[start:end]

    @pytest.mark.parametrize(("start", "end"), [(-1, None), (-1, 5), (10, 5), (0, -1), (1.5, None), ("1", None), (0, 2.0)])
    def test_invalid_ranges(self, backend: StorageBackend, start: object, end: object) -> None:
        backend.put_bytes("ranged", _DATA)
        with pytest.raises(InvalidRange) as raised:
            backend.get_blob("ranged", start, end)  # type: ignore[arg-type]
        assert isinstance(raised.value, ValueError)
        with pytest.raises(InvalidRange):
            backend.get_ranges("ranged", [(0, 1), (start, end)])  # type: ignore[list-item]

    def test_get_ranges(self, backend: StorageBackend) -> None:
        backend.put_bytes("ranged", _DATA)
        ranges = [(0, 3), (5, None), (1020, 2000), (7, 7), (3000, None), (0, 3)]
        assert backend.get_ranges("ranged", ranges) == [_DATA[s:e] for s, e in ranges]
        assert backend.get_ranges("ranged", []) == []

    # Missing blobs and deletes --------------------------------------------

    def test_missing_blob(self, backend: StorageBackend) -> None:
        for call in (
            lambda: backend.get_blob("nope"),
            lambda: backend.get_blob("deep/nope", 0, 1),
            lambda: backend.stat_blob("nope"),
            lambda: backend.size("no/such/blob"),
            lambda: backend.get_ranges("nope", [(0, 1)]),
        ):
            with pytest.raises(BlobNotFound) as raised:
                call()
            assert isinstance(raised.value, LookupError)
            assert "nope" in str(raised.value) or "no/such/blob" in str(raised.value)
        assert backend.exists("nope") is False

    def test_delete(self, backend: StorageBackend) -> None:
        backend.put_bytes("keep/a", b"a")
        backend.put_bytes("gone/b", b"b")
        backend.delete_blob("gone/b")
        with pytest.raises(BlobNotFound):
            backend.get_blob("gone/b")
        assert not backend.exists("gone/b")
        assert _ids_with(backend) == ["keep/a"]
        assert backend.get_blob("keep/a") == b"a"

    def test_delete_missing_is_fine(self, backend: StorageBackend) -> None:
        backend.put_bytes("a/c", b"c")
        backend.delete_blob("never-was")
        backend.delete_blob("a/b")
        backend.delete_blob("x/y/z")
        backend.delete_blob("a/c")
        backend.delete_blob("a/c")
        assert _ids_with(backend) == []

    def test_deleted_id_can_be_put_again(self, backend: StorageBackend) -> None:
        backend.put_bytes("again", b"first")
        backend.delete_blob("again")
        backend.put_bytes("again", b"second")
        assert backend.get_blob("again") == b"second"

    # Immutability ---------------------------------------------------------

    def test_blobs_are_immutable(self, backend: StorageBackend) -> None:
        backend.put_bytes("fixed", b"original")
        with pytest.raises(BlobExists) as raised:
            backend.put_bytes("fixed", b"replacement")
        assert isinstance(raised.value, FileExistsError)
        with pytest.raises(BlobExists):
            backend.put_blob("fixed", [])
        assert backend.get_blob("fixed") == b"original"
        assert backend.size("fixed") == 8

    def test_taken_id_fails_before_reading_chunks(self, backend: StorageBackend) -> None:
        backend.put_bytes("taken", b"x")
        pulled: list[int] = []

        def chunks() -> Iterator[bytes]:
            for i in range(1000):
                pulled.append(i)
                yield b"y" * 1024

        with pytest.raises(BlobExists):
            backend.put_blob("taken", chunks())
        # A backend may declare how much it reads ahead before it can ask (a remote one batches).
        assert len(pulled) * 1024 <= getattr(backend, "read_ahead_before_put_check", 0)
        if getattr(backend, "read_ahead_before_put_check", 0) == 0:
            assert pulled == []

    def test_blob_and_folder_with_one_name(self, backend: StorageBackend) -> None:
        backend.put_bytes("n", b"file")
        backend.put_bytes("m/child", b"child")
        if backend.nested_ids_conflict:
            with pytest.raises(InvalidBlobId):
                backend.put_bytes("n/child", b"x")
            with pytest.raises(InvalidBlobId):
                backend.put_bytes("m", b"y")
            with pytest.raises(BlobNotFound):
                backend.get_blob("n/child")
            with pytest.raises(BlobNotFound):
                backend.stat_blob("m")
            backend.delete_blob("m")
            backend.delete_blob("n/child")
            assert _ids_with(backend) == ["m/child", "n"]
        else:
            backend.put_bytes("n/child", b"x")
            backend.put_bytes("m", b"y")
            backend.delete_blob("n")
            assert backend.get_blob("n/child") == b"x"
            assert backend.get_blob("m") == b"y"
            assert _ids_with(backend) == ["m", "m/child", "n/child"]
        assert backend.get_blob("m/child") == b"child"

    # Listing --------------------------------------------------------------

    def test_listing(self, backend: StorageBackend) -> None:
        ids = ["b", "a/x", "a/y/z", "a-b", "a0", "ab", "c/d/e", "c/d/f", "c/dd", "Z", "_u", "a=1"]
        for blob_id in reversed(ids):
            backend.put_bytes(blob_id, blob_id.encode())
        assert _ids_with(backend) == sorted(ids)
        assert _ids_with(backend, "a/") == ["a/x", "a/y/z"]
        assert _ids_with(backend, "a") == sorted(i for i in ids if i.startswith("a"))
        assert _ids_with(backend, "a/y") == ["a/y/z"]
        assert _ids_with(backend, "c/d") == ["c/d/e", "c/d/f", "c/dd"]
        assert _ids_with(backend, "c/d/") == ["c/d/e", "c/d/f"]
        assert _ids_with(backend, "c/d/e") == ["c/d/e"]
        assert _ids_with(backend, "c/d/e/") == []
        assert _ids_with(backend, "zz") == []
        assert _ids_with(backend, "q/r/") == []
        for blob_id in ids:
            assert backend.get_blob(blob_id) == blob_id.encode()

    def test_listing_excludes_deleted(self, backend: StorageBackend) -> None:
        for blob_id in ("p/1", "p/2", "p/3"):
            backend.put_bytes(blob_id, b"x")
        backend.delete_blob("p/2")
        assert _ids_with(backend, "p/") == ["p/1", "p/3"]
        backend.delete_blob("p/1")
        backend.delete_blob("p/3")
        assert _ids_with(backend) == []

    # Derived methods ------------------------------------------------------

    def test_exists_size_and_stat(self, backend: StorageBackend) -> None:
        before = time.time()
        backend.put_bytes("s/t", b"12345")
        after = time.time()
        stat = backend.stat_blob("s/t")
        assert isinstance(stat, BlobStat)
        assert (stat.blob_id, stat.size) == ("s/t", 5)
        assert before - 2 <= stat.mtime <= after + 2
        assert backend.exists("s/t") is True
        assert backend.exists("s") is False
        assert backend.size("s/t") == 5

    def test_delete_prefix(self, backend: StorageBackend) -> None:
        for blob_id in ("p/1", "p/2", "p/q/3", "pq", "other"):
            backend.put_bytes(blob_id, b"x")
        assert backend.delete_prefix("p/") == 3
        assert _ids_with(backend) == ["other", "pq"]
        assert backend.delete_prefix("nothing/") == 0
        assert backend.delete_prefix("") == 2
        assert _ids_with(backend) == []

    # Invalid ids ----------------------------------------------------------

    @pytest.mark.parametrize("bad_id", BAD_BLOB_IDS, ids=repr)
    def test_invalid_ids_are_refused_everywhere(self, backend: StorageBackend, bad_id: object) -> None:
        calls: dict[str, Callable[[], object]] = {
            "put_blob": lambda: backend.put_blob(bad_id, [b"x"]),  # type: ignore[arg-type]
            "put_bytes": lambda: backend.put_bytes(bad_id, b"x"),  # type: ignore[arg-type]
            "get_blob": lambda: backend.get_blob(bad_id),  # type: ignore[arg-type]
            "get_ranges": lambda: backend.get_ranges(bad_id, [(0, 1)]),  # type: ignore[arg-type]
            "delete_blob": lambda: backend.delete_blob(bad_id),  # type: ignore[arg-type]
            "stat_blob": lambda: backend.stat_blob(bad_id),  # type: ignore[arg-type]
            "exists": lambda: backend.exists(bad_id),  # type: ignore[arg-type]
            "size": lambda: backend.size(bad_id),  # type: ignore[arg-type]
        }
        not_refused = []
        for method, call in calls.items():
            try:
                call()
            except InvalidBlobId as exc:
                assert isinstance(exc, ValueError)
            except Exception as exc:  # noqa: BLE001 - report which method misbehaved
                not_refused.append(f"{method}: {type(exc).__name__}: {exc}")
            else:
                not_refused.append(f"{method}: no error")
        assert not_refused == []
        assert _ids_with(backend) == []

    @pytest.mark.parametrize("bad_prefix", BAD_PREFIXES, ids=repr)
    def test_invalid_prefixes_are_refused(self, backend: StorageBackend, bad_prefix: object) -> None:
        backend.put_bytes("a/b", b"x")
        with pytest.raises(InvalidBlobId):
            list(backend.list_blobs(bad_prefix))  # type: ignore[arg-type]
        with pytest.raises(InvalidBlobId):
            backend.delete_prefix(bad_prefix)  # type: ignore[arg-type]
        assert _ids_with(backend) == ["a/b"]

    # Failures part-way ----------------------------------------------------

    @pytest.mark.parametrize("blob_id", ["broken", "deep/er/broken"])
    def test_failing_chunk_iterator_leaves_no_blob(self, backend: StorageBackend, blob_id: str) -> None:
        failure = RuntimeError("the source went away")

        def chunks() -> Iterator[bytes]:
            yield b"a" * 1000
            yield b"b" * 1000
            raise failure

        with pytest.raises(RuntimeError) as raised:
            backend.put_blob(blob_id, chunks())
        assert raised.value is failure
        assert not backend.exists(blob_id)
        with pytest.raises(BlobNotFound):
            backend.get_blob(blob_id)
        assert _ids_with(backend) == []
        assert backend.put_bytes(blob_id, b"retried") == 7  # the id was not burnt
        assert backend.get_blob(blob_id) == b"retried"

    # Concurrency ----------------------------------------------------------

    def test_threads_put_get_delete(self, backend: StorageBackend) -> None:
        def work(thread: int) -> dict[str, bytes]:
            kept = {}
            for n in range(self.blobs_per_thread):
                blob_id = f"shared/t{thread}-{n}" if n % 2 else f"t{thread}/x/{n}"
                content = f"{thread}:{n}:".encode() * (n + 1)
                assert backend.put_blob(blob_id, [content[:3], content[3:]]) == len(content)
                assert backend.get_blob(blob_id) == content
                assert backend.get_blob(blob_id, 2, 9) == content[2:9]
                assert backend.size(blob_id) == len(content)
                if n % 3 == 0:
                    backend.delete_blob(blob_id)
                    assert not backend.exists(blob_id)
                else:
                    kept[blob_id] = content
            return kept

        kept: dict[str, bytes] = {}
        with ThreadPoolExecutor(self.threads) as pool:
            for blobs in pool.map(work, range(self.threads)):
                kept.update(blobs)
        assert len(kept) == self.threads * sum(1 for n in range(self.blobs_per_thread) if n % 3)
        assert _ids_with(backend) == sorted(kept)
        for blob_id, content in kept.items():
            assert backend.get_blob(blob_id) == content

    def test_racing_puts_of_one_id(self, backend: StorageBackend) -> None:
        for round_ in range(5):
            blob_id = f"race/r{round_}"
            barrier = threading.Barrier(self.threads)

            def put(thread: int) -> str:
                content = bytes([thread]) * (256 * 1024)
                chunks = (content[i : i + 16384] for i in range(0, len(content), 16384))
                barrier.wait()
                try:
                    backend.put_blob(blob_id, chunks)
                except BlobExists:
                    return "lost"
                return "won"

            with ThreadPoolExecutor(self.threads) as pool:
                outcomes = list(pool.map(put, range(self.threads)))
            assert outcomes.count("won") == 1
            assert outcomes.count("lost") == self.threads - 1
            winner = outcomes.index("won")
            assert backend.get_blob(blob_id) == bytes([winner]) * (256 * 1024)
        assert _ids_with(backend) == [f"race/r{i}" for i in range(5)]

    def test_puts_and_deletes_racing_in_one_folder(self, backend: StorageBackend) -> None:
        # Deleting the last blob of a folder may remove the folder while
        # another thread is putting into it; that put must still succeed.
        def churn(thread: int) -> None:
            for n in range(30):
                blob_id = f"churn/deep/folder/{thread}-{n}"
                backend.put_bytes(blob_id, b"x")
                assert backend.get_blob(blob_id) == b"x"
                backend.delete_blob(blob_id)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(churn, range(4)))
        assert _ids_with(backend) == []

    # Large blobs ----------------------------------------------------------

    def test_large_blob_streamed(self, backend: StorageBackend) -> None:
        block = os.urandom(MiB)
        count = self.large_blob_size // MiB

        def chunk(i: int) -> bytes:
            shift = (i * 4099) % MiB  # every chunk differs
            return block[shift:] + block[:shift]

        digest = hashlib.sha256()

        def chunks() -> Iterator[bytes]:
            for i in range(count):
                data = chunk(i)
                digest.update(data)
                yield data

        assert backend.put_blob("large", chunks()) == count * MiB
        assert backend.size("large") == count * MiB
        read_back = hashlib.sha256()
        for offset in range(0, count * MiB, 4 * MiB):
            read_back.update(backend.get_blob("large", offset, offset + 4 * MiB))
        assert read_back.hexdigest() == digest.hexdigest()
        assert hashlib.sha256(backend.get_blob("large")).hexdigest() == digest.hexdigest()
        boundary = 3 * MiB
        assert backend.get_blob("large", boundary - 10, boundary + 10) == chunk(2)[-10:] + chunk(3)[:10]
