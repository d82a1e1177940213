"""Deciding whether a plugin's code may run: where it comes from, and who vouches for it.

The loader (``dwray.core.plugins.load_plugin_class``) asks here *before* it
imports anything: a folder plugin must keep to the folder rules (always),
and with ``require_signed`` every plugin that is not dwray's own must carry
a signature by a trusted key over exactly its current files. A refusal is
reported (``refusals.report_refusal``) and raised as ``PluginRefused`` whose
reason says which rule failed: unsigned, wrongly signed (untrusted key or a
signature that does not match), or tampered (files changed, added, removed).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from dwray.core.plugin_trust.distributions import (
    PRODUCT_DISTRIBUTION,
    distribution_manifest,
    distribution_named,
    distribution_signature,
)
from dwray.core.plugin_trust.folders import FolderPlugin, read_folder_plugin
from dwray.core.plugin_trust.refusals import report_refusal
from dwray.core.plugin_trust.settings import PluginTrust
from dwray.core.plugin_trust.signing import SignatureCheck, check_signature
from dwray.errors import InvalidArgument, PluginRefused

__all__ = ["Provenance", "check_distribution", "check_folder", "refuse"]


@dataclass(frozen=True)
class Provenance:
    """Where a plugin that may load comes from, and why it is trusted."""

    source: str  # "folder <path>", "distribution <name>", "module outside any distribution"
    status: str  # "built in", "signed", "signature not required"
    signer: str | None = None  # key fingerprint, when signed


def refuse(plugin: str, source: str, reason: str) -> NoReturn:
    """Report the refusal for the audit log, then raise ``PluginRefused``."""
    report_refusal(plugin, source, reason)
    raise PluginRefused(plugin, reason)


def _signed(plugin: str, source: str, check: SignatureCheck) -> Provenance:
    if not check.ok:
        refuse(plugin, source, "; ".join(check.problems))
    return Provenance(source, "signed", check.signer)


def check_folder(plugin: str, plugin_dir: Path, folder: Path, trust: PluginTrust) -> tuple[FolderPlugin, Provenance]:
    """Read the folder plugin and check it; return the snapshot to import from."""
    source = f"folder {plugin_dir}"
    try:
        found = read_folder_plugin(plugin_dir, folder)
    except InvalidArgument as exc:
        refuse(plugin, source, f"plugin folder {plugin_dir}: {exc}")
    if not trust.require_signed:
        return found, Provenance(source, "signature not required")
    check = check_signature(found.signature, found.manifest(), trust.trusted_keys)
    return found, _signed(plugin, source, check)


def check_distribution(plugin: str, dist_name: str | None, trust: PluginTrust) -> Provenance:
    """Check the installed distribution ``dist_name`` that provides ``plugin`` (``None``: no distribution)."""
    if dist_name == PRODUCT_DISTRIBUTION:
        return Provenance(f"distribution {dist_name}", "built in")
    source = f"distribution {dist_name}" if dist_name else "module outside any distribution"
    if not trust.require_signed:
        return Provenance(source, "signature not required")
    if dist_name is None:
        refuse(plugin, source, "unsigned: its module belongs to no installed distribution, so nothing vouches for "
                               "it; put it in a plugin folder and sign it (dw plugin sign)")
    try:
        dist = distribution_named(dist_name)
        check = check_signature(distribution_signature(dist), distribution_manifest(dist), trust.trusted_keys)
    except InvalidArgument as exc:
        refuse(plugin, source, str(exc))
    return _signed(plugin, source, check)
