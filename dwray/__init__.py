"""dwray: a secure, multi-tenant data warehouse kernel on Ray.

Public names are imported lazily (PEP 562), so importing ``dwray.errors`` or
``dwray.core.frames`` in an actor does not pull in the warehouse, the CLI or Ray.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "connect": "dwray.client",
    "Warehouse": "dwray.core.warehouse",
    "ObjectReader": "dwray.core.warehouse",
    "TenantContext": "dwray.core.models",
    "ObjectInfo": "dwray.core.models",
    "BucketInfo": "dwray.core.models",
    "ListPage": "dwray.core.models",
    "DwrayConfig": "dwray.config",
    "load_config": "dwray.config",
    "errors": "dwray.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dwray' has no attribute {name!r}")
    imported = importlib.import_module(module)
    value = imported if module.endswith(name) else getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
