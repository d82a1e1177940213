"""dwray's own plugins: storage, frame stage, catalog service and local KMS.

They are registered as entry points in ``pyproject.toml`` like any third-party
plugin, and each runs in a plugin host actor. They hold no Ray code: object
data arrives as numpy arrays (Ray resolves ObjectRef arguments, zero-copy on
the same node) and leaves as numpy arrays, so callers never move big ``bytes``
by value between actors.
"""
from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from dwray.catalog import (
    Catalog,
    ObjectRecord,
    PartRecord,
    SegmentRecord,
    UploadRecord,
    WrappedKey,
)
from dwray.errors import (
    BlobExists,
    DwrayError,
    InvalidArgument,
    StorageError,
    UploadNotFound,
)
from dwray.keyring import LocalKeyring
from dwray.pipeline import ObjectCrypto
from dwray.plugins import Manifest, Plugin
from dwray.storage import create_backend
from dwray.storage.base import BlobStat

__all__ = ["CatalogPlugin", "FrameStagePlugin", "IdentityPlugin", "LocalKmsPlugin", "LocalStoragePlugin",
           "MemoryStoragePlugin", "SettingsPlugin"]

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
        self.touched = time.monotonic()
        with self._lock:
            if self._error is not None:
                raise self._error
            self._waiting[seq] = data
            ready = []
            while self._next in self._waiting:
                ready.append(self._waiting.pop(self._next))
                self._next += 1
        for item in ready:
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
        self.backend = create_backend(self.backend_name, **options)
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()

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
    """A byte-capped LRU of blobs in memory (not durable: for tests and caches)."""

    backend_name = "memory"
    manifest = Manifest(
        name="storage.memory", kind="storage", version="1.0.0", capabilities=("ranges", "uploads"),
        config_schema={"type": "object", "properties": {"max_bytes": {"type": "integer", "minimum": 1}},
                       "additionalProperties": False})


class FrameStagePlugin(Plugin):
    """The built-in stage chain: zstd then AES-256-GCM, on batches of frames.

    One call handles several frames (a batch of a few MiB), because a Ray call
    costs about a millisecond here and a frame about two.
    """

    manifest = Manifest(name="stage.frames", kind="stage", version="1.0.0",
                        capabilities=("seal", "open", "trusted-builtin"),
                        config_schema={"type": "object", "additionalProperties": False})

    def seal_batch(self, crypto: ObjectCrypto, first_index: int, ends_object: bool,
                   frames: list[Any]) -> tuple[np.ndarray, list[int]]:
        """Seal frames ``first_index...``; the last one is the object's last if ``ends_object``.

        Returns the records laid end to end and each record's length.
        """
        sealer = crypto.sealer()
        pieces, lengths = [], []
        for offset, frame in enumerate(frames):
            last = ends_object and offset == len(frames) - 1
            codec, sealed = sealer.seal(first_index + offset, memoryview(frame).cast("B"), last)
            pieces += (codec, sealed)
            lengths.append(len(codec) + len(sealed))
        out = np.empty(sum(lengths), dtype=np.uint8)
        position = 0
        for piece in pieces:
            out[position:position + len(piece)] = np.frombuffer(piece, dtype=np.uint8)
            position += len(piece)
        return out, lengths

    def seal_many(self, objects: list[tuple[ObjectCrypto, list[Any]]]) -> tuple[list[np.ndarray], list[list[int]]]:
        """Seal several whole small objects (all their frames) in one call.

        Returns each object's records laid end to end, and each one's record lengths.
        """
        sealed = [self.seal_batch(crypto, 0, True, frames) for crypto, frames in objects]
        return [records for records, _ in sealed], [lengths for _, lengths in sealed]

    def open_batch(self, crypto: ObjectCrypto, first_index: int, last_index: int, records: Any,
                   lengths: list[int]) -> list[np.ndarray]:
        """Open consecutive records laid end to end; returns each frame's plaintext."""
        opener = crypto.opener()
        view = memoryview(records).cast("B")
        out, position = [], 0
        for offset, length in enumerate(lengths):
            index = first_index + offset
            plain = opener.open(index, view[position:position + length], index == last_index)
            out.append(as_array(plain))
            position += length
        return out


