"""Derived data keys against the real local keyring: derivation, caching, single flight, TTLs,
rotation, crypto-shredding and secrecy."""
from __future__ import annotations

import base64
import hashlib
import hmac
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dwray.core.data_keys import DEK_INFO, DataKeys, SealingKeys, derive_dek
from dwray.core.frames import FrameOpener, FrameSealer, KeyHeader, ObjectIdentity, new_object_keys
from dwray.core.keyring import LocalKeyring
from dwray.errors import InvalidArgument, KeyNotFound, KeyShredded

KEK = "tenant:a"
MD5 = bytes(range(16))


class CountingKeyring:
    """The real keyring, counting the wrap and unwrap calls that reach it; ``hold`` runs
    inside each of them (to keep a call in flight)."""

    def __init__(self, inner: LocalKeyring) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.hold: Any = None
        self._lock = threading.Lock()

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1
        if self.hold is not None:
            self.hold()

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        self._count("wrap")
        return self.inner.wrap(kek_id, dek)

    def unwrap(self, kek_id: str, version: int, wrapped: bytes) -> bytes:
        self._count("unwrap")
        return self.inner.unwrap(kek_id, version, wrapped)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keyring(tmp_path: Path) -> LocalKeyring:
    ring = LocalKeyring(tmp_path / "keys" / "keyring.json", f"secret://file/{tmp_path / 'config' / 'master.key'}")
    ring.ensure(KEK)
    return ring


@pytest.fixture
def counting(keyring: LocalKeyring) -> CountingKeyring:
    return CountingKeyring(keyring)


def sealed_header(keys: SealingKeys) -> KeyHeader:
    """The header as it is stored: encoded and decoded again."""
    return KeyHeader.from_bytes(keys.header(1 << 20, 5, MD5).to_bytes())


