"""Storage from config: a *spec* per placement target, and the backend or pool a spec opens.

A spec is a JSON-able dict that says what to build (``{"kind": "s3", "bucket":
..., "secret_key": "secret://vault/..."}``; a pool's spec holds its members'
specs). It carries secret *references* only, so it can be an actor's
arguments, be logged or be shown in a config dump; ``open_storage`` resolves
the references in the process that opens the backend, and hands the backend
the values (which backends never show). The in-process ``Warehouse``, the
storage plugins on Ray, ``dw scrub`` and ``dw bench --backend`` all build
their storage through here, so a target means the same thing everywhere.

Default locations inside the data dir: ``[storage]``'s local backend keeps
``DATA_DIR/blobs`` (``config.blob_root``) and its SQLite file
``DATA_DIR/blobs.sqlite``; a named backend ``NAME`` without a path gets
``DATA_DIR/backends/NAME`` (or ``NAME.sqlite``); a pool's index is
``DATA_DIR/pools/NAME.db``.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from dwray.backends import backend_class, create_backend
from dwray.backends.base import StorageBackend
from dwray.config import DwrayConfig
from dwray.config_storage import BackendConfig, StorageConfig
from dwray.errors import ConfigError
from dwray.secrets import SecretResolver

__all__ = ["open_storage", "open_targets", "spec_properties", "spec_secret_refs", "target_spec"]

DAY = 86400.0


def _backend_spec(fields: StorageConfig | BackendConfig, data_dir: Path, name: str | None) -> dict[str, Any]:
    """The spec of one backend; ``name`` None for ``[storage]``'s."""
    kind = fields.kind
    own = data_dir / "backends" / name if name else None
    if kind == "local":
        root = fields.root or (own if own else data_dir / "blobs")
        return {"kind": kind, "root": str(Path(root).resolve())}
    if kind == "memory":
        return {"kind": kind, "max_bytes": fields.memory_max_bytes}
    if kind == "sqlite":
        path = fields.path or (own.with_suffix(".sqlite") if own else data_dir / "blobs.sqlite")
        return {"kind": kind, "path": str(Path(path).resolve())}
    if kind == "postgres":
        return {"kind": kind, "dsn": fields.dsn, "table": fields.table, "max_connections": fields.max_connections}
    return {"kind": kind, "bucket": fields.bucket, "endpoint": fields.endpoint, "region": fields.region,
            "prefix": fields.prefix, "addressing_style": fields.addressing_style, "access_key": fields.access_key,
            "secret_key": fields.secret_key, "ca_cert": str(fields.ca_cert) if fields.ca_cert else None,
            "multipart_threshold": fields.multipart_threshold}


def target_spec(config: DwrayConfig, target: str) -> dict[str, Any]:
    """The spec of a placement target: ``[storage]``'s backend, a pool or a named backend."""
    data_dir = config.data_dir.resolve()
    if target == config.storage.backend:
        return _backend_spec(config.storage.model_copy(update={"root": config.blob_root}), data_dir, None)
    if target in config.pools:
        pool = config.pools[target]
        index = str(data_dir / "pools" / f"{target}.db")
        if pool.kind == "mirror":
            return {"kind": "mirror", "index": index, "write_quorum": pool.write_quorum,
                    "members": {m: _backend_spec(config.backends[m], data_dir, m) for m in pool.members}}
        return {"kind": "tiered", "index": index,
                "hot": _backend_spec(config.backends[str(pool.hot)], data_dir, pool.hot),
                "cold": _backend_spec(config.backends[str(pool.cold)], data_dir, pool.cold),
                "after_seconds": pool.after_days * DAY if pool.after_days else None,
                "hot_max_bytes": pool.hot_max_bytes}
    if target in config.backends:
        return _backend_spec(config.backends[target], data_dir, target)
    known = ", ".join(config.storage_targets)
    raise ConfigError(f"{target!r} is not a storage target of this config (known: {known})", "the config")


def spec_secret_refs(spec: dict[str, Any]) -> list[str]:
    """Every secret reference in a spec (a pool's members' included)."""
    refs = [spec.get(field) for field in ("secret_key", "dsn")]
    access = spec.get("access_key")
    if isinstance(access, str) and access.startswith("secret://"):
        refs.append(access)
    for member in _members(spec).values():
        refs.extend(spec_secret_refs(member))
    return [ref for ref in refs if isinstance(ref, str) and ref]


def _members(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    if spec["kind"] == "mirror":
        return dict(spec["members"])
    if spec["kind"] == "tiered":
        return {"hot": spec["hot"], "cold": spec["cold"]}
    return {}


def spec_properties(spec: dict[str, Any]) -> tuple[bool, bool]:
    """``(durable, nested_ids_conflict)`` of what a spec opens, from its classes (nothing is opened)."""
    members = list(_members(spec).values())
    if members:
        props = [spec_properties(member) for member in members]
        return all(p[0] for p in props), any(p[1] for p in props)
    kind = backend_class(spec["kind"])
    return kind.durable, kind.nested_ids_conflict


def _revealed(resolver: SecretResolver, ref: str | None) -> str | None:
    if ref is None:
        return None
    if not ref.startswith("secret://"):
        return ref  # an S3 access key id given as it is
    return resolver.get(ref).reveal()


def open_storage(spec: dict[str, Any], resolver: SecretResolver) -> StorageBackend:
    """Open the backend or pool a spec describes, resolving its secret references with ``resolver``."""
    kind = spec["kind"]
    if kind in ("mirror", "tiered"):
        with contextlib.ExitStack() as undo:  # members opened before a failure are closed
            members = {}
            for name, member_spec in _members(spec).items():
                members[name] = open_storage(member_spec, resolver)
                undo.callback(members[name].close)
            if kind == "mirror":
                pool = backend_class("mirror")(members, spec["index"], write_quorum=spec.get("write_quorum"))
            else:
                pool = backend_class("tiered")(members["hot"], members["cold"], spec["index"],
                                               after_seconds=spec.get("after_seconds"),
                                               hot_max_bytes=spec.get("hot_max_bytes"))
            undo.pop_all()
            return pool
    if kind == "local":
        return create_backend("local", root=spec["root"])
    if kind == "memory":
        return create_backend("memory", max_bytes=spec["max_bytes"])
    if kind == "sqlite":
        return create_backend("sqlite", path=spec["path"])
    if kind == "postgres":
        return create_backend("postgres", dsn=_revealed(resolver, spec["dsn"]), table=spec["table"],
                              max_connections=spec["max_connections"])
    if kind == "s3":
        return create_backend(
            "s3", bucket=spec["bucket"], endpoint=spec.get("endpoint"), region=spec.get("region"),
            prefix=spec.get("prefix") or "", addressing_style=spec.get("addressing_style") or "auto",
            access_key=_revealed(resolver, spec.get("access_key")),
            secret_key=_revealed(resolver, spec.get("secret_key")),
            verify=spec.get("ca_cert") or True, multipart_threshold=spec.get("multipart_threshold") or 8 << 20)
    raise ConfigError(f"unknown storage kind {kind!r}", "a storage spec")


def open_targets(config: DwrayConfig, resolver: SecretResolver) -> dict[str, StorageBackend]:
    """Every storage target of ``config``, opened in this process (closed again if one fails)."""
    opened: dict[str, StorageBackend] = {}
    try:
        for target in config.storage_targets:
            opened[target] = open_storage(target_spec(config, target), resolver)
    except BaseException:
        for backend in opened.values():
            backend.close()
        raise
    return opened