class CatalogPlugin(Plugin):
    """The SQLite catalog as a service. Its state is the database file, so a restart loses nothing."""

    manifest = Manifest(
        name="service.catalog", kind="service", version="1.0.0", capabilities=("catalog",),
        config_schema={"type": "object", "properties": {
            "path": _PATH_SCHEMA, "synchronous": {"enum": ["FULL", "EXTRA"]},
            "busy_timeout_ms": {"type": "integer", "minimum": 0}},
            "required": ["path"], "additionalProperties": False})

    def __init__(self, path: str, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        self.catalog = Catalog(Path(path), synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)

    # The catalog's own methods, exposed one by one so that nothing private leaks.
    def create_bucket(self, *args: Any, **kwargs: Any) -> Any:
        return self.catalog.create_bucket(*args, **kwargs)

    def get_bucket(self, tenant: str, name: str) -> Any:
        return self.catalog.get_bucket(tenant, name)

    def list_buckets(self, tenant: str) -> Any:
        return self.catalog.list_buckets(tenant)

    def delete_bucket(self, tenant: str, name: str) -> None:
        self.catalog.delete_bucket(tenant, name)

    def commit_object(self, record: ObjectRecord) -> Any:
        return self.catalog.commit_object(record)

    def commit_many(self, records: list[ObjectRecord]) -> list[Any]:
        return self.catalog.commit_many(records)

    def get_object(self, tenant: str, bucket: str, key: str, version_id: str | None = None) -> Any:
        return self.catalog.get_object(tenant, bucket, key, version_id)

    def latest_page(self, tenant: str, bucket: str, prefix: str, start: str | None, inclusive: bool,
                    limit: int) -> list[ObjectRecord]:
        return self.catalog.latest_page(tenant, bucket, prefix, start, inclusive, limit)

    def delete_object(self, *args: Any) -> Any:
        return self.catalog.delete_object(*args)

    def iter_versions(self, tenant: str, bucket: str, key: str) -> Any:
        return self.catalog.iter_versions(tenant, bucket, key)

    def wrapped_below_page(self, kek_id: str, version: int, limit: int) -> list[ObjectRecord | WrappedKey]:
        return self.catalog.wrapped_below_page(kek_id, version, limit)

    def replace_key_header(self, record: ObjectRecord | WrappedKey, key_header: bytes, kek_version: int) -> bool:
        return self.catalog.replace_key_header(record, key_header, kek_version)

    def count_wrapped_below(self, kek_id: str, version: int) -> int:
        return self.catalog.count_wrapped_below(kek_id, version)

    def referenced_blobs(self, backend: str) -> set[str]:
        return self.catalog.referenced_blobs(backend)

    def is_referenced(self, backend: str, blob_id: str) -> bool:
        return self.catalog.is_referenced(backend, blob_id)

    def stats(self, tenant: str) -> dict[str, int]:
        return self.catalog.stats(tenant)

    def tenant_stats(self) -> dict[str, dict[str, int]]:
        return self.catalog.tenant_stats()

    def create_upload(self, upload: UploadRecord) -> None:
        self.catalog.create_upload(upload)

    def get_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> UploadRecord:
        return self.catalog.get_upload(tenant, bucket, key, upload_id)

    def commit_part(self, tenant: str, bucket: str, key: str, part: PartRecord) -> None:
        self.catalog.commit_part(tenant, bucket, key, part)

    def list_parts(self, tenant: str, bucket: str, key: str, upload_id: str, marker: int, limit: int) -> Any:
        return self.catalog.list_parts(tenant, bucket, key, upload_id, marker, limit)

    def uploads_page(self, tenant: str, bucket: str, prefix: str, key_marker: str | None,
                     upload_id_marker: str | None, inclusive: bool, limit: int) -> list[UploadRecord]:
        return self.catalog.uploads_page(tenant, bucket, prefix, key_marker, upload_id_marker, inclusive, limit)

    def abort_upload(self, tenant: str, bucket: str, key: str, upload_id: str) -> None:
        self.catalog.abort_upload(tenant, bucket, key, upload_id)

    def complete_upload(self, record: ObjectRecord, upload_id: str, parts: list[tuple[int, str]]) -> ObjectRecord:
        return self.catalog.complete_upload(record, upload_id, parts)

    def completed_upload(self, tenant: str, bucket: str, key: str, upload_id: str,
                         parts: list[tuple[int, str]]) -> ObjectRecord | None:
        return self.catalog.completed_upload(tenant, bucket, key, upload_id, parts)

    def segments_page(self, tenant: str, bucket: str, key: str, version_id: str, start: int,
                      limit: int) -> list[SegmentRecord]:
        return self.catalog.segments_page(tenant, bucket, key, version_id, start, limit)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "schema_version": self.catalog.schema_version}

    def close(self) -> None:
        self.catalog.close()


