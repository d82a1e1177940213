"""Storage backends, by name.

``BACKENDS`` maps each registered name to the ``"module:Class"`` that
implements it; modules are imported only when a backend is asked for, so
importing ``dwray.backends`` costs no optional dependency. ``create_backend``
builds one::

    backend = create_backend("local", root="/var/lib/dwray/blobs")

The contract every backend follows is ``dwray.backends.base.StorageBackend``.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from dwray.backends.base import (
    BlobStat,
    StorageBackend,
    validate_blob_id,
    validate_prefix,
)
from dwray.errors import BackendNotFound, DependencyMissing

__all__ = [
    "BACKENDS",
    "BlobStat",
    "StorageBackend",
    "backend_class",
    "create_backend",
    "validate_blob_id",
    "validate_prefix",
]

_BACKENDS: dict[str, str] = {
    "local": "dwray.backends.local:LocalDiskBackend",
    "memory": "dwray.backends.memory:MemoryBackend",
    "s3": "dwray.backends.s3:S3Backend",
    "sqlite": "dwray.backends.sqlite:SqliteBackend",
    "postgres": "dwray.backends.postgres:PostgresBackend",
    "mirror": "dwray.backends.mirror:MirrorBackend",
    "tiered": "dwray.backends.tiered:TieredBackend",
}

# The pip extra that installs a backend's third-party imports, where it has any.
_EXTRAS: dict[str, str] = {"s3": "s3", "postgres": "postgres"}

#: backend name -> ``"module:Class"``; read-only
BACKENDS: Mapping[str, str] = MappingProxyType(_BACKENDS)


def backend_class(name: str) -> type[StorageBackend]:
    """Import and return the class registered as ``name``.

    Raises ``BackendNotFound`` (naming the known backends) for an unknown name
    and ``DependencyMissing`` (naming the pip extra) when the backend needs a
    package that is not installed.
    """
    try:
        spec = BACKENDS[name]
    except (KeyError, TypeError):
        raise BackendNotFound(name, ", ".join(sorted(BACKENDS))) from None
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == "dwray":
            raise  # our own module is broken: a bug, not a missing install
        extra = _EXTRAS.get(name)
        install = f"dwray[{extra}]" if extra else missing
        raise DependencyMissing(f"the {name!r} storage backend (it imports {missing!r})", install) from exc
    return getattr(module, class_name)


def create_backend(name: str, /, **options: Any) -> StorageBackend:
    """Build the backend registered as ``name`` with ``options`` as keyword arguments."""
    return backend_class(name)(**options)
