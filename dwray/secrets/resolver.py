"""From a ``secret://`` reference to its value: the resolver every part of dwray uses.

``SecretResolver(config)`` holds one manager per scheme, made from the
config's ``[secrets]`` sections on first use, and a cache:

- ``get(ref)`` returns the value, cached for ``[secrets] watch_interval``
  seconds at most (``env`` and ``file`` values are read fresh every time:
  reading them is cheap, and a container's mounted file may change at any
  moment);
- ``accepted(ref)`` returns the values a caller should accept now: the
  current one, then, for managers that keep versions, the previous one while
  the current version is younger than ``[secrets] grace_seconds`` (by the
  manager's record of when it was written, else since this resolver first
  saw it). A rotated credential thus keeps working for the clients that still
  hold the old one, for a bounded time;
- ``version(ref)`` asks the manager for the current version (never cached):
  what a watcher polls to notice a rotation;
- ``invalidate(ref)`` drops what is cached for that secret (any field of it),
  as a rotation event does.

``resolve_secret(ref, config)`` resolves through one shared resolver per
distinct ``[secrets]`` configuration in the process; ``invalidate_shared``
drops their caches (the plugin host calls it on a rotation event).

A resolver holds live connections and values: it never crosses processes.
What does is ``resolver_settings(config)``, plain JSON-able settings and
references, from which ``SecretResolver.from_settings`` builds one in a
plugin's own actor.
"""
from __future__ import annotations

import importlib
import json
import threading
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from dwray.config import DwrayConfig, KeysConfig, SecretsConfig
from dwray.errors import DependencyMissing, InvalidArgument, SecretNotFound
from dwray.secret_ref import SCHEMES, SecretRef, SecretValue, parse_secret_ref
from dwray.secrets.base import SecretManager
from dwray.secrets.local import LocalSecretStore, default_secret_store_path

__all__ = [
    "MANAGERS",
    "SecretResolver",
    "invalidate_shared",
    "manager_class",
    "resolve_secret",
    "resolver_settings",
    "shared_resolver",
]

#: scheme -> ``"module:Class"`` of its manager; imported on first use (hvac and boto3 only when needed)
MANAGERS: Mapping[str, str] = MappingProxyType({
    "env": "dwray.secrets.env:EnvSecretManager",
    "file": "dwray.secrets.file:FileSecretManager",
    "local": "dwray.secrets.local:LocalSecretStore",
    "vault": "dwray.secrets.vault:VaultSecretManager",
    "aws": "dwray.secrets.aws:AwsSecretManager",
})
assert set(MANAGERS) == set(SCHEMES)


def manager_class(scheme: str) -> type[SecretManager]:
    """The manager class of ``scheme``; ``InvalidArgument`` for an unknown one, ``DependencyMissing`` if its
    library is not installed."""
    try:
        target = MANAGERS[scheme]
    except KeyError:
        raise InvalidArgument(f"no secret manager {scheme!r}; managers: {', '.join(MANAGERS)}") from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").partition(".")[0]
        if not missing or missing == "dwray":
            raise
        raise DependencyMissing(f"the {scheme!r} secret manager (it imports {missing!r})", missing) from exc
    return getattr(module, class_name)


def resolver_settings(config: DwrayConfig) -> dict[str, Any]:
    """What a resolver in another process needs, as JSON-able data: settings and references, no value."""
    return {"secrets": config.secrets.model_dump(mode="json"), "master": config.master_key_ref,
            "create_master": config.keys.master is None}


