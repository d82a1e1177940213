"""The plugin contract and registry.

A plugin is a class that a plugin host actor instantiates with its config (as
keyword arguments) and whose public methods callers invoke through the host.
Every plugin declares a ``Manifest``: name, kind, version, the SDK versions it
supports, its capabilities and a JSON schema for its config. The supervisor
refuses a plugin whose manifest does not fit (wrong kind, unsupported SDK
version, config that fails the schema) with a reason that says which.

Plugins are found by entry points in the group ``dwray.core.plugins`` (dwray's own
built-ins are registered the same way in ``pyproject.toml``) and in the plugin
folders of ``[plugin_trust] folders`` (``dwray.core.plugin_trust.folders``). A
spec may also name a class directly as ``"module:Class"`` (tests register
throwaway plugins that way). A name found both as an entry point and in a
folder is refused, never resolved by precedence.

Before any plugin code is imported, the loader checks what ``PluginTrust``
(built from ``[plugin_trust]``) asks: the allowlists (``[plugin_trust] allow``
and ``DWRAY_PLUGINS_ALLOW``, comma-separated; unset allows all, a
``module:Class`` spec must be listed by that exact spec, and dwray's own
entry points need no place in ``allow``), the folder rules,
and, with ``require_signed_plugins``, a trusted Ed25519 signature over the
plugin's files (``dwray.core.plugin_trust.provenance``). dwray's own
distribution is trusted as the installed product.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from dwray.core.plugin_trust.distributions import PRODUCT_DISTRIBUTION, distribution_of_module
from dwray.core.plugin_trust.folders import FolderPlugin, find_folder_plugin, folder_plugin_dirs
from dwray.core.plugin_trust.importer import import_folder_plugin
from dwray.core.plugin_trust.provenance import check_distribution, check_folder, refuse
from dwray.core.plugin_trust.settings import PluginTrust
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
    "PluginTrust",
    "PluginRefused",
    "check_manifest",
    "check_plugin_source",
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
                       cache, so the next read gets the new value, no restart;
      ``on_memory_pressure(level)`` -- the node's memory pressure level changed
                       (``"normal"``, ``"warning"``, ``"critical"``; told through the
                       supervisor): at ``warning`` or above, drop what can be had
                       again (caches, buffers). The default does nothing.

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

    def on_memory_pressure(self, level: str) -> None:
        """The node's memory pressure is now ``level`` (``dwray.core.memory_pressure.LEVELS``):
        shrink caches at ``warning`` and ``critical``. The default holds none, so does nothing."""

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


def discover(trust: PluginTrust | None = None) -> dict[str, str]:
    """Plugin names that may load and where each is: ``module:attr`` or ``folder:<path>``."""
    trust = trust or PluginTrust()
    points = entry_points(group=ENTRY_POINT_GROUP)
    found = {ep.name: ep.value for ep in points if trust.allowed(ep.name, _built_in(ep)) is None}
    for name, holders in folder_plugin_dirs(trust.folders).items():
        if name not in found and trust.allowed(name) is None:
            found[name] = "folder:" + ", ".join(str(holder / name) for holder in holders)
    return found


def _built_in(point: EntryPoint) -> bool:
    return point.dist is not None and point.dist.name == PRODUCT_DISTRIBUTION


def _import(name: str, target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise PluginNotFound(name, f"(cannot import {target}: {exc})") from None


@dataclass(frozen=True)
class _CheckedSource:
    """A plugin that may load: what to import, and for a folder plugin the snapshot that was checked."""

    target: str  # "module:attr", or "<plugin folder>/<module:Class>"
    snapshot: FolderPlugin | None = None


def _checked_source(name: str, trust: PluginTrust) -> _CheckedSource:
    """Where ``name`` comes from, after every check ``trust`` asks for; nothing of it is imported here."""
    points = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    point = points.get(name)
    blocked_by = trust.allowed(name, point is not None and _built_in(point))
    if blocked_by is not None:
        hint = "list that exact 'module:Class' spec" if ":" in name else f"add {name!r}"
        refuse(name, "allowlist", f"not allowed: {name!r} is not in {blocked_by}; {hint} there to allow it")
    if ":" in name:
        if trust.require_signed:
            check_distribution(name, distribution_of_module(name.partition(":")[0]), trust)
        return _CheckedSource(name)
    try:
        plugin_dir = find_folder_plugin(name, trust.folders)
    except InvalidArgument as exc:
        refuse(name, "plugin folders", str(exc))
    if point is not None and plugin_dir is not None:
        refuse(name, f"folder {plugin_dir}", f"both the entry point {point.value} and the plugin folder "
                                             f"{plugin_dir} are named {name!r}; rename the folder plugin")
    if point is not None:
        check_distribution(name, point.dist.name if point.dist is not None else None, trust)
        return _CheckedSource(point.value)
    if plugin_dir is not None:
        snapshot, _ = check_folder(name, plugin_dir, plugin_dir.parent, trust)
        return _CheckedSource(f"{snapshot.root}/{snapshot.descriptor.entry}", snapshot)
    raise PluginNotFound(name, ", ".join(sorted(discover(trust))) or "none")


def check_plugin_source(name: str, trust: PluginTrust | None = None) -> Path | None:
    """Check that ``name`` may load under ``trust`` without importing any of it (a sandbox's host asks this).

    Returns a folder plugin's resolved folder (what its sandbox must see,
    read-only), ``None`` for other plugins; raises like ``load_plugin_class``.
    """
    source = _checked_source(name, trust or PluginTrust())
    return source.snapshot.root if source.snapshot is not None else None


def load_plugin_class(name: str, trust: PluginTrust | None = None) -> type[Plugin]:
    """The plugin class for an entry point name, a folder plugin's name or a ``module:Class`` path.

    ``trust`` (default: no folders, no signatures required, no config
    allowlist) says what may load; raises ``PluginRefused`` saying why a
    plugin may not, ``PluginNotFound`` if there is no such plugin. A folder
    plugin runs from the very bytes that were checked.
    """
    source = _checked_source(name, trust or PluginTrust())
    if source.snapshot is None:
        cls = _import(name, source.target)
    else:
        try:
            cls = import_folder_plugin(source.snapshot)
        except Exception as exc:  # noqa: BLE001 - whatever the plugin's module raises, it is not loadable
            raise PluginNotFound(name, f"(cannot import {source.target}: {type(exc).__name__}: {exc})") from None
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise InvalidArgument(f"{source.target} is not a dwray Plugin subclass")
    return cls
