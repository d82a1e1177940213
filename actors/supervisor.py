"""Supervisor: runs plugin host actors under Erlang/OTP supervision.

The rules (restart types, strategies, restart intensity, backoff) are pure
logic in ``dwray.core.supervision``; this async actor applies them to Ray actors
(the Ray work of starting and stopping one child's host is in
``actors.supervised_child``):

- ``start()`` starts children in order: create the host actor (named
  ``dwray:<child id>``, ``max_restarts=0``), wait for Ray to place it
  (``start_timeout``), handshake (``handshake_timeout``), check the manifest.
  A required child that is refused or silent fails ``start()`` with
  ``PluginRefused`` naming the reason, after the children already started are
  stopped again. A child that is not required and fails is handled like a
  crash (restarted per its restart type).
- ``stop()`` stops children in reverse start order. An orderly stop gives a
  child its ``shutdown`` seconds for the host's ``shutdown()`` (new calls are
  refused, calls in flight finish, then the plugin's ``close()``), ends the
  actor gracefully (so replies in flight are delivered), and ``ray.kill``s it
  if anything is left; ``brutal_kill`` kills at once.
- Exits are detected by periodic health pings (a ping not answered within
  ``ping_timeout`` is a hung plugin: killed and restarted; a dead actor is
  restarted), by ``report_failure`` from callers (missed deadline, actor
  death) or from the host itself (memory cap), and by ``report_exit`` (the
  plugin asked to stop: a normal exit).
- Exits are handled one at a time, in arrival order. Reports naming an old
  generation are ignored: each (re)start of a child increments its generation.
- More than ``max_restarts`` restarts within ``period`` seconds escalates. As
  in OTP the failure goes up a level: every child is stopped and, after a
  backoff that doubles with each escalation in a row (``tree_backoff_base``
  up to ``tree_backoff_max``, jittered), the whole tree is started again,
  fresh hosts recovering their state from durable storage, for as long as
  failures continue. Meanwhile the supervisor is "restarting": ``ready()``
  answers ``(False, "restarting: ...")`` and ``handle()`` waits (up to its
  ``wait``) then raises ``NotReady``. Only ``max_tree_restarts``, when set,
  ends this: the supervisor is then "failed" for good.
- Killed itself, the supervisor is restarted by Ray (``max_restarts=-1``): its
  hosts died with it (Ray ends the actors an actor owns), and the new
  incarnation starts the tree again on its own, healing as above when that
  fails. Callers' handles re-resolve (``actors.handles``). Its counts and
  events begin again with that restart (``tree_restarts`` 1, the event
  "supervisor_restarted"): they lived in the process that died.
- Children whose spec asks for a ``standby`` (the catalog, storage, stages)
  get a spare host prepared in the background after each start; a restart
  promotes it, so recovery does not wait for a worker process to start.
  Once half the restart intensity is used (an escalation may be near), every
  child gets a spare. At an escalation the children still without one get a
  host started at once, and the backoff counts from the escalation: the old
  tree stops and the new hosts start during the wait, and the tree restart
  promotes them.

Callers' circuit breakers report their state changes (``breaker_changed``): a
required child whose breaker some caller holds open makes the warehouse not
ready. A memory monitor (``dwray.core.memory_pressure``) in the supervisor's
process tells every running plugin when the node's memory pressure changes
(``on_memory_pressure``), and critical pressure makes the warehouse not ready.

Hot reload: ``reconfigure(children, record)`` takes the child specs of a new
config (``actors.config_reload`` works them out and validates the file) and
applies them all or nothing: the new config of every child that must restart
is first checked against its running plugin's config schema (from its
handshake manifest); children whose only changes are read by callers or by
the supervisor (deadlines, resilience) get their new spec without a restart;
the others are restarted one by one, in start order, with their new spec. If
one of them fails its handshake, every changed child goes back to its old
spec (restarted again if it was restarted) and the reload is refused. Every
reload, applied or refused, is audited with its (redacted) diff and kept in
``reloads()``; ``config_revision()`` counts those applied, for gateway replicas
to notice. A supervisor that Ray restarts begins again from the specs it was
created with (the config ``dw up`` started).

Secret rotation: ``secret_rotated(ref)`` tells every running child's host
that the secret ``ref`` names has a new value (``dw secret rotate`` calls it
when a warehouse runs for the data dir); each host drops the cached value and
calls its plugin's ``on_secret_rotated`` hook, so plugins pick up the new
value without a restart. Hosts also watch their plugin's secrets
periodically (``actors.plugin_host.SecretWatch``) for rotations made outside
dwray.

The supervisor is never on the data path: callers get ``(actor handle,
generation)`` once from ``handle()`` and call the plugin host directly
(``actors.handles.PluginHandle``).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import threading
import time
from collections import deque
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.handles import DEFAULT_NAMESPACE, death_reason
from actors.plugin_host import DEFAULT_CGROUP_ROOT
from actors.supervised_child import (
    StartFailed,
    SupervisedChild,
    drop_standby,
    host_options,
    kill_host,
    prepare_standby,
    prestart_host,
    start_host,
    stop_host,
    unwrap_task_error,
)
from dwray.core.config_diff import ChildPlan, plan_children
from dwray.core.plugins import check_manifest
from dwray.core.supervision import (
    Backoff,
    ChildSpec,
    RestartIntensity,
    SupervisorSpec,
    TreeBackoff,
    plan_restart,
    should_restart,
)
from dwray.errors import (
    DwrayError,
    InvalidArgument,
    NotReady,
    PluginNotFound,
    PluginRefused,
    PluginUnavailable,
)
from dwray.secret_ref import parse_secret_ref

__all__ = ["DEFAULT_NAMESPACE", "Supervisor", "create_supervisor", "host_options"]

logger = logging.getLogger(__name__)

# Children in these states are meant to be running (a strategy takes them along).
_ALIVE = frozenset({"starting", "running", "restarting"})
# Children in these states stay down until restart_child() or a new start().
_DOWN = frozenset({"stopped", "terminated", "failed", "refused"})
# Supervisor events that go to the audit log (with a child that has the "audit"
# capability), and their outcome: a plugin refused admission is a denied access.
_AUDITED_EVENTS = {"refused": "denied", "start_failed": "error"}
_MAX_EVENTS = 1000
_MAX_RELOADS = 100
# An open breaker's report counts for its open time plus this, unless a newer report replaces it.
_BREAKER_SLACK = 2.0
_BREAKER_RANK = {"closed": 0, "half_open": 1, "open": 2}


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)
class Supervisor:
    """Supervises plugin host actors; see the module docstring."""

    def __init__(self, spec: SupervisorSpec, namespace: str = DEFAULT_NAMESPACE,
                 cgroup_root: str = str(DEFAULT_CGROUP_ROOT)) -> None:
        if ray.get_runtime_context().was_current_actor_reconstructed:
            spec = _reloaded_spec() or spec  # the children as the last applied reload left them
        self._spec = spec
        _configure_telemetry(spec)
        self._namespace = namespace
        self._cgroup_root = cgroup_root
        self._children = {child.id: SupervisedChild(child) for child in spec.children}
        self._order = spec.order
        self._restart_types = {child.id: child.restart for child in spec.children}
        self._intensity = RestartIntensity(spec.max_restarts, spec.period)
        self._backoff = Backoff(spec.backoff_base, spec.backoff_max)
        self._state = "idle"
        self._reason = ""
        self._events: deque[dict[str, Any]] = deque(maxlen=_MAX_EVENTS)
        self._seq = 0
        self._changed = asyncio.Event()
        self._ops = asyncio.Lock()
        self._exits: asyncio.Queue[tuple[str, int, str, bool]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._me: Any = None
        # Plugins refused admission (untrusted, unsigned, tampered, bad manifest) or failing to
        # start, as audit records, until a child with the "audit" capability runs to take them.
        self._audit_pending: deque[dict[str, Any]] = deque(maxlen=_MAX_EVENTS)
        self._audit_sends: set[asyncio.Task[None]] = set()
        # Escalation that heals: whole-tree restarts.
        self._tree_backoff = TreeBackoff(spec.tree_backoff_base, spec.tree_backoff_max)
        self._tree_restarts = 0  # whole-tree restarts so far (a restart of the supervisor counts too)
        self._tree_attempt = 0  # escalations in a row, for the backoff
        self._tree_started_at = time.monotonic()
        self._last_failure: str | None = None  # what escalated last
        self._restart_at: float | None = None  # when the scheduled tree restart begins
        self._tree_task: asyncio.Task[None] | None = None
        # Callers' breakers: child id -> caller -> (state, monotonic time the report stops counting).
        self._breakers: dict[str, dict[str, tuple[str, float]]] = {}
        self._memory: Any = None  # the process's MemoryMonitor once started
        self._memory_level = "normal"
        self._reconstructed = False
        self._recovery: asyncio.Task[Any] | None = None
        self._tree_epoch = secrets.token_hex(8)  # new at every start of the tree
        # Hot reloads (reconfigure): how many were applied, and the latest ones, applied or refused.
        self._config_revision = 0
        self._reloads: deque[dict[str, Any]] = deque(maxlen=_MAX_RELOADS)
        if ray.get_runtime_context().was_current_actor_reconstructed:
            # Ray restarted this supervisor after its process died: start the tree again at once.
            # The first call to reach it starts the recovery; a thread makes that call so that
            # it begins even if no caller comes.
            self._reconstructed = True
            threading.Thread(target=_kick_recovery, args=(ray.get_runtime_context().current_actor,),
                             name="supervisor-recovery", daemon=True).start()

    # -- bookkeeping ------------------------------------------------------------

    def _event(self, kind: str, child: SupervisedChild | None = None, reason: str = "", **extra: Any) -> None:
        self._seq += 1
        event = {"seq": self._seq, "time": time.time(), "kind": kind,
                 "child": child.id if child else None,
                 "generation": child.generation if child else None, "reason": reason, **extra}
        self._events.append(event)
        log = logger.warning if kind in {"failure", "start_failed", "refused", "escalated"} else logger.info
        log("supervisor %s: %s %s gen %s %s", self._spec.name, kind, event["child"], event["generation"], reason)
        if kind in _AUDITED_EVENTS and child is not None:
            self._audit_pending.append({
                "principal": f"supervisor:{self._spec.name}", "action": "dwray:AdmitPlugin",
                "resource": f"plugin:{child.id}:{child.spec.plugin}", "outcome": _AUDITED_EVENTS[kind],
                "error": reason[:500] or None})
            self._flush_audit()

    def _flush_audit(self) -> None:
        """Hand pending plugin refusals to the running audit child, if there is one (else keep them)."""
        auditor = next((c for c in self._children.values() if c.state == "running" and c.manifest is not None
                        and "audit" in c.manifest.capabilities), None)
        if auditor is None or not self._audit_pending:
            return
        records = list(self._audit_pending)
        self._audit_pending.clear()

        async def send() -> None:
            try:
                await auditor.host.call.remote("append_many", records)
            except Exception as exc:  # noqa: BLE001 - put back for the audit child's next generation
                logger.warning("supervisor %s: could not audit %d plugin event(s): %s", self._spec.name,
                               len(records), type(exc).__name__)
                self._audit_pending.extendleft(reversed(records))

        task = asyncio.get_running_loop().create_task(send())
        self._audit_sends.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._audit_sends.discard)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    def _child(self, child_id: str) -> SupervisedChild:
        try:
            return self._children[child_id]
        except KeyError:
            raise PluginNotFound(child_id, ", ".join(self._order) or "none") from None

    def _set_state(self, child: SupervisedChild, state: str) -> None:
        child.state = state
        self._notify()
        if state == "running" and self._audit_pending:
            self._flush_audit()

    # -- starting and stopping one child -------------------------------------------

    async def _start_child(self, child: SupervisedChild) -> None:
        """Start a new generation of ``child``; raise ``StartFailed`` if it is not admitted."""
        child.generation += 1
        child.pid = child.node_id = child.manifest = None
        self._set_state(child, "starting")
        self._event("starting", child)
        preparing = child.standby_task
        if child.standby is None and preparing is not None and not preparing.done():
            # Its spare's worker process is already starting: taking it is sooner than starting another.
            await asyncio.wait({preparing}, timeout=child.spec.start_timeout)
        standby = await start_host(child, self._namespace, self._me, self._cgroup_root)
        child.admitted = True
        child.started_at = time.monotonic()
        self._set_state(child, "running")
        self._event("started", child, pid=child.pid, node_id=child.node_id, actor=child.host_name, standby=standby)

    def _ensure_standbys(self) -> None:
        """Prepare a spare host, in the background, for each running child whose spec asks for one."""
        for child in self._children.values():
            if not child.spec.standby or child.state != "running" or child.standby is not None:
                continue
            if child.standby_task is not None and not child.standby_task.done():
                continue
            child.standby_task = asyncio.get_running_loop().create_task(self._prepare_standby(child))

    async def _standbys_later(self) -> None:
        """The first start's spares, once the start's other work (the gateway's, say) has had the CPU."""
        await asyncio.sleep(self._spec.standby_delay)
        if self._state == "running":
            self._ensure_standbys()

    def _prepare_tree_spares(self) -> None:
        """Half the restart intensity is used: an escalation may be near. Every child gets a spare host
        (not only those whose spec keeps one), prepared in the background while the tree still runs,
        so that a tree restart promotes ready hosts instead of waiting for as many worker processes
        starting at once. A spare not taken by a tree restart is taken by its child's next restart."""
        for child in self._children.values():
            if child.standby is not None or (child.standby_task is not None and not child.standby_task.done()):
                continue
            child.standby_task = asyncio.get_running_loop().create_task(self._prepare_standby(child))

    async def _prepare_standby(self, child: SupervisedChild) -> None:
        try:
            await prepare_standby(child, self._namespace, self._me, self._cgroup_root)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - without a standby the next restart creates a host as usual
            reason = unwrap_task_error(exc)
            self._event("standby_failed", child, f"{type(reason).__name__}: {reason}"[:300])
        else:
            self._event("standby_ready", child)

    async def _stop_child(self, child: SupervisedChild, why: str) -> None:
        """Stop one child per its ``shutdown`` spec (see the module docstring); the caller sets its state."""
        how = await stop_host(child)
        if how is not None:
            self._event("stopped", child, why, how=how)

    # -- failures ---------------------------------------------------------------------

    def _exit(self, child_id: str, generation: int, reason: str, normal: bool, actor_id: str | None = None) -> bool:
        """Take note of an exit of ``child_id`` at ``generation``; ``False`` if the report is stale.

        With ``actor_id`` the report also names the host: a report about a host
        of an earlier incarnation of this supervisor (whose generations began
        again at 1) is stale even when its generation number matches.
        """
        child = self._child(child_id)
        if self._state not in {"starting", "running"} or generation != child.generation \
                or child.state != "running":
            return False
        if actor_id is not None and (child.host is None or child.host._actor_id.hex() != actor_id):
            return False
        child.last_failure = None if normal else reason
        self._set_state(child, "restarting")
        self._event("exit" if normal else "failure", child, reason)
        if should_restart(child.spec.restart, normal):
            # Its next host's worker process starts now: the exit may wait behind another restart
            # (exits are handled one at a time), and the new host's start overlaps that wait.
            prestart_host(child, self._namespace, self._me, self._cgroup_root)
        self._exits.put_nowait((child_id, generation, reason, normal))
        return True

    async def _supervise(self) -> None:
        while True:
            child_id, generation, reason, normal = await self._exits.get()
            async with self._ops:
                if self._state != "running":
                    continue
                try:
                    await self._handle_exit(self._children[child_id], generation, reason, normal)
                except Exception as exc:  # noqa: BLE001 - a supervisor that cannot supervise must say so
                    logger.exception("supervisor %s: handling the exit of %s failed", self._spec.name, child_id)
                    await self._escalate(f"the supervisor failed while handling child {child_id!r}: {exc!r}")

    async def _handle_exit(self, child: SupervisedChild, generation: int, reason: str, normal: bool) -> None:
        if generation != child.generation:
            return
        if normal:
            await self._stop_child(child, reason)
        else:
            kill_host(child)
        alive = {c.id for c in self._children.values() if c.id != child.id and c.state in _ALIVE}
        plan = plan_restart(self._spec.strategy, child.id, self._order, self._restart_types, alive, normal)
        if not plan.restarts:
            self._set_state(child, "terminated" if normal else "failed")
            self._event("down", child, f"{child.spec.restart.value} child stays down")
            return
        if not self._intensity.record():
            await self._escalate(f"{self._intensity.describe()}; last: child {child.id!r}: {reason}")
            return
        if time.monotonic() - child.started_at > self._spec.period:
            child.attempts = 0
        self._event("restart", child, reason, stop=list(plan.stop), start=list(plan.start))
        for sibling_id in plan.stop:
            sibling = self._children[sibling_id]
            self._set_state(sibling, "restarting")
            await self._stop_child(sibling, f"{self._spec.strategy.value} restart after {child.id!r} exited")
        for dropped in plan.drop:
            self._set_state(self._children[dropped], "stopped")
        # As in OTP the first restart is immediate; restarts in a row back off.
        delay = self._backoff.delay(child.attempts - 1) if child.attempts else 0.0
        child.attempts += 1
        if delay:
            await asyncio.sleep(delay)
        await self._start_in_order(plan.start, during_start=False)
        if self._state == "running" and 2 * self._intensity.count() >= self._spec.max_restarts:
            self._prepare_tree_spares()  # after the restart's own hosts, not ahead of them
        self._ensure_standbys()

    async def _start_in_order(self, child_ids: tuple[str, ...] | list[str], during_start: bool,
                              first: bool = False) -> None:
        """Start children in order.

        During ``start()`` a required child that fails raises ``PluginRefused``.
        Otherwise a refused child stays down (escalating if it is required) and
        a retryable failure is an exit like any other: it goes through the
        strategy, and the rest of this sequence, left "restarting", is taken
        along by the next plan. ``first``: their first start (not a restart).
        """
        if len(child_ids) > 1:
            for child_id in child_ids:
                prestart_host(self._children[child_id], self._namespace, self._me, self._cgroup_root)
        for child_id in child_ids:
            child = self._children[child_id]
            if not during_start and not first:
                child.restarts += 1
            try:
                await self._start_child(child)
            except StartFailed as failed:
                child.last_failure = failed.reason
                if during_start and child.spec.required:
                    self._set_state(child, "failed")
                    self._event("start_failed", child, failed.reason)
                    raise PluginRefused(child.id, failed.reason) from None
                if not failed.retry:
                    self._set_state(child, "refused")
                    self._event("refused", child, failed.reason)
                    if child.spec.required:
                        await self._escalate(f"required child {child.id!r} refused: {failed.reason}")
                        return
                    continue
                self._set_state(child, "restarting")
                self._event("start_failed", child, failed.reason)
                self._exits.put_nowait((child.id, child.generation, failed.reason, False))
                if not during_start:
                    return

    async def _escalate(self, reason: str) -> None:
        """Stop the tree and schedule its restart after the backoff (or give up past max_tree_restarts)."""
        self._last_failure = reason
        self._event("escalated", None, reason)
        self._cancel_pings()
        escalated_at = time.monotonic()
        # From now on callers wait for the next tree (handle()), and exit reports are stale (_exit()):
        # the children stop together below, and none of them is to be served while they do.
        self._state = "restarting"
        self._reason = reason
        limit = self._spec.max_tree_restarts
        giving_up = limit is not None and self._tree_restarts >= limit
        if not giving_up:
            # The next tree's hosts start now, while this one stops and the backoff runs: the restart
            # then promotes them instead of waiting for worker processes (a child with a spare keeps it).
            for child_id in self._order:
                prestart_host(self._children[child_id], self._namespace, self._me, self._cgroup_root)
        # The spares stay: they are fresh hosts whose plugins never ran, and they make the restart quick.
        await self._stop_all(f"escalated: {reason}", keep_standbys=True, together=True)
        if giving_up:
            for child in self._children.values():
                drop_standby(child)
            self._state = "failed"
            self._reason = f"gave up after {self._tree_restarts} tree restart(s) (max_tree_restarts): {reason}"
            self._event("gave_up", None, self._reason)
            self._notify()
            return
        if time.monotonic() - self._tree_started_at > 2 * self._spec.period:
            self._tree_attempt = 0  # the tree ran well since its last restart: start the backoff over
        delay = self._tree_backoff.delay(self._tree_attempt)
        self._tree_attempt += 1
        self._state = "restarting"
        self._reason = reason
        # The backoff counts from the escalation: the time the old tree took to stop is part of it.
        self._restart_at = escalated_at + delay
        wait = max(0.0, self._restart_at - time.monotonic())
        self._event("tree_restart_scheduled", None, reason, delay=round(delay, 3), wait=round(wait, 3))
        self._tree_task = asyncio.get_running_loop().create_task(self._restart_tree(wait), name="tree-restart")
        self._notify()

    async def _restart_tree(self, delay: float) -> None:
        """After ``delay`` seconds: start the whole tree again, fresh, as ``start()`` does."""
        await asyncio.sleep(delay)
        async with self._ops:
            if self._state != "restarting":
                return
            self._tree_restarts += 1
            self._restart_at = None
            self._event("tree_restarting", None, self._reason, restart=self._tree_restarts)
            self._intensity = RestartIntensity(self._spec.max_restarts, self._spec.period)
            while not self._exits.empty():  # reports about hosts that are gone
                self._exits.get_nowait()
            for child in self._children.values():
                child.attempts = 0
            try:
                await self._start_in_order(self._order, during_start=True)
            except PluginRefused as exc:
                await self._stop_all(f"tree restart failed: {exc}", keep_standbys=True)
                await self._escalate(f"tree restart {self._tree_restarts} failed: {exc}")
                return
            self._running()
            self._event("tree_restarted", None, restart=self._tree_restarts)

    def _running(self, first: bool = False) -> None:
        """The tree is up: serve, ping, prepare standbys (after ``standby_delay`` on the ``first`` start)."""
        self._state = "running"
        self._reason = ""
        self._tree_started_at = time.monotonic()
        self._tree_epoch = secrets.token_hex(8)
        self._tasks = [task for task in self._tasks if not task.done() and task.get_name() != "pings"]
        if not any(task.get_name() == "supervise" for task in self._tasks):
            self._tasks.append(asyncio.get_running_loop().create_task(self._supervise(), name="supervise"))
        self._tasks.append(asyncio.get_running_loop().create_task(self._ping_loop(), name="pings"))
        if first and self._spec.standby_delay > 0:
            self._tasks.append(asyncio.get_running_loop().create_task(self._standbys_later(), name="standbys"))
        else:
            self._ensure_standbys()
        if self._memory_level != "normal":  # the hosts are new: tell them the level they start under
            self._memory_changed(self._memory_level, self._memory_level)
        self._notify()

    async def _stop_all(self, why: str, keep_standbys: bool = False, together: bool = False) -> None:
        """Stop every child: in reverse start order (an orderly stop), or ``together`` (an escalation:
        the tree is failing, and what it stops for is to start again soon; each child still gets its
        ``shutdown``, and acknowledged writes are durable whatever the order)."""
        if not keep_standbys:
            for child in self._children.values():
                drop_standby(child)
        stopping = [self._children[child_id] for child_id in reversed(self._order)]
        if together:
            results = await asyncio.gather(*(self._stop_child(child, why) for child in stopping
                                             if child.host is not None), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result  # a cancellation
                if isinstance(result, Exception):
                    logger.warning("supervisor %s: a stop failed (%s): %s", self._spec.name, why, result)
            for child in stopping:
                if child.host is not None:  # its stop failed unexpectedly: it goes anyway
                    kill_host(child)
        else:
            for child in stopping:
                if child.host is not None:
                    await self._stop_child(child, why)
        for child in stopping:
            if child.state in _ALIVE:
                child.state = "stopped"
        self._notify()

    # -- health pings ------------------------------------------------------------------

    def _cancel_pings(self) -> None:
        for task in self._tasks:
            if task.get_name() == "pings":
                task.cancel()

    async def _ping_loop(self) -> None:
        while True:
            await asyncio.sleep(self._spec.ping_interval)
            running = [c for c in self._children.values() if c.state == "running" and c.host is not None]
            results = await asyncio.gather(*(self._ping(child) for child in running), return_exceptions=True)
            for child, result in zip(running, results, strict=True):
                if isinstance(result, Exception):
                    logger.error("supervisor %s: pinging %s failed: %r", self._spec.name, child.id, result)

    async def _ping(self, child: SupervisedChild) -> None:
        generation, host, timeout = child.generation, child.host, self._spec.ping_timeout
        try:
            health = await asyncio.wait_for(host.ping.remote(), timeout)
        except TimeoutError:
            reason = f"health ping did not answer within {timeout:g} s (ping_timeout); killed"
        except RayActorError as exc:
            reason = f"actor died: {death_reason(exc)}"
        except RayTaskError as exc:
            reason = f"health check failed: {unwrap_task_error(exc)}"
        else:
            if isinstance(health, dict) and health.get("ok") is False:
                reason = f"plugin reports it is unhealthy: {health}"
            else:
                child.health = health
                return
        self._exit(child.id, generation, reason, normal=False)

    # -- memory pressure -----------------------------------------------------------------

    def _watch_memory(self) -> None:
        if self._memory is not None:
            return
        from dwray.core.memory_pressure import shared_monitor

        self._memory = shared_monitor(self._spec.memory)
        if self._memory is None:
            return
        loop = asyncio.get_running_loop()
        self._memory.add_listener(
            lambda old, new, reading: loop.call_soon_threadsafe(self._memory_changed, old, new))
        self._memory_level = self._memory.level

    def _memory_changed(self, old: str, new: str) -> None:
        """On the event loop: note the new level and tell every running plugin."""
        self._memory_level = new
        self._event("memory_pressure", None, f"{old} -> {new}")
        self._notify()
        for child in self._children.values():
            if child.state == "running" and child.host is not None:
                task = asyncio.get_running_loop().create_task(self._tell_memory(child, new))
                self._audit_sends.add(task)
                task.add_done_callback(self._audit_sends.discard)

    async def _tell_memory(self, child: SupervisedChild, level: str) -> None:
        try:
            await asyncio.wait_for(child.host.memory_pressure.remote(level), self._spec.ping_timeout)
        except Exception as exc:  # noqa: BLE001 - a plugin that misses it still runs; its pings tell if it is sick
            logger.warning("supervisor %s: could not tell %s of memory pressure %s: %s", self._spec.name,
                           child.id, level, type(unwrap_task_error(exc)).__name__)

    # -- the actor's API ------------------------------------------------------------

    async def start(self, heal: bool = False) -> dict[str, Any]:
        """Start every child in order; return ``status()``.

        Raises ``PluginRefused`` naming the first required child that was
        refused or did not start, and why; the children already started are
        stopped again and the supervisor is left "failed". With ``heal`` (a
        supervisor that Ray restarted) such a failure escalates instead: the
        tree is restarted after the backoff, as after any escalation.
        """
        if self._state != "idle":
            raise InvalidArgument(f"supervisor {self._spec.name!r} was already started (it is {self._state})")
        self._me = ray.get_runtime_context().current_actor
        self._state = "starting"
        self._event("supervisor_starting")
        self._watch_memory()
        # With defer_optional the children the warehouse serves without (housekeeper, scrubber, bus)
        # start once the rest runs: start() returns sooner, and callers of theirs wait as for any start.
        later = [child_id for child_id in self._order
                 if self._spec.defer_optional and not self._children[child_id].spec.required]
        async with self._ops:
            try:
                await self._start_in_order([c for c in self._order if c not in later], during_start=True)
            except PluginRefused as exc:
                await self._stop_all(f"start failed: {exc}")
                if heal:
                    await self._escalate(f"start after a supervisor restart failed: {exc}")
                    return self._status()
                self._state = "failed"
                self._reason = str(exc)
                raise
            if self._state != "starting":  # stop() was called meanwhile; it stops the children
                return self._status()
            self._running(first=True)
            if later:
                self._tasks.append(asyncio.get_running_loop().create_task(self._start_later(later), name="later"))
        self._event("supervisor_running")
        return self._status()

    async def _start_later(self, child_ids: list[str]) -> None:
        """The deferred first start of the optional children (see ``start()``)."""
        async with self._ops:
            for child_id in child_ids:  # one at a time: one that fails must not leave the rest idle
                if self._state != "running":
                    return  # an escalation or stop() took them along
                child = self._children.get(child_id)  # a reload may have removed it
                if child is not None and child.state == "idle":
                    await self._start_in_order([child_id], during_start=False, first=True)

    async def recover(self) -> dict[str, Any]:
        """After Ray restarted this supervisor: start the tree again (once), healing if that fails."""
        self._recover_if_restarted()
        recovery = self._recovery
        if recovery is not None:
            await asyncio.shield(recovery)
        return self._status()

    def _recover_if_restarted(self) -> None:
        """Begin the recovery of a supervisor that Ray restarted, unless it has begun."""
        if not self._reconstructed or self._recovery is not None or self._state != "idle":
            return
        self._tree_restarts += 1
        self._last_failure = "the supervisor's process died; Ray restarted it"
        self._event("supervisor_restarted", None, self._last_failure)
        self._recovery = asyncio.get_running_loop().create_task(self.start(heal=True), name="recovery")

    async def stop(self) -> dict[str, Any]:
        """Stop every child in reverse start order (orderly, within each one's shutdown); return ``status()``."""
        if self._state in {"stopping", "stopped"}:
            return self._status()
        self._state = "stopping"
        self._notify()
        tasks = [*self._tasks, *([self._tree_task] if self._tree_task is not None else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks = []
        self._tree_task = None
        async with self._ops:
            await self._stop_all("the supervisor is stopping")
        self._state = "stopped"
        _forget_reloaded_spec()
        self._event("supervisor_stopped")
        self._notify()
        return self._status()

    async def handle(self, child_id: str, wait: float = 0.0, newer_than: int | None = None,
                     not_actor: str | None = None, with_epoch: bool = False) -> tuple[Any, ...]:
        """``(actor handle, generation)`` of a running child; with ``with_epoch`` also the tree's epoch.

        The epoch is a token that changes every time the tree starts (after an
        escalation, or in a supervisor that Ray restarted): callers compare it
        to tell that the hosts they cached died with an earlier tree.

        Waits up to ``wait`` seconds while the child is (re)starting, and, with
        ``newer_than``, until its generation is above that one (with
        ``not_actor``, until its host is another actor); while the whole
        tree restarts (escalated) it waits for that too. Raises ``NotReady`` if
        the tree is still restarting after ``wait`` or the supervisor gave up or
        failed to start, ``PluginUnavailable`` if the child is down or still not
        running after ``wait``.
        """
        self._recover_if_restarted()
        child = self._child(child_id)
        deadline = time.monotonic() + wait
        while True:
            if self._state == "failed":
                raise NotReady(f"failed: {self._reason}")
            healing = self._state == "restarting" or (self._state == "idle" and self._reconstructed)
            if self._state not in {"starting", "running"} and not healing:
                raise PluginUnavailable(child_id, f"supervisor {self._spec.name!r} is {self._state}")
            if healing:
                # Nothing is served until the whole tree is up again.
                if time.monotonic() >= deadline:
                    raise NotReady(self._not_ready_reason())
            elif child.state == "running" and (newer_than is None or child.generation > newer_than) \
                    and (not_actor is None or child.host._actor_id.hex() != not_actor):
                return (child.host, child.generation, self._tree_epoch) if with_epoch else \
                    (child.host, child.generation)
            elif child.state in _DOWN:
                detail = f": {child.last_failure}" if child.last_failure else ""
                raise PluginUnavailable(child_id, f"the child is {child.state}{detail}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PluginUnavailable(child_id, f"still {child.state} after waiting {wait:g} s")
            await self._wait_change(remaining)

    async def child_spec(self, child_id: str) -> ChildSpec:
        """The spec of a child (callers take its deadlines from it)."""
        return self._child(child_id).spec

    async def report_failure(self, child_id: str, generation: int, reason: str, actor_id: str | None = None) -> bool:
        """A caller (or the host) saw ``child_id`` at ``generation`` fail: kill and restart it.

        Returns ``False`` when the report is stale (an older generation, another
        host than ``actor_id``, or the child is not running): it is then ignored.
        """
        return self._exit(child_id, generation, reason, normal=False, actor_id=actor_id)

    async def breaker_changed(self, child_id: str, caller: str, state: str, open_for: float | None = None) -> None:
        """A caller's circuit breaker in front of ``child_id`` moved to ``state``.

        An "open" report counts for ``open_for`` seconds (the breaker's own wait
        before it tries again) unless a newer one from that caller replaces it,
        so a caller that died with its breaker open does not hold the warehouse
        not ready.
        """
        self._child(child_id)
        if state not in _BREAKER_RANK:
            raise InvalidArgument(f"breaker state must be one of {sorted(_BREAKER_RANK)}, not {state!r}")
        callers = self._breakers.setdefault(child_id, {})
        if state == "closed":
            callers.pop(caller, None)
        else:
            until = time.monotonic() + float(open_for or 0.0) + _BREAKER_SLACK
            callers[caller] = (state, until if state == "open" else time.monotonic() + 60.0)
        self._event("breaker", self._children[child_id], f"{caller}: {state}")
        self._notify()

    def _breaker_state(self, child_id: str) -> str:
        """The worst state a caller reported for ``child_id``'s breaker, among reports still counting."""
        callers = self._breakers.get(child_id)
        if not callers:
            return "closed"
        now = time.monotonic()
        for caller in [c for c, (_, until) in callers.items() if until < now]:
            del callers[caller]
        return max((state for state, _ in callers.values()), key=_BREAKER_RANK.__getitem__, default="closed")

    async def report_exit(self, child_id: str, generation: int, reason: str) -> bool:
        """The plugin asked to stop: a normal exit (stopped in order; a transient child stays down)."""
        return self._exit(child_id, generation, reason, normal=True)

    async def restart_child(self, child_id: str) -> int:
        """Stop (in order) and start one child again, whatever its state; return the new generation.

        An operator's restart: it takes no sibling along and does not count
        towards the restart intensity. Raises ``PluginRefused`` if the child
        is not admitted (a retryable failure is then handled like a crash).
        """
        child = self._child(child_id)
        async with self._ops:
            if self._state in {"restarting", "failed"}:
                raise NotReady(self._not_ready_reason())
            if self._state != "running":
                raise PluginUnavailable(child_id, f"supervisor {self._spec.name!r} is {self._state}")
            self._set_state(child, "restarting")
            self._event("restart", child, "requested by an operator", stop=[child_id], start=[child_id])
            await self._stop_child(child, "requested by an operator")
            child.attempts = 0
            await self._start_in_order([child_id], during_start=False)
            self._ensure_standbys()
            if child.state != "running":
                raise PluginRefused(child_id, child.last_failure or f"the child is {child.state}")
            return child.generation

    # -- hot reload --------------------------------------------------------------------

    async def reconfigure(self, children: list[ChildSpec], record: dict[str, Any],
                          telemetry: tuple[Any, Any] | None = None) -> dict[str, Any]:
        """Apply a reload's child specs all or nothing (see the module docstring); return what happened.

        ``record`` describes the reload for the audit log and the history:
        ``principal``, ``source`` (the file), ``summary`` (the redacted diff, one
        line), ``changes`` (redacted), and ``refused`` when the caller already
        refused it (an invalid file, a change that cannot be made live): it is
        then only audited and recorded. ``telemetry``: the new ``(TracingConfig,
        LoggingConfig)``, applied to the supervisor's own process once the
        reload is. The result has ``outcome`` ("applied", "unchanged" or
        "refused"), ``reason``, ``revision``, ``restarted``, ``live``,
        ``rolled_back`` and the children's ``generations``.
        """
        result: dict[str, Any] = {"outcome": "refused", "reason": record.get("refused"), "restarted": [],
                                  "live": [], "rolled_back": False}
        if result["reason"] is None:
            async with self._ops:
                if self._state != "running":
                    result["reason"] = f"supervisor {self._spec.name!r} is {self._state}; try again when it runs"
                else:
                    result.update(await self._apply_specs(list(children)))
        if result["outcome"] != "refused" and telemetry is not None:
            self._spec = self._spec.model_copy(update={"tracing": telemetry[0], "logging": telemetry[1]})
            _configure_telemetry(self._spec)
        result["revision"] = self._config_revision
        result["generations"] = {child.id: child.generation for child in self._children.values()}
        self._record_reload(record, result)
        return result

    async def _apply_specs(self, children: list[ChildSpec]) -> dict[str, Any]:
        """Under ``_ops``: check, then swap or restart the changed children; roll back on a failed start."""
        try:
            plan = plan_children([self._children[child_id].spec for child_id in self._order], children)
        except ValueError as exc:
            return {"reason": str(exc)}
        # A host that cannot apply new telemetry settings in place gets them by a restart.
        unable = {child_id for child_id in plan.telemetry if not _tells_telemetry(self._children[child_id].host)}
        plan = ChildPlan(plan.same, tuple(i for i in plan.live if i not in unable),
                         tuple(i for i in self._order if i in plan.restart or i in unable),
                         tuple(i for i in plan.telemetry if i not in unable))
        new = {spec.id: spec for spec in children}
        for child_id in plan.restart:
            child = self._children[child_id]
            if child.manifest is not None and child.spec.plugin == new[child_id].plugin:
                try:
                    check_manifest(child_id, child.manifest, new[child_id].kind, new[child_id].config)
                except PluginRefused as exc:
                    return {"reason": f"the new config of plugin {child_id!r} fails its schema: {exc.reason}"}
        if not plan.changed:
            return {"outcome": "unchanged", "reason": None}
        # A child that is down (refused, failed, stopped) was serving nothing: it takes its new spec at its
        # next start ('dw plugin restart'), and its failing to start cannot refuse the reload.
        down = {child_id for child_id in plan.restart if self._children[child_id].state in _DOWN}
        plan = ChildPlan(plan.same, plan.live + tuple(i for i in plan.restart if i in down),
                         tuple(i for i in plan.restart if i not in down), plan.telemetry)
        old = {child_id: self._children[child_id].spec for child_id in plan.changed}
        for child_id in plan.live:
            self._children[child_id].spec = new[child_id]
        restarted: list[str] = []
        for child_id in plan.restart:
            child = self._children[child_id]
            restarted.append(child_id)
            failure = await self._restart_with(child, new[child_id], "the config was reloaded")
            if failure is not None:
                await self._roll_back(plan, old, restarted)
                return {"reason": f"plugin {child_id!r} did not start with the new config: {failure}; "
                                  "every changed plugin went back to its old config",
                        "rolled_back": True, "restarted": restarted}
        await asyncio.gather(*(self._tell_telemetry(self._children[child_id]) for child_id in plan.telemetry))
        self._spec = self._spec.model_copy(update={"children": [
            self._children[child_id].spec for child_id in self._order]})
        self._config_revision += 1
        _keep_reloaded_spec(self._spec)
        self._ensure_standbys()
        return {"outcome": "applied", "reason": None, "restarted": restarted, "live": list(plan.live)}

    async def _tell_telemetry(self, child: SupervisedChild) -> None:
        """Have ``child``'s host apply its spec's tracing and logging (a host that misses it keeps the old)."""
        if child.state != "running" or child.host is None:
            return
        try:
            await asyncio.wait_for(child.host.configure_telemetry.remote(child.spec.tracing, child.spec.logging),
                                   self._spec.ping_timeout)
        except Exception as exc:  # noqa: BLE001 - log levels are not worth a restart; said in the events
            self._event("telemetry_not_applied", child, f"{type(unwrap_task_error(exc)).__name__}")

    async def _restart_with(self, child: SupervisedChild, spec: ChildSpec, why: str) -> str | None:
        """Stop ``child``, give it ``spec`` and start it; the reason it failed to start, or ``None``."""
        self._set_state(child, "restarting")
        self._event("restart", child, why, stop=[child.id], start=[child.id])
        drop_standby(child)  # a spare made with the old spec would start the old config
        if child.host is not None:
            await self._stop_child(child, why)
        child.spec = spec
        child.attempts = 0
        child.restarts += 1
        try:
            await self._start_child(child)
        except StartFailed as failed:
            reason = failed.reason
        except Exception as exc:  # noqa: BLE001 - Ray's own (an unschedulable host, say): a failed start all the same
            reason = f"the host did not start: {death_reason(unwrap_task_error(exc))}"
        else:
            return None
        child.last_failure = reason
        self._set_state(child, "restarting")
        self._event("start_failed", child, reason)
        return reason

    async def _roll_back(self, plan: ChildPlan, old: dict[str, ChildSpec], restarted: list[str]) -> None:
        """Give every changed child its old spec again; restart those that were restarted."""
        for child_id in plan.live:
            self._children[child_id].spec = old[child_id]
        for child_id in restarted:
            child = self._children[child_id]
            failure = await self._restart_with(child, old[child_id], "rolling back a refused reload")
            if failure is not None:
                # Its old config no longer starts either: a crash like any other, for the strategy to handle.
                self._exits.put_nowait((child.id, child.generation, failure, False))
        self._ensure_standbys()

    def _record_reload(self, record: dict[str, Any], result: dict[str, Any]) -> None:
        """Audit the reload (its diff redacted by the caller) and keep it in ``reloads()``."""
        outcome = result["outcome"]
        entry = {"time": time.time(), "principal": record.get("principal"), "source": record.get("source"),
                 "summary": record.get("summary"), "changes": record.get("changes", []), **result}
        self._reloads.append(entry)
        self._event("config_reloaded" if outcome != "refused" else "config_refused", None,
                    result.get("reason") or "", revision=self._config_revision, restarted=result["restarted"],
                    live=result["live"])
        self._audit_pending.append({
            "principal": str(record.get("principal") or f"supervisor:{self._spec.name}"),
            "action": "dwray:ReloadConfig",
            "resource": f"config:{record.get('source')}: {record.get('summary') or 'no change'}",
            "outcome": "denied" if outcome == "refused" else "allowed",
            "error": None if result.get("reason") is None else str(result["reason"])[:1000]})
        self._flush_audit()

    async def config_revision(self) -> int:
        """How many reloads were applied since this supervisor started (gateway replicas poll it)."""
        return self._config_revision

    async def reloads(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest ``limit`` reloads, applied or refused, oldest first."""
        if limit < 0:
            raise InvalidArgument(f"limit must be 0 or more, not {limit}")
        return list(self._reloads)[-limit:] if limit else []

    async def secret_rotated(self, ref: str) -> dict[str, Any]:
        """Tell every running child that the secret ``ref`` names was rotated.

        Returns ``{"ref", "told": [child ids], "using": [ids of those that use
        it], "failed": {child id: reason}}``; a child that does not answer
        within ``ping_timeout`` is listed as failed (its host's watch still
        notices the new version within ``[secrets] watch_interval``).
        """
        ref = str(parse_secret_ref(ref))
        running = [child for child in self._children.values() if child.state == "running" and child.host is not None]

        async def tell(child: SupervisedChild) -> bool:
            return await asyncio.wait_for(child.host.secret_rotated.remote(ref), self._spec.ping_timeout)
        results = await asyncio.gather(*(tell(child) for child in running), return_exceptions=True)
        told, using, failed = [], [], {}
        for child, result in zip(running, results, strict=True):
            if isinstance(result, BaseException):
                failed[child.id] = ("no answer within ping_timeout" if isinstance(result, TimeoutError)
                                    else str(unwrap_task_error(result)))
                continue
            told.append(child.id)
            if result:
                using.append(child.id)
        self._event("secret_rotated", None, ref, told=told, using=using, failed=sorted(failed))
        return {"ref": ref, "told": told, "using": using, "failed": failed}

    async def status(self) -> dict[str, Any]:
        """The supervision tree as plain data."""
        self._recover_if_restarted()
        return self._status()

    def _status(self) -> dict[str, Any]:
        children = []
        for child_id in self._order:
            child = self._children[child_id]
            manifest = child.manifest
            children.append({
                "id": child.id,
                "plugin": child.spec.plugin,
                "kind": child.spec.kind if manifest is None else manifest.kind,
                "restart": child.spec.restart.value,
                "required": child.spec.required,
                "state": child.state,
                "generation": child.generation,
                "restarts": child.restarts,
                "last_failure": child.last_failure,
                "pid": child.pid,
                "node_id": child.node_id,
                "actor": child.host_name,
                "actor_id": None if child.host is None else child.host._actor_id.hex(),
                "standby": child.standby is not None,
                "breaker": self._breaker_state(child.id),
                "manifest": None if manifest is None else {"name": manifest.name, "version": manifest.version},
                "health": child.health,
            })
        return {
            "name": self._spec.name,
            "namespace": self._namespace,
            "pid": os.getpid(),
            "state": self._state,
            "reason": self._reason,
            "strategy": self._spec.strategy.value,
            "max_restarts": self._spec.max_restarts,
            "period": self._spec.period,
            "restarts_in_period": self._intensity.count(),
            "tree_restarts": self._tree_restarts,
            "last_failure": self._last_failure,
            "restarting_in": (None if self._restart_at is None
                              else round(max(0.0, self._restart_at - time.monotonic()), 3)),
            "max_tree_restarts": self._spec.max_tree_restarts,
            "memory": None if self._memory is None else self._memory.status(),
            "children": children,
        }

    async def ready(self) -> tuple[bool, str]:
        """``(True, "ready")``, else ``(False, why)``: the first of the reasons below that holds.

        ``"restarting: ..."`` (escalated, the tree restarts), ``"failed: ..."``
        (gave up), ``"supervisor ... is <state>"``, ``"required child ..."``
        (not running), ``"breaker open: ..."`` (a caller's breaker in front of a
        required child is open), ``"memory critical: ..."``.
        """
        self._recover_if_restarted()
        if self._state in {"restarting", "failed"} or (self._state == "idle" and self._reconstructed):
            return False, self._not_ready_reason()
        if self._state != "running":
            detail = f": {self._reason}" if self._reason else ""
            return False, f"supervisor {self._spec.name!r} is {self._state}{detail}"
        for child_id in self._order:
            child = self._children[child_id]
            if child.spec.required and child.state != "running":
                detail = f" ({child.last_failure})" if child.last_failure else ""
                return False, f"required child {child_id!r} is {child.state}{detail}"
        for child_id in self._order:
            if self._children[child_id].spec.required and self._breaker_state(child_id) == "open":
                callers = sorted(c for c, (state, _) in self._breakers.get(child_id, {}).items() if state == "open")
                return False, f"breaker open: plugin {child_id!r} (held open by {len(callers)} caller(s))"
        if self._memory_level == "critical" and self._memory is not None:
            status = self._memory.status()
            return False, (f"memory critical: {status.get('used', 0)} of {status.get('limit', 0)} bytes in use "
                           f"({status.get('source')})")
        return True, "ready"

    def _not_ready_reason(self) -> str:
        if self._state == "failed":
            return f"failed: {self._reason}"
        if self._restart_at is None:
            return f"restarting: the plugin tree is starting again (tree restart {self._tree_restarts}) after: " \
                   f"{self._last_failure or self._reason}"
        seconds = max(0.0, self._restart_at - time.monotonic())
        return (f"restarting: the plugin tree restarts in {seconds:.1f} s (tree restart {self._tree_restarts + 1}) "
                f"after: {self._reason}")

    async def started(self) -> bool:
        """Whether every required child has been admitted at least once."""
        return all(child.admitted for child in self._children.values() if child.spec.required)

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The most recent ``limit`` events (starts, stops, failures, restarts), oldest first."""
        if limit < 0:
            raise InvalidArgument(f"limit must be 0 or more, not {limit}")
        return list(self._events)[-limit:] if limit else []


def _tells_telemetry(host: Any) -> bool:
    """Whether a plugin host can apply new ``[tracing]``/``[logging]`` in place (not a restart)."""
    return host is not None and hasattr(host, "configure_telemetry")


def _configure_telemetry(spec: SupervisorSpec) -> None:
    """Apply the tree's ``[tracing]`` and ``[logging]`` to the supervisor's own process.

    ``degrade``: a header reference that does not resolve here leaves spans unexported, not the tree down.
    """
    from dwray.core.telemetry import configure_telemetry

    try:
        configure_telemetry(spec.tracing, spec.logging, f"supervisor:{spec.name}", degrade=True)
    except DwrayError as exc:
        logger.warning("supervisor %s: [tracing]/[logging] not applied: %s", spec.name, exc)


def _reloaded_spec_key() -> bytes:
    # By actor id: the same across Ray's restarts of this supervisor, another for a new supervisor.
    return f"dwray:supervisor-spec:{ray.get_runtime_context().get_actor_id()}".encode()


def _keep_reloaded_spec(spec: SupervisorSpec) -> None:
    """Keep the spec an applied reload made in Ray's GCS (references only, as the actor's own
    arguments are), so a supervisor that Ray restarts starts the reloaded children, not the first ones."""
    from ray.experimental import internal_kv

    try:
        internal_kv._internal_kv_put(_reloaded_spec_key(), spec.model_dump_json().encode(), overwrite=True)
    except Exception:  # noqa: BLE001 - the reload stands; only a restart of the supervisor would miss it
        logger.exception("supervisor %s: the reloaded spec could not be kept in the GCS", spec.name)


def _forget_reloaded_spec() -> None:
    from ray.experimental import internal_kv

    try:
        internal_kv._internal_kv_del(_reloaded_spec_key())
    except Exception:  # noqa: BLE001 - a stale key is only read by a restart of this very actor
        logger.debug("supervisor: the reloaded spec could not be removed from the GCS", exc_info=True)


def _reloaded_spec() -> SupervisorSpec | None:
    from ray.experimental import internal_kv

    try:
        kept = internal_kv._internal_kv_get(_reloaded_spec_key())
        return None if kept is None else SupervisorSpec.model_validate_json(kept)
    except Exception:  # noqa: BLE001 - start from the actor's arguments, as before any reload
        logger.exception("supervisor: the reloaded spec kept in the GCS could not be read")
        return None


def _kick_recovery(me: Any) -> None:
    """From a thread of a supervisor that Ray restarted: call its ``recover()`` once it serves calls."""
    for _ in range(600):
        try:
            ray.get(me.recover.remote(), timeout=300)
            return
        except Exception:  # noqa: BLE001 - not serving calls yet (or the recovery is healing): try again
            time.sleep(0.1)


def create_supervisor(spec: SupervisorSpec, namespace: str = DEFAULT_NAMESPACE, detached: bool = False,
                      cgroup_root: str = str(DEFAULT_CGROUP_ROOT)) -> Any:
    """Create the supervisor actor, named ``spec.name`` in ``namespace`` (call ``start()`` on it next)."""
    options: dict[str, Any] = {"name": spec.name, "namespace": namespace}
    if detached:
        options["lifetime"] = "detached"
    return Supervisor.options(**options).remote(spec, namespace, cgroup_root)
