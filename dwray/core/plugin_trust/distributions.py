"""Installed distributions as signed plugins: the files their RECORD lists.

A plugin installed with pip (an entry point in ``dwray.core.plugins``, or a
``module:Class`` in an installed package) is signed over the files its
distribution installed, as listed in ``<name>-<version>.dist-info/RECORD``,
hashed from disk (RECORD's own hashes are not trusted: RECORD is just another
file an attacker could edit). Left out, because installers write or rewrite
them: ``RECORD``, ``INSTALLER``, ``REQUESTED``, ``direct_url.json``, the
signature itself, bytecode (``__pycache__``, ``.pyc``) and files installed
outside the package root (console scripts, ``../../bin/...``, whose shebang
names the interpreter). The signature is ``dwray-plugin.sig`` in the
distribution's ``.dist-info`` folder (``dw plugin sign --dist NAME``).

dwray's own distribution is the installed product: its entry points and
modules are trusted without a signature.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from functools import lru_cache
from importlib.metadata import Distribution, PackageNotFoundError, distribution, packages_distributions
from pathlib import Path
from typing import Any

from dwray.core.plugin_trust.signing import SIGNATURE_FILE, make_manifest, sha256_hex
from dwray.errors import InvalidArgument

__all__ = [
    "PRODUCT_DISTRIBUTION",
    "dist_info_dir",
    "distribution_manifest",
    "distribution_named",
    "distribution_of_module",
    "distribution_signature",
]

PRODUCT_DISTRIBUTION = "dwray"
_INSTALLER_FILES = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json", SIGNATURE_FILE})


def distribution_named(name: str) -> Distribution:
    """The installed distribution ``name``; ``InvalidArgument`` if there is none."""
    try:
        return distribution(name)
    except PackageNotFoundError:
        raise InvalidArgument(f"no installed distribution named {name!r}") from None


@lru_cache(maxsize=4)
def _packages(search_path: tuple[str, ...]) -> Mapping[str, list[str]]:
    return packages_distributions()


def distribution_of_module(module: str) -> str | None:
    """The name of the installed distribution that provides top-level package of ``module``, if one does."""
    # Scanning every installed distribution takes a while; the answer changes only with sys.path.
    names = _packages(tuple(sys.path)).get(module.partition(".")[0], [])
    return names[0] if names else None


def dist_info_dir(dist: Distribution) -> Path:
    """The distribution's ``.dist-info`` folder."""
    for file in dist.files or []:
        if file.name == "RECORD" and file.parent.name.endswith(".dist-info"):
            return Path(str(file.locate())).parent
    raise InvalidArgument(f"distribution {dist.metadata['Name']!r} has no RECORD; it cannot be verified")


def _signed_paths(dist: Distribution) -> list[Any]:
    kept = []
    for file in dist.files or []:
        parts = file.parts
        if parts and parts[0] == "..":
            continue
        if "__pycache__" in parts or file.name.endswith(".pyc"):
            continue
        if file.parent.name.endswith(".dist-info") and file.name in _INSTALLER_FILES:
            continue
        kept.append(file)
    return kept


def distribution_manifest(dist: Distribution) -> dict[str, Any]:
    """The manifest a signature of ``dist`` must cover (a listed file missing from disk is left out)."""
    files = {}
    for file in _signed_paths(dist):
        try:
            files[file.as_posix()] = sha256_hex(Path(str(file.locate())).read_bytes())
        except OSError:
            continue  # shows up as "removed since signing"
    return make_manifest("distribution", dist.metadata["Name"], dist.version, files)


def distribution_signature(dist: Distribution) -> bytes | None:
    """The distribution's signature file, or ``None``."""
    try:
        return (dist_info_dir(dist) / SIGNATURE_FILE).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidArgument(f"cannot read the signature of {dist.metadata['Name']!r}: {exc.strerror}") from None
