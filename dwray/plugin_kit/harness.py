"""What ``dw plugin test`` runs inside pytest: dwray's conformance suite of a plugin's kind, on that plugin.

``conformance_class(kind, spec)`` returns a test class that subclasses the
suite of ``kind`` from ``dwray.testing`` and whose fixture builds the plugin
named by ``spec`` (an entry point name or ``module:Class``) and hands the
suite what it tests: a storage plugin's ``backend``, a secrets plugin's
``manager``, a stage or KMS plugin itself.

The plugin is started with ``Class.example_config(folder)`` when the class
has it (the kit's templates do), else with a config made from its manifest's
schema: every required string property gets a path in the test's temporary
folder. This module imports pytest, so only the test run imports it.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dwray.backends.base import StorageBackend
from dwray.core.plugins import Plugin, check_manifest, load_plugin_class
from dwray.errors import InvalidArgument
from dwray.secrets.base import SecretManager

__all__ = ["conformance_class", "example_config", "started_plugin"]


def example_config(cls: type[Plugin], folder: Path) -> dict[str, Any]:
    """The config to start ``cls`` with in a test under ``folder``."""
    made = getattr(cls, "example_config", None)
    if made is not None:
        return dict(made(folder))
    schema = cls.manifest.config_schema
    properties = schema.get("properties", {})
    return {name: str(folder / name) for name in schema.get("required", [])
            if properties.get(name, {}).get("type") == "string"}


def _subject(kind: str, plugin: Plugin) -> Any:
    if kind == "storage":
        backend = getattr(plugin, "backend", plugin)
        if not isinstance(backend, StorageBackend):
            raise InvalidArgument(f"storage plugin {type(plugin).__name__} has no StorageBackend as .backend")
        return backend
    if kind == "secrets":
        manager = getattr(plugin, "manager", plugin)
        if not isinstance(manager, SecretManager):
            raise InvalidArgument(f"secrets plugin {type(plugin).__name__} has no SecretManager as .manager")
        return manager
    return plugin


def started_plugin(kind: str, spec: str, folder: Path) -> Iterator[Any]:
    """Load, check and start the plugin ``spec``; yield what the suite of ``kind`` tests; close it after."""
    cls = load_plugin_class(spec)
    config = example_config(cls, folder)
    check_manifest(spec, cls.manifest, kind, config)
    plugin = cls(**config)
    try:
        yield _subject(kind, plugin)
    finally:
        plugin.close()


def _suite(kind: str, spec: str) -> tuple[type, str]:
    if kind == "storage":
        from dwray.testing.backend_conformance import BackendConformance
        return BackendConformance, "backend"
    if kind == "stage":
        from dwray.testing.stage_conformance import StageConformance
        return StageConformance, "stage"
    if kind == "kms":
        from dwray.testing.kms_conformance import KmsConformance
        return KmsConformance, "kms"
    if kind == "secrets":
        from dwray.testing.secret_conformance import SecretManagerConformance
        manager_class = getattr(load_plugin_class(spec), "manager", None)
        if getattr(manager_class, "read_only", False):
            raise InvalidArgument(f"{spec} is a read-only secret manager: its values are set outside dwray, "
                                  f"so its own tests must say how (ReadOnlySecretManagerConformance.provision)")
        return SecretManagerConformance, "manager"
    raise InvalidArgument(f"dwray.testing has no conformance suite for {kind!r} plugins")


def conformance_class(kind: str, spec: str) -> type:
    """A pytest class: the conformance suite of ``kind`` on the plugin ``spec``."""
    suite, fixture_name = _suite(kind, spec)

    def subject(self: Any, tmp_path: Path) -> Iterator[Any]:
        yield from started_plugin(kind, spec, tmp_path)

    subject.__name__ = fixture_name
    return type(f"Test{suite.__name__}", (suite,), {fixture_name: pytest.fixture(name=fixture_name)(subject),
                                                   "__doc__": f"{suite.__name__} on {spec}"})
