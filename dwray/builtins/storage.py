"""The built-in storage plugins: a backend behind a plugin host, streaming uploads on a thread.

Object data arrives as numpy arrays (Ray resolves ObjectRef arguments, zero-copy on
the same node) and leaves as numpy arrays, so callers never move big ``bytes`` by
value between actors.
"""
from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from dwray.backends import create_backend
from dwray.backends.base import BlobStat
from dwray.core.plugins import Manifest, Plugin
from dwray.core.scrubbing import scrub_step
from dwray.errors import (
    BlobExists,
    DwrayError,
    InvalidArgument,
    StorageError,
    UploadNotFound,
)

__all__ = ["LocalStoragePlugin", "MemoryStoragePlugin", "as_array"]

_PATH_SCHEMA = {"type": "string", "minLength": 1}


def as_array(data: bytes | bytearray | memoryview) -> np.ndarray:
    """A uint8 numpy view of a buffer, without a copy."""
    return np.frombuffer(data, dtype=np.uint8)


class _Upload:
    """A blob being written by a stream of ``append`` calls, on a thread of its own.

    The backend's ``put_blob`` runs on the thread and pulls chunks in sequence
    order from a bounded queue, so a slow disk pushes back on the callers.
    """

    IDLE_LIMIT = 300.0  # seconds without an append before an upload is abandoned

    def __init__(self, backend: Any, blob_id: str) -> None:
        self.blob_id = blob_id
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=4)
        self._waiting: dict[int, Any] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._result: int | None = None
        self._error: BaseException | None = None
        self.touched = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(backend,), daemon=True,
                                        name=f"dwray-upload-{blob_id[-8:]}")
        self._thread.start()

    def _chunks(self) -> Iterator[Any]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

    def _run(self, backend: Any) -> None:
        try:
            self._result = backend.put_blob(self.blob_id, self._chunks())
        except BaseException as exc:  # noqa: BLE001 - handed to finish()
            self._error = exc

    def append(self, seq: int, data: Any) -> None:
        """Hold chunk ``seq`` until those before it are in, then queue it for the writer.

        Appends run on several threads of the plugin host at once. Chunks are
        queued while holding the lock: released first, two calls that each
        made their own chunk ready could queue them in the wrong order, and
        the blob would be written out of order. (A call blocked on a full
        queue holds the others back, which is the back-pressure wanted.)
        """
        self.touched = time.monotonic()
        with self._lock:
            if self._error is not None:
                raise self._error
            self._waiting[seq] = data
            while self._next in self._waiting:
                item = self._waiting.pop(self._next)
                self._next += 1
                while True:
                    try:
                        self._queue.put(item, timeout=1.0)
                        break
                    except queue.Full:
                        if self._error is not None:
                            raise self._error from None
                        if not self._thread.is_alive():
                            raise StorageError("put", self.blob_id, "upload writer stopped") from None

    def finish(self) -> int:
        if self._waiting:
            missing = InvalidArgument(f"upload of {self.blob_id!r} is missing chunk {self._next}")
            self.abort(missing)
            raise missing
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
        return int(self._result or 0)

    def abort(self, reason: BaseException | None = None) -> None:
        error = reason or StorageError("put", self.blob_id, "upload aborted")
        try:
            self._queue.put(error, timeout=5.0)
        except queue.Full:
            pass
        self._thread.join(timeout=30.0)