class SecretResolver:
    """Resolves references with caching and rotation grace; see the module docstring."""

    def __init__(self, config: DwrayConfig, *, master: str | None = None, create_master: bool | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """``master``/``create_master`` override the master key reference and whether its default file
        may be created (``from_settings`` passes the ones of the process that made the settings)."""
        self.config = config
        self._master = master if master is not None else config.master_key_ref
        self._create_master = config.keys.master is None if create_master is None else create_master
        self._clock = clock
        self._lock = threading.RLock()
        self._managers: dict[str, SecretManager] = {}
        self._values: dict[str, tuple[SecretValue, float]] = {}
        self._accepted: dict[str, tuple[list[SecretValue], float]] = {}
        self._old_versions: dict[tuple[str, str], SecretValue] = {}
        self._first_seen: dict[tuple[str, str, str], float] = {}

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SecretResolver:
        """A resolver from ``resolver_settings(config)`` of another process."""
        config = DwrayConfig(secrets=SecretsConfig.model_validate(settings.get("secrets") or {}),
                             keys=KeysConfig(master=settings.get("master")))
        return cls(config, master=settings.get("master"), create_master=bool(settings.get("create_master")))

    def __repr__(self) -> str:
        return f"SecretResolver(managers={sorted(self._managers)})"

    @property
    def grace_seconds(self) -> float:
        return self.config.secrets.grace_seconds

    @property
    def watch_interval(self) -> float:
        return self.config.secrets.watch_interval

    def manager(self, scheme: str) -> SecretManager:
        """The manager of ``scheme``, made from the config on first use."""
        with self._lock:
            manager = self._managers.get(scheme)
            if manager is None:
                manager = self._managers[scheme] = self._build(scheme)
            return manager

    def _build(self, scheme: str) -> SecretManager:
        if scheme == "local":
            local = self.config.secrets.local
            return LocalSecretStore(local.path or default_secret_store_path(), passphrase=local.passphrase,
                                    key_file=local.key_file, master=self._master,
                                    create_key_file=self._create_master)
        return manager_class(scheme).from_config(self.config)

    def _fresh(self, key: str, cache: dict[str, tuple[Any, float]]) -> Any:
        entry = cache.get(key)
        if entry is not None and self._clock() < entry[1]:
            return entry[0]
        return None

    def _seen(self, ref: SecretRef, version: Any) -> float:
        key = (ref.scheme, ref.name, str(version))
        with self._lock:
            return self._first_seen.setdefault(key, self._clock())

    # -- the API ---------------------------------------------------------------------------

    def get(self, ref: str) -> SecretValue:
        """The current value ``ref`` names (cached up to ``watch_interval`` s; env and file read fresh)."""
        parsed = parse_secret_ref(ref)
        key = str(parsed)
        manager = self.manager(parsed.scheme)
        if not manager.always_fresh:
            with self._lock:
                cached = self._fresh(key, self._values)
            if cached is not None:
                return cached
        value = manager.get(parsed.name, parsed.field)
        self._seen(parsed, value.version)
        if not manager.always_fresh:
            with self._lock:
                self._values[key] = (value, self._clock() + self.watch_interval)
        return value

    def accepted(self, ref: str) -> list[SecretValue]:
        """The values to accept now: the current one, then the previous one within the grace period."""
        parsed = parse_secret_ref(ref)
        key = str(parsed)
        with self._lock:
            cached = self._fresh(key, self._accepted)
        if cached is not None:
            return list(cached)
        current = self.get(ref)
        manager = self.manager(parsed.scheme)
        values, expires = [current], self._clock() + self.watch_interval
        if manager.keeps_versions and self.grace_seconds > 0:
            previous = manager.previous_version(parsed.name)
            kept = {entry.version: entry for entry in manager.versions(parsed.name)}
            entry = kept.get(str(current.version))
            rotated_at = entry.created if entry is not None and entry.created is not None \
                else self._seen(parsed, current.version)
            until = rotated_at + self.grace_seconds
            if previous is not None and self._clock() < until:
                old = self._previous_value(parsed, previous.version)
                if old is not None:
                    values.append(old)
                    expires = min(expires, until)
        with self._lock:
            self._accepted[key] = (values, expires)
        return list(values)

    def _previous_value(self, ref: SecretRef, version: str) -> SecretValue | None:
        key = (str(ref), version)
        with self._lock:
            if key in self._old_versions:
                return self._old_versions[key]
        try:
            value = self.manager(ref.scheme).get(ref.name, ref.field, version=version)
        except SecretNotFound:  # pruned meanwhile, or the field is new in the current version
            return None
        with self._lock:
            self._old_versions[key] = value  # a version never changes
        return value

    def version(self, ref: str) -> str:
        """The current version of the secret ``ref`` names, asked of its manager now."""
        parsed = parse_secret_ref(ref)
        version = self.manager(parsed.scheme).current_version(parsed.name)
        self._seen(parsed, version)
        return version

    def invalidate(self, ref: str | None = None) -> None:
        """Drop what is cached for the secret ``ref`` names (every field of it), or everything."""
        with self._lock:
            if ref is None:
                self._values.clear()
                self._accepted.clear()
                return
            parsed = parse_secret_ref(ref)
            stem = f"secret://{parsed.scheme}/{parsed.name}"
            for cache in (self._values, self._accepted):
                for key in [key for key in cache if key == stem or key.startswith(stem + "#")]:
                    del cache[key]

    def close(self) -> None:
        """Close every manager's connections and forget cached values."""
        with self._lock:
            managers, self._managers = list(self._managers.values()), {}
            self._values.clear()
            self._accepted.clear()
            self._old_versions.clear()
        for manager in managers:
            manager.close()


_shared: dict[str, SecretResolver] = {}
_shared_lock = threading.Lock()


def shared_resolver(config: DwrayConfig | None = None) -> SecretResolver:
    """This process's resolver for ``config``'s secret settings (one per distinct settings)."""
    config = config if config is not None else DwrayConfig()
    settings = resolver_settings(config)
    key = json.dumps(settings, sort_keys=True)
    with _shared_lock:
        resolver = _shared.get(key)
        if resolver is None:
            resolver = _shared[key] = SecretResolver(config, master=settings["master"],
                                                     create_master=settings["create_master"])
        return resolver


def resolve_secret(ref: str, config: DwrayConfig | None = None) -> SecretValue:
    """The value ``ref`` names, through this process's shared resolver for ``config`` (default: defaults)."""
    return shared_resolver(config).get(ref)


def invalidate_shared(ref: str | None = None) -> None:
    """Drop the secret ``ref`` names (or everything) from every shared resolver's cache."""
    with _shared_lock:
        resolvers = list(_shared.values())
    for resolver in resolvers:
        resolver.invalidate(ref)
