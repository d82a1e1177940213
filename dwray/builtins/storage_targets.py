"""Storage plugins built from a target spec: ``storage.s3``, ``storage.sqlite``, ``storage.postgres``,
``storage.mirror`` and ``storage.tiered``.

The plugin's config is the target's spec (``dwray.core.storage_setup.target_spec``)
without its ``kind``, plus ``secret_settings`` for the plugin's own
``SecretResolver``. A spec holds secret *references* only (the actor's
arguments are what Ray's dashboard shows); they are resolved here, in the
actor, and the plugin names them in ``secret_refs()`` so its host watches
them: a rotated S3 key or PostgreSQL password reopens the backend with the
new value, without a restart.

Besides the storage calls every storage plugin answers, these answer the
scrubber and the tier mover: ``scrub`` (one bounded step of a pass),
``catch_up`` (a mirror's missed replicas), ``move_due`` (a tiered pool's
moves) and ``pool_status``.
"""
from __future__ import annotations

import threading
from typing import Any

from dwray.builtins.storage import _StoragePlugin
from dwray.core.plugins import Manifest
from dwray.core.storage_setup import open_storage, spec_secret_refs
from dwray.secrets import SecretResolver

__all__ = ["MirrorStoragePlugin", "PostgresStoragePlugin", "S3StoragePlugin", "SqliteStoragePlugin",
           "TieredStoragePlugin"]

_TEXT = {"type": "string", "minLength": 1}
_OPTIONAL_TEXT = {"type": ["string", "null"]}
_REF = {"type": "string", "pattern": "^secret://"}
_OPTIONAL_REF = {"type": ["string", "null"], "pattern": "^secret://"}
_SETTINGS = {"type": "object"}


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": {**properties, "secret_settings": _SETTINGS}, "required": required,
            "additionalProperties": False}


_S3 = {"bucket": _TEXT, "endpoint": _OPTIONAL_TEXT, "region": _OPTIONAL_TEXT, "prefix": {"type": "string"},
       "addressing_style": {"enum": ["auto", "path", "virtual"]}, "access_key": _OPTIONAL_TEXT,
       "secret_key": _OPTIONAL_REF, "ca_cert": _OPTIONAL_TEXT, "multipart_threshold": {"type": "integer"}}
_SQLITE = {"path": _TEXT}
_POSTGRES = {"dsn": _REF, "table": _TEXT, "max_connections": {"type": "integer", "minimum": 1}}
_MEMBER = {"type": "object", "required": ["kind"]}
_MIRROR = {"members": {"type": "object", "additionalProperties": _MEMBER, "minProperties": 2}, "index": _TEXT,
           "write_quorum": {"type": ["integer", "null"], "minimum": 1}}
_TIERED = {"hot": _MEMBER, "cold": _MEMBER, "index": _TEXT, "after_seconds": {"type": ["number", "null"]},
           "hot_max_bytes": {"type": ["integer", "null"]}}


class _SpecStoragePlugin(_StoragePlugin):
    """A storage plugin whose backend (or pool) is opened from a spec, its secrets resolved in this actor."""

    kind = ""

    def _open(self, secret_settings: dict[str, Any] | None = None, **spec: Any) -> Any:
        self._spec = {"kind": self.kind, **spec}
        self.secret_resolver = SecretResolver.from_settings(secret_settings or {})
        self._retired: list[Any] = []
        self._reopen_lock = threading.Lock()
        return open_storage(self._spec, self.secret_resolver)

    def secret_refs(self) -> list[str]:
        return spec_secret_refs(self._spec)

    def on_secret_rotated(self, ref: str) -> None:
        """Reopen the backend with the rotated secret. The old one may still serve uploads in
        progress, so it is closed with the plugin, not now."""
        with self._reopen_lock:
            fresh = open_storage(self._spec, self.secret_resolver)
            self._retired.append(self.backend)
            self.backend = fresh

    def close(self) -> None:
        try:
            super().close()
        finally:
            for backend in self._retired:
                backend.close()


def _manifest(kind: str, properties: dict[str, Any], required: list[str], *capabilities: str) -> Manifest:
    return Manifest(name=f"storage.{kind}", kind="storage", version="1.0.0",
                    capabilities=("durable", "ranges", "uploads", *capabilities),
                    config_schema=_schema(properties, required))


class S3StoragePlugin(_SpecStoragePlugin):
    """Blobs as objects in a bucket of any S3 service (AWS, SeaweedFS, MinIO, Ceph, another dwray)."""

    kind = backend_name = "s3"
    manifest = _manifest("s3", _S3, ["bucket"])


class SqliteStoragePlugin(_SpecStoragePlugin):
    """Blobs in chunk rows of an SQLite database (one host, embedded)."""

    kind = backend_name = "sqlite"
    manifest = _manifest("sqlite", _SQLITE, ["path"])


class PostgresStoragePlugin(_SpecStoragePlugin):
    """Blobs in chunk rows of a PostgreSQL table, through a connection pool."""

    kind = backend_name = "postgres"
    manifest = _manifest("postgres", _POSTGRES, ["dsn"])


class MirrorStoragePlugin(_SpecStoragePlugin):
    """N replicas on different backends, verified on read, repaired, caught up after an outage."""

    kind = backend_name = "mirror"
    manifest = _manifest("mirror", _MIRROR, ["members", "index"], "replicas", "scrub")


class TieredStoragePlugin(_SpecStoragePlugin):
    """A hot and a cold backend; blobs move by age or size, reads find them in either."""

    kind = backend_name = "tiered"
    manifest = _manifest("tiered", _TIERED, ["hot", "cold", "index"], "tiers", "scrub")
