"""The per-request phase timer behind the gateway's Server-Timing header."""
from __future__ import annotations

import contextvars
import threading

import pytest

from dwray.core.request_timing import RequestTimer, add_time, current_timer, phase, timing


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_header_names_total_then_the_ordered_phases_then_the_others() -> None:
    clock = Clock()
    timer = RequestTimer(clock)
    timer.add("storage", 0.0011)
    timer.add("catalog", 0.0004)
    timer.add("catalog", 0.0002)
    timer.add("zeta", 0.001)
    timer.add("alpha", 0.002)
    clock.now += 0.0031
    assert timer.header(("auth", "catalog", "storage")) == (
        "total;dur=3.10, auth;dur=0.00, catalog;dur=0.60, storage;dur=1.10, alpha;dur=2.00, zeta;dur=1.00")


def test_a_phase_name_must_be_a_plain_token() -> None:
    with pytest.raises(ValueError, match="plain name"):
        RequestTimer().add("kms;dur=9", 1.0)


def test_without_a_timer_the_hooks_do_nothing() -> None:
    assert current_timer() is None
    add_time("catalog", 1.0)
    with phase("auth"):
        pass
    assert current_timer() is None


def test_phases_reach_threads_that_run_in_the_requests_context() -> None:
    with timing(RequestTimer()) as timer:
        assert current_timer() is timer
        with phase("auth"):
            pass
        context = contextvars.copy_context()
        worker = threading.Thread(target=context.run, args=(add_time, "storage", 0.5))
        worker.start()
        worker.join()
        bare = threading.Thread(target=add_time, args=("kms", 0.5))  # no context copied: not this request's
        bare.start()
        bare.join()
    assert current_timer() is None
    measured = timer.phases()
    assert measured["storage"] == 0.5 and measured["auth"] >= 0 and "kms" not in measured
