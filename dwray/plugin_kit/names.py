"""A new plugin's names, all derived from the one NAME its author gives ``dw plugin new``.

NAME is lowercase letters and digits in words joined by single hyphens
(``acme-vault``), 2 to 40 characters, starting with a letter. From it and the
kind come the distribution (``dwray-plugin-acme-vault``), the import package
(``dwray_plugin_acme_vault``), the plugin class (``AcmeVaultKmsPlugin``) and
the entry point name (``kms.acme-vault``), which is what a warehouse's config
and ``dw plugin test`` call it by.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.metadata import entry_points

from dwray.errors import InvalidArgument

__all__ = ["KIT_KINDS", "PluginNames", "plugin_names"]

#: the kinds ``dw plugin new`` renders, each with a conformance suite in ``dwray.testing``
KIT_KINDS = ("storage", "stage", "secrets", "kms")
_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
_GROUP = "dwray.core.plugins"  # dwray.core.plugins.ENTRY_POINT_GROUP


@dataclass(frozen=True)
class PluginNames:
    """Every name of one new plugin."""

    name: str
    kind: str

    @property
    def distribution(self) -> str:
        return f"dwray-plugin-{self.name}"

    @property
    def package(self) -> str:
        return "dwray_plugin_" + self.name.replace("-", "_")

    @property
    def class_name(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("-")) + self.kind.capitalize() + "Plugin"

    @property
    def entry_point(self) -> str:
        return f"{self.kind}.{self.name}"


def plugin_names(kind: str, name: str) -> PluginNames:
    """The names of a new ``kind`` plugin called ``name``; ``InvalidArgument`` says what is wrong with either."""
    if kind not in KIT_KINDS:
        raise InvalidArgument(f"plugin kind {kind!r} is not one the kit renders: {', '.join(KIT_KINDS)}")
    if not isinstance(name, str) or not 2 <= len(name) <= 40:
        raise InvalidArgument(f"plugin name {name!r} must be 2 to 40 characters long")
    if not _NAME.match(name):
        raise InvalidArgument(f"plugin name {name!r} must be lowercase letters and digits, in words joined by "
                              f"single hyphens, starting with a letter (like 'acme-store')")
    names = PluginNames(name, kind)
    taken = {point.name: point.value for point in entry_points(group=_GROUP)}
    if names.entry_point in taken:
        raise InvalidArgument(f"plugin name {name!r}: {names.entry_point!r} is already a plugin here "
                              f"({taken[names.entry_point]}); choose another name")
    return names
