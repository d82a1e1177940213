"""The built-in service plugins: catalog, local KMS, settings and identity."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dwray.core.catalog import (
    Catalog,
    ObjectRecord,
    PartRecord,
    SegmentRecord,
    UploadRecord,
    WrappedKey,
)
from dwray.core.keyring import LocalKeyring
from dwray.core.plugins import Manifest, Plugin

__all__ = ["CatalogPlugin", "IdentityPlugin", "LocalKmsPlugin", "SettingsPlugin"]

_PATH_SCHEMA = {"type": "string", "minLength": 1}


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
        from dwray.core.identity import IdentityStore

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
