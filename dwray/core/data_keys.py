"""Derived data keys: one wrapped bucket key serves many objects, each with a DEK of its own.

Wrapping a fresh DEK per object costs a keyring call on every write, and
unwrapping it one on every read; through a KMS plugin that is a Ray round
trip, the largest share of a small object's latency. As with S3 Bucket Keys,
a process instead makes one 256-bit *bucket key* per (KEK, bucket), has the
keyring wrap it once, and derives each object's DEK from it::

    dek = HKDF-SHA256(ikm=bucket key, salt=16 random bytes, info=b"dwray-object-dek-v2")

The salt is stored in the object's version 2 ``KeyHeader`` beside the wrapped
bucket key (``dwray.core.frames``). DEKs stay distinct per object (a random
salt and a random nonce prefix each time), so the nonce rules of the frame
format hold unchanged; the keyring still decides every first use of a bucket
key, so rotation, retirement and crypto-shredding keep their meaning:

- sealing reuses a bucket key for ``seal_ttl`` at most, then wraps a new one
  under the KEK's primary version at that time (``forget`` makes it at once);
- opening caches an unwrapped bucket key for ``open_ttl`` at most from its
  unwrap (a hit does not extend it), so a retired or destroyed KEK stops
  opening objects here within ``open_ttl`` even if nobody calls ``forget``.

Version 1 headers (a DEK wrapped directly) are unwrapped on every read, as
before: their DEKs are per object, so caching them would buy little.

A miss is single-flight: the threads that want the same key at once share
one keyring call. Keys live only in this process's memory, never in a repr or
an error; the keyring's errors pass through unchanged.
"""
from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dwray.core.contracts import KeyService
from dwray.core.frames import (
    DEK_SALT_SIZE,
    DEK_SIZE,
    FORMAT_DERIVED_DEK,
    FORMAT_WRAPPED_DEK,
    NONCE_PREFIX_SIZE,
    KeyHeader,
)
from dwray.errors import IntegrityError, InvalidArgument

__all__ = ["BUCKET_KEY_SIZE", "DEK_INFO", "DataKeys", "SealingKeys", "derive_dek"]

BUCKET_KEY_SIZE = 32
DEK_INFO = b"dwray-object-dek-v2"

_V = TypeVar("_V")


def derive_dek(bucket_key: bytes, salt: bytes) -> bytes:
    """An object's DEK from its bucket key and salt (HKDF-SHA256, ``DEK_INFO``)."""
    if len(bucket_key) != BUCKET_KEY_SIZE:
        raise InvalidArgument(f"a bucket key must be {BUCKET_KEY_SIZE} bytes, not {len(bucket_key)}")
    if len(salt) != DEK_SALT_SIZE:
        raise InvalidArgument(f"a DEK salt must be {DEK_SALT_SIZE} bytes, not {len(salt)}")
    return HKDF(algorithm=hashes.SHA256(), length=DEK_SIZE, salt=bytes(salt), info=DEK_INFO).derive(bytes(bucket_key))


@dataclass(frozen=True)
class SealingKeys:
    """The keys for sealing one new object: its derived DEK, nonce prefix and salt, and the
    wrapped bucket key they come from. Neither the DEK nor the wrapped key is ever shown."""

    dek: bytes = field(repr=False)
    nonce_prefix: bytes
    salt: bytes
    kek_id: str
    kek_version: int
    wrapped: bytes = field(repr=False)

    def header(self, frame_size: int, plaintext_length: int, content_md5: bytes) -> KeyHeader:
        """The object's version 2 key header, once its size and MD5 are known."""
        return KeyHeader(
            format_version=FORMAT_DERIVED_DEK, kek_id=self.kek_id, kek_version=self.kek_version,
            wrapped_dek=self.wrapped, nonce_prefix=self.nonce_prefix, frame_size=frame_size,
            plaintext_length=plaintext_length, content_md5=content_md5, dek_salt=self.salt)


@dataclass(frozen=True)
class _BucketKey:
    key: bytes = field(repr=False)
    kek_version: int
    wrapped: bytes = field(repr=False)


@dataclass
class _Entry(Generic[_V]):
    """A cached value (``flight`` is ``None``), or the one keyring call in flight for it."""

    value: _V | None = field(default=None, repr=False)
    expires: float = math.inf
    flight: Future[_V] | None = None


