"""What a config reload would change, as pure data: the diff, what may change live, which plugins restart.

A hot reload (``actors.config_reload``) compares the running config with a
new file and must be able to show, audit and record that comparison without
ever writing a secret down. The config holds secrets as references
(``secret://...``), which are shown as they are; a value that is not a
reference but sits where secrets go (a field named like ``password`` or
``token``, a plugin's ``env_vars``, an exporter's ``headers``) is shown as
``"<redacted>"``, and a URL's user info as ``***``. So a diff is safe to log.

Three rules decide a reload before anything is touched:

``diff_configs``
    every changed leaf, by dotted path (``gateway.rate_limit.tenant_rate``).
``frozen_changes``
    the changes that cannot be applied to a running warehouse (its data dir,
    namespace, gateway address, the set of plugins, the data path's settings
    that every caller holds...): a reload naming any of them is refused whole.
``plan_children``
    from the running and the new child specs: the children whose spec is the
    same, those whose only changes are read by callers or by the supervisor
    (deadlines, resilience, handshake time: applied by swapping the spec), and
    those that must restart with their new spec. Children added or removed
    are refused: a reload does not reshape the tree.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dwray.core.supervision import ChildSpec
from dwray.secret_ref import parse_secret_ref

__all__ = [
    "LIVE_PREFIXES",
    "REDACTED",
    "SPEC_LIVE_FIELDS",
    "SPEC_TELEMETRY_FIELDS",
    "Change",
    "ChildPlan",
    "diff_configs",
    "frozen_changes",
    "plan_children",
    "redact",
    "summarize",
]

REDACTED = "<redacted>"
# Config paths a reload applies while the warehouse runs; a change anywhere else is refused.
# Rate limits and log levels are applied by the gateway replicas and processes themselves,
# everything the plugins hold by restarting the plugins whose spec changed.
LIVE_PREFIXES: tuple[str, ...] = (
    "gateway.rate_limit", "gateway.auth_failures",
    "logging", "tracing", "slo", "events",
    "plugins", "sandbox", "plugin_trust", "secrets",
    "catalog.synchronous", "catalog.busy_timeout_ms",
    "sweeper", "scrub",
    "audit.checkpoint_every", "audit.copy_every", "audit.copy_interval",
    "kms.address", "kms.token", "kms.mount", "kms.key_prefix", "kms.namespace", "kms.ca_cert", "kms.timeout",
    "backends", "pools", "storage",
    "runtime.handshake_timeout", "runtime.standby_hosts",
)
# Within the live prefixes, where the data is and what kind of backend holds it never change live:
# a new root, bucket or table would hide every object stored before.
_FROZEN_LEAVES = re.compile(r"^(storage|backends\.[^.]+)\.(kind|backend|root|bucket|prefix|path|table)$")
# ChildSpec fields only callers (deadlines, resilience) or the supervisor (start and stop
# times, readiness) read: a change to them swaps the spec without restarting the plugin.
SPEC_LIVE_FIELDS = frozenset({"call_timeout", "method_timeouts", "resilience", "handshake_timeout",
                              "start_timeout", "shutdown", "required", "standby"})
# ChildSpec fields a running host applies to itself when told (``PluginHost.configure_telemetry``).
SPEC_TELEMETRY_FIELDS = frozenset({"tracing", "logging"})
_SECRET_NAME = re.compile(r"password|passphrase|secret|token|credential|api_?key|private", re.IGNORECASE)
# Mappings whose every value may be a secret: a plugin's environment, an exporter's headers.
_SECRET_MAPPINGS = frozenset({"env_vars", "headers"})
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


@dataclass(frozen=True)
class Change:
    """One changed leaf: ``old``/``new`` are redacted values, ``None`` when absent on that side."""

    path: str
    old: Any
    new: Any
    added: bool = False
    removed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "old": self.old, "new": self.new, "added": self.added, "removed": self.removed}

    def describe(self) -> str:
        if self.added:
            return f"{self.path}: + {self.new!r}"
        if self.removed:
            return f"{self.path}: - {self.old!r}"
        return f"{self.path}: {self.old!r} -> {self.new!r}"


@dataclass(frozen=True)
class ChildPlan:
    """How a reload treats each child: the same, its spec swapped live, or restarted with its new spec.

    ``telemetry`` names the ``live`` children whose ``[tracing]``/``[logging]``
    changed: their hosts are told to apply them.
    """

    same: tuple[str, ...]
    live: tuple[str, ...]
    restart: tuple[str, ...]
    telemetry: tuple[str, ...] = ()

    @property
    def changed(self) -> tuple[str, ...]:
        return self.live + self.restart


def _is_ref(value: Any) -> bool:
    if not isinstance(value, str) or not value.startswith("secret://"):
        return False
    try:
        parse_secret_ref(value)
    except Exception:  # noqa: BLE001 - not a valid reference: treat it as a value
        return False
    return True


def redact(value: Any, secret: bool = False) -> Any:
    """``value`` fit to show: secret references kept, values in secret places replaced, URL passwords hidden."""
    if _is_ref(value):
        return value
    if secret and value is not None:
        return REDACTED
    if isinstance(value, str):
        return _URL_USERINFO.sub(r"\g<scheme>***@", value)
    return value


def _leaves(data: Any, path: tuple[str, ...], secret: bool) -> Iterable[tuple[str, Any, bool]]:
    # An empty mapping has no leaves: a table that gains its first entry shows that entry as added.
    if isinstance(data, Mapping):
        for key, value in data.items():
            key = str(key)
            inner_secret = secret or bool(_SECRET_NAME.search(key)) or (path and path[-1] in _SECRET_MAPPINGS)
            yield from _leaves(value, (*path, key), bool(inner_secret))
    else:
        yield ".".join(path), data, secret


def diff_configs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every leaf that differs between two configs (``model_dump(mode="json")``), sorted by path.

    Lists are compared whole (a pool's members, allowlists): a list is one leaf.
    Values are redacted (see the module docstring); a changed secret value shows
    as a change from ``"<redacted>"`` to ``"<redacted>"``, the path telling what.
    """
    before = {path: (value, secret) for path, value, secret in _leaves(old, (), False)}
    after = {path: (value, secret) for path, value, secret in _leaves(new, (), False)}
    changes = []
    for path in sorted(set(before) | set(after)):
        if path in before and path in after:
            (old_value, old_secret), (new_value, new_secret) = before[path], after[path]
            if old_value != new_value:
                changes.append(Change(path, redact(old_value, old_secret), redact(new_value, new_secret)))
        elif path in after:
            value, secret = after[path]
            changes.append(Change(path, None, redact(value, secret), added=True))
        else:
            value, secret = before[path]
            changes.append(Change(path, redact(value, secret), None, removed=True))
    return changes


