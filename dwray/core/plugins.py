"""The plugin contract and registry.

A plugin is a class that a plugin host actor instantiates with its config (as
keyword arguments) and whose public methods callers invoke through the host.
Every plugin declares a ``Manifest``: name, kind, version, the SDK versions it
supports, its capabilities and a JSON schema for its config. The supervisor
refuses a plugin whose manifest does not fit (wrong kind, unsupported SDK
version, config that fails the schema) with a reason that says which.

Plugins are found by entry points in the group ``dwray.core.plugins``; dwray's own
built-ins are registered the same way in ``pyproject.toml``. A spec may also
name a class directly as ``"module:Class"`` (tests register throwaway plugins
that way). ``DWRAY_PLUGINS_ALLOW`` (comma-separated entry point names) limits
which entry points load.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from dwray.errors import InvalidArgument, PluginNotFound, PluginRefused

if TYPE_CHECKING:
    from dwray.secrets.resolver import SecretResolver

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "SDK_VERSION",
    "Manifest",
    "Plugin",
    "PluginNotFound",
    "PluginRefused",
    "check_manifest",
    "discover",
    "load_plugin_class",
]

ENTRY_POINT_GROUP = "dwray.core.plugins"
SDK_VERSION = "1.0"
KINDS = frozenset({"storage", "stage", "kms", "secrets", "service", "ai"})


@dataclass(frozen=True)
class Manifest:
    """What a plugin says about itself in the handshake."""

    name: str
    kind: str
    version: str
    sdk: str = ">=1.0,<2"
    capabilities: tuple[str, ...] = ()
    config_schema: dict[str, Any] = field(default_factory=lambda: {"type": "object"})


class Plugin:
    """Base class for plugins. Subclasses set ``manifest`` and add public methods.

    Hooks the host calls:
      ``health()``  -- cheap liveness check for the supervisor's pings; return
                       ``{"ok": False, ...}`` (or raise) to be restarted;
      ``close()``   -- release resources on orderly shutdown;
      ``secret_refs()`` -- the ``secret://`` references the plugin uses; with a
                       ``secret_resolver`` set, the host polls their versions
                       every ``[secrets] watch_interval`` seconds;
      ``on_secret_rotated(ref)`` -- a secret was rotated (an event through the
                       supervisor, ``dw secret rotate``, or the host's watch saw a
                       new version): the default drops it from ``secret_resolver``'s
                       cache, so the next read gets the new value, no restart.

    A plugin that uses secrets takes their *references* in its config (never
    values: the config is the actor's arguments, which the Ray dashboard shows)
    and resolves them in its own process, with a ``SecretResolver`` it keeps
    in ``secret_resolver``.

    A plugin that has finished its work calls ``request_stop(reason)``: the
    supervisor then stops it as a *normal* exit, so a transient child stays
    down (a permanent one is still restarted).
    """

    manifest: ClassVar[Manifest]
    # Set by the plugin host after instantiation; None outside a host.
    _dwray_stop_hook: Callable[[str], None] | None = None
    #: the plugin's resolver of secret references, if it uses secrets (see ``secret_refs``)
    secret_resolver: SecretResolver | None = None

    def health(self) -> dict[str, Any]:
        """Report liveness; the default says the plugin is fine."""
        return {"ok": True}

    def close(self) -> None:
        """Release resources. The default holds none."""

    def secret_refs(self) -> list[str]:
        """The secret references this plugin uses, for its host to watch. The default: none."""
        return []

    def on_secret_rotated(self, ref: str) -> None:
        """The secret ``ref`` names was rotated: forget its cached value (the default does, in ``secret_resolver``)."""
        if self.secret_resolver is not None:
            self.secret_resolver.invalidate(ref)

    def request_stop(self, reason: str = "the plugin asked to stop") -> None:
        """Ask the supervisor to stop this plugin as a normal exit."""
        hook = self._dwray_stop_hook
        if hook is None:
            raise RuntimeError("request_stop() works only in a plugin hosted by a supervisor")
        hook(reason)


def check_manifest(child_id: str, manifest: Any, expected_kind: str | None,
                   config: dict[str, Any]) -> Manifest:
    """Return ``manifest`` if it fits, else raise ``PluginRefused`` saying why."""
    if not isinstance(manifest, Manifest):
        raise PluginRefused(child_id, f"handshake returned {type(manifest).__name__}, not a Manifest")
    if manifest.kind not in KINDS:
        raise PluginRefused(child_id, f"unknown kind {manifest.kind!r}; kinds are {sorted(KINDS)}")
    if expected_kind is not None and manifest.kind != expected_kind:
        raise PluginRefused(child_id, f"is a {manifest.kind!r} plugin, the spec expects {expected_kind!r}")
    try:
        supported = SpecifierSet(manifest.sdk)
    except InvalidSpecifier:
        raise PluginRefused(child_id, f"SDK range {manifest.sdk!r} is not a version specifier") from None
    if Version(SDK_VERSION) not in supported:
        raise PluginRefused(child_id, f"supports SDK {manifest.sdk}, this dwray offers SDK {SDK_VERSION}")
    import jsonschema

    try:
        jsonschema.validate(config, manifest.config_schema)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(part) for part in exc.absolute_path) or "(top level)"
        # The message names the field and rule, never the value (it may be a secret).
        raise PluginRefused(child_id, f"config field {where} fails the plugin's schema: {exc.validator} "
                                      f"{exc.validator_value!r}") from None
    except jsonschema.SchemaError as exc:
        raise PluginRefused(child_id, f"its config schema is invalid: {exc.message}") from None
    return manifest


def _allowed() -> set[str] | None:
    raw = os.environ.get("DWRAY_PLUGINS_ALLOW")
    return None if raw is None else {name.strip() for name in raw.split(",") if name.strip()}


def discover() -> dict[str, str]:
    """Registered plugin names and the ``module:attr`` each points at."""
    allowed = _allowed()
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)
            if allowed is None or ep.name in allowed}


def load_plugin_class(name: str) -> type[Plugin]:
    """The plugin class for an entry point name or a ``module:Class`` path."""
    target = name if ":" in name else discover().get(name)
    if target is None:
        raise PluginNotFound(name, ", ".join(sorted(discover())) or "none")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginNotFound(name, f"(cannot import {target}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise InvalidArgument(f"{target} is not a dwray Plugin subclass")
    return cls
