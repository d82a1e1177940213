"""MemoryBackend: the conformance suite plus its LRU cap."""
from __future__ import annotations

import itertools

import pytest

from dwray.backends.memory import DEFAULT_MAX_BYTES, MemoryBackend
from dwray.errors import InvalidArgument, StorageFull
from dwray.testing.backend_conformance import BackendConformance


class TestMemoryConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> MemoryBackend:
        return MemoryBackend()


def test_defaults() -> None:
    backend = MemoryBackend()
    assert backend.max_bytes == DEFAULT_MAX_BYTES == 256 * 1024 * 1024
    assert backend.durable is False
    assert backend.used_bytes == 0


def test_evicts_least_recently_used_first() -> None:
    backend = MemoryBackend(max_bytes=100)
    backend.put_bytes("a", b"a" * 40)
    backend.put_bytes("b", b"b" * 40)
    assert backend.get_blob("a", 0, 1) == b"a"  # a is now the most recent
    backend.put_bytes("c", b"c" * 40)
    assert list(backend.list_blobs()) == ["a", "c"]
    backend.put_bytes("d", b"d" * 40)
    assert list(backend.list_blobs()) == ["c", "d"]
    assert backend.get_blob("c") == b"c" * 40


def test_eviction_frees_as_many_blobs_as_needed() -> None:
    backend = MemoryBackend(max_bytes=100)
    for name in "abcde":
        backend.put_bytes(name, name.encode() * 20)
    assert backend.used_bytes == 100
    backend.put_bytes("big", b"x" * 70)
    assert list(backend.list_blobs()) == ["big", "e"]
    assert backend.used_bytes == 90


def test_blob_of_exactly_the_cap_fits() -> None:
    backend = MemoryBackend(max_bytes=64)
    backend.put_bytes("small", b"s")
    backend.put_bytes("full", b"f" * 64)
    assert list(backend.list_blobs()) == ["full"]
    assert backend.used_bytes == 64


def test_used_bytes_never_exceeds_the_cap() -> None:
    backend = MemoryBackend(max_bytes=1000)
    for n in range(200):
        backend.put_bytes(f"b{n}", bytes(n * 7 % 300))
        assert backend.used_bytes <= 1000
        assert backend.used_bytes == sum(backend.size(i) for i in backend.list_blobs())


def test_delete_frees_bytes() -> None:
    backend = MemoryBackend(max_bytes=100)
    backend.put_bytes("a", b"a" * 60)
    backend.delete_blob("a")
    assert backend.used_bytes == 0
    backend.put_bytes("b", b"b" * 60)
    backend.put_bytes("c", b"c" * 40)
    assert list(backend.list_blobs()) == ["b", "c"]


def test_oversize_blob_is_refused_without_evicting() -> None:
    backend = MemoryBackend(max_bytes=100)
    backend.put_bytes("keep", b"k" * 90)
    with pytest.raises(StorageFull) as raised:
        backend.put_bytes("huge", b"h" * 101)
    assert "huge" in str(raised.value)
    assert list(backend.list_blobs()) == ["keep"]
    assert backend.used_bytes == 90
    assert not backend.exists("huge")


def test_oversize_stream_stops_reading() -> None:
    backend = MemoryBackend(max_bytes=1000)
    endless = itertools.repeat(b"x" * 100)
    with pytest.raises(StorageFull):
        backend.put_blob("endless", endless)
    assert next(endless) == b"x" * 100  # the iterator is still usable: it was not drained
    assert list(backend.list_blobs()) == []


def test_zero_cap_holds_only_empty_blobs() -> None:
    backend = MemoryBackend(max_bytes=0)
    backend.put_bytes("empty", b"")
    with pytest.raises(StorageFull):
        backend.put_bytes("byte", b"x")
    assert list(backend.list_blobs()) == ["empty"]


@pytest.mark.parametrize("bad", [-1, 1.5, "100", None, True])
def test_max_bytes_must_be_a_non_negative_int(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        MemoryBackend(max_bytes=bad)  # type: ignore[arg-type]


def test_stored_bytes_do_not_alias_the_callers_buffer() -> None:
    backend = MemoryBackend()
    buffer = bytearray(b"before")
    backend.put_bytes("alias", buffer)
    buffer[:] = b"after!"
    assert backend.get_blob("alias") == b"before"