def _live(path: str, prefixes: Sequence[str]) -> bool:
    if _FROZEN_LEAVES.match(path):
        return False
    return any(path == prefix or path.startswith(prefix + ".") for prefix in prefixes)


def frozen_changes(changes: Iterable[Change], live: Sequence[str] = LIVE_PREFIXES) -> list[str]:
    """The paths among ``changes`` a running warehouse cannot take (outside ``live``), sorted."""
    return sorted({change.path for change in changes if not _live(change.path, live)})


def plan_children(running: Sequence[ChildSpec], new: Sequence[ChildSpec]) -> ChildPlan:
    """Sort the children by what a reload does to them; ``ValueError`` naming children added or removed."""
    old_by_id = {spec.id: spec for spec in running}
    new_by_id = {spec.id: spec for spec in new}
    added, removed = sorted(set(new_by_id) - set(old_by_id)), sorted(set(old_by_id) - set(new_by_id))
    if added or removed:
        parts = ([f"would add {', '.join(added)}"] if added else []) + \
                ([f"would remove {', '.join(removed)}"] if removed else [])
        raise ValueError(f"the new config changes the set of plugins ({'; '.join(parts)}); "
                         "that needs a restart of the warehouse")
    same, live, restart, telemetry = [], [], [], []
    for spec in running:
        other = new_by_id[spec.id]
        if other == spec:
            same.append(spec.id)
            continue
        fields = {name for name in type(spec).model_fields if getattr(spec, name) != getattr(other, name)}
        if fields <= SPEC_LIVE_FIELDS | SPEC_TELEMETRY_FIELDS:
            live.append(spec.id)
            if fields & SPEC_TELEMETRY_FIELDS:
                telemetry.append(spec.id)
        else:
            restart.append(spec.id)
    return ChildPlan(tuple(same), tuple(live), tuple(restart), tuple(telemetry))


def summarize(changes: Sequence[Change], limit: int = 1800) -> str:
    """One line naming the changes (redacted), at most ``limit`` characters, for the audit log."""
    if not changes:
        return "no change"
    text = "; ".join(change.describe() for change in changes)
    return text if len(text) <= limit else text[: limit - 20] + f"... ({len(changes)} changes)"
