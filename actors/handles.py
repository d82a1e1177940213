"""PluginHandle: the caller's side of a supervised plugin.

A handle asks the supervisor once for the child's ``(actor handle,
generation)`` and its spec (for the deadlines), then calls the plugin host
directly: the supervisor is never on the data path.

Every call has a deadline (``timeout``, else the child's ``method_timeouts``
entry, else its ``call_timeout``) that bounds all of it: waiting for a plugin
that is restarting, the call, and any retries. The errors are mapped so that
callers see dwray errors only:

- the plugin raised a dwray error   -> that error, its own class;
- the plugin raised anything else   -> ``PluginError`` (made by the host);
- the deadline passed               -> ``PluginTimeout``; the supervisor is told
                                       (``report_failure``) and restarts the plugin;
- the actor died                    -> the supervisor is told; an ``idempotent``
                                       call is retried on the restarted actor
                                       (``[plugins.<kind>.resilience.retry]``:
                                       full-jitter backoff, within the deadline),
                                       any other raises ``PluginUnavailable``
                                       saying it was not retried;
- the tree is restarting (escalated) -> the call waits for it within its deadline,
                                       then ``NotReady``.

Resilience, applied here once for every plugin (``dwray.core.resilience``,
options from the child spec's ``resilience``):

- a circuit breaker per plugin per process: past its failure-rate or
  slow-call-rate threshold calls fail fast with ``CircuitOpen`` (a
  ``PluginUnavailable``) until half-open trial calls succeed again. Only
  failures of the plugin count (deadline, death, ``PluginError``, storage
  and key-service outages), not a ``NotFound`` or ``AccessDenied`` it answered.
  State changes are reported to the supervisor (``breaker_changed``), whose
  readiness and status show them;
- a bulkhead per plugin per process: at most ``max_concurrent_calls`` calls in
  flight, the excess fails fast with ``BulkheadFull`` (or waits ``max_wait``).

``submit``/``resolve`` keep several calls in flight (pipelining) with the same
mapping and breaker (not the bulkhead: a pipeline bounds its own window);
submitted calls are never retried.

A handle that loses its supervisor (killed: Ray restarts it) asks again, by
name when it was found by name, until the call's deadline.

Each call carries the caller's OpenTelemetry context (W3C trace context,
injected into the reserved keyword ``_dwray_trace``); the host runs the method
in a span ``<child id>.<method>`` under it.

Every call (``call``, and ``resolve`` for submitted ones) is counted in
:data:`actors.call_metrics.PLUGIN_CALLS`: calls by method and outcome, errors
by kind, latency, for the gateway page and Ray's metrics export port.

When the caller runs for a timed request (:mod:`dwray.core.request_timing`,
the gateway's ``Server-Timing``), each call's time from submission to result
is added to the request's phase named after the plugin's kind (the child id
up to its first ``:``: ``storage:local`` counts as ``storage``).
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from typing import Any

import ray
from opentelemetry import propagate
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from actors.call_metrics import PLUGIN_CALLS
from dwray.config import DwrayConfig
from dwray.core.request_timing import RequestTimer, current_timer
from dwray.core.resilience import Bulkhead, CircuitBreaker, counts_as_failure, process_guards, retrying
from dwray.errors import (
    BulkheadFull,
    CircuitOpen,
    DwrayError,
    NotReady,
    PluginTimeout,
    PluginUnavailable,
)

__all__ = ["DEFAULT_NAMESPACE", "DEFAULT_SUPERVISOR", "PluginHandle", "death_reason", "plugin_handle",
           "running_config"]

DEFAULT_NAMESPACE = "dwray"
DEFAULT_SUPERVISOR = "dwray:supervisor"
# Slack on top of a wait the supervisor itself bounds, for the round trip.
_ASK_SLACK = 10.0
SPEC_TTL = 5.0  # seconds a handle trusts its cached ChildSpec: a config reload may change it live
# Submitted calls of timed requests awaiting their resolve; a ref never resolved (a caller
# that ray.get()s it itself) is dropped once this many newer ones wait.
_MAX_TIMED_SUBMITS = 1024
# Pause before asking a supervisor that did not answer again (Ray restarts a killed one).
_SUPERVISOR_RETRY = 0.2


def _caller_id() -> str:
    """Names this process in the supervisor's breaker reports."""
    return f"{socket.gethostname()}:{os.getpid()}"


