"""What every part of the warehouse works on: its config, backend, catalog, keyring and frame
engine, the tenant an operation runs for, a short-lived cache of bucket records, and the
process's memory pressure monitor (``dwray.core.memory_pressure``).

Under memory pressure the warehouse gives memory back rather than be OOM-killed:
at ``warning`` it drops its bucket records and cached data keys (and, with an
in-process memory backend, the least recently used half of its blobs); at
``critical`` new writes and large reads raise ``Backpressure`` before any of
their bytes are held (``_refuse_if_critical``).
"""
from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

from dwray.backends.base import StorageBackend
from dwray.backends.memory import MemoryBackend
from dwray.config import DwrayConfig, load_config
from dwray.core.audit import AuditSink, open_audit_log
from dwray.core.audit.deferred import DeferredRecords
from dwray.core.catalog import BucketRecord, Catalog, ObjectRecord
from dwray.core.contracts import KeyService, PagedCatalog
from dwray.core.data_keys import DataKeys
from dwray.core.datadir_lock import DataDirLock, LockHolder
from dwray.core.key_services import open_key_service
from dwray.core.memory_pressure import LEVELS, MemoryReading, shared_monitor
from dwray.core.models import ObjectInfo, TenantContext
from dwray.core.pipeline import FrameEngine, ThreadFrameEngine
from dwray.core.storage_setup import open_targets
from dwray.core.warehouse.inputs import clean_metadata
from dwray.errors import StorageError
from dwray.secrets import shared_resolver

__all__ = ["BUCKET_CACHE_SECONDS", "TenantArg", "WarehouseBase", "object_info"]

TenantArg = TenantContext | str | None
BUCKET_CACHE_SECONDS = 5.0
# A process seals with one bucket key per (KEK, bucket) for this long, so a KEK rotation reaches
# new writes within a minute; unwrapped keys stay in its read cache for five.
DATA_KEY_SEAL_SECONDS = 60.0
DATA_KEY_OPEN_SECONDS = 300.0


def object_info(record: ObjectRecord) -> ObjectInfo:
    """An object version as callers see it: no placement, no key material."""
    return ObjectInfo(record.bucket, record.key, record.public_version_id, record.size, record.etag,
                      record.created, record.content_type, dict(record.metadata), dict(record.headers),
                      record.delete_marker, record.is_latest, dict(record.tags), record.parts)


