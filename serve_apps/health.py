"""Readiness of one gateway replica: every reason it should not take traffic, named.

``/healthz/ready`` must tell an operator (and a load balancer's log) *why* a
replica is out of rotation, not just that it is. The reasons come from four
places, gathered by the route in :mod:`serve_apps.gateway` and composed here
(:func:`assess`, pure, so its composition is tested without a cluster):

- the gateway itself: ``draining`` (shutdown has begun);
- the supervisor: its own ``ready()`` reason verbatim (``restarting: ...``,
  ``failed: ...``, ``breaker open: ...``, ``memory critical: ...``,
  ``required child ...``), or ``supervisor unreachable (...)``;
- the catalog and storage answering a ``health`` call within the probe's deadline;
- this replica's process: a circuit breaker it holds open or half-open for a
  required plugin (``dwray.core.resilience.process_guards``), and its node's
  memory at ``critical`` (``dwray.core.memory_pressure.shared_monitor``). A
  replica whose own calls to storage are failing fast must leave rotation even
  while the supervisor, which sees the plugin answer pings, still says ready.
  A half-open breaker awaits trial calls, which a replica out of rotation does
  not get: the route makes them itself (``serve_apps.gateway.trial_calls``).

``checks`` keeps one entry per source, ``"ok"`` when it passes; ``reasons``
lists what failed, most fundamental first.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["OPEN_STATES", "Readiness", "assess", "breaker_reasons", "memory_reason"]

OPEN_STATES = ("open", "half_open")


@dataclass
class Readiness:
    """What ``/healthz/ready`` answers: ready when no reason is left."""

    reasons: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return not self.reasons

    @property
    def status_code(self) -> int:
        return 200 if self.ready else 503

    def body(self) -> dict[str, Any]:
        if self.ready:
            return {"status": "ready", "checks": self.checks}
        return {"status": "not ready", "reasons": self.reasons, "checks": self.checks}


def _error_name(error: BaseException) -> str:
    return type(error).__name__


def breaker_reasons(guards: Mapping[str, Mapping[str, Any]], required: Collection[str] | None) -> list[str]:
    """One reason per plugin this process's breaker holds open or half-open, if that plugin is required.

    ``guards`` is ``process_guards().snapshot()``; ``required`` the ids of the
    required plugins (``None``: not known, so every plugin counts as required).
    """
    reasons = []
    for child in sorted(guards):
        snapshot = guards[child]
        state = snapshot.get("state")
        if state not in OPEN_STATES or (required is not None and child not in required):
            continue
        left = snapshot.get("opened_for")
        detail = f", {left:.1f} s left open" if isinstance(left, int | float) and state == "open" else ""
        failed, slow = snapshot.get("failure_rate"), snapshot.get("slow_call_rate")
        rates = (f", {failed:.0f}% of calls failed, {slow:.0f}% slow"
                 if isinstance(failed, int | float) and isinstance(slow, int | float) else "")
        reasons.append(f"breaker {state} in this replica: {child}{rates}{detail}")
    return reasons


def memory_reason(memory: Mapping[str, Any] | None) -> str | None:
    """``memory critical: ...`` when this process's monitor (``MemoryMonitor.status()``) says critical."""
    if not memory or memory.get("level") != "critical":
        return None
    used, limit = memory.get("used"), memory.get("limit")
    source = memory.get("source") or "memory"
    if isinstance(used, int) and isinstance(limit, int) and limit > 0:
        return (f"memory critical in this replica: {used} of {limit} bytes in use "
                f"({used / limit:.0%}, {source})")
    return f"memory critical in this replica ({source})"


def assess(*, draining: bool, supervisor: tuple[bool, str] | BaseException | None,
           probes: Mapping[str, BaseException | None], guards: Mapping[str, Mapping[str, Any]],
           required: Collection[str] | None, memory: Mapping[str, Any] | None) -> Readiness:
    """Compose readiness from what the route gathered.

    ``supervisor`` is ``supervisor.ready()``'s answer, the error that call
    raised, or ``None`` when it was not asked (draining: no remote call is made
    for a replica on its way out). ``probes`` maps a plugin's name
    (``catalog``, ``storage``) to the error its ``health`` call raised, or
    ``None`` when it answered.
    """
    result = Readiness()
    if draining:
        result.reasons.append("draining")
        result.checks["draining"] = "draining"
    if isinstance(supervisor, BaseException):
        result.checks["plugins"] = f"supervisor unreachable ({_error_name(supervisor)})"
        result.reasons.append(result.checks["plugins"])
    elif supervisor is not None:
        ok, reason = supervisor
        result.checks["plugins"] = "ok" if ok else reason
        if not ok:
            result.reasons.append(reason)
    for name in sorted(probes):
        error = probes[name]
        result.checks[name] = "ok" if error is None else f"unreachable ({_error_name(error)})"
        if error is not None:
            result.reasons.append(f"{name} {result.checks[name]}")
    breakers = breaker_reasons(guards, required)
    result.checks["breakers"] = "ok" if not breakers else "; ".join(breakers)
    result.reasons.extend(breakers)
    critical = memory_reason(memory)
    result.checks["memory"] = "ok" if critical is None else critical
    if critical is not None:
        result.reasons.append(critical)
    return result
