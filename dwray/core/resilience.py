"""What every caller applies to its calls to a plugin: a circuit breaker, a bulkhead and retries.

A plugin that fails or hangs must not take its callers down with it. Each
process (a gateway replica, a driver, a plugin host calling another plugin)
keeps, per plugin, one :class:`CircuitBreaker` and one :class:`Bulkhead` in
:func:`process_guards`, and ``actors.handles.PluginHandle`` puts every call
through them, written once here rather than in each plugin:

- the **breaker** stops calling a plugin that keeps failing or answering
  slowly, so callers fail fast (``CircuitOpen``, a 503) instead of piling up
  behind deadlines, and the plugin gets room to recover; a few trial calls
  later decide whether it has. The semantics are resilience4j's (count-based
  sliding window, failure rate and slow-call rate, minimum calls, open,
  half-open), so its documentation describes the knobs in ``BreakerOptions``.
- the **bulkhead** caps the calls one caller has in flight to one plugin, so a
  plugin that hangs ties up at most that many of the caller's threads
  (``BulkheadFull`` past it, at once or after ``max_wait``).
- :func:`retrying` retries idempotent calls with full-jitter exponential
  backoff (tenacity's ``wait_random_exponential``: callers that failed together
  do not come back together) within the call's deadline.

Pure logic, no Ray: the clock is injectable, so the tests drive the breaker's
time without sleeping.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import tenacity
from tenacity.stop import stop_base

from dwray.config import BreakerOptions, ResilienceOptions, RetryOptions
from dwray.errors import (
    BulkheadFull,
    CircuitOpen,
    DwrayError,
    InvalidArgument,
    KmsUnavailable,
    PluginError,
    PluginTimeout,
    PluginUnavailable,
    SecretUnavailable,
    StorageError,
    StorageFull,
)

__all__ = [
    "BREAKER_STATES",
    "Bulkhead",
    "CircuitBreaker",
    "Guards",
    "counts_as_failure",
    "process_guards",
    "retrying",
]

log = logging.getLogger(__name__)

BREAKER_STATES = ("closed", "open", "half_open")

Clock = Callable[[], float]
StateListener = Callable[[str, str, str], None]

# Failures of the plugin (or of what it stands on) rather than of the request.
_FAILURES = (PluginTimeout, PluginError, PluginUnavailable, StorageError, KmsUnavailable, SecretUnavailable)
# Refused by this caller's own guards (the plugin was never reached), or a full
# disk the plugin reported correctly: neither says the plugin is unhealthy.
_NOT_FAILURES = (CircuitOpen, BulkheadFull, StorageFull)


def counts_as_failure(exc: BaseException) -> bool:
    """Whether a call that raised ``exc`` counts against the plugin in its breaker.

    Only a plugin that broke counts: it timed out, died, raised something
    unexpected, or its storage, key service or secret manager failed. A
    ``NotFound``, ``InvalidArgument``, ``AccessDenied`` and every other dwray
    error is a correct answer to a bad request: counting those would let one
    client's bad requests open the breaker for everyone. ``CircuitOpen`` and
    ``BulkheadFull`` never reached the plugin, and ``StorageFull`` is the
    plugin reporting a full disk correctly. An exception that is not a dwray
    error at all is a bug or a crash in the callee, so it counts; a
    ``BaseException`` that is not an ``Exception`` (``KeyboardInterrupt``, a
    cancelled task) is the caller giving up, so it does not (release instead).
    """
    if isinstance(exc, _NOT_FAILURES):
        return False
    if isinstance(exc, _FAILURES):
        return True
    if isinstance(exc, DwrayError):
        return False
    return isinstance(exc, Exception)


class _Window:
    """The last ``size`` outcomes, with running counts so each record is O(1)."""

    __slots__ = ("failed", "outcomes", "slow")

    def __init__(self, size: int) -> None:
        self.outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)
        self.failed = 0
        self.slow = 0

    def add(self, failed: bool, slow: bool) -> None:
        if len(self.outcomes) == self.outcomes.maxlen:
            old_failed, old_slow = self.outcomes[0]  # about to fall out of the window
            self.failed -= old_failed
            self.slow -= old_slow
        self.outcomes.append((failed, slow))
        self.failed += failed
        self.slow += slow

    @property
    def calls(self) -> int:
        return len(self.outcomes)

    @property
    def failure_rate(self) -> float:
        return 100.0 * self.failed / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        return 100.0 * self.slow / self.calls if self.calls else 0.0


class CircuitBreaker:
    """Closed, open and half-open, with resilience4j's semantics; safe to share between threads.

    **Closed**: every call is permitted and its outcome goes into a
    count-based sliding window of the last ``window_size`` calls. Once the
    window holds at least ``minimum_calls`` outcomes (fewer say too little: one
    failure in the first call would be a 100 % rate), a failure rate or a
    slow-call rate (calls slower than ``slow_call_duration``, failed or not) at
    or above its threshold opens the breaker and clears the window.

    **Open**: every call fails fast with ``CircuitOpen`` for ``wait_in_open``
    seconds, then the breaker turns half-open, lazily, on the next look at it
    (no timer thread).

    **Half-open**: exactly ``half_open_calls`` trial calls are permitted, the
    rest fail fast. Once all trials are recorded, their rates against the same
    thresholds open the breaker again or close it with a fresh window.

    Every :meth:`acquire` that did not raise must be followed by one
    :meth:`record` or :meth:`release`: a trial slot that is never given back
    keeps the breaker half-open (callers have deadlines, so a hung trial ends
    as a recorded ``PluginTimeout``). A record that arrives while open (a call
    that started before the breaker opened) is ignored, so the next window
    starts clean.

    ``on_change(name, old, new)`` is called outside the breaker's lock, in the
    order the changes happened, so a listener may look at the breaker or make
    a slow report without blocking calls; its exceptions are logged, never
    raised into the call that caused the change. With ``options.enabled``
    False outcomes are still counted (for ``snapshot``) but it never opens.
    """

    def __init__(self, name: str, options: BreakerOptions, *, clock: Clock = time.monotonic,
                 on_change: StateListener | None = None) -> None:
        self.name = name
        self.options = options
        self._clock = clock
        self._on_change = on_change
        self._lock = threading.Lock()
        self._state = "closed"
        self._window = _Window(options.window_size)
        self._tripped: _Window | None = None  # the window whose rates opened the breaker last
        self._tripped_over = "calls"  # or "trial calls", when half-open trials opened it again
        self._opened_at = 0.0
        self._trials = 0  # half-open trial slots taken (recorded ones included)
        self._not_permitted = 0
        self._changes: deque[tuple[str, str]] = deque()
        self._notify_lock = threading.RLock()  # re-entrant: a listener may call the breaker

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state!r})"

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``; an open breaker whose wait has passed reads half-open."""
        with self._lock:
            self._half_open_if_due()
            state = self._state
        self._deliver()
        return state

    def acquire(self) -> None:
        """Permit one call, or raise ``CircuitOpen`` saying why and for how long."""
        refused: CircuitOpen | None = None
        with self._lock:
            self._half_open_if_due()
            if self._state == "half_open":
                if self._trials < self.options.half_open_calls:
                    self._trials += 1
                else:
                    refused = self._refuse(f"half-open, its {self.options.half_open_calls} trial call(s) "
                                           "already in flight")
            elif self._state == "open":
                left = self._opened_at + self.options.wait_in_open - self._clock()
                refused = self._refuse(f"{self._trip_summary()}; trial calls in {max(left, 0.0):.1f} s")
        self._deliver()
        if refused is not None:
            raise refused

    def record(self, duration: float, failed: bool) -> None:
        """One acquired call's outcome: how many seconds it took and whether it counts as failed."""
        if not (isinstance(duration, int | float) and duration >= 0):  # NaN fails too
            raise InvalidArgument(f"a call's duration must be a number of seconds >= 0, not {duration!r}")
        slow = duration > self.options.slow_call_duration
        with self._lock:
            self._half_open_if_due()
            if self._state == "closed":
                self._window.add(failed, slow)
                if (self.options.enabled and self._window.calls >= self.options.minimum_calls
                        and self._over_threshold(self._window)):
                    self._open(self._window)
            elif self._state == "half_open" and self._trials > self._window.calls:
                self._window.add(failed, slow)
                if self._window.calls >= self.options.half_open_calls:
                    if self._over_threshold(self._window):
                        self._open(self._window)
                    else:
                        self._window = _Window(self.options.window_size)
                        self._change("closed")
        self._deliver()

    def release(self) -> None:
        """An acquired call ended with no outcome that counts (the caller gave up): free its trial slot."""
        with self._lock:
            if self._state == "half_open" and self._trials > self._window.calls:
                self._trials -= 1

    def snapshot(self) -> dict[str, Any]:
        """State and rates for status, metrics and readiness.

        While open, the rates and calls are those of the window that opened
        it (what an operator wants to see); otherwise those of the current
        window (the trial calls while half-open), 0.0 with no calls yet.
        ``not_permitted`` counts the calls refused since the breaker was made
        (a counter, for metrics); ``opened_for`` is the seconds left before
        trial calls, None unless open.
        """
        with self._lock:
            self._half_open_if_due()
            window = self._tripped if self._state == "open" and self._tripped is not None else self._window
            opened_for = None
            if self._state == "open":
                opened_for = max(self._opened_at + self.options.wait_in_open - self._clock(), 0.0)
            snap = {
                "state": self._state,
                "failure_rate": window.failure_rate,
                "slow_call_rate": window.slow_call_rate,
                "calls": window.calls,
                "not_permitted": self._not_permitted,
                "opened_for": opened_for,
            }
        self._deliver()
        return snap

    # -- under self._lock ------------------------------------------------------------

    def _over_threshold(self, window: _Window) -> bool:
        return (window.failure_rate >= self.options.failure_rate_threshold
                or window.slow_call_rate >= self.options.slow_call_rate_threshold)

    def _open(self, window: _Window) -> None:
        self._tripped = window
        self._tripped_over = "trial calls" if self._state == "half_open" else "calls"
        self._opened_at = self._clock()
        self._window = _Window(self.options.window_size)
        self._trials = 0
        self._change("open")

    def _half_open_if_due(self) -> None:
        if self._state == "open" and self._clock() - self._opened_at >= self.options.wait_in_open:
            self._window = _Window(self.options.half_open_calls)
            self._trials = 0
            self._change("half_open")

    def _change(self, new: str) -> None:
        old, self._state = self._state, new
        self._changes.append((old, new))
        if new == "open":
            log.warning("circuit breaker of %s opened: %s", self.name, self._trip_summary())
        else:
            log.info("circuit breaker of %s: %s -> %s", self.name, old, new)

    def _trip_summary(self) -> str:
        window = self._tripped
        if window is None:
            return "no calls recorded"
        return (f"failure rate {window.failure_rate:.0f}% (threshold {self.options.failure_rate_threshold:g}%), "
                f"slow-call rate {window.slow_call_rate:.0f}% (threshold {self.options.slow_call_rate_threshold:g}%,"
                f" slower than {self.options.slow_call_duration:g} s) over the last {window.calls} "
                f"{self._tripped_over}")

    def _refuse(self, reason: str) -> CircuitOpen:
        self._not_permitted += 1
        return CircuitOpen(self.name, reason)

    # -- outside self._lock ----------------------------------------------------------

    def _deliver(self) -> None:
        """Tell ``on_change`` of the changes queued so far, in order, never under ``self._lock``."""
        if not self._changes:
            return
        with self._notify_lock:
            while True:
                try:
                    old, new = self._changes.popleft()
                except IndexError:
                    return
                if self._on_change is None:
                    continue
                try:
                    self._on_change(self.name, old, new)
                except Exception:
                    log.exception("a listener of %s's circuit breaker failed on %s -> %s", self.name, old, new)