class WarehouseBase:
    """The state of a warehouse and the few steps all its operations share."""

    def __init__(self, config: DwrayConfig | None = None, *, backend: StorageBackend | None = None,
                 catalog: PagedCatalog | None = None, keyring: KeyService | None = None,
                 engine: FrameEngine | None = None, audit: AuditSink | None = None,
                 storages: Mapping[str, StorageBackend] | None = None) -> None:
        """Open the warehouse of ``config``; the Ray runtime passes remote ``backend`` ([storage]'s),
        ``storages`` (the other placement targets, by name), ``catalog``, ``keyring``, ``engine`` and
        ``audit`` objects that keep the same contracts."""
        self.config = config if config is not None else load_config()
        self.config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.ExitStack() as undo:  # closes what was opened if a later part fails
            # One writer per data dir: a warehouse that opens the data dir's own files holds
            # its lock until close(). The Ray runtime passes remote parts; there the plugin
            # tree's lock holder has it (actors.bootstrap).
            self._datadir_lock = None
            if backend is None or catalog is None or keyring is None:
                self._datadir_lock = DataDirLock(self.config.data_dir).acquire(
                    LockHolder.this_process("an in-process Warehouse"))
                undo.callback(self._datadir_lock.release)
            default_name = self.config.storage.backend
            if backend is None:
                opened = open_targets(self.config, shared_resolver(self.config))
                for target in opened.values():
                    undo.callback(target.close)
                backend = opened[default_name]
            else:
                opened = {default_name: backend, **(storages or {})}
                for target in opened.values():
                    undo.callback(target.close)
            #: every placement target by name ([storage]'s under its backend kind, as rows record it)
            self.storages: dict[str, StorageBackend] = opened
            self.backend = backend
            self.backend_name = default_name
            self.catalog = catalog if catalog is not None else Catalog(
                self.config.catalog_path, synchronous=self.config.catalog.synchronous,
                busy_timeout_ms=self.config.catalog.busy_timeout_ms)
            undo.callback(self.catalog.close)
            self.keyring = keyring if keyring is not None else open_key_service(self.config)
            # Bucket keys: one key service call per bucket and minute for writes, and
            # unwrapped keys kept a few minutes for reads, instead of one call per object.
            self.data_keys = DataKeys(self.keyring, seal_ttl=DATA_KEY_SEAL_SECONDS,
                                      open_ttl=DATA_KEY_OPEN_SECONDS)
            # The audit log has one writer per data dir: the holder of its lock (or, on Ray, its plugin).
            if audit is None and self.config.audit.enabled and self._datadir_lock is not None:
                audit = open_audit_log(self.config)
            self.audit = audit
            self._audit_reads = DeferredRecords(audit) if audit is not None else None
            undo.pop_all()
        self.engine = engine if engine is not None else ThreadFrameEngine(self.config.worker_threads)
        self._closed = threading.Event()
        self._keks_ready: set[str] = set()
        self._buckets: dict[tuple[str, str], tuple[float, BucketRecord]] = {}
        self.memory = shared_monitor(self.config.memory)
        self._stop_watching_memory = self._watch_memory()

    def _watch_memory(self) -> weakref.finalize | None:
        """Listen to the memory monitor without keeping this warehouse alive: the listener holds
        it weakly, and is removed at ``close()`` or when the warehouse is collected."""
        if self.memory is None:
            return None
        this = weakref.ref(self)

        def listener(old: str, new: str, reading: MemoryReading) -> None:
            warehouse = this()
            if warehouse is not None and LEVELS.index(new) > LEVELS.index(old):
                warehouse._shed_memory()

        self.memory.add_listener(listener)
        return weakref.finalize(self, self.memory.remove_listener, listener)

    def _shed_memory(self) -> None:
        """Memory pressure rose (to warning or critical): drop what can be fetched again."""
        self._buckets.clear()
        self.data_keys.forget()
        if isinstance(self.backend, MemoryBackend):  # this process's own blobs, not a plugin's
            self.backend.shrink()

    def _refuse_if_critical(self, what: str) -> None:
        """Raise ``Backpressure`` if memory is critical: before a new write or a large read starts."""
        if self.memory is not None:
            self.memory.refuse_if_critical(what)

    @classmethod
    def load(cls, data_dir: str | Path | None = None, config_path: str | Path | None = None,
             **overrides: Any) -> Self:
        """A warehouse from the config file and environment, optionally with a data dir."""
        config = load_config(config_path)
        if data_dir is not None:
            config = config.model_copy(update={"data_dir": Path(data_dir)})
        if overrides:
            config = config.model_copy(update=overrides)
        return cls(config)

    def __repr__(self) -> str:
        return f"Warehouse(data_dir={str(self.config.data_dir)!r}, backend={self.backend_name!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._stop_watching_memory is not None:
            self._stop_watching_memory()
        try:
            if self._audit_reads is not None and self.audit is not None:
                try:
                    self._audit_reads.close()
                finally:
                    self.audit.close()
            self.engine.close()
            self.catalog.close()
            for storage in self.storages.values():
                storage.close()
        finally:
            if self._datadir_lock is not None:
                self._datadir_lock.release()

    def _tenant(self, tenant: TenantArg) -> TenantContext:
        if isinstance(tenant, TenantContext):
            return tenant
        return TenantContext(tenant if tenant is not None else self.config.default_tenant)

    def _storage_for(self, tenant: str, bucket: str) -> tuple[str, StorageBackend]:
        """The placement target new objects of ``bucket`` go to (``[placement]``), and its backend."""
        target = self.config.placement_target(tenant, bucket)
        return target, self._storage_named(target)

    def _storage_named(self, target: str) -> StorageBackend:
        """The backend or pool of a target a catalog row names; ``StorageError`` if the config lost it."""
        try:
            return self.storages[target]
        except KeyError:
            raise StorageError("read", target, "the data is on storage target "
                               f"{target!r}, which this warehouse's config does not name "
                               f"(known: {', '.join(sorted(self.storages))})") from None

    def _check_metadata(self, metadata: Mapping[str, str] | None) -> dict[str, str]:
        return clean_metadata(metadata, self.config.limits.max_metadata_bytes)

    def _bucket(self, ctx: TenantContext, bucket: str) -> BucketRecord:
        """The bucket's record, cached for a few seconds to spare writes a catalog round trip.

        Safe because the commit checks that the bucket still exists; a stale
        entry only means a blob path with an older bucket id, which nothing reads.
        """
        now = time.monotonic()
        cached = self._buckets.get((ctx.tenant, bucket))
        if cached is not None and now - cached[0] < BUCKET_CACHE_SECONDS:
            return cached[1]
        record = self.catalog.get_bucket(ctx.tenant, bucket)
        self._buckets[(ctx.tenant, bucket)] = (now, record)
        return record

    def _forget_bucket(self, ctx: TenantContext, bucket: str) -> None:
        """Drop the cached record of a bucket found gone (or being deleted)."""
        self._buckets.pop((ctx.tenant, bucket), None)
