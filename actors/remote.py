"""The warehouse's parts as seen from a driver: proxies to the plugin actors.

``RemoteBackend``, ``RemoteCatalog`` and ``RemoteKeyring`` have the interfaces
of ``StorageBackend``, ``Catalog`` and ``LocalKeyring``, so the one
``Warehouse`` class runs unchanged in one process or on Ray. ``RayFrameEngine``
seals and opens frames in stage actors: plaintext goes into the object store
once, in batches of several MiB; sealed records go from the stage actor to the
storage actor as ObjectRefs and never pass through the driver.

Which calls are idempotent (and so retried once after an actor restart) is
decided here, per method: reads, deletes and catalog commits (a commit of a
row that exists changes nothing) are; upload sessions are not.
"""
from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import ray
from opentelemetry import context as otel_context
from opentelemetry import propagate

from actors.handles import PluginHandle
from dwray.backends import backend_class
from dwray.backends.base import (
    BlobStat,
    BytesLike,
    StorageBackend,
    as_byte_view,
    validate_blob_id,
)
from dwray.core.catalog import (
    BucketRecord,
    DeleteOutcome,
    ObjectRecord,
    PagedReads,
    PartRecord,
    SegmentRecord,
    UploadRecord,
    WrappedKey,
)
from dwray.core.frames import FrameTable
from dwray.core.models import PartInfo
from dwray.core.pipeline import FrameEngine, ObjectCrypto, StoredBlob, record_batches
from dwray.errors import EntityTooLarge

__all__ = ["Coalescer", "RayFrameEngine", "RemoteBackend", "RemoteCatalog", "RemoteKeyring"]

BATCH_BYTES = 8 << 20
#: objects up to this size are sealed and stored in batches shared by concurrent writers
SMALL_OBJECT_BYTES = 256 << 10


def _array(data: BytesLike) -> np.ndarray:
    return np.frombuffer(as_byte_view(data), dtype=np.uint8)


class RemoteBackend(StorageBackend):
    """A storage plugin actor behind the ``StorageBackend`` contract."""

    read_ahead_before_put_check = BATCH_BYTES

    def __init__(self, handle: PluginHandle, name: str, *, inflight: int = 4) -> None:
        self.handle = handle
        self.name = name
        self._inflight = inflight
        # The remote backend's own properties, from its class in the registry.
        kind = backend_class(name)
        self.durable = kind.durable
        self.nested_ids_conflict = kind.nested_ids_conflict

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
        try:
            self.handle.call("abort_upload", upload_id, idempotent=True)
        except Exception:  # noqa: BLE001 - the upload dies with its actor anyway
            pass

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


