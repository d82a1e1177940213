"""What ``dw plugin keygen|sign|verify|discover`` do, apart from printing.

A *target* is a plugin folder (a folder holding ``dwray-plugin.toml``) or an
installed distribution (``dist=NAME``). Signing reads the target under the
same rules the loader applies (a folder that breaks them is not signed),
builds its manifest and writes the signature file next to it. Verifying
explains: who signed, whether that key is trusted, and every file that
changed, appeared or disappeared since.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from dwray.core.plugin_trust.distributions import (
    PRODUCT_DISTRIBUTION,
    dist_info_dir,
    distribution_manifest,
    distribution_named,
    distribution_signature,
)
from dwray.core.plugin_trust.folders import folder_plugin_dirs, read_folder_plugin
from dwray.core.plugin_trust.settings import PluginTrust
from dwray.core.plugin_trust.signing import (
    SIGNATURE_FILE,
    check_signature,
    load_private_key,
    sign_manifest,
    write_owner_only,
)
from dwray.errors import InvalidArgument

__all__ = ["Verification", "discover_plugins", "sign_target", "verify_target"]

_GROUP = "dwray.core.plugins"  # dwray.core.plugins.ENTRY_POINT_GROUP; that module imports this package


@dataclass(frozen=True)
class Verification:
    """The answer of ``dw plugin verify``: ``ok`` when a trusted key signed exactly the current files."""

    plugin: str
    version: str
    source: str
    files: int
    signer: str | None
    trusted: bool
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problems": list(self.problems), "ok": self.ok}


def _read_target(folder: Path | None, dist: str | None) -> tuple[dict[str, Any], bytes | None, Path, str]:
    """(manifest, signature bytes, where the signature goes, source label) of a folder or a distribution."""
    if dist is not None and folder is None:
        found = distribution_named(dist)
        return (distribution_manifest(found), distribution_signature(found),
                dist_info_dir(found) / SIGNATURE_FILE, f"distribution {dist}")
    if folder is not None and dist is None:
        path = folder.expanduser()
        if not path.is_dir():
            raise InvalidArgument(f"{folder} is not a folder")
        plugin = read_folder_plugin(path, path.resolve().parent)
        return plugin.manifest(), plugin.signature, plugin.root / SIGNATURE_FILE, f"folder {plugin.root}"
    raise InvalidArgument("name either a plugin folder or --dist NAME")


def sign_target(key_file: Path, folder: Path | None = None, dist: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Sign a plugin folder or an installed distribution with ``key_file``; return (signature path, manifest)."""
    key = load_private_key(key_file)
    manifest, _, where, _ = _read_target(folder, dist)
    try:
        write_owner_only(where, sign_manifest(manifest, key), replace=True)
    except OSError as exc:
        raise InvalidArgument(f"cannot write {where}: {exc.strerror}") from None
    return where, manifest


def verify_target(trusted_keys: tuple[str, ...], folder: Path | None = None, dist: str | None = None,
                  ) -> Verification:
    """Check a plugin folder's or distribution's signature against ``trusted_keys`` and its files."""
    manifest, signature, _, source = _read_target(folder, dist)
    check = check_signature(signature, manifest, trusted_keys)
    return Verification(manifest["name"], manifest["version"], source, len(manifest["files"]), check.signer,
                        check.trusted, check.problems)


def discover_plugins(trust: PluginTrust) -> list[dict[str, Any]]:
    """Every plugin ``trust`` lets the loader see, with where it comes from and what a load would decide."""
    rows = []
    for point in sorted(entry_points(group=_GROUP), key=lambda p: p.name):
        dist = point.dist.name if point.dist is not None else None
        row = {"name": point.name, "source": f"entry point {point.value}", "distribution": dist}
        if dist == PRODUCT_DISTRIBUTION:
            row["verdict"] = "built in"
        else:
            try:
                row["verdict"] = _verdict(verify_target(trust.trusted_keys, dist=dist), trust) if dist else \
                    "unsigned: no distribution"
            except InvalidArgument as exc:
                row["verdict"] = f"refused: {exc}"
        rows.append(row)
    for name, holders in sorted(folder_plugin_dirs(trust.folders).items()):
        for holder in holders:
            row = {"name": name, "source": f"folder {holder / name}", "distribution": None}
            try:
                row["verdict"] = _verdict(verify_target(trust.trusted_keys, folder=holder / name), trust)
            except InvalidArgument as exc:
                row["verdict"] = f"refused: {exc}"
            rows.append(row)
    for row in rows:
        blocked = trust.allowed(row["name"], row["distribution"] == PRODUCT_DISTRIBUTION)
        if blocked is not None:
            row["verdict"] = f"not allowed ({blocked})"
    return rows


def _verdict(found: Verification, trust: PluginTrust) -> str:
    if found.ok:
        return f"signed by {found.signer} (trusted)"
    summary = "; ".join(found.problems)
    return f"refused: {summary}" if trust.require_signed else f"loads (signatures not required): {summary}"