class Bulkhead:
    """At most ``max_concurrent`` calls in flight through it; past that a call waits up to ``max_wait`` s.

    With ``max_wait`` 0 (the default) an excess call fails fast with
    ``BulkheadFull``: a caller that is already at its limit gains nothing by
    queueing behind a plugin that is slow. A waiting call blocks its thread, so
    code on an event loop should keep ``max_wait`` at 0.
    """

    def __init__(self, name: str, max_concurrent: int, max_wait: float = 0.0) -> None:
        if not (isinstance(max_concurrent, int) and max_concurrent >= 1):
            raise InvalidArgument(f"a bulkhead's max_concurrent must be an integer >= 1, not {max_concurrent!r}")
        if not (isinstance(max_wait, int | float) and math.isfinite(max_wait) and max_wait >= 0):
            raise InvalidArgument(f"a bulkhead's max_wait must be a finite number of seconds >= 0, not {max_wait!r}")
        self.name = name
        self.max_concurrent = max_concurrent
        self.max_wait = float(max_wait)
        self._freed = threading.Condition()
        self._in_flight = 0
        self._rejected = 0
        self._waiting = 0

    def __repr__(self) -> str:
        return f"Bulkhead({self.name!r}, {self._in_flight}/{self.max_concurrent})"

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def rejected(self) -> int:
        """Calls refused since the bulkhead was made (a counter, for metrics)."""
        return self._rejected

    @property
    def waiting(self) -> int:
        """Calls waiting for a slot now (only with ``max_wait`` above 0)."""
        return self._waiting

    def _wait(self) -> bool:
        """Under ``self._freed``: wait up to ``max_wait`` for a free slot; whether one freed."""
        self._waiting += 1
        try:
            return self._freed.wait_for(lambda: self._in_flight < self.max_concurrent, self.max_wait)
        finally:
            self._waiting -= 1

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Hold one slot for the ``with`` block, or raise ``BulkheadFull``."""
        with self._freed:
            if self._in_flight >= self.max_concurrent and not (self.max_wait > 0 and self._wait()):
                self._rejected += 1
                waited = f"; none freed within {self.max_wait:g} s" if self.max_wait > 0 else ""
                raise BulkheadFull(self.name, f"{self._in_flight} calls in flight, the most this caller "
                                              f"may have{waited}")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._freed:
                self._in_flight -= 1
                self._freed.notify()


class _StopAtDeadline(stop_base):
    """Stop once the next attempt would start at or after the monotonic ``deadline``."""

    def __init__(self, deadline: float, clock: Clock) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep >= self.deadline


def retrying(options: RetryOptions, *, retry_if: Callable[[BaseException], bool], deadline: float | None = None,
             clock: Clock = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> tenacity.Retrying:
    """A tenacity ``Retrying`` for one idempotent call: ``retrying(...)(fn, *args)`` or ``for attempt in ...``.

    Up to ``options.attempts`` tries in all, retrying only an exception for
    which ``retry_if`` is true (a result is never retried). Between tries it
    waits a random time in [0, min(base * 2**n, max)]: full jitter, so callers
    that failed together spread out instead of returning as one herd. With a
    ``deadline`` (a ``clock()`` value, ``time.monotonic`` by default) it stops
    rather than sleep up to or past it. When it stops the last error itself is
    raised (``reraise``), never tenacity's ``RetryError``, so callers see the
    same errors with or without retries. ``clock`` and ``sleep`` are for tests.
    """
    stop: stop_base = tenacity.stop_after_attempt(options.attempts)
    if deadline is not None:
        stop = stop | _StopAtDeadline(deadline, clock)
    return tenacity.Retrying(
        stop=stop,
        wait=tenacity.wait_random_exponential(multiplier=options.base, max=options.max),
        retry=tenacity.retry_if_exception(retry_if),
        reraise=True,
        sleep=sleep,
    )


class Guards:
    """One breaker and one bulkhead per plugin (child id) for this process, made on first use.

    Per process, not per handle: every handle a replica makes for a plugin
    shares what it learned about the plugin. A guard is made anew when the
    options given for a child id change (a new config), losing what the old
    one had counted; calls in flight finish on the old one.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._guards: dict[str, tuple[ResilienceOptions, CircuitBreaker, Bulkhead]] = {}
        self._listeners: list[StateListener] = []

    def guard(self, child_id: str, options: ResilienceOptions) -> tuple[CircuitBreaker, Bulkhead]:
        with self._lock:
            held = self._guards.get(child_id)
            if held is None or held[0] != options:
                breaker = CircuitBreaker(child_id, options.breaker, clock=self._clock, on_change=self._changed)
                bulkhead = Bulkhead(child_id, options.max_concurrent_calls, options.max_wait)
                held = self._guards[child_id] = (options, breaker, bulkhead)
            return held[1], held[2]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Child id -> its breaker's snapshot plus the bulkhead's ``in_flight`` and ``rejected``."""
        with self._lock:
            held = list(self._guards.items())
        return {child_id: {**breaker.snapshot(), "in_flight": bulkhead.in_flight, "rejected": bulkhead.rejected}
                for child_id, (_, breaker, bulkhead) in held}

    def add_listener(self, fn: StateListener) -> None:
        """Call ``fn(child_id, old, new)`` on every breaker state change from now on."""
        with self._lock:
            self._listeners.append(fn)

    def _changed(self, name: str, old: str, new: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(name, old, new)
            except Exception:
                log.exception("a listener of %s's circuit breaker failed on %s -> %s", name, old, new)


_PROCESS_GUARDS = Guards()


def process_guards() -> Guards:
    """This process's one registry (made at import, so no race can make two)."""
    return _PROCESS_GUARDS
