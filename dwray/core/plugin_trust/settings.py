"""``PluginTrust``: the plugin trust settings, built once from config and handed to every loader.

The supervisor gets one from ``[plugin_trust]`` when the warehouse starts
and passes it to each plugin host, which loads its plugin with it; nothing
reads the config globally. It is a frozen dataclass of plain values (Ray
passes it as actor arguments): folders already resolved, trusted keys
already read from their files, so a host on another node needs neither.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dwray.config import PluginTrustConfig
from dwray.core.plugin_trust.signing import read_public_key
from dwray.errors import ConfigError, InvalidArgument

__all__ = ["ALLOW_ENV", "PluginTrust"]

ALLOW_ENV = "DWRAY_PLUGINS_ALLOW"


@dataclass(frozen=True)
class PluginTrust:
    """Where plugins may come from, who must have signed them and which may load at all.

    ``allow`` (``[plugin_trust] allow``) and ``DWRAY_PLUGINS_ALLOW`` each
    narrow what loads when set: a name must be in every list that is set.
    A ``module:Class`` spec must be listed by that exact spec. The entry
    points of dwray's own distribution (the warehouse's built-in children)
    need no place in ``allow``, which is for what is added to the product;
    ``DWRAY_PLUGINS_ALLOW`` limits them too, as it always has.
    """

    folders: tuple[str, ...] = ()
    trusted_keys: tuple[str, ...] = ()  # "ed25519:<base64>" each
    require_signed: bool = False
    allow: tuple[str, ...] | None = None

    @classmethod
    def from_config(cls, section: PluginTrustConfig) -> PluginTrust:
        """Resolve folders and read key files now; ``ConfigError`` names the field that is wrong."""
        folders = []
        for index, folder in enumerate(section.folders):
            resolved = Path(folder).expanduser().resolve()
            if not resolved.is_dir():
                raise ConfigError(f"plugin_trust.folders.{index}: {folder} is not a folder", "[plugin_trust]")
            folders.append(str(resolved))
        keys = []
        for index, entry in enumerate(section.trusted_keys):
            try:
                keys.append(read_public_key(entry, f"plugin_trust.trusted_keys.{index}"))
            except InvalidArgument as exc:
                raise ConfigError(str(exc), "[plugin_trust]") from None
        allow = None if section.allow is None else tuple(section.allow)
        return cls(tuple(folders), tuple(keys), section.require_signed_plugins, allow)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples), for a channel that is not pickle (a sandbox's msgpack frames)."""
        return {"folders": list(self.folders), "trusted_keys": list(self.trusted_keys),
                "require_signed": self.require_signed, "allow": None if self.allow is None else list(self.allow)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PluginTrust:
        """The inverse of ``to_dict``; ``InvalidArgument`` if ``data`` is not its shape."""
        try:
            allow = data["allow"]
            trust = cls(tuple(data["folders"]), tuple(data["trusted_keys"]), data["require_signed"],
                        None if allow is None else tuple(allow))
        except (KeyError, TypeError):
            raise InvalidArgument("plugin trust settings must hold folders, trusted_keys, require_signed "
                                  "and allow") from None
        texts = [*trust.folders, *trust.trusted_keys, *(trust.allow or ())]
        if not isinstance(trust.require_signed, bool) or not all(isinstance(t, str) for t in texts):
            raise InvalidArgument("plugin trust settings: require_signed is a bool, the lists hold text")
        return trust

    def allowlists(self, env: Mapping[str, str] | None = None, built_in: bool = False,
                   ) -> list[tuple[str, frozenset[str]]]:
        """The allowlists in force for a name (``built_in``: an entry point of dwray's own), with their sources."""
        env = os.environ if env is None else env
        lists = []
        if self.allow is not None and not built_in:
            lists.append(("[plugin_trust] allow", frozenset(self.allow)))
        raw = env.get(ALLOW_ENV)
        if raw is not None:
            lists.append((ALLOW_ENV, frozenset(name.strip() for name in raw.split(",") if name.strip())))
        return lists

    def allowed(self, name: str, built_in: bool = False, env: Mapping[str, str] | None = None) -> str | None:
        """``None`` if ``name`` may load, else which allowlist leaves it out."""
        for source, names in self.allowlists(env, built_in):
            if name not in names:
                return source
        return None
