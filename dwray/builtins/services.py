"""The built-in service plugins: catalog, local KMS, settings and identity.

Each service adapter is its contract (``dwray.core.contracts``) forwarded to
the in-process implementation by ``delegate``: the class body holds only its
manifest, its construction and what the plugin adds (health, batches).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dwray.core.catalog import Catalog
from dwray.core.contracts import CatalogService, IdentityService, KmsService, delegate
from dwray.core.identity import IdentityStore
from dwray.core.keyring import LocalKeyring
from dwray.core.plugins import Manifest, Plugin
from dwray.secrets import SecretResolver

__all__ = ["CatalogPlugin", "IdentityPlugin", "LocalKmsPlugin", "SettingsPlugin"]

_PATH_SCHEMA = {"type": "string", "minLength": 1}
_SQLITE_SCHEMA = {"type": "object", "properties": {
    "path": _PATH_SCHEMA, "synchronous": {"enum": ["FULL", "EXTRA"]},
    "busy_timeout_ms": {"type": "integer", "minimum": 0}},
    "required": ["path"], "additionalProperties": False}


@delegate(CatalogService, to="catalog")
class CatalogPlugin(Plugin):
    """The SQLite catalog as a service. Its state is the database file, so a restart loses nothing."""

    manifest = Manifest(name="service.catalog", kind="service", version="1.0.0", capabilities=("catalog",),
                        config_schema=_SQLITE_SCHEMA)

    def __init__(self, path: str, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        self.catalog = Catalog(Path(path), synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)

    def health(self) -> dict[str, Any]:
        """Healthy, the schema version, and where the database file is (``file``).

        ``file`` lets a caller on this node read the catalog itself, with no round
        trip (``actors.remote_services.RemoteCatalog``): its absolute ``path``, and the
        ``device`` and ``inode`` that the caller checks so that the path it opens is
        this very file, not another of the same name. The caller learns the node
        from the plugin host. A path, not a secret: the data dir's layout is public.
        """
        health: dict[str, Any] = {"ok": True, "schema_version": self.catalog.schema_version}
        path = self.catalog.path.absolute()
        try:
            stat = path.stat()
        except OSError:  # gone from under the open database: callers read over Ray, the catalog goes on
            return health
        return {**health, "file": {"path": str(path), "device": stat.st_dev, "inode": stat.st_ino}}


@delegate(KmsService, to="keyring")
class LocalKmsPlugin(Plugin):
    """Key-encryption keys from the local keyring file (0600), sealed under the master key.

    Its config names the master key by reference (``master``, a ``secret://``
    string) and the actor loads the key itself: the key is never an actor
    argument, where the Ray dashboard would show it.
    """

    manifest = Manifest(
        name="kms.local", kind="kms", version="1.0.0",
        capabilities=("wrap", "unwrap", "rotate", "rewrap", "destroy"),
        config_schema={"type": "object", "properties": {
            "path": _PATH_SCHEMA, "master": {"type": "string", "pattern": "^secret://"},
            "create_master": {"type": "boolean"}, "secret_settings": {"type": "object"}},
            "required": ["path"], "additionalProperties": False})

    def __init__(self, path: str, master: str | None = None, create_master: bool = True,
                 secret_settings: dict[str, Any] | None = None) -> None:
        # A master key kept in Vault, AWS or the local store is resolved with the
        # starting process's [secrets] settings (references only), not this
        # actor's own environment.
        config = SecretResolver.from_settings(secret_settings).config if secret_settings else None
        self.keyring = LocalKeyring(Path(path), master, create_master, config=config)

    def wrap_many(self, items: list[tuple[str, bytes]]) -> list[tuple[int, bytes]]:
        return [self.keyring.wrap(kek_id, dek) for kek_id, dek in items]


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


@delegate(IdentityService, to="store")
class IdentityPlugin(Plugin):
    """Tenants, access keys and admin-token hashes as a service. Its state is the database file.

    It stores secrets only wrapped (the callers wrap and unwrap them with the
    KMS plugin), so this actor never holds a plaintext access-key secret.
    """

    manifest = Manifest(name="service.identity", kind="service", version="1.0.0", capabilities=("identity",),
                        config_schema=_SQLITE_SCHEMA)

    def __init__(self, path: str, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> None:
        self.store = IdentityStore(Path(path), synchronous=synchronous, busy_timeout_ms=busy_timeout_ms)

    def health(self) -> dict[str, Any]:
        return self.store.health()