class _StoragePlugin(Plugin):
    """A storage backend, plus upload sessions so a blob can arrive in many calls."""

    backend_name = ""

    def __init__(self, **options: Any) -> None:
        self.backend = self._open(**options)
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()

    def _open(self, **options: Any) -> Any:
        """The backend this plugin serves; subclasses that build it otherwise override this."""
        return create_backend(self.backend_name, **options)

    def begin_upload(self, blob_id: str) -> str:
        """Start writing ``blob_id``; returns an upload id for ``append``/``finish_upload``."""
        self._expire_idle()
        if self.backend.exists(blob_id):  # refuse before the caller streams the rest
            raise BlobExists(blob_id)
        upload_id = secrets.token_hex(12)
        with self._lock:
            self._uploads[upload_id] = _Upload(self.backend, blob_id)
        return upload_id

    def _upload(self, upload_id: str) -> _Upload:
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None:
            raise UploadNotFound(upload_id)
        return upload

    def append(self, upload_id: str, seq: int, data: Any) -> int:
        """Add chunk number ``seq`` (0, 1, ...; any arrival order) to an upload.

        ``data`` is one buffer or a list of buffers (written in order).
        """
        parts = data if isinstance(data, list) else [data]
        views = [memoryview(part).cast("B") for part in parts]
        self._upload(upload_id).append(seq, views)
        return sum(len(view) for view in views)

    def finish_upload(self, upload_id: str) -> int:
        """Make the blob durable and return its size."""
        upload = self._upload(upload_id)
        try:
            return upload.finish()
        finally:
            with self._lock:
                self._uploads.pop(upload_id, None)

    def abort_upload(self, upload_id: str) -> None:
        """Drop an upload; nothing of it stays visible."""
        with self._lock:
            upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            upload.abort()

    def _expire_idle(self) -> None:
        now = time.monotonic()
        with self._lock:
            stale = [uid for uid, up in self._uploads.items() if now - up.touched > _Upload.IDLE_LIMIT]
            uploads = [self._uploads.pop(uid) for uid in stale]
        for upload in uploads:
            upload.abort()

    def put_blob(self, blob_id: str, data: Any) -> int:
        """Store one buffer (or a list of buffers, in order) as a blob, in one call."""
        parts = data if isinstance(data, list) else [data]
        return self.backend.put_blob(blob_id, [memoryview(part).cast("B") for part in parts])

    def put_many(self, blob_ids: list[str], records: list[Any]) -> list[int | DwrayError]:
        """Store several small blobs in one call; each gets its size, or its own error."""
        results: list[int | DwrayError] = []
        for blob_id, data in zip(blob_ids, records, strict=True):
            try:
                results.append(self.backend.put_blob(blob_id, [memoryview(data).cast("B")]))
            except DwrayError as exc:
                results.append(exc)
        return results

    def get_blob(self, blob_id: str, start: int = 0, end: int | None = None) -> np.ndarray:
        return as_array(self.backend.get_blob(blob_id, start, end))

    def get_ranges(self, blob_id: str, ranges: list[tuple[int, int]]) -> list[np.ndarray]:
        return [as_array(part) for part in self.backend.get_ranges(blob_id, ranges)]

    def delete_blob(self, blob_id: str) -> None:
        self.backend.delete_blob(blob_id)

    def list_blobs(self, prefix: str = "") -> list[str]:
        return list(self.backend.list_blobs(prefix))

    def stat_blob(self, blob_id: str) -> BlobStat:
        return self.backend.stat_blob(blob_id)

    def sweep_temp_files(self, older_than_seconds: float) -> int:
        sweep = getattr(self.backend, "sweep_temp_files", None)
        return sweep(older_than_seconds) if sweep is not None else 0

    def scrub(self, cursor: str = "", max_bytes: int = 64 << 20, grace_seconds: float = 3600.0) -> dict[str, Any]:
        """One step of a scrub pass (``dwray.core.scrubbing.scrub_step``)."""
        return scrub_step(self.backend, cursor, max_bytes, grace_seconds)

    def catch_up(self, max_blobs: int = 1000) -> dict[str, Any]:
        """Copy missed replicas to members that are back (a mirror); nothing for other targets."""
        catch_up = getattr(self.backend, "catch_up", None)
        return catch_up(max_blobs) if catch_up is not None else {}

    def move_due(self, max_bytes: int | None = None) -> dict[str, Any]:
        """Move blobs that are due to the cold tier (a tiered pool); nothing for other targets."""
        move_due = getattr(self.backend, "move_due", None)
        return move_due(max_bytes) if move_due is not None else {}

    def pool_status(self) -> dict[str, Any]:
        status = getattr(self.backend, "pool_status", None)
        return status() if status is not None else {"kind": self.backend_name}

    def health(self) -> dict[str, Any]:
        with self._lock:
            return {"ok": True, "uploads": len(self._uploads)}

    def close(self) -> None:
        with self._lock:
            uploads = list(self._uploads.values())
            self._uploads.clear()
        for upload in uploads:
            upload.abort()
        self.backend.close()


class LocalStoragePlugin(_StoragePlugin):
    """Durable blobs on a local disk folder."""

    backend_name = "local"
    manifest = Manifest(
        name="storage.local", kind="storage", version="1.0.0", capabilities=("durable", "ranges", "uploads"),
        config_schema={"type": "object", "properties": {"root": _PATH_SCHEMA}, "required": ["root"],
                       "additionalProperties": False})


class MemoryStoragePlugin(_StoragePlugin):
    """A byte-capped LRU of blobs in memory (not durable: for tests and caches).

    Under memory pressure (``warning`` or ``critical``, each time the level
    rises) it evicts its least recently used blobs down to half of the bytes
    it holds (``MemoryBackend.shrink``); ``normal`` changes nothing.
    """

    backend_name = "memory"
    manifest = Manifest(
        name="storage.memory", kind="storage", version="1.0.0", capabilities=("ranges", "uploads"),
        config_schema={"type": "object", "properties": {"max_bytes": {"type": "integer", "minimum": 1}},
                       "additionalProperties": False})

    def on_memory_pressure(self, level: str) -> None:
        if level in ("warning", "critical"):
            self.backend.shrink()
