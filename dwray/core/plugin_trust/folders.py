"""Plugin folders: plugins that are plain folders of Python files, read once and checked.

Layout of a configured folder (``[plugin_trust] folders``); only its top
level is scanned, and each plugin is one folder named after the plugin::

    <folder>/
      acme.store/                  # the plugin's folder: its name, as specs use it
        dwray-plugin.toml          # name = "acme.store", version = "1.2.0", entry = "store:AcmeStore"
        dwray-plugin.sig           # written by `dw plugin sign` (not itself hashed)
        store.py                   # the entry module; more modules and folders may follow
        util/__init__.py

``dwray-plugin.toml`` holds ``name`` (equal to the folder's name: letters,
digits, ``.``, ``_``, ``-``), ``version``, ``entry`` (``module:Class``, the
module dotted and relative to the plugin's folder) and optionally
``description``; nothing else.

Rules, each refused with a reason that names the file:
- the plugin's folder, and every file in it, must resolve (symbolic links
  included) inside the plugin's folder: a link that leads out is refused, a
  link to a folder is refused (follow-free walks only), as are sockets,
  FIFOs and devices;
- ``__pycache__`` folders are skipped: the loader never reads bytecode, it
  compiles the verified source (``dwray.core.plugin_trust.importer``).

Every file is read into memory once (:class:`FolderPlugin`): the same bytes
are hashed for the signature check and executed by the importer, so a file
swapped after the check is never run.
"""
from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from dwray.core.plugin_trust.signing import SIGNATURE_FILE, make_manifest, sha256_hex
from dwray.errors import InvalidArgument

__all__ = [
    "DESCRIPTOR_FILE",
    "FolderPlugin",
    "PluginDescriptor",
    "find_folder_plugin",
    "folder_plugin_dirs",
    "module_file",
    "read_folder_plugin",
]

DESCRIPTOR_FILE = "dwray-plugin.toml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ENTRY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$", re.ASCII)
_SKIPPED_DIRS = frozenset({"__pycache__"})