class Coalescer:
    """Group calls made concurrently by many threads into one remote call.

    The first caller to arrive becomes the leader: it sends everything queued
    as one batch, then any batch that queued meanwhile, while the others wait
    for their own result. Alone, a caller sends a batch of one at once, so
    nothing waits on a timer. This is how the catalog's commits become a group
    commit (one transaction, one fsync, for all the writers that arrived
    together).
    """

    def __init__(self, send: Callable[[list[Any], list[dict[str, str]]], list[Any]], max_batch: int = 64,
                 max_leaders: int = 1) -> None:
        """``send(items, trace_contexts)`` makes the remote call for a batch and returns one result per item.

        ``max_leaders`` batches may be in flight at once (more overlap, smaller batches).
        """
        self._send = send
        self._max_batch = max_batch
        self._max_leaders = max_leaders
        self._lock = threading.Lock()
        self._queue: list[tuple[Any, _Slot]] = []
        self._leaders = 0

    def __call__(self, item: Any) -> Any:
        slot = _Slot()
        # Each caller's trace context travels with its item, so the grouped
        # call appears in every caller's trace, not only the leader's.
        propagate.inject(slot.carrier)
        with self._lock:
            self._queue.append((item, slot))
            lead = self._leaders < self._max_leaders
            if lead:
                self._leaders += 1
        if lead:
            self._lead()
        slot.done.wait()
        if isinstance(slot.value, BaseException):
            raise slot.value
        return slot.value

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                if not batch:
                    self._leaders -= 1
                    return
            # The call runs in the first caller's trace; the host adds a span to each other's.
            token = otel_context.attach(propagate.extract(batch[0][1].carrier))
            try:
                results = self._send([item for item, _ in batch], [slot.carrier for _, slot in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiter gets the batch's error
                results = [exc] * len(batch)
            finally:
                otel_context.detach(token)
            for (_, slot), value in zip(batch, results):
                slot.value = value
                slot.done.set()


class _Slot:
    __slots__ = ("carrier", "done", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.carrier: dict[str, str] = {}


class RemoteCatalog(PagedReads):
    """The catalog service actor behind the ``Catalog`` interface."""

    def __init__(self, handle: PluginHandle) -> None:
        self.handle = handle
        self._commits = Coalescer(lambda records, contexts: handle.call(
            "commit_many", records, idempotent=True, _dwray_fanin=contexts))

    def __repr__(self) -> str:
        return f"RemoteCatalog({self.handle.child_id!r})"

    def close(self) -> None:
        """The catalog actor outlives this client."""

    def create_bucket(self, tenant: str, name: str, bucket_id: str, *, versioning: bool = False) -> BucketRecord:
        return self.handle.call("create_bucket", tenant, name, bucket_id, versioning=versioning)

    def get_bucket(self, tenant: str, name: str) -> BucketRecord:
        return self.handle.call("get_bucket", tenant, name, idempotent=True)

    def list_buckets(self, tenant: str) -> list[BucketRecord]:
        return self.handle.call("list_buckets", tenant, idempotent=True)

    def delete_bucket(self, tenant: str, name: str) -> None:
        self.handle.call("delete_bucket", tenant, name)

    def commit_object(self, record: ObjectRecord) -> list[ObjectRecord]:
        """Commit through the group-commit queue (idempotent, so retried once after a restart)."""
        return self._commits(record)

    def get_object(self, tenant: str, bucket: str, key: str, version_id: str | None = None) -> ObjectRecord:
        return self.handle.call("get_object", tenant, bucket, key, version_id, idempotent=True)

    def latest_page(self, tenant: str, bucket: str, prefix: str = "", start: str | None = None,
                    inclusive: bool = True, limit: int = 1000) -> list[ObjectRecord]:
        return self.handle.call("latest_page", tenant, bucket, prefix, start, inclusive, limit, idempotent=True)

    def delete_object(self, tenant: str, bucket: str, key: str, version_id: str | None,
                      marker: ObjectRecord | None) -> DeleteOutcome:
        return self.handle.call("delete_object", tenant, bucket, key, version_id, marker)

    def iter_versions(self, tenant: str, bucket: str, key: str) -> list[ObjectRecord]:
        return self.handle.call("iter_versions", tenant, bucket, key, idempotent=True)

    def wrapped_below_page(self, kek_id: str, version: int,
                           limit: int = 500) -> list[ObjectRecord | WrappedKey]:
        return self.handle.call("wrapped_below_page", kek_id, version, limit, idempotent=True)

    def replace_key_header(self, record: ObjectRecord | WrappedKey, key_header: bytes, kek_version: int) -> bool:
        return self.handle.call("replace_key_header", record, key_header, kek_version, idempotent=True)

    def count_wrapped_below(self, kek_id: str, version: int) -> int:
        return self.handle.call("count_wrapped_below", kek_id, version, idempotent=True)

    def referenced_blobs(self, backend: str) -> set[str]:
        return self.handle.call("referenced_blobs", backend, idempotent=True)

    def is_referenced(self, backend: str, blob_id: str) -> bool:
        return self.handle.call("is_referenced", backend, blob_id, idempotent=True)

    def stats(self, tenant: str) -> dict[str, int]:
        return self.handle.call("stats", tenant, idempotent=True)

    def tenant_stats(self) -> dict[str, dict[str, int]]:
        return self.handle.call("tenant_stats", idempotent=True)

    # Multipart uploads. Creating one is idempotent (its id is chosen by the
    # caller); so are part and completion commits (a repeat changes nothing or
    # returns the remembered object). An abort is not: a repeat would report
    # the upload it removed as missing.
    def create_upload(self, upload: UploadRecord) -> None:
        self.handle.call("create_upload", upload, idempotent=True)

    def get_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> UploadRecord:
        return self.handle.call("get_upload", tenant, bucket, key, upload_id, idempotent=True)

    def commit_part(self, tenant: str, bucket: str, key: str, part: PartRecord) -> None:
        self.handle.call("commit_part", tenant, bucket, key, part, idempotent=True)

    def list_parts(self, tenant: str, bucket: str, key: str, upload_id: str, marker: int = 0,
                   limit: int = 1000) -> list[PartInfo]:
        return self.handle.call("list_parts", tenant, bucket, key, upload_id, marker, limit, idempotent=True)

    def uploads_page(self, tenant: str, bucket: str, prefix: str = "", key_marker: str | None = None,
                     upload_id_marker: str | None = None, inclusive: bool = False,
                     limit: int = 1000) -> list[UploadRecord]:
        return self.handle.call("uploads_page", tenant, bucket, prefix, key_marker, upload_id_marker, inclusive,
                                limit, idempotent=True)

    def abort_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> None:
        self.handle.call("abort_upload", tenant, bucket, key, upload_id)

    def complete_upload(self, record: ObjectRecord, upload_id: str, parts: list[tuple[int, str]]) -> ObjectRecord:
        return self.handle.call("complete_upload", record, upload_id, parts, idempotent=True)

    def completed_upload(self, tenant: str, bucket: str, key: str, upload_id: str,
                         parts: list[tuple[int, str]]) -> ObjectRecord | None:
        return self.handle.call("completed_upload", tenant, bucket, key, upload_id, parts, idempotent=True)

    def segments_page(self, tenant: str, bucket: str, key: str, version_id: str, start: int = 0,
                      limit: int = 64) -> list[SegmentRecord]:
        return self.handle.call("segments_page", tenant, bucket, key, version_id, start, limit, idempotent=True)


class RemoteKeyring:
    """The KMS plugin actor behind the ``LocalKeyring`` interface."""

    def __init__(self, handle: PluginHandle) -> None:
        self.handle = handle
        self._wraps = Coalescer(lambda items, contexts: handle.call(
            "wrap_many", items, idempotent=True, _dwray_fanin=contexts))

    def __repr__(self) -> str:
        return f"RemoteKeyring({self.handle.child_id!r})"

    def ensure(self, kek_id: str) -> int:
        return self.handle.call("ensure", kek_id, idempotent=True)

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        return self._wraps((kek_id, dek))

    def unwrap(self, kek_id: str, version: int, wrapped: bytes) -> bytes:
        return self.handle.call("unwrap", kek_id, version, wrapped, idempotent=True)

    def rotate(self, kek_id: str) -> int:
        return self.handle.call("rotate", kek_id)

    def retire_below(self, kek_id: str, minimum: int) -> None:
        self.handle.call("retire_below", kek_id, minimum, idempotent=True)

    def describe(self, kek_id: str) -> dict[str, Any]:
        return self.handle.call("describe", kek_id, idempotent=True)


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