# (namespace, supervisor name) -> the tree epoch this process last heard of. A handle whose cached
# host is of an older epoch asks the supervisor again before its next call: once any handle of the
# process learns that the tree was restarted (after an escalation, or by a new supervisor), the
# others stop calling hosts that died with the old tree.
_TREE_EPOCHS: dict[tuple[str, str], str] = {}

# Guard name -> the supervisor its breaker changes are reported to (the last handle made wins).
_BREAKER_SUPERVISORS: dict[str, Any] = {}
_BREAKER_LOCK = threading.Lock()
_BREAKER_LISTENING = False


def _report_breaker(name: str, old: str, new: str) -> None:
    supervisor = _BREAKER_SUPERVISORS.get(name)
    if supervisor is None:
        return
    child_id = name.split("@", 1)[0]
    open_for = None
    if new == "open":
        guard = process_guards().snapshot().get(name) or {}
        open_for = guard.get("opened_for")
    try:
        supervisor.breaker_changed.remote(child_id, _caller_id(), new, open_for)
    except Exception:  # noqa: BLE001 - the supervisor is restarting; its readiness misses one report
        pass


def _listen_for_breakers() -> None:
    global _BREAKER_LISTENING
    with _BREAKER_LOCK:
        if not _BREAKER_LISTENING:
            process_guards().add_listener(_report_breaker)
            _BREAKER_LISTENING = True


def _retryable(exc: BaseException) -> bool:
    """An idempotent call is tried again when its actor died or its supervisor did not answer."""
    return isinstance(exc, PluginUnavailable) and not isinstance(exc, (CircuitOpen, BulkheadFull))


