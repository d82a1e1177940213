"""Where one request's time goes: a per-request phase timer carried in a context variable.

The gateway starts a :class:`RequestTimer` for each S3 request when
``[gateway] server_timing`` is on and answers with its
:meth:`RequestTimer.header` as a standard ``Server-Timing`` header. Code that
does a measurable piece of work adds its elapsed time to a named phase with
:func:`add_time` or :func:`phase`: the plugin handles add each remote call's
time under the plugin's kind (``catalog``, ``kms``, ``storage``, ``audit``,
``stage``, ``identity``...), the gateway adds ``auth``.

A context variable, not an argument, because the phases are measured deep in
the warehouse (a plugin call under a put under a handler) that knows nothing
of HTTP; the gateway copies the context into the threads it runs warehouse
calls on. With no timer started (drivers, tests, the option off) every hook
is one context-variable read and nothing else. Phases are added up from
several threads of one request, so a timer takes a lock. A call coalesced into
another request's batch is counted by the request whose thread made the call.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

__all__ = ["RequestTimer", "add_time", "current_timer", "phase", "timing"]

_timer: ContextVar[RequestTimer | None] = ContextVar("dwray_request_timer", default=None)


class RequestTimer:
    """Seconds per phase of one request, and when it started."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.started = clock()
        self._phases: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        if not name.isidentifier():
            raise ValueError(f"a timing phase is a plain name (letters, digits, '_'), not {name!r}")
        with self._lock:
            self._phases[name] = self._phases.get(name, 0.0) + max(0.0, seconds)

    def phases(self) -> dict[str, float]:
        """A copy of the seconds added up per phase so far."""
        with self._lock:
            return dict(self._phases)

    def elapsed(self) -> float:
        return self._clock() - self.started

    def header(self, order: tuple[str, ...] = ()) -> str:
        """The ``Server-Timing`` value: ``total`` (since the timer started), then each phase, in milliseconds.

        The phases named in ``order`` come first and always appear (0.0 when
        not reached), so every response names the same phases; others follow
        by name.
        """
        phases = self.phases()
        names = list(order) + sorted(name for name in phases if name not in order)
        parts = [f"total;dur={self.elapsed() * 1000:.2f}"]
        parts += [f"{name};dur={phases.get(name, 0.0) * 1000:.2f}" for name in names]
        return ", ".join(parts)


def current_timer() -> RequestTimer | None:
    """The timer of the request this code runs for, if one was started."""
    return _timer.get()


def add_time(name: str, seconds: float) -> None:
    """Add ``seconds`` to phase ``name`` of the current request (nothing without a timer)."""
    timer = _timer.get()
    if timer is not None:
        timer.add(name, seconds)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block as phase ``name`` of the current request (free without a timer)."""
    timer = _timer.get()
    if timer is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        timer.add(name, time.perf_counter() - started)


@contextmanager
def timing(timer: RequestTimer | None) -> Iterator[RequestTimer | None]:
    """Make ``timer`` the current request's timer for the block (None: no timing in the block)."""
    token: Token[RequestTimer | None] = _timer.set(timer)
    try:
        yield timer
    finally:
        _timer.reset(token)