class _KeyCache(Generic[_V]):
    """A TTL- and LRU-bounded map, keyed by tuples starting with the KEK id, whose misses are
    single-flight (the first thread makes the value, the others wait for it). Thread-safe."""

    def __init__(self, ttl: float, max_keys: int, clock: Callable[[], float]) -> None:
        self._ttl, self._max, self._clock = ttl, max_keys, clock
        self._entries: OrderedDict[tuple[object, ...], _Entry[_V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...], make: Callable[[], _V]) -> _V:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry.flight is None and entry.expires <= self._clock():
                del self._entries[key]
                entry = None
            if entry is None:
                entry = self._entries[key] = _Entry(flight=Future())
                self._evict()
                leader = True
            else:
                self._entries.move_to_end(key)
                leader = False
        flight = entry.flight
        if flight is None:
            return cast(_V, entry.value)  # a ready entry always holds its value
        if not leader:
            return flight.result()
        try:
            value = make()
        except BaseException as exc:
            with self._lock:
                if self._entries.get(key) is entry:
                    del self._entries[key]
            flight.set_exception(exc)
            raise
        self.put(key, value, replacing=entry)
        flight.set_result(value)
        return value

    def put(self, key: tuple[object, ...], value: _V, replacing: _Entry[_V] | None = None) -> None:
        """Cache ``value``; when ``replacing`` a call in flight, only if it was not forgotten meanwhile."""
        with self._lock:
            if replacing is not None and self._entries.get(key) is not replacing:
                return
            self._entries[key] = _Entry(value, self._clock() + self._ttl)
            self._entries.move_to_end(key)
            self._evict()

    def _evict(self) -> None:
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def forget(self, kek_id: str | None) -> None:
        """Drop the entries of ``kek_id`` (every entry with ``None``); calls in flight are then not cached."""
        with self._lock:
            if kek_id is None:
                self._entries.clear()
            else:
                for key in [k for k in self._entries if k[0] == kek_id]:
                    del self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)


def _check_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise InvalidArgument(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


class DataKeys:
    """Per-(kek_id, scope) bucket keys for sealing, and a bounded cache of unwrapped keys for opening.

    Thread-safe. ``keyring`` is the key service (a ``KmsService`` or the local
    keyring): only its ``wrap`` and ``unwrap`` are called. ``clock`` is for
    tests. Call ``forget`` after a KEK is rotated, retired or destroyed so
    this process stops using what it cached at once rather than within a TTL.
    """

    def __init__(self, keyring: KeyService, *, seal_ttl: float = 300.0, open_ttl: float = 300.0,
                 max_keys: int = 4096, clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(max_keys, bool) or not isinstance(max_keys, int) or max_keys < 1:
            raise InvalidArgument(f"max_keys must be a positive int, not {max_keys!r}")
        self._keyring = keyring
        self._seal_ttl = _check_seconds("seal_ttl", seal_ttl)
        self._open_ttl = _check_seconds("open_ttl", open_ttl)
        self._sealing: _KeyCache[_BucketKey] = _KeyCache(self._seal_ttl, max_keys, clock)
        self._opening: _KeyCache[bytes] = _KeyCache(self._open_ttl, max_keys, clock)

    def for_sealing(self, kek_id: str, scope: str) -> SealingKeys:
        """Fresh keys for one new object of ``scope`` (the bucket id) under ``kek_id``.

        The bucket key is this process's for (kek_id, scope) until ``seal_ttl``
        passes; every call derives a new DEK from a new salt, with a new nonce prefix.
        """
        for name, value in (("kek_id", kek_id), ("scope", scope)):
            if not isinstance(value, str) or not value:
                raise InvalidArgument(f"data key {name} must be a non-empty str, not {value!r}")
        bucket = self._sealing.get((kek_id, scope), lambda: self._new_bucket_key(kek_id))
        salt = os.urandom(DEK_SALT_SIZE)
        return SealingKeys(derive_dek(bucket.key, salt), os.urandom(NONCE_PREFIX_SIZE), salt, kek_id,
                           bucket.kek_version, bucket.wrapped)

    def _new_bucket_key(self, kek_id: str) -> _BucketKey:
        key = os.urandom(BUCKET_KEY_SIZE)
        kek_version, wrapped = self._keyring.wrap(kek_id, key)
        # Objects sealed here are often read here soon: open them without an unwrap.
        self._opening.put((kek_id, kek_version, bytes(wrapped)), key)
        return _BucketKey(key, kek_version, bytes(wrapped))

    def dek_for(self, header: KeyHeader) -> bytes:
        """The DEK that opens the object ``header`` describes (either format version)."""
        if not isinstance(header, KeyHeader):
            raise InvalidArgument(f"dek_for needs a KeyHeader, not {type(header).__name__}")
        if header.format_version == FORMAT_WRAPPED_DEK:
            return self._keyring.unwrap(header.kek_id, header.kek_version, header.wrapped_dek)
        wrapped = bytes(header.wrapped_dek)
        bucket_key = self._opening.get(
            (header.kek_id, header.kek_version, wrapped),
            lambda: self._unwrap_bucket_key(header.kek_id, header.kek_version, wrapped))
        return derive_dek(bucket_key, header.dek_salt)

    def _unwrap_bucket_key(self, kek_id: str, kek_version: int, wrapped: bytes) -> bytes:
        key = self._keyring.unwrap(kek_id, kek_version, wrapped)
        if len(key) != BUCKET_KEY_SIZE:
            raise IntegrityError(f"bucket key wrapped under {kek_id!r} version {kek_version}",
                                 f"unwraps to {len(key)} bytes, not {BUCKET_KEY_SIZE}")
        return key

    def forget(self, kek_id: str | None = None) -> None:
        """Drop the cached keys of ``kek_id`` (of every KEK with ``None``), after a rotate, retire,
        destroy or shred: the next seal wraps a new bucket key and the next open unwraps again."""
        self._sealing.forget(kek_id)
        self._opening.forget(kek_id)

    def __repr__(self) -> str:
        return (f"DataKeys(sealing={len(self._sealing)} keys, opening={len(self._opening)} keys, "
                f"seal_ttl={self._seal_ttl:g}s, open_ttl={self._open_ttl:g}s)")