class _ActorGone(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def death_reason(exc: BaseException) -> str:
    """The useful line of a Ray actor-death message (they run to a dozen lines)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("The actor is dead because"):
            return line[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _trace_carrier() -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


class PluginHandle:
    """Calls one supervised plugin (child ``child_id``) with deadlines, error mapping and tracing."""

    def __init__(self, child_id: str, supervisor: Any = None, namespace: str = DEFAULT_NAMESPACE,
                 supervisor_name: str = DEFAULT_SUPERVISOR) -> None:
        self.child_id = child_id
        self.namespace = namespace
        self.supervisor_name = supervisor_name
        self._supervisor = supervisor
        self._lock = threading.Lock()
        self._actor: Any = None
        self._epoch: str | None = None  # the tree epoch of the cached host
        self._generation: int | None = None
        self._spec: Any = None
        self._spec_at = 0.0  # when the cached spec was read (time.monotonic)
        self._spec_ref: Any = None  # a refresh of the spec in flight
        self._guard_options: Any = None  # the resilience options the cached guards were built from
        self.kind = child_id.split(":", 1)[0]  # the timing phase of this plugin's calls
        self._submitted: OrderedDict[Any, tuple[RequestTimer, float]] = OrderedDict()  # by _ref_key
        self._guard: tuple[CircuitBreaker, Bulkhead] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        # The cache and the lock stay behind; the copy asks the supervisor again.
        return (type(self), (self.child_id, self._supervisor, self.namespace, self.supervisor_name))

    def __repr__(self) -> str:
        return f"PluginHandle({self.child_id!r}, generation={self._generation})"

    # -- talking to the supervisor ------------------------------------------------

    @property
    def supervisor(self) -> Any:
        if self._supervisor is None:
            try:
                self._supervisor = ray.get_actor(self.supervisor_name, namespace=self.namespace)
            except ValueError:
                raise PluginUnavailable(self.child_id, f"no supervisor {self.supervisor_name!r} "
                                                       f"in namespace {self.namespace!r}") from None
        return self._supervisor

    def _ask(self, method: str, *args: Any, timeout: float) -> Any:
        """``supervisor.<method>(*args)``; a supervisor that died (Ray restarts it) is asked again until
        ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                ref = getattr(self.supervisor, method).remote(*args)
                return ray.get(ref, timeout=max(0.001, deadline - time.monotonic()))
            except RayTaskError as exc:
                if isinstance(exc.cause, DwrayError):
                    raise exc.cause from None
                raise
            except GetTimeoutError:
                raise PluginUnavailable(self.child_id, f"the supervisor did not answer {method} "
                                                       f"within {timeout:g} s") from None
            except (RayActorError, ActorUnavailableError) as exc:  # dead, or being restarted by Ray
                if time.monotonic() + _SUPERVISOR_RETRY >= deadline:
                    raise PluginUnavailable(self.child_id, "the supervisor does not answer: "
                                                           f"{death_reason(exc)}") from None
                time.sleep(_SUPERVISOR_RETRY)
                self._reresolve_supervisor()

    def _reresolve_supervisor(self) -> None:
        """Look the supervisor up again by name (a new one may have been started under it)."""
        try:
            found = ray.get_actor(self.supervisor_name, namespace=self.namespace)
        except ValueError:
            return  # none yet: keep the old handle, Ray may still be restarting that actor
        self._supervisor = found

    @property
    def generation(self) -> int | None:
        """The generation of the cached actor handle (None before the first call)."""
        return self._generation

    def spec(self) -> Any:
        """The child's ``ChildSpec``: asked once, then refreshed in the background every ``SPEC_TTL``
        seconds (a config reload may change its deadlines and resilience options live). A call never
        waits for a refresh: it uses the spec it has until the new one has arrived."""
        if self._spec is None:
            self._spec = self._ask("child_spec", self.child_id, timeout=_ASK_SLACK)
            self._spec_at = time.monotonic()
        elif time.monotonic() - self._spec_at > SPEC_TTL:
            if self._spec_ref is None:
                try:
                    self._spec_ref = self.supervisor.child_spec.remote(self.child_id)
                except Exception:  # noqa: BLE001 - the supervisor is away: keep the spec we have
                    self._spec_at = time.monotonic()
            elif ray.wait([self._spec_ref], timeout=0)[0]:
                try:
                    self._spec = ray.get(self._spec_ref)
                except Exception:  # noqa: BLE001 - keep the spec we have; try again after SPEC_TTL
                    pass
                self._spec_ref, self._spec_at = None, time.monotonic()
        return self._spec

    def guards(self) -> tuple[CircuitBreaker, Bulkhead]:
        """This process's breaker and bulkhead for the plugin (``dwray.core.resilience.process_guards``)."""
        options = self.spec().resilience
        if self._guard is None or self._guard_options != options:
            name = self.child_id if self.namespace == DEFAULT_NAMESPACE else f"{self.child_id}@{self.namespace}"
            _listen_for_breakers()
            _BREAKER_SUPERVISORS[name] = self.supervisor
            # A reload that changed the options gets new guards (process_guards replaces them).
            self._guard, self._guard_options = process_guards().guard(name, options), options
        return self._guard

    def deadline(self, method: str) -> float:
        """Seconds a call to ``method`` may take."""
        return float(self.spec().timeout_for(method))

    def current(self, wait: float = 0.0, newer_than: int | None = None,
                not_actor: str | None = None) -> tuple[Any, int]:
        """``(actor handle, generation)``, from the cache unless a newer generation, or another host than
        the actor ``not_actor`` names (one that died: a restarted supervisor numbers generations anew),
        is needed."""
        tree = (self.namespace, self.supervisor_name)
        with self._lock:
            if self._actor is not None and (newer_than is None or self._generation > newer_than) \
                    and (not_actor is None or self._actor._actor_id.hex() != not_actor) \
                    and _TREE_EPOCHS.get(tree) == self._epoch:
                return self._actor, self._generation  # type: ignore[return-value]
        actor, generation, epoch = self._ask("handle", self.child_id, wait, newer_than, not_actor, True,
                                             timeout=wait + _ASK_SLACK)
        with self._lock:
            self._actor, self._generation, self._epoch = actor, generation, epoch
            _TREE_EPOCHS[tree] = epoch
        return actor, generation

    def _report(self, actor_id: str, reason: str) -> None:
        """Tell the supervisor, if ``actor_id`` is still the cached actor, and drop it from the cache."""
        with self._lock:
            if self._actor is None or self._actor._actor_id.hex() != actor_id:
                return
            generation = self._generation
            self._actor = self._generation = None
        try:
            self.supervisor.report_failure.remote(self.child_id, generation, reason, actor_id)
        except Exception:  # noqa: BLE001 - a supervisor that is gone finds out from its own pings
            pass

    # -- calling the plugin ---------------------------------------------------------

    def _get(self, refs: Any, method: str, seconds: float, actor_id: str, deadline: float | None = None) -> Any:
        """``ray.get`` within ``seconds``; errors say the call's whole ``deadline`` (default: ``seconds``)."""
        try:
            return ray.get(refs, timeout=seconds)
        except RayTaskError as exc:
            if isinstance(exc.cause, PluginUnavailable):
                # The host is shutting down (the supervisor is stopping it): like a dead actor,
                # but there is nothing to report.
                raise _ActorGone(exc.cause.reason) from None
            if isinstance(exc.cause, DwrayError):
                raise exc.cause from None
            if isinstance(exc.cause, RayActorError):
                # An argument of this call was the result of another actor's call, and that actor died.
                raise PluginUnavailable(self.child_id, f"an input of {method} came from an actor that died: "
                                                       f"{death_reason(exc.cause)}") from None
            raise
        except GetTimeoutError:
            stated = seconds if deadline is None else deadline
            self._report(actor_id, f"call {method} passed its {stated:g} s deadline")
            raise PluginTimeout(self.child_id, method, stated) from None
        except RayActorError as exc:
            reason = death_reason(exc)
            self._report(actor_id, f"actor died during {method}: {reason}")
            raise _ActorGone(reason) from None

    def call(self, method: str, *args: Any, idempotent: bool = False, timeout: float | None = None,
             **kwargs: Any) -> Any:
        """``plugin.<method>(*args, **kwargs)`` on the plugin's host, within the deadline."""
        seconds = timeout if timeout is not None else self.deadline(method)
        timer = current_timer()
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return self._call(method, args, kwargs, idempotent, seconds)
        except BaseException as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            PLUGIN_CALLS.observe(self.child_id, method, elapsed, error)
            if timer is not None:
                timer.add(self.kind, elapsed)

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], idempotent: bool,
              seconds: float) -> Any:
        breaker, bulkhead = self.guards()
        deadline = time.monotonic() + seconds
        with bulkhead.slot():
            if not idempotent:
                return self._guarded(breaker, method, args, kwargs, seconds, deadline, None)
            failed: list[str] = []  # ids of the hosts that died under this call
            for attempt in retrying(self.spec().resilience.retry, retry_if=_retryable, deadline=deadline):
                with attempt:
                    return self._guarded(breaker, method, args, kwargs, seconds, deadline, failed)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _guarded(self, breaker: CircuitBreaker, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                 seconds: float, deadline: float, failed: list[str] | None) -> Any:
        """One attempt through the breaker: its outcome counts unless the plugin was never reached."""
        breaker.acquire()
        started = time.monotonic()
        try:
            result = self._attempt(method, args, kwargs, seconds, deadline, failed)
        except Exception as exc:
            if counts_as_failure(exc):
                breaker.record(time.monotonic() - started, True)
            elif isinstance(exc, NotReady):
                breaker.release()  # the tree is restarting: this plugin was not asked
            else:
                breaker.record(time.monotonic() - started, False)  # the plugin answered (NotFound, say)
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.record(time.monotonic() - started, False)
        return result

    def _attempt(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], seconds: float,
                 deadline: float, failed: list[str] | None) -> Any:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise PluginTimeout(self.child_id, method, seconds)
        # A plugin that is restarting is waited for, within the deadline; a retry needs another host.
        actor, _ = self.current(wait=remaining, not_actor=failed[-1] if failed else None)
        actor_id = actor._actor_id.hex()
        ref = actor.call.remote(method, *args, _dwray_trace=_trace_carrier(), **kwargs)
        try:
            return self._get(ref, method, max(0.001, deadline - time.monotonic()), actor_id, seconds)
        except _ActorGone as gone:
            if failed is None:
                raise PluginUnavailable(self.child_id, f"{gone.reason}; the call to {method} was not retried "
                                                       "because it is not idempotent") from None
            failed.append(actor_id)
            raise PluginUnavailable(self.child_id, f"{gone.reason}; the call to {method} failed on "
                                                   f"{len(failed)} generation(s)") from None

    def submit(self, method: str, *args: Any, num_returns: int = 1, **kwargs: Any) -> Any:
        """Start ``plugin.<method>(...)`` and return its ObjectRef (a list if ``num_returns`` > 1).

        Fails fast with ``CircuitOpen`` when the breaker is open; ``resolve``
        records the outcome. A plugin that is restarting is waited for, up to
        the method's deadline.
        """
        breaker, _ = self.guards()
        breaker.acquire()
        try:
            actor, _ = self.current(wait=self.deadline(method))
        except BaseException:
            breaker.release()
            raise
        timer = current_timer()
        started = time.perf_counter()
        refs = actor.call.options(num_returns=num_returns).remote(
            method, *args, _dwray_trace=_trace_carrier(), **kwargs)
        if timer is not None:
            with self._lock:
                self._submitted[_ref_key(refs)] = (timer, started)
                while len(self._submitted) > _MAX_TIMED_SUBMITS:
                    self._submitted.popitem(last=False)
        return refs

    def resolve(self, refs: Any, method: str, timeout: float | None = None) -> Any:
        """The results of ``submit``-ted calls, with the errors of ``call``; nothing is retried."""
        seconds = timeout if timeout is not None else self.deadline(method)
        first = refs[0] if isinstance(refs, list) and refs else refs
        actor_id = first.task_id().actor_id().hex() if isinstance(first, ray.ObjectRef) else ""
        timed = self._timed_submit(refs)
        breaker, _ = self.guards()
        started = time.monotonic()
        error: BaseException | None = None
        try:
            result = self._get(refs, method, seconds, actor_id)
        except _ActorGone as gone:
            breaker.record(time.monotonic() - started, True)
            error = PluginUnavailable(self.child_id, f"{gone.reason}; submitted calls to {method} are not "
                                                     "retried, submit them again")
            raise error from None
        except Exception as exc:
            error = exc
            breaker.record(time.monotonic() - started, counts_as_failure(exc))
            raise
        else:
            breaker.record(time.monotonic() - started, False)
            return result
        finally:
            # Counted from submission when the submitter was timed, else from the wait for the result.
            elapsed = time.perf_counter() - timed[1] if timed is not None else time.monotonic() - started
            PLUGIN_CALLS.observe(self.child_id, method, elapsed, error)
            if timed is not None:
                timed[0].add(self.kind, time.perf_counter() - timed[1])

    def _timed_submit(self, refs: Any) -> tuple[RequestTimer, float] | None:
        """The timer and submit time of ``refs`` if a timed request submitted them, else one resolving them."""
        if self._submitted:
            with self._lock:
                timed = self._submitted.pop(_ref_key(refs), None)
            if timed is not None:
                return timed
        timer = current_timer()
        return None if timer is None else (timer, time.perf_counter())


def _ref_key(refs: Any) -> Any:
    """A key naming an ObjectRef or a list of them without holding them (a held ref pins its object)."""
    if isinstance(refs, list):
        return tuple(ref.binary() for ref in refs)
    return refs.binary() if isinstance(refs, ray.ObjectRef) else id(refs)


def plugin_handle(config: DwrayConfig, supervisor: Any, child_id: str) -> PluginHandle:
    """The handle of plugin ``child_id`` in the warehouse that ``config`` and ``supervisor`` run."""
    return PluginHandle(child_id, supervisor=supervisor, namespace=config.runtime.namespace,
                        supervisor_name=config.runtime.supervisor_name)


def running_config(config: DwrayConfig, supervisor: Any) -> DwrayConfig:
    """The config the running warehouse was started with, from its ``settings`` plugin."""
    return DwrayConfig.model_validate(ray.get(plugin_handle(config, supervisor, "settings").submit("settings")))