def rfc5869_hkdf_sha256(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF written out from RFC 5869 with the standard library, to check the derivation independently."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


# Derivation ----------------------------------------------------------------------


def test_derivation_is_hkdf_sha256_deterministic_and_distinct_per_salt_and_key() -> None:
    key, salt = bytes(range(32)), bytes(range(16))
    dek = derive_dek(key, salt)
    assert len(dek) == 32 and dek == derive_dek(key, salt)
    assert DEK_INFO == b"dwray-object-dek-v2"
    assert dek == rfc5869_hkdf_sha256(key, salt, DEK_INFO)
    assert derive_dek(key, bytes(16)) != dek
    assert derive_dek(bytes(32), salt) != dek
    with pytest.raises(InvalidArgument, match="bucket key must be 32 bytes, not 31"):
        derive_dek(bytes(31), salt)
    with pytest.raises(InvalidArgument, match="DEK salt must be 16 bytes, not 15"):
        derive_dek(key, bytes(15))


def test_sealing_keys_make_a_version_2_header_that_opens_to_the_same_dek(counting: CountingKeyring) -> None:
    keys = DataKeys(counting).for_sealing(KEK, "bucket-1")
    header = sealed_header(keys)
    assert (header.format_version, header.kek_id, header.kek_version) == (2, KEK, 1)
    assert (header.wrapped_dek, header.dek_salt, header.nonce_prefix) == (keys.wrapped, keys.salt, keys.nonce_prefix)
    assert (header.frame_size, header.plaintext_length, header.content_md5) == (1 << 20, 5, MD5)
    reader = DataKeys(counting)
    assert reader.dek_for(header) == keys.dek
    assert keys.dek == derive_dek(counting.inner.unwrap(KEK, 1, keys.wrapped), keys.salt)
    # Frames sealed under the derived DEK open with the DEK the reader derives.
    identity = ObjectIdentity("a", "bucket", "key", "v1")
    record = b"".join(FrameSealer(identity, keys.dek, keys.nonce_prefix).seal(0, b"hello", True))
    assert FrameOpener(identity, reader.dek_for(header), header.nonce_prefix).open(0, record, True) == b"hello"


def test_one_wrap_per_bucket_key_and_fresh_keys_per_object(counting: CountingKeyring) -> None:
    data_keys = DataKeys(counting)
    first, second = data_keys.for_sealing(KEK, "bucket-1"), data_keys.for_sealing(KEK, "bucket-1")
    assert counting.calls["wrap"] == 1
    assert first.wrapped == second.wrapped and first.kek_version == second.kek_version
    assert len({first.salt, second.salt}) == len({first.dek, second.dek}) == 2
    assert first.nonce_prefix != second.nonce_prefix
    other_bucket = data_keys.for_sealing(KEK, "bucket-2")
    counting.inner.ensure("tenant:b")
    other_kek = data_keys.for_sealing("tenant:b", "bucket-1")
    assert counting.calls["wrap"] == 3
    assert len({first.wrapped, other_bucket.wrapped, other_kek.wrapped}) == 3
    # What this process sealed it opens without an unwrap.
    assert [data_keys.dek_for(sealed_header(k)) for k in (first, second, other_kek)] == [
        first.dek, second.dek, other_kek.dek]
    assert counting.calls["unwrap"] == 0


# Opening ---------------------------------------------------------------------------


def test_version_1_headers_unwrap_every_time(counting: CountingKeyring) -> None:
    keys = new_object_keys()
    version, wrapped = counting.inner.wrap(KEK, keys.dek)
    header = KeyHeader(1, KEK, version, wrapped, keys.nonce_prefix, 1 << 20, 5, MD5)
    data_keys = DataKeys(counting)
    assert [data_keys.dek_for(header) for _ in range(3)] == [keys.dek] * 3
    assert counting.calls["unwrap"] == 3


def test_version_2_cache_hits_make_no_keyring_call(counting: CountingKeyring) -> None:
    writer = DataKeys(counting)
    sealed = [writer.for_sealing(KEK, "bucket-1") for _ in range(5)]
    reader = DataKeys(counting)
    assert reader.dek_for(sealed_header(sealed[0])) == sealed[0].dek
    assert counting.calls["unwrap"] == 1
    assert [reader.dek_for(sealed_header(k)) for k in sealed * 2] == [k.dek for k in sealed] * 2
    assert counting.calls["unwrap"] == 1


def test_ttls_expire_sealing_and_opening_keys(counting: CountingKeyring) -> None:
    clock = Clock()
    writer = DataKeys(counting, seal_ttl=10, open_ttl=10, clock=clock)
    first = writer.for_sealing(KEK, "bucket-1")
    clock.now += 9.5
    assert writer.for_sealing(KEK, "bucket-1").wrapped == first.wrapped
    clock.now += 1
    renewed = writer.for_sealing(KEK, "bucket-1")
    assert renewed.wrapped != first.wrapped and counting.calls["wrap"] == 2

    reader = DataKeys(counting, open_ttl=10, clock=clock)
    header = sealed_header(first)
    reader.dek_for(header)
    clock.now += 9.5
    reader.dek_for(header)  # a hit does not extend the TTL
    assert counting.calls["unwrap"] == 1
    clock.now += 1
    assert reader.dek_for(header) == first.dek
    assert counting.calls["unwrap"] == 2


def test_open_cache_is_lru_bounded(counting: CountingKeyring) -> None:
    writer = DataKeys(counting)
    headers = [sealed_header(writer.for_sealing(KEK, f"bucket-{n}")) for n in range(3)]
    reader = DataKeys(counting, max_keys=2)
    for header in headers:
        reader.dek_for(header)
    reader.dek_for(headers[2])
    reader.dek_for(headers[1])
    assert counting.calls["unwrap"] == 3 and "opening=2 keys" in repr(reader)
    reader.dek_for(headers[0])  # evicted, the least recently used
    assert counting.calls["unwrap"] == 4
    reader.dek_for(headers[1])
    assert counting.calls["unwrap"] == 4


def test_forget_drops_cached_keys_of_one_kek_or_all(counting: CountingKeyring) -> None:
    counting.inner.ensure("tenant:b")
    data_keys = DataKeys(counting)
    a, b = data_keys.for_sealing(KEK, "bucket-1"), data_keys.for_sealing("tenant:b", "bucket-1")
    data_keys.forget("tenant:b")
    assert data_keys.for_sealing(KEK, "bucket-1").wrapped == a.wrapped
    assert data_keys.dek_for(sealed_header(a)) == a.dek and counting.calls["unwrap"] == 0
    assert data_keys.dek_for(sealed_header(b)) == b.dek and counting.calls["unwrap"] == 1
    assert data_keys.for_sealing("tenant:b", "bucket-1").wrapped != b.wrapped
    data_keys.forget()
    assert data_keys.for_sealing(KEK, "bucket-1").wrapped != a.wrapped
    assert "sealing=1 keys, opening=1 keys" in repr(data_keys)


# Rotation and shredding ---------------------------------------------------------------


def test_rotation_wraps_new_bucket_keys_under_the_new_version(counting: CountingKeyring) -> None:
    clock = Clock()
    data_keys = DataKeys(counting, seal_ttl=60, clock=clock)
    old = data_keys.for_sealing(KEK, "bucket-1")
    assert counting.inner.rotate(KEK) == 2
    assert data_keys.for_sealing(KEK, "bucket-1").kek_version == 1  # until it expires or is forgotten
    clock.now += 61
    assert data_keys.for_sealing(KEK, "bucket-1").kek_version == 2
    assert data_keys.for_sealing(KEK, "bucket-2").kek_version == 2
    counting.inner.rotate(KEK)
    data_keys.forget(KEK)
    assert data_keys.for_sealing(KEK, "bucket-1").kek_version == 3
    # Old headers still open, and a header rewrapped under the primary opens to the same DEK.
    header = sealed_header(old)
    fresh = DataKeys(counting)
    assert fresh.dek_for(header) == old.dek
    rewrapped = header.with_wrapped(*counting.inner.rewrap(KEK, header.kek_version, header.wrapped_dek))
    assert (rewrapped.kek_version, rewrapped.dek_salt) == (3, header.dek_salt)
    assert DataKeys(counting).dek_for(KeyHeader.from_bytes(rewrapped.to_bytes())) == old.dek


def test_destroyed_kek_fails_with_the_keyrings_error_once_forgotten(counting: CountingKeyring) -> None:
    data_keys = DataKeys(counting)
    keys = data_keys.for_sealing(KEK, "bucket-1")
    header = sealed_header(keys)
    counting.inner.destroy(KEK)
    assert data_keys.dek_for(header) == keys.dek  # cached: at most open_ttl more without forget
    data_keys.forget(KEK)
    with pytest.raises(KeyShredded):
        data_keys.dek_for(header)
    with pytest.raises(KeyShredded):
        data_keys.for_sealing(KEK, "bucket-1")


def test_keyring_errors_pass_through_and_are_not_cached(counting: CountingKeyring) -> None:
    data_keys = DataKeys(counting)
    with pytest.raises(KeyNotFound):
        data_keys.for_sealing("tenant:new", "bucket-1")
    counting.inner.ensure("tenant:new")
    assert data_keys.for_sealing("tenant:new", "bucket-1").kek_version == 1
    assert counting.calls["wrap"] == 2


# Concurrency ------------------------------------------------------------------------------


def blocked_threads(threads: list[threading.Thread]) -> int:
    """How many of ``threads`` are blocked waiting on a lock or condition right now."""
    frames = sys._current_frames()
    blocked = 0
    for thread in threads:
        frame = frames.get(thread.ident or -1)
        while frame is not None:
            if frame.f_code.co_name == "wait" and frame.f_code.co_filename.endswith("threading.py"):
                blocked += 1
                break
            frame = frame.f_back
    return blocked


def run_together(threads: list[threading.Thread], count: int, call: Any) -> list[Any]:
    """``call`` in ``count`` threads released at once (appended to ``threads``); their results."""
    results: list[Any] = [None] * count
    start = threading.Barrier(count)

    def run(index: int) -> None:
        start.wait()
        results[index] = call()

    threads[:] = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_concurrent_misses_share_one_keyring_call(counting: CountingKeyring) -> None:
    threads: list[threading.Thread] = []
    idle = threading.Event()

    def hold_until_the_others_wait() -> None:
        # The first call stays in flight until the 7 other threads are blocked waiting for it.
        others = [t for t in threads if t is not threading.current_thread()]
        for _ in range(10_000):
            if blocked_threads(others) >= 7:
                return
            idle.wait(0.001)

    counting.hold = hold_until_the_others_wait
    data_keys = DataKeys(counting)
    sealed = run_together(threads, 8, lambda: data_keys.for_sealing(KEK, "new-bucket"))
    assert counting.calls["wrap"] == 1
    assert len({k.wrapped for k in sealed}) == 1 and len({k.dek for k in sealed}) == 8
    headers = [sealed_header(k) for k in sealed]
    reader = DataKeys(counting)
    opened = run_together(threads, 8, lambda: [reader.dek_for(h) for h in headers])
    assert counting.calls["unwrap"] == 1
    assert all(deks == [k.dek for k in sealed] for deks in opened)


# Bad input and secrecy ---------------------------------------------------------------------


def test_bad_arguments_are_named(counting: CountingKeyring) -> None:
    for kwargs, message in (
        ({"seal_ttl": -1}, "seal_ttl must be a finite number"), ({"open_ttl": float("nan")}, "open_ttl"),
        ({"open_ttl": True}, "open_ttl"), ({"max_keys": 0}, "max_keys must be a positive int"),
    ):
        with pytest.raises(InvalidArgument, match=message):
            DataKeys(counting, **kwargs)
    data_keys = DataKeys(counting)
    with pytest.raises(InvalidArgument, match="kek_id must be a non-empty str"):
        data_keys.for_sealing("", "bucket-1")
    with pytest.raises(InvalidArgument, match="scope must be a non-empty str"):
        data_keys.for_sealing(KEK, None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="needs a KeyHeader, not bytes"):
        data_keys.dek_for(b"DWKH")  # type: ignore[arg-type]


def test_no_key_material_in_reprs_or_errors(counting: CountingKeyring) -> None:
    data_keys = DataKeys(counting)
    keys = data_keys.for_sealing(KEK, "bucket-1")
    header = sealed_header(keys)
    bucket_key = counting.inner.unwrap(KEK, keys.kek_version, keys.wrapped)
    texts = [repr(keys), str(keys), repr(header), repr(data_keys), str(data_keys)]
    counting.inner.destroy(KEK)
    data_keys.forget()
    with pytest.raises(KeyShredded) as caught:
        data_keys.dek_for(header)
    texts += [str(caught.value), repr(caught.value)]
    assert "salt=" in repr(keys) and "dek=" not in repr(keys) and "wrapped=" not in repr(keys)
    for text in texts:
        for secret in (keys.dek, keys.wrapped, bucket_key):
            for form in (secret.hex(), repr(secret), base64.b64encode(secret).decode(), str(list(secret))):
                assert form not in text
