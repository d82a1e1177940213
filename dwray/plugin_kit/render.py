"""``dw plugin new``: render a plugin package from the kit's templates.

The templates are package data under ``dwray/plugin_kit/templates/`` (``common/``
for every kind, one folder per kind), filled in with ``string.Template``
(``$name`` placeholders; a literal ``$`` is written ``$$``), so rendering needs
nothing beyond the standard library. The package they make::

    <dir>/dwray-plugin-<name>/
      pyproject.toml            the dwray.core.plugins entry point, the test extra
      README.md                 develop, test, sign
      .gitignore                keeps signing keys out
      src/<package>/__init__.py
      src/<package>/plugin.py   the plugin: a small, working implementation
      tests/test_conformance.py dwray.testing's suite of the kind, subclassed
      tests/test_plugin.py      manifest, entry point, the host's calls

Rendering refuses to write into a folder that exists, and writes nothing at
all if a template fails: files go to a temporary folder first, which is then
renamed into place.
"""
from __future__ import annotations

import os
import shutil
import string
import tempfile
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dwray.errors import InvalidArgument
from dwray.plugin_kit.names import PluginNames, plugin_names

__all__ = ["KIND_TEXTS", "KindText", "render_plugin"]


@dataclass(frozen=True)
class KindText:
    """What the rendered README and docstrings say of one kind."""

    summary: str
    about: str
    suite: str


KIND_TEXTS = {
    "storage": KindText(
        "A dwray storage plugin that keeps blobs as files in a folder.",
        "`FolderBackend` is a `StorageBackend` (dwray.backends.base): five methods, durable puts "
        "(temporary file, fsync, hard link, folder fsync), immutable blobs. Its config is `root`.",
        "dwray.testing.backend_conformance.BackendConformance"),
    "stage": KindText(
        "A dwray frame stage plugin that delta-encodes frames before they are sealed.",
        "The stage replaces each byte of a frame by its difference from the byte before (it keeps "
        "the frame's length, which sealing requires), so slowly changing data compresses better; "
        "opening reverses it. Sealing itself (zstd, AES-256-GCM, the frame format) is dwray's own.",
        "dwray.testing.stage_conformance.StageConformance"),
    "secrets": KindText(
        "A dwray secret manager plugin that keeps versioned secrets in a JSON file.",
        "`JsonFileSecretManager` is a `SecretManager` (dwray.secrets.base): get, versions, list, "
        "put with check-and-set, delete. The file is 0600 in a 0700 folder and replaced atomically under a "
        "lock; values are stored in the clear in it, so keep it on an encrypted disk or add sealing.",
        "dwray.testing.secret_conformance.SecretManagerConformance"),
    "kms": KindText(
        "A dwray KMS plugin that wraps data keys with AES-256-GCM under versioned KEKs kept in a file.",
        "`FileKms` serves the key service contract (dwray.core.contracts.KmsService): ensure, wrap, "
        "unwrap, rotate, retire, rewrap, destroy. A wrapped DEK is a 12-byte nonce and the AES-GCM "
        "ciphertext with the KEK id and version as associated data. KEKs are kept in a 0600 file "
        "outside the data dir: for development; a production KMS keeps them in an HSM.",
        "dwray.testing.kms_conformance.KmsConformance"),
}

# template file (relative to templates/) -> where it goes in the package
_LAYOUT = {
    "common/pyproject.toml.tmpl": "pyproject.toml",
    "common/README.md.tmpl": "README.md",
    "common/gitignore.tmpl": ".gitignore",
    "common/init.py.tmpl": "src/{package}/__init__.py",
    "{kind}/plugin.py.tmpl": "src/{package}/plugin.py",
    "{kind}/test_conformance.py.tmpl": "tests/test_conformance.py",
    "{kind}/test_plugin.py.tmpl": "tests/test_plugin.py",
}


def _dwray_version() -> str:
    try:
        return version("dwray")
    except PackageNotFoundError:  # a source checkout that is not installed
        return "0.1.0"


def _values(names: PluginNames) -> dict[str, str]:
    text = KIND_TEXTS[names.kind]
    return {"name": names.name, "kind": names.kind, "distribution": names.distribution, "package": names.package,
            "class_name": names.class_name, "entry_point": names.entry_point, "dwray_version": _dwray_version(),
            "summary": text.summary, "about": text.about, "suite": text.suite}


def render_plugin(kind: str, name: str, parent: str | os.PathLike[str] = ".") -> Path:
    """Render a ``kind`` plugin called ``name`` into ``parent/dwray-plugin-<name>``; return that folder.

    ``InvalidArgument`` for a bad kind or name, or when the folder exists (nothing is overwritten).
    """
    names = plugin_names(kind, name)
    parent_dir = Path(parent).absolute()
    target = parent_dir / names.distribution
    if target.exists() or target.is_symlink():
        raise InvalidArgument(f"{target} already exists; dw plugin new never overwrites: remove it or "
                              f"choose another --dir")
    if not parent_dir.is_dir():
        raise InvalidArgument(f"--dir {parent_dir} is not a folder")
    values = _values(names)
    templates = resources.files("dwray.plugin_kit").joinpath("templates")
    staging = Path(tempfile.mkdtemp(prefix=f".{names.distribution}-", dir=parent_dir))
    try:
        for source, destination in _LAYOUT.items():
            template = templates.joinpath(source.format(kind=kind)).read_text(encoding="utf-8")
            out = staging / destination.format(package=names.package)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(string.Template(template).substitute(values), encoding="utf-8")
        staging.chmod(0o755)
        os.rename(staging, target)  # refuses (rather than merges into) a folder made meanwhile
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InvalidArgument(f"cannot write the plugin to {target}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target
