"""Object bytes over the actors: the storage proxy and the frame engine.

``RemoteBackend`` is a storage plugin actor behind the ``StorageBackend``
contract, so the one ``Warehouse`` class runs unchanged in one process or on
Ray. ``RayFrameEngine`` seals and opens frames in stage actors: plaintext goes
into the object store once, in batches of several MiB; sealed records go from
the stage actor to the storage actor as ObjectRefs and never pass through the
driver.

Reads and deletes are idempotent, so retried after an actor restart (within
the call's deadline); upload sessions are not.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray

from actors.coalescer import Coalescer
from actors.handles import PluginHandle
from dwray.backends.base import (
    BlobStat,
    BytesLike,
    StorageBackend,
    as_byte_view,
    validate_blob_id,
)
from dwray.core.frames import FrameTable
from dwray.core.pipeline import FrameEngine, ObjectCrypto, StoredBlob, record_batches
from dwray.core.storage_setup import spec_properties
from dwray.errors import EntityTooLarge

__all__ = ["RayFrameEngine", "RemoteBackend"]

BATCH_BYTES = 8 << 20
#: objects up to this size are sealed and stored in batches shared by concurrent writers
SMALL_OBJECT_BYTES = 256 << 10


def _array(data: BytesLike) -> np.ndarray:
    return np.frombuffer(as_byte_view(data), dtype=np.uint8)


class RemoteBackend(StorageBackend):
    """A storage plugin actor behind the ``StorageBackend`` contract."""

    read_ahead_before_put_check = BATCH_BYTES

    def __init__(self, handle: PluginHandle, name: str, *, spec: dict[str, Any] | None = None,
                 inflight: int = 4) -> None:
        """``name``: the storage target; ``spec`` (``dwray.core.storage_setup.target_spec``) says what
        it is, by default the backend kind ``name``."""
        self.handle = handle
        self.name = name
        self._inflight = inflight
        # The remote backend's own properties, from its spec's classes in the registry.
        self.durable, self.nested_ids_conflict = spec_properties(spec or {"kind": name})

    def __repr__(self) -> str:
        return f"RemoteBackend({self.handle.child_id!r})"

    def put_blob(self, blob_id: str, chunks: Iterable[BytesLike]) -> int:
        """Stream ``chunks`` to the storage actor in batches; a blob of one batch takes one call."""
        validate_blob_id(blob_id)
        batches = _batches(chunks, BATCH_BYTES)
        first = next(batches, [])
        second = next(batches, None)
        if second is None:
            return self.handle.call("put_blob", blob_id, ray.put(first))
        upload = self.begin_upload(blob_id)
        pending: deque[Any] = deque()
        try:
            for seq, batch in enumerate(_chain(first, second, batches)):
                pending.append(self.append(upload, seq, ray.put(batch)))
                while len(pending) > self._inflight:
                    self.handle.resolve(pending.popleft(), "append")
            while pending:
                self.handle.resolve(pending.popleft(), "append")
            return self.finish_upload(upload)
        except BaseException:
            _drain(list(pending))
            self.abort_upload(upload)
            raise

    # Upload sessions, used directly by RayFrameEngine.
    def begin_upload(self, blob_id: str) -> str:
        return self.handle.call("begin_upload", blob_id)

    def append(self, upload_id: str, seq: int, data: Any) -> Any:
        """Queue chunk ``seq``; ``data`` may be an ObjectRef. Returns a ref to resolve later."""
        return self.handle.submit("append", upload_id, seq, data)

    def finish_upload(self, upload_id: str) -> int:
        return self.handle.call("finish_upload", upload_id)

    def abort_upload(self, upload_id: str) -> None:
        # A failure is ignored: the upload dies with its actor anyway.
        with contextlib.suppress(Exception):
            self.handle.call("abort_upload", upload_id, idempotent=True)

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> bytes:
        # The contract returns bytes; the frame engines use start_read/get_blob_ref, which don't copy.
        return self.handle.call("get_blob", blob_id, start, end, idempotent=True).tobytes()

    def get_blob_ref(self, blob_id: str, start: int, end: int) -> Any:
        """A ref to bytes ``[start, end)``, to hand to another actor without fetching it here."""
        return self.handle.submit("get_blob", blob_id, start, end)

    def start_read(self, blob_id: str, start: int, end: int) -> Any:
        """Begin reading bytes ``[start, end)``; ``result()`` waits for them (read-ahead)."""
        return _RemoteRead(self.handle, self.get_blob_ref(blob_id, start, end))

    def get_ranges(self, blob_id: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        parts = self.handle.call("get_ranges", blob_id, list(ranges), idempotent=True)
        return [part.tobytes() for part in parts]

    def delete_blob(self, blob_id: str) -> None:
        self.handle.call("delete_blob", blob_id, idempotent=True)

    def list_blobs(self, prefix: str = "") -> Iterator[str]:
        return iter(self.handle.call("list_blobs", prefix, idempotent=True))

    def stat_blob(self, blob_id: str) -> BlobStat:
        return self.handle.call("stat_blob", blob_id, idempotent=True)

    def sweep_temp_files(self, older_than_seconds: float) -> int:
        return self.handle.call("sweep_temp_files", older_than_seconds, idempotent=True)

    # The scrubber's and the tier mover's calls (dwray.builtins.storage).
    def scrub(self, cursor: str = "", max_bytes: int = 64 << 20, grace_seconds: float = 3600.0) -> dict[str, Any]:
        return self.handle.call("scrub", cursor, max_bytes, grace_seconds, idempotent=True)

    def catch_up(self, max_blobs: int = 1000) -> dict[str, Any]:
        return self.handle.call("catch_up", max_blobs, idempotent=True)

    def move_due(self, max_bytes: int | None = None) -> dict[str, Any]:
        return self.handle.call("move_due", max_bytes, idempotent=True)

    def pool_status(self) -> dict[str, Any]:
        return self.handle.call("pool_status", idempotent=True)


class _RemoteRead:
    __slots__ = ("_handle", "_ref")

    def __init__(self, handle: PluginHandle, ref: Any) -> None:
        self._handle, self._ref = handle, ref

    def result(self) -> Any:
        return self._handle.resolve(self._ref, "get_blob")


def _drain(refs: list[Any], timeout: float = 5.0) -> None:
    """Wait briefly for abandoned calls and swallow their results."""
    if not refs:
        return
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
    for ref in ready:
        with contextlib.suppress(Exception):
            ray.get(ref, timeout=0)


def _chain(first: Any, second: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield second
    yield from rest


def _batches(chunks: Iterable[BytesLike], size: int) -> Iterator[list[np.ndarray]]:
    batch: list[np.ndarray] = []
    total = 0
    for chunk in chunks:
        if not len(chunk):
            continue
        view = as_byte_view(chunk)
        # Held until the batch is sent: copy a writable chunk the caller may refill.
        batch.append(_array(view if view.readonly else view.tobytes()))
        total += len(chunk)
        if total >= size:
            yield batch
            batch, total = [], 0
    if batch:
        yield batch


class RayFrameEngine(FrameEngine):
    """Seals and opens frames in stage actors, several MiB per call, several calls in flight."""

    def __init__(self, stages: Sequence[PluginHandle], *, batch_bytes: int = BATCH_BYTES,
                 inflight: int = 4, small_bytes: int = SMALL_OBJECT_BYTES) -> None:
        if not stages:
            raise ValueError("RayFrameEngine needs at least one stage actor")
        self.stages = list(stages)
        self.batch_bytes = batch_bytes
        self.small_bytes = small_bytes
        self.inflight = max(inflight, len(self.stages))
        self._turn = 0
        self._small: dict[str, Coalescer] = {}
        self._small_lock = threading.Lock()
        # One thread serves every put's MD5; each put waits only for its own frames.
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="dwray-md5")

    def close(self) -> None:
        self._hasher.shutdown(wait=True, cancel_futures=True)

    def _small_objects(self, backend: RemoteBackend) -> Coalescer:
        """The batcher of small objects bound for ``backend``: concurrent writers share calls."""
        with self._small_lock:
            coalescer = self._small.get(backend.handle.child_id)
            if coalescer is None:
                def send(items: list[tuple[str, ObjectCrypto, list[np.ndarray]]],
                         contexts: list[dict[str, str]]) -> list[Any]:
                    stage = self._stage()
                    sealed, lengths = stage.submit("seal_many", [(crypto, frames) for _, crypto, frames in items],
                                                   num_returns=2, _dwray_fanin=contexts)
                    stored = backend.handle.submit("put_many", [blob_id for blob_id, _, _ in items], sealed,
                                                   _dwray_fanin=contexts)
                    try:
                        all_lengths = stage.resolve(lengths, "seal_many")
                    except BaseException:
                        _drain([stored])  # it failed too, for want of its input
                        raise
                    outcomes = backend.handle.resolve(stored, "put_many")
                    return [outcome if isinstance(outcome, BaseException) else object_lengths
                            for object_lengths, outcome in zip(all_lengths, outcomes, strict=True)]
                coalescer = self._small[backend.handle.child_id] = Coalescer(send, max_batch=16, max_leaders=3)
            return coalescer

    def __repr__(self) -> str:
        return f"RayFrameEngine(stages={[s.child_id for s in self.stages]})"

    def _stage(self) -> PluginHandle:
        self._turn = (self._turn + 1) % len(self.stages)
        return self.stages[self._turn]

    def store(self, backend: StorageBackend, blob_id: str, frames: Iterable[tuple[Any, bool]],
              crypto: ObjectCrypto, max_size: int) -> StoredBlob:
        """Seal batches in stage actors and hand the sealed refs straight to the storage actor.

        An object that fits in one batch takes two chained calls (seal, then
        put the sealed ref) and one wait; larger ones stream through an upload
        session with several batches in flight.
        """
        if not isinstance(backend, RemoteBackend):
            raise TypeError("RayFrameEngine stores through a RemoteBackend")
        md5 = hashlib.md5()
        # MD5 runs on a thread of its own (hashlib drops the GIL), in frame
        # order, overlapping with copying the next batch into the object store.
        hasher = self._hasher
        hashed: deque[Any] = deque()
        size = 0
        lengths: list[int] = []
        pending: deque[tuple[PluginHandle, Any, Any]] = deque()
        upload: str | None = None
        stored: Any = None

        def settle(entry: tuple[PluginHandle, Any, Any]) -> None:
            stage, lengths_ref, appended = entry
            lengths.extend(stage.resolve(lengths_ref, "seal_batch"))
            backend.handle.resolve(appended, "append")

        try:
            batch: list[np.ndarray] = []
            batch_size, first, seq = 0, 0, 0
            for index, (frame, last) in enumerate(frames):
                size += len(frame)
                if size > max_size:
                    raise EntityTooLarge(size, max_size)
                batch.append(_array(frame))
                batch_size += len(frame)
                if batch_size < self.batch_bytes and not last:
                    continue
                if last and upload is None and batch_size <= self.small_bytes:
                    # A small object: sealed and stored together with other writers' (one call each).
                    for part in batch:
                        md5.update(part)
                    lengths = self._small_objects(backend)((blob_id, crypto, batch))
                    break
                hashed.extend(hasher.submit(md5.update, part) for part in batch)
                stage = self._stage()
                records, lengths_ref = stage.submit("seal_batch", crypto, first, last, ray.put(batch),
                                                    num_returns=2)
                if last and upload is None:
                    stored = backend.handle.submit("put_blob", blob_id, records)
                    lengths = stage.resolve(lengths_ref, "seal_batch")
                    backend.handle.resolve(stored, "put_blob")
                    break
                if upload is None:
                    upload = backend.begin_upload(blob_id)
                pending.append((stage, lengths_ref, backend.append(upload, seq, records)))
                seq += 1
                first, batch, batch_size = index + 1, [], 0
                while len(pending) > self.inflight:
                    settle(pending.popleft())
            while pending:
                settle(pending.popleft())
            if upload is not None:
                backend.finish_upload(upload)
            for done in hashed:
                done.result()
        except BaseException:
            # Settle what is still in flight (its errors are this failure's echo)
            # so Ray does not report them as unhandled, then drop the upload.
            _drain([ref for entry in pending for ref in entry[1:]] + ([stored] if stored is not None else []))
            if upload is not None:
                backend.abort_upload(upload)
            raise
        ends, total = [], 0
        for length in lengths:
            total += length
            ends.append(total)
        return StoredBlob(size, md5.digest(), FrameTable(ends))

    def load(self, backend: StorageBackend, blob_id: str, table: FrameTable, crypto: ObjectCrypto,
             frames: range, last_index: int) -> Iterator[Any]:
        """Read batches of records in the storage actor and open them in stage actors.

        A batch holds at most ``batch_bytes`` of plaintext, so a very
        compressible object does not turn one call into gigabytes.
        """
        if not isinstance(backend, RemoteBackend):
            raise TypeError("RayFrameEngine loads through a RemoteBackend")
        max_frames = max(self.batch_bytes // crypto.frame_size, 1)
        batches = record_batches(frames, table, max_frames, self.batch_bytes)
        pending: deque[tuple[PluginHandle, Any]] = deque()
        while True:
            while len(pending) < self.inflight:
                batch = next(batches, None)
                if batch is None:
                    break
                indexes, start, end = batch
                lengths = [table.record_range(i)[1] - table.record_range(i)[0] for i in indexes]
                stage = self._stage()
                data = backend.get_blob_ref(blob_id, start, end)
                pending.append((stage, stage.submit("open_batch", crypto, indexes[0], last_index, data, lengths)))
            if not pending:
                return
            stage, ref = pending.popleft()
            for plain in stage.resolve(ref, "open_batch"):
                yield memoryview(plain)
