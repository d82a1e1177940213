"""Plugin refusals are audit events: a log record, and a hook for the audit log.

Every refusal for provenance (not allowed, outside its folder, unsigned,
wrongly signed, tampered) is reported here before ``PluginRefused`` is
raised: as a WARNING record on the logger ``dwray.audit.plugins`` (its
``dwray_audit`` attribute holds the :class:`PluginRefusal` as a dict), and to
the hook set with :func:`set_refusal_hook`, if any. The loader runs in the
plugin host's process, so a hook is set there (or records are collected
from that logger); the supervisor also records the refusal, with the same
reason, as a ``refused`` event in its status. A hook that fails is logged,
never allowed to turn a refusal into an admission.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

__all__ = ["AUDIT_LOGGER_NAME", "PluginRefusal", "report_refusal", "set_refusal_hook"]

AUDIT_LOGGER_NAME = "dwray.audit.plugins"
_audit_logger = logging.getLogger(AUDIT_LOGGER_NAME)
_hook_lock = threading.Lock()
_hook: Callable[[PluginRefusal], None] | None = None


@dataclass(frozen=True)
class PluginRefusal:
    """One plugin refused: which, from where, why, when."""

    plugin: str
    source: str  # "folder:<path>", "entry point", "module", "distribution:<name>"
    reason: str
    time: float


def set_refusal_hook(hook: Callable[[PluginRefusal], None] | None) -> None:
    """Call ``hook`` with every refusal in this process from now on (``None`` removes it)."""
    global _hook
    with _hook_lock:
        _hook = hook


def report_refusal(plugin: str, source: str, reason: str) -> PluginRefusal:
    """Record a refusal: the audit logger, then the hook."""
    refusal = PluginRefusal(plugin, source, reason, time.time())
    _audit_logger.warning("plugin %r from %s refused: %s", plugin, source, reason,
                          extra={"dwray_audit": asdict(refusal)})
    with _hook_lock:
        hook = _hook
    if hook is not None:
        try:
            hook(refusal)
        except Exception:  # noqa: BLE001 - the refusal stands whatever the hook does
            _audit_logger.exception("the plugin refusal hook failed for %r", plugin)
    return refusal
