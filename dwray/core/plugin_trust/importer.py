"""Importing a folder plugin from the bytes that were checked, under a name of its own.

A folder plugin's modules are imported as ``dwray_plugins.<plugin>.<module>``
(``<plugin>`` is the plugin name with every character other than a-z and 0-9
written as ``_xx``, its hex code, so distinct names never share a package).
The plugin's folder never goes on ``sys.path``: one plugin cannot shadow
another's modules, or dwray's. Inside a plugin, modules import each other
relatively (``from . import util``).

A meta path finder serves only the files of the :class:`FolderPlugin`
snapshot: source is compiled from those bytes (no bytecode is read or
written), and a module name with no file in the snapshot is not found, even
if such a file appeared on disk after the check. Extension modules
(``.so``) cannot be served this way, so folder plugins are pure Python.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import re
import sys
import threading
from types import ModuleType
from typing import Any

from dwray.core.plugin_trust.folders import FolderPlugin, module_file

__all__ = ["PACKAGE_ROOT", "import_folder_plugin", "package_name"]

PACKAGE_ROOT = "dwray_plugins"
_LOCK = threading.Lock()


def package_name(plugin_name: str) -> str:
    """``dwray_plugins.<mangled name>``: injective, so two plugins never share a package."""
    mangled = re.sub(r"[^a-z0-9]", lambda m: f"_{ord(m.group()):02x}", plugin_name)
    return f"{PACKAGE_ROOT}.p{mangled}"


class _SnapshotImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and loads modules under ``dwray_plugins`` from registered snapshots only."""

    def __init__(self) -> None:
        self.plugins: dict[str, FolderPlugin] = {}

    def _locate(self, fullname: str) -> tuple[FolderPlugin | None, str | None, bool] | None:
        """(plugin, file, is_package) for ``fullname``; ``None`` if it is not ours."""
        if fullname == PACKAGE_ROOT:
            return None, None, True
        parts = fullname.split(".")
        if parts[0] != PACKAGE_ROOT or len(parts) < 2:
            return None
        plugin = self.plugins.get(".".join(parts[:2]))
        if plugin is None:
            return None
        if len(parts) == 2:
            return plugin, "__init__.py" if "__init__.py" in plugin.files else None, True
        module = ".".join(parts[2:])
        found = module_file(module, plugin.files)
        if found is not None:
            return plugin, found[0], found[1]
        prefix = module.replace(".", "/") + "/"
        if any(path.startswith(prefix) for path in plugin.files):
            return plugin, None, True  # a folder without __init__.py: a package with no code
        raise ModuleNotFoundError(f"plugin {plugin.name!r} has no verified module {module!r}", name=fullname)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        located = self._locate(fullname)
        if located is None:
            return None
        plugin, file, is_package = located
        origin = str(plugin.root / file) if plugin is not None and file is not None else None
        spec = importlib.machinery.ModuleSpec(fullname, self, origin=origin, is_package=is_package)
        spec.has_location = origin is not None
        if is_package:
            spec.submodule_search_locations = []  # only this finder serves submodules
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def get_source(self, fullname: str) -> str | None:
        """The module's verified source (tracebacks show it)."""
        located = self._locate(fullname)
        if located is None or located[0] is None or located[1] is None:
            return None
        return located[0].files[located[1]].decode("utf-8", errors="replace")

    def exec_module(self, module: ModuleType) -> None:
        located = self._locate(module.__name__)
        if located is None or located[0] is None or located[1] is None:
            return
        plugin, file, _ = located
        code = compile(plugin.files[file], str(plugin.root / file), "exec", dont_inherit=True)
        exec(code, module.__dict__)  # noqa: S102 - importing the plugin's verified module is the point


_IMPORTER = _SnapshotImporter()


def import_folder_plugin(plugin: FolderPlugin) -> Any:
    """The object ``plugin``'s entry names, imported from its snapshot.

    Loading a changed snapshot of the same plugin in one process (tests do)
    drops the modules of the earlier one first.
    """
    package = package_name(plugin.name)
    with _LOCK:
        if _IMPORTER not in sys.meta_path:
            sys.meta_path.insert(0, _IMPORTER)
        previous = _IMPORTER.plugins.get(package)
        if previous is not None and (previous.root != plugin.root or previous.files != plugin.files):
            for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
                del sys.modules[name]
        _IMPORTER.plugins[package] = plugin
    module_name, _, attr = plugin.descriptor.entry.partition(":")
    module = importlib.import_module(f"{package}.{module_name}")
    return getattr(module, attr)
