"""Gateway coordinator: the one place the gateway's Serve replicas meet.

Every replica reports, about every half second from a background task, its
metrics exposition and how many requests it has in flight; the reply is the
control state every replica must follow: ``draining`` (shutdown has begun:
readiness turns 503, new requests are refused) and ``epoch`` (bumped by the
admin API after access keys change, so replicas drop their caches; compare it
for inequality, since a new coordinator starts again at 0).

Any replica serving ``/metrics`` reads :meth:`GatewayCoordinator.snapshots`;
the process shutting the gateway down calls ``set_draining(True)`` and then
``wait_drained(timeout)``. The actor holds the latest report per replica and
two flags, nothing more; it is never on the data path. A replica that stops
reporting (it died, or Serve scaled it down) is dropped once its report is
older than ``max_age`` seconds.

The coordinator heals: killed with SIGKILL (or lost with its node) Ray
restarts it (``max_restarts=-1``; every method is safe to run again, so
calls in flight are retried too), and one removed for good (``ray.kill``)
is created again, detached and by name, by the next replica whose report
finds it gone (:func:`ensure_coordinator`). Either way it starts empty: the
replicas' next reports (every half second) fill it again; a restarted actor
starts its epoch at a random number, so every replica sees it move and drops
its key caches (a change made while it was down is not missed); and a replica
that was told to drain tells the new actor so (a replica's drain is one way),
so a drain survives the restart.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, replace
from typing import Any

import ray

from dwray.errors import InvalidArgument

__all__ = ["DEFAULT_NAME", "GatewayCoordinator", "create_coordinator", "ensure_coordinator", "find_coordinator"]

DEFAULT_NAME = "dwray:gateway"
DEFAULT_MAX_AGE = 30.0


@dataclass(frozen=True)
class _Report:
    exposition: bytes
    in_flight: int
    at: float  # time.monotonic() of the actor when the report arrived
    # True when the replica had already been told "draining" before it sent this,
    # so its in-flight count includes no request it admitted unaware of the drain.
    knew_draining: bool


def _check_age(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InvalidArgument(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


# Every method only sets or reads the latest state (bump_epoch's second run bumps once more: harmless, replicas
# compare the epoch for inequality), so calls lost with a killed actor are retried on its restart.
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=3)
class GatewayCoordinator:
    """Latest report per gateway replica plus the draining flag and cache epoch; see the module docstring."""

    def __init__(self, max_age: float = DEFAULT_MAX_AGE) -> None:
        self._max_age = _check_age("max_age", max_age)
        self._reports: dict[str, _Report] = {}
        # Replicas whose last reply said "draining"; reset when draining is set again.
        self._told: set[str] = set()
        self._draining = False
        # Restarted by Ray after a crash: an epoch no replica holds, so all of them drop their caches.
        restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._epoch = secrets.randbelow(1 << 30) + 1 if restarted else 0

    async def report(self, replica_id: str, exposition: bytes, in_flight: int) -> dict[str, Any]:
        """Store ``replica_id``'s latest snapshot; answer the control state it must follow."""
        if not isinstance(replica_id, str) or not replica_id:
            raise InvalidArgument(f"replica id must be a non-empty string, got {replica_id!r}")
        if not isinstance(exposition, bytes):
            raise InvalidArgument(f"exposition must be bytes, got {type(exposition).__name__}")
        if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 0:
            raise InvalidArgument(f"in_flight must be a non-negative int, got {in_flight!r}")
        knew = self._draining and replica_id in self._told
        self._reports[replica_id] = _Report(exposition, in_flight, time.monotonic(), knew)
        if self._draining:
            self._told.add(replica_id)
        return self._control()

    async def forget(self, replica_id: str) -> bool:
        """Drop a replica's report (it is shutting down); ``True`` if there was one."""
        self._told.discard(replica_id)
        return self._reports.pop(replica_id, None) is not None

    async def snapshots(self, max_age: float | None = None) -> dict[str, bytes]:
        """The latest exposition of every replica that reported within ``max_age`` seconds.

        ``max_age`` defaults to the actor's own (30 s unless created with another).
        """
        return {replica: r.exposition for replica, r in self._fresh(max_age).items()}

    async def set_draining(self, flag: bool) -> dict[str, Any]:
        """Start (or call off) draining; answer the new control state."""
        if not isinstance(flag, bool):
            raise InvalidArgument(f"draining flag must be a bool, got {flag!r}")
        if flag and not self._draining:
            # A new drain: earlier acknowledgements belong to one that was called off.
            self._told.clear()
            self._reports = {k: replace(r, knew_draining=False) for k, r in self._reports.items()}
        self._draining = flag
        return self._control()

    async def bump_epoch(self) -> int:
        """Tell every replica to drop its caches (access keys changed); answer the new epoch."""
        self._epoch += 1
        return self._epoch

    async def control(self) -> dict[str, Any]:
        """``{"draining": bool, "epoch": int}``."""
        return self._control()

    async def in_flight(self, max_age: float | None = None) -> int:
        """Requests in flight over every replica that reported within ``max_age`` seconds."""
        return sum(r.in_flight for r in self._fresh(max_age).values())

    async def wait_drained(self, timeout: float, poll: float = 0.1, max_age: float | None = None) -> bool:
        """Wait until draining and every fresh replica reported 0 in flight; ``False`` after ``timeout`` s.

        A report counts only once its replica had been told to drain by the reply
        to an earlier report, so no request admitted before it knew is missed.
        With no fresh replica left, nothing is in flight: that is drained too.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
            raise InvalidArgument(f"timeout must be a non-negative number of seconds, got {timeout!r}")
        _check_age("poll", poll)
        deadline = time.monotonic() + timeout
        while True:
            if self._drained(max_age):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(poll, remaining))

    def _drained(self, max_age: float | None) -> bool:
        if not self._draining:
            return False
        return all(r.knew_draining and r.in_flight == 0 for r in self._fresh(max_age).values())

    def _control(self) -> dict[str, Any]:
        return {"draining": self._draining, "epoch": self._epoch}

    def _fresh(self, max_age: float | None) -> dict[str, _Report]:
        """Reports younger than ``max_age`` (the actor's default when None); older ones are dropped."""
        limit = self._max_age if max_age is None else _check_age("max_age", max_age)
        oldest = time.monotonic() - limit
        for replica in [k for k, r in self._reports.items() if r.at < oldest]:
            del self._reports[replica]
            self._told.discard(replica)
        return dict(self._reports)


def create_coordinator(namespace: str, name: str = DEFAULT_NAME, detached: bool = False,
                       max_age: float = DEFAULT_MAX_AGE) -> Any:
    """Create the coordinator named ``name`` in ``namespace``, or return the one already there."""
    options: dict[str, Any] = {"name": name, "namespace": namespace, "get_if_exists": True}
    if detached:
        options["lifetime"] = "detached"
    return GatewayCoordinator.options(**options).remote(max_age)


def ensure_coordinator(namespace: str, name: str = DEFAULT_NAME) -> Any:
    """The running coordinator, or a new detached one when none runs (it was removed for good).

    Replicas call this when their handle's actor is dead; several may at once:
    ``get_if_exists`` makes them all end up with the same actor.
    """
    found = find_coordinator(namespace, name)
    if found is not None:
        return found
    try:
        return create_coordinator(namespace, name, detached=True)
    except ValueError:  # another replica created it between the two calls
        found = find_coordinator(namespace, name)
        if found is None:
            raise
        return found


def find_coordinator(namespace: str, name: str = DEFAULT_NAME) -> Any | None:
    """The coordinator's handle, or ``None`` if none is running under that name."""
    try:
        return ray.get_actor(name, namespace=namespace)
    except ValueError:
        return None