class LocalKmsPlugin(Plugin):
    """Key-encryption keys from the local keyring file (0600)."""

    manifest = Manifest(
        name="kms.local", kind="kms", version="1.0.0", capabilities=("wrap", "unwrap", "rotate"),
        config_schema={"type": "object", "properties": {"path": _PATH_SCHEMA}, "required": ["path"],
                       "additionalProperties": False})

    def __init__(self, path: str) -> None:
        self.keyring = LocalKeyring(Path(path))

    def ensure(self, kek_id: str) -> int:
        return self.keyring.ensure(kek_id)

    def wrap(self, kek_id: str, dek: bytes) -> tuple[int, bytes]:
        return self.keyring.wrap(kek_id, dek)

    def wrap_many(self, items: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
        """``wrap`` for several (kek_id, dek) pairs in one call."""
        return [self.keyring.wrap(kek_id, dek) for kek_id, dek in items]

    def unwrap(self, kek_id: str, version: int, wrapped: bytes) -> bytes:
        return self.keyring.unwrap(kek_id, version, wrapped)

    def rotate(self, kek_id: str) -> int:
        return self.keyring.rotate(kek_id)

    def retire_below(self, kek_id: str, minimum: int) -> None:
        self.keyring.retire_below(kek_id, minimum)

    def describe(self, kek_id: str) -> dict[str, Any]:
        return self.keyring.describe(kek_id)



class SettingsPlugin(Plugin):
    """The running warehouse's configuration, for clients that attach to it.

    A client on another machine must cut frames and enforce limits as the
    warehouse was configured, not as its own defaults say. Holds no secrets:
    the config refers to secrets, it never contains them.
    """

    manifest = Manifest(name="service.settings", kind="service", version="1.0.0", capabilities=("settings",),
                        config_schema={"type": "object", "properties": {"settings": {"type": "object"}},
                                       "required": ["settings"], "additionalProperties": False})

    def __init__(self, settings: dict[str, Any]) -> None:
        self._settings = settings

    def settings(self) -> dict[str, Any]:
        return self._settings


class IdentityPlugin(Plugin):
    """Tenants, access keys and admin-token hashes as a service. Its state is the database file.

    It stores secrets only wrapped (the callers wrap and unwrap them with the
    KMS plugin), so this actor never holds a plaintext access-key secret.
    """

    manifest = Manifest(
        name="service.identity", kind="service", version="1.0.0", capabilities=("identity",),
        config_schema={"type": "object", "properties": {
            "path": _PATH_SCHEMA, "synchronous": {"enum": ["FULL", "EXTRA"]},
            "busy_timeout_ms": {"type": "integer", "minimum": 0}},
            "required": ["path"], "additionalProperties": False})

    def __init__(self, path: str, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        # Imported here so that this section stays self-contained at the end of the module.
        from dwray.identity import IdentityStore

        self.store = IdentityStore(Path(path), synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)

    # The store's own methods, exposed one by one so that nothing private leaks.
    def epoch(self) -> int:
        return self.store.epoch()

    def create_tenant(self, name: str, description: str = "") -> Any:
        return self.store.create_tenant(name, description)

    def get_tenant(self, name: str) -> Any:
        return self.store.get_tenant(name)

    def list_tenants(self) -> list[Any]:
        return self.store.list_tenants()

    def delete_tenant(self, name: str) -> None:
        self.store.delete_tenant(name)

    def add_access_key(self, access_key_id: str, tenant: str, kek_id: str, kek_version: int,
                       wrapped_secret: bytes, description: str = "") -> Any:
        return self.store.add_access_key(access_key_id, tenant, kek_id, kek_version, wrapped_secret, description)

    def get_access_key(self, access_key_id: str) -> Any:
        return self.store.get_access_key(access_key_id)

    def list_access_keys(self, tenant: str | None = None, *, include_revoked: bool = False) -> list[Any]:
        return self.store.list_access_keys(tenant, include_revoked=include_revoked)

    def revoke_access_key(self, access_key_id: str) -> Any:
        return self.store.revoke_access_key(access_key_id)

    def keys_wrapped_below(self, kek_id: str, version: int, limit: int = 500) -> list[Any]:
        return self.store.keys_wrapped_below(kek_id, version, limit)

    def replace_wrapped_secret(self, key: Any, wrapped_secret: bytes, kek_version: int) -> bool:
        return self.store.replace_wrapped_secret(key, wrapped_secret, kek_version)

    def add_admin_token_hash(self, token_hash: str, description: str = "") -> None:
        self.store.add_admin_token_hash(token_hash, description)

    def has_admin_token_hash(self, token_hash: str) -> bool:
        return self.store.has_admin_token_hash(token_hash)

    def count_admin_tokens(self) -> int:
        return self.store.count_admin_tokens()

    def bootstrap(self, tenant: str, access_key_id: str, kek_id: str, kek_version: int, wrapped_secret: bytes,
                  token_hash: str) -> bool:
        return self.store.bootstrap(tenant, access_key_id, kek_id, kek_version, wrapped_secret, token_hash)

    def health(self) -> dict[str, Any]:
        return self.store.health()

    def close(self) -> None:
        self.store.close()
