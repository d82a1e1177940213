"""Plugin provenance: plugin folders, Ed25519-signed manifests, allowlists.

- ``settings``: ``PluginTrust``, the settings from ``[plugin_trust]`` that
  every loader is given;
- ``folders``: the plugin folder layout and its rules, read into a snapshot;
- ``importer``: imports a folder plugin from that snapshot, namespaced;
- ``signing``: keys, the canonical manifest, signature files;
- ``distributions``: installed distributions as signed plugins;
- ``provenance``: the decision a loader asks for before it imports;
- ``operations``: what ``dw plugin keygen|sign|verify|discover`` do;
- ``refusals``: refusals as audit events (logger ``dwray.audit.plugins``
  and a hook).
"""
from __future__ import annotations

from dwray.core.plugin_trust.folders import DESCRIPTOR_FILE, FolderPlugin, PluginDescriptor
from dwray.core.plugin_trust.provenance import Provenance
from dwray.core.plugin_trust.refusals import AUDIT_LOGGER_NAME, PluginRefusal, set_refusal_hook
from dwray.core.plugin_trust.settings import ALLOW_ENV, PluginTrust
from dwray.core.plugin_trust.signing import SIGNATURE_FILE

__all__ = [
    "ALLOW_ENV",
    "AUDIT_LOGGER_NAME",
    "DESCRIPTOR_FILE",
    "SIGNATURE_FILE",
    "FolderPlugin",
    "PluginDescriptor",
    "PluginRefusal",
    "PluginTrust",
    "Provenance",
    "set_refusal_hook",
]