class PluginDescriptor(BaseModel):
    """``dwray-plugin.toml``: what a folder plugin says it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    entry: str
    description: str = ""

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @field_validator("version")
    @classmethod
    def _check_version(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("entry")
    @classmethod
    def _check_entry(cls, value: str) -> str:
        if not _ENTRY.match(value):
            raise ValueError("must be 'module:Class', the module dotted and relative to the plugin's folder "
                             "(no leading dots, no '..')")
        return value


@dataclass(frozen=True)
class FolderPlugin:
    """One plugin folder as read: its descriptor, where it is, and the bytes of every file."""

    descriptor: PluginDescriptor
    root: Path  # resolved
    files: Mapping[str, bytes] = field(repr=False)  # relative POSIX path -> content, without the signature
    signature: bytes | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.descriptor.name

    def manifest(self) -> dict[str, Any]:
        """The manifest a signature of this plugin must cover."""
        return make_manifest("folder", self.descriptor.name, self.descriptor.version,
                             {path: sha256_hex(data) for path, data in self.files.items()})


def folder_plugin_dirs(folders: Iterable[str | Path]) -> dict[str, list[Path]]:
    """Plugin names found at the top level of ``folders`` and the folder(s) each was found in."""
    found: dict[str, list[Path]] = {}
    for folder in folders:
        base = Path(folder)
        try:
            entries = sorted(os.scandir(base), key=lambda e: e.name)
        except OSError:
            continue  # a missing folder is reported by the config check, not per lookup
        for entry in entries:
            if _NAME.match(entry.name) and os.path.lexists(os.path.join(entry.path, DESCRIPTOR_FILE)):
                found.setdefault(entry.name, []).append(base)
    return found


def find_folder_plugin(name: str, folders: Iterable[str | Path]) -> Path | None:
    """The plugin folder for ``name`` (``<folder>/<name>``), or ``None``; a name found twice is refused."""
    if not _NAME.match(name):
        return None
    holders = folder_plugin_dirs(folders).get(name, [])
    if len(holders) > 1:
        raise InvalidArgument(f"found in more than one plugin folder ({', '.join(map(str, holders))}); "
                              "a name must be unambiguous")
    return holders[0] / name if holders else None


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def _link_target(path: Path, root: Path, rel: str) -> Path:
    """Where the link ``path`` leads; refused if that is outside ``root`` or nowhere."""
    target = path.resolve()
    if not _inside(target, root):
        raise InvalidArgument(f"{rel} is a symbolic link that resolves outside the plugin's folder (to {target})")
    if not target.exists():
        raise InvalidArgument(f"{rel} is a broken symbolic link")
    return target


def _relative(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(f"{rel!r} is not a UTF-8 file name") from None
    return rel


def _read_files(root: Path) -> tuple[dict[str, bytes], bytes | None]:
    files: dict[str, bytes] = {}
    signature = None

    def walk_error(exc: OSError) -> None:
        raise InvalidArgument(f"cannot read {exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error, followlinks=False):
        here = Path(dirpath)
        for name in list(dirnames):
            path = here / name
            if path.is_symlink():
                rel = _relative(path, root)
                _link_target(path, root, rel)
                raise InvalidArgument(f"{rel} is a symbolic link to a folder; a plugin holds real folders only")
            if name in _SKIPPED_DIRS:
                dirnames.remove(name)
        for name in filenames:
            path = here / name
            rel = _relative(path, root)
            real = _link_target(path, root, rel) if path.is_symlink() else path
            try:
                if not stat.S_ISREG(real.stat().st_mode):
                    raise InvalidArgument(f"{rel} is not a regular file")
                data = real.read_bytes()
            except OSError as exc:
                raise InvalidArgument(f"cannot read {rel}: {exc.strerror}") from None
            if rel == SIGNATURE_FILE:
                signature = data
            else:
                files[rel] = data
    return files, signature


def _descriptor(files: Mapping[str, bytes]) -> PluginDescriptor:
    raw = files.get(DESCRIPTOR_FILE)
    if raw is None:
        raise InvalidArgument(f"it has no {DESCRIPTOR_FILE}")
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(f"{DESCRIPTOR_FILE} is not valid TOML: {exc}") from None
    try:
        return PluginDescriptor.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(file)'}: {err['msg']}"
                             for err in exc.errors())
        raise InvalidArgument(f"{DESCRIPTOR_FILE}: {problems}") from None


def module_file(module: str, files: Mapping[str, bytes]) -> tuple[str, bool] | None:
    """The file of dotted ``module`` among ``files`` and whether it is a package, or ``None``."""
    rel = module.replace(".", "/")
    if f"{rel}.py" in files:
        return f"{rel}.py", False
    if f"{rel}/__init__.py" in files:
        return f"{rel}/__init__.py", True
    return None


def read_folder_plugin(plugin_dir: Path, folder: Path) -> FolderPlugin:
    """Read and check the plugin in ``plugin_dir`` (a top-level entry of the plugin folder ``folder``).

    Raises ``InvalidArgument`` saying what breaks the layout rules (module docstring).
    """
    base = folder.resolve()
    root = plugin_dir.resolve()
    if not _inside(root, base) or root == base:
        raise InvalidArgument(f"{plugin_dir} resolves outside its plugin folder {base} (to {root})")
    if not root.is_dir():
        raise InvalidArgument(f"{plugin_dir} is not a folder")
    files, signature = _read_files(root)
    descriptor = _descriptor(files)
    if descriptor.name != plugin_dir.name:
        raise InvalidArgument(f"{DESCRIPTOR_FILE} names it {descriptor.name!r} but its folder is "
                              f"{plugin_dir.name!r}; they must match")
    module = descriptor.entry.partition(":")[0]
    if module_file(module, files) is None:
        raise InvalidArgument(f"entry {descriptor.entry!r}: no file {module.replace('.', '/')}.py or "
                              f"{module.replace('.', '/')}/__init__.py in the plugin")
    return FolderPlugin(descriptor, root, files, signature)
