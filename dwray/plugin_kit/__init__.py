"""The plugin kit: ``dw plugin new`` renders a plugin package, ``dw plugin test`` runs its conformance suite.

- ``render.render_plugin(kind, name, parent)``: a package for a ``storage``,
  ``stage``, ``secrets`` or ``kms`` plugin: entry point, a small working
  plugin, tests that subclass ``dwray.testing``'s suite of its kind, a README
  that says how to sign it;
- ``conformance.find_target`` / ``run_conformance``: that suite on any plugin,
  a package folder or an installed entry point, in a pytest of its own;
- ``sdk``: what a plugin imports from dwray (base classes and contracts);
- ``harness``: the test class ``dw plugin test`` generates (imports pytest).

Nothing here is imported by the warehouse itself.
"""
from __future__ import annotations

from dwray.plugin_kit.names import KIT_KINDS, PluginNames, plugin_names

__all__ = ["KIT_KINDS", "PluginNames", "plugin_names"]
