"""Circuit breaker, bulkhead, retries and the per-process guards, without Ray and without sleeping.

The breaker's time is a fake clock the tests move by hand; the bulkhead's
waits are driven by threading events; the retries' sleeps advance a fake clock.
"""
from __future__ import annotations

import threading
from contextlib import ExitStack

import pytest

from dwray.config import BreakerOptions, ResilienceOptions, RetryOptions
from dwray.core.resilience import (
    BREAKER_STATES,
    Bulkhead,
    CircuitBreaker,
    Guards,
    counts_as_failure,
    process_guards,
    retrying,
)
from dwray.errors import (
    AccessDenied,
    BucketNotFound,
    BulkheadFull,
    CircuitOpen,
    DurabilityError,
    IntegrityError,
    InvalidArgument,
    KmsUnavailable,
    ObjectNotFound,
    PluginError,
    PluginRefused,
    PluginTimeout,
    PluginUnavailable,
    QuotaExceeded,
    SecretNotFound,
    SecretUnavailable,
    StorageError,
    StorageFull,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def breaker(clock: FakeClock | None = None, on_change=None, **options) -> CircuitBreaker:
    defaults = dict(window_size=4, minimum_calls=4, failure_rate_threshold=50, slow_call_duration=1.0,
                    slow_call_rate_threshold=100, wait_in_open=5.0, half_open_calls=2)
    return CircuitBreaker("storage:local", BreakerOptions(**{**defaults, **options}), clock=clock or FakeClock(),
                          on_change=on_change)


def call(b: CircuitBreaker, failed: bool = False, duration: float = 0.01) -> None:
    b.acquire()
    b.record(duration, failed)


def opened(clock: FakeClock, on_change=None, **options) -> CircuitBreaker:
    b = breaker(clock, on_change, **options)
    for _ in range(b.options.minimum_calls):
        call(b, failed=True)
    assert b.state == "open"
    return b


# -- CircuitBreaker: closed ---------------------------------------------------------------


def test_a_new_breaker_is_closed_with_empty_rates() -> None:
    b = breaker()
    assert b.state == "closed" and b.state in BREAKER_STATES
    assert b.snapshot() == {"state": "closed", "failure_rate": 0.0, "slow_call_rate": 0.0, "calls": 0,
                            "not_permitted": 0, "opened_for": None}


def test_closed_stays_closed_below_minimum_calls_even_if_every_call_failed() -> None:
    b = breaker(window_size=10, minimum_calls=5)
    for _ in range(4):
        call(b, failed=True)
    snap = b.snapshot()
    assert snap["state"] == "closed" and snap["calls"] == 4 and snap["failure_rate"] == 100.0
    call(b, failed=True)
    assert b.state == "open"


def test_opens_when_the_failure_rate_reaches_the_threshold_not_below() -> None:
    below = breaker()
    for failed in (True, False, False, False):
        call(below, failed=failed)
    assert below.state == "closed" and below.snapshot()["failure_rate"] == 25.0

    at = breaker()
    for failed in (True, False, True):
        call(at, failed=failed)
    assert at.state == "closed"  # 3 calls, minimum 4
    call(at, failed=False)  # 2 of 4 = 50 %, the threshold
    snap = at.snapshot()
    assert snap["state"] == "open" and snap["failure_rate"] == 50.0 and snap["calls"] == 4


def test_the_window_slides_so_old_outcomes_drop_out() -> None:
    b = breaker(failure_rate_threshold=75)
    for failed in (True, True, False, False, False, True, True):
        call(b, failed=failed)
        assert b.state == "closed"
    assert b.snapshot()["failure_rate"] == 50.0  # the last four: ok, ok, failed, failed
    call(b, failed=True)  # ok, failed, failed, failed: 75 %
    assert b.state == "open"


def test_opens_on_the_slow_call_rate_and_a_call_at_the_limit_is_not_slow() -> None:
    b = breaker(slow_call_rate_threshold=50)
    for duration in (1.0, 1.0, 1.0, 1.5):  # exactly slow_call_duration is not slower than it
        call(b, duration=duration)
    assert b.state == "closed" and b.snapshot()["slow_call_rate"] == 25.0
    call(b, duration=2.0)  # 1.0, 1.0, 1.5, 2.0: 50 % slow, none failed
    snap = b.snapshot()
    assert snap["state"] == "open" and snap["slow_call_rate"] == 50.0 and snap["failure_rate"] == 0.0
    with pytest.raises(CircuitOpen, match=r"slow-call rate 50% \(threshold 50%, slower than 1 s\)"):
        b.acquire()


def test_slow_failed_calls_count_in_both_rates() -> None:
    b = breaker(failure_rate_threshold=100, slow_call_rate_threshold=100)
    for _ in range(3):
        call(b, failed=True, duration=0.1)
    call(b, failed=True, duration=5.0)
    snap = b.snapshot()
    assert snap["state"] == "open" and snap["slow_call_rate"] == 25.0 and snap["failure_rate"] == 100.0


# -- CircuitBreaker: open and half-open --------------------------------------------------


def test_open_fails_fast_naming_the_rates_and_the_seconds_left() -> None:
    clock = FakeClock()
    b = opened(clock)
    clock.now += 1.5
    with pytest.raises(CircuitOpen) as refused:
        b.acquire()
    message = str(refused.value)
    assert "'storage:local'" in message and "circuit breaker open" in message
    assert "failure rate 100% (threshold 50%)" in message and "over the last 4 calls" in message
    assert "trial calls in 3.5 s" in message
    assert isinstance(refused.value, PluginUnavailable)
    snap = b.snapshot()
    assert snap["not_permitted"] == 1 and snap["opened_for"] == pytest.approx(3.5)
    assert snap["calls"] == 4 and snap["failure_rate"] == 100.0  # the window that opened it


def test_outcomes_recorded_while_open_are_ignored() -> None:
    clock = FakeClock()
    b = opened(clock)
    b.record(0.01, False)  # a call that began before the breaker opened
    clock.now += 5
    assert b.state == "half_open" and b.snapshot()["calls"] == 0


def test_after_wait_in_open_exactly_half_open_calls_trials_are_permitted() -> None:
    clock = FakeClock()
    b = opened(clock, half_open_calls=3)
    clock.now += 4.9
    assert b.state == "open"
    clock.now += 0.1
    assert b.state == "half_open" and b.snapshot()["opened_for"] is None
    for _ in range(3):
        b.acquire()
    with pytest.raises(CircuitOpen, match="half-open, its 3 trial call"):
        b.acquire()
    assert b.snapshot()["not_permitted"] == 1


def test_trials_that_succeed_close_it() -> None:
    clock = FakeClock()
    b = opened(clock)
    clock.now += 5
    b.acquire()
    b.acquire()
    b.record(0.01, False)
    assert b.state == "half_open"  # one trial still out
    b.record(0.01, False)
    assert b.state == "closed"
    call(b)


def test_trials_failing_at_the_threshold_open_it_again() -> None:
    clock = FakeClock()
    b = opened(clock)
    clock.now += 5
    call(b, failed=False)
    call(b, failed=True)  # 1 of 2 = 50 %: at the threshold counts, as when closed
    assert b.state == "open"


def test_trials_below_the_thresholds_close_it() -> None:
    clock = FakeClock()
    b = opened(clock, half_open_calls=3)
    clock.now += 5
    for failed in (False, True, False):  # 33 % failed, below 50 %
        call(b, failed=failed)
    snap = b.snapshot()
    assert snap["state"] == "closed" and snap["calls"] == 0
    for _ in range(3):
        call(b, failed=True)  # fewer than minimum_calls in the new window
    assert b.state == "closed"


def test_trials_that_fail_open_it_again_for_another_wait() -> None:
    clock = FakeClock()
    b = opened(clock)
    clock.now += 5
    call(b, failed=True)
    call(b, failed=True)
    assert b.state == "open"
    with pytest.raises(CircuitOpen, match=r"over the last 2 trial calls; trial calls in 5.0 s"):
        b.acquire()
    clock.now += 5
    assert b.state == "half_open"


def test_release_frees_a_trial_slot_without_counting_an_outcome() -> None:
    clock = FakeClock()
    b = opened(clock)
    clock.now += 5
    b.acquire()
    b.acquire()
    with pytest.raises(CircuitOpen):
        b.acquire()
    b.release()  # that caller gave up
    assert b.snapshot()["calls"] == 0  # nothing counted for it
    b.acquire()  # its slot is free again
    with pytest.raises(CircuitOpen):
        b.acquire()
    b.record(0.01, False)
    assert b.state == "half_open" and b.snapshot()["calls"] == 1  # one trial is still out
    b.record(0.01, False)
    assert b.state == "closed"


def test_a_record_with_no_trial_out_is_ignored_while_half_open() -> None:
    clock = FakeClock()
    b = opened(clock)
    clock.now += 5
    call(b)
    b.record(0.01, True)  # a stray outcome of a call that began before the breaker opened
    assert b.state == "half_open" and b.snapshot()["calls"] == 1
    call(b)
    assert b.state == "closed"


def test_release_while_closed_changes_nothing() -> None:
    b = breaker()
    b.acquire()
    b.release()
    assert b.snapshot()["calls"] == 0 and b.state == "closed"


def test_a_disabled_breaker_never_opens_but_still_counts() -> None:
    b = breaker(enabled=False)
    for _ in range(20):
        call(b, failed=True, duration=30.0)
    snap = b.snapshot()
    assert snap["state"] == "closed" and snap["failure_rate"] == 100.0 and snap["slow_call_rate"] == 100.0


def test_a_bad_duration_is_refused_by_name() -> None:
    b = breaker()
    for bad in (-1.0, float("nan"), "1"):
        with pytest.raises(InvalidArgument, match="duration must be a number of seconds >= 0"):
            b.record(bad, False)


# -- CircuitBreaker: listeners and threads ------------------------------------------------


def test_on_change_hears_every_change_in_order_with_the_name() -> None:
    clock = FakeClock()
    changes: list[tuple[str, str, str]] = []
    b = opened(clock, on_change=lambda *change: changes.append(change))
    clock.now += 5
    call(b)
    call(b)
    assert changes == [("storage:local", "closed", "open"), ("storage:local", "open", "half_open"),
                       ("storage:local", "half_open", "closed")]


def test_a_failing_or_reentrant_listener_does_not_break_the_call() -> None:
    clock = FakeClock()
    seen: list[str] = []

    def listener(name: str, old: str, new: str) -> None:
        seen.append(b.snapshot()["state"])  # looks at the breaker from inside the callback
        raise RuntimeError("listener bug")

    b = breaker(clock, on_change=listener)
    for _ in range(4):
        call(b, failed=True)
    assert seen == ["open"] and b.state == "open"


def test_many_threads_keep_the_counts_consistent() -> None:
    threads, calls_each = 8, 200
    counted = breaker(enabled=False, window_size=threads * calls_each, minimum_calls=1)
    clock = FakeClock()
    trial = opened(clock, half_open_calls=5)
    clock.now += 5
    permitted = [0] * threads
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        start.wait()
        for n in range(calls_each):
            call(counted, failed=n % 4 == 0)
            try:
                trial.acquire()
            except CircuitOpen:
                continue
            permitted[i] += 1

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    snap = counted.snapshot()
    assert snap["calls"] == threads * calls_each and snap["failure_rate"] == 25.0
    assert sum(permitted) == 5  # exactly half_open_calls trials, however the threads raced
    assert trial.snapshot()["not_permitted"] == threads * calls_each - 5


# -- Bulkhead ------------------------------------------------------------------------


def test_the_bulkhead_fails_fast_at_its_limit_and_counts_rejections() -> None:
    bulkhead = Bulkhead("kms:local", 2)
    with ExitStack() as held:
        held.enter_context(bulkhead.slot())
        held.enter_context(bulkhead.slot())
        assert bulkhead.in_flight == 2
        with pytest.raises(BulkheadFull, match=r"'kms:local'.*2 calls in flight, the most this caller may have\)"):
            with bulkhead.slot():
                pass
    assert bulkhead.in_flight == 0 and bulkhead.rejected == 1
    with pytest.raises(ValueError, match="boom"), bulkhead.slot():
        raise ValueError("boom")
    assert bulkhead.in_flight == 0  # freed on an exception too


def test_a_waiting_call_is_admitted_when_a_slot_frees() -> None:
    bulkhead = Bulkhead("storage:local", 1, max_wait=60.0)
    admitted = threading.Event()
    with bulkhead.slot():
        waiter = threading.Thread(target=lambda: _enter_and_set(bulkhead, admitted))
        waiter.start()
        for _ in range(10_000):  # until the waiter is blocked in the bulkhead
            if bulkhead.waiting == 1:
                break
            admitted.wait(0.001)
        assert bulkhead.waiting == 1 and not admitted.is_set()
    assert admitted.wait(60)
    waiter.join()
    assert bulkhead.rejected == 0 and bulkhead.in_flight == 0 and bulkhead.waiting == 0


def _enter_and_set(bulkhead: Bulkhead, event: threading.Event) -> None:
    with bulkhead.slot():
        event.set()


def test_a_waiting_call_is_refused_when_no_slot_frees_in_time() -> None:
    bulkhead = Bulkhead("storage:local", 1, max_wait=0.01)
    with bulkhead.slot():
        with pytest.raises(BulkheadFull, match=r"none freed within 0.01 s"):
            with bulkhead.slot():
                pass
    assert bulkhead.rejected == 1 and bulkhead.waiting == 0


@pytest.mark.parametrize(("max_concurrent", "max_wait", "named"), [
    (0, 0.0, "max_concurrent"), (1.5, 0.0, "max_concurrent"), (1, -1.0, "max_wait"), (1, float("inf"), "max_wait"),
])
def test_a_bad_bulkhead_is_refused_by_name(max_concurrent, max_wait, named) -> None:
    with pytest.raises(InvalidArgument, match=named):
        Bulkhead("x", max_concurrent, max_wait)


# -- retrying -----------------------------------------------------------------------


class Flaky:
    """Fails with a fresh error each time until ``ok_after`` calls were made."""

    def __init__(self, ok_after: int = 10**6, error: type[Exception] = PluginTimeout) -> None:
        self.calls = 0
        self.ok_after = ok_after
        self.error = error
        self.raised: list[Exception] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.calls > self.ok_after:
            return "done"
        exc = self.error("storage:local", "get_blob", self.calls)
        self.raised.append(exc)
        raise exc


def test_retrying_retries_until_success_with_full_jitter() -> None:
    clock = FakeClock()
    slept: list[float] = []
    flaky = Flaky(ok_after=2)
    retry = retrying(RetryOptions(attempts=3, base=0.5, max=0.7), retry_if=counts_as_failure,
                     clock=clock, sleep=slept.append)
    assert retry(flaky) == "done" and flaky.calls == 3
    assert len(slept) == 2 and 0 <= slept[0] <= 0.5 and 0 <= slept[1] <= 0.7


def test_retrying_stops_at_attempts_and_reraises_the_last_error_itself() -> None:
    flaky = Flaky()
    with pytest.raises(PluginTimeout) as raised:
        retrying(RetryOptions(attempts=4, base=0), retry_if=counts_as_failure)(flaky)
    assert flaky.calls == 4 and raised.value is flaky.raised[-1]


def test_retrying_does_not_retry_what_retry_if_refuses() -> None:
    flaky = Flaky(error=lambda *args: ObjectNotFound("b", "k"))
    with pytest.raises(ObjectNotFound):
        retrying(RetryOptions(attempts=5, base=0), retry_if=counts_as_failure)(flaky)
    assert flaky.calls == 1


def test_retrying_stops_before_the_deadline() -> None:
    clock = FakeClock()
    flaky = Flaky()
    deadline = clock() + 0.5
    retry = retrying(RetryOptions(attempts=20, base=1.0, max=1.0), retry_if=counts_as_failure,
                     deadline=deadline, clock=clock, sleep=clock.sleep)
    with pytest.raises(PluginTimeout) as raised:
        retry(flaky)
    assert clock() < deadline and 1 <= flaky.calls < 20 and raised.value is flaky.raised[-1]

    past = Flaky()
    with pytest.raises(PluginTimeout):
        retrying(RetryOptions(attempts=5, base=0), retry_if=counts_as_failure, deadline=clock() - 1)(past)
    assert past.calls == 1  # the first try always runs; no retry starts past the deadline


# -- counts_as_failure and the guards --------------------------------------------------


@pytest.mark.parametrize(("exc", "counts"), [
    (PluginTimeout("p", "get_blob", 5), True),
    (PluginError("p", "get_blob", "boom"), True),
    (PluginRefused("p", "bad handshake"), True),
    (PluginUnavailable("p", "actor died"), True),
    (StorageError("write", "blob", "EIO"), True),
    (DurabilityError("fsync", "blob", "EIO"), True),
    (KmsUnavailable("transit", "connection refused"), True),
    (SecretUnavailable("vault:kv/x", "sealed"), True),
    (RuntimeError("an unexpected bug in the callee"), True),
    (ConnectionResetError("reset"), True),
    (CircuitOpen("p", "open"), False),
    (BulkheadFull("p", "full"), False),
    (StorageFull("write", "blob", "ENOSPC"), False),
    (ObjectNotFound("b", "k"), False),
    (BucketNotFound("b"), False),
    (InvalidArgument("bad"), False),
    (AccessDenied("s3:GetObject", "b/k"), False),
    (QuotaExceeded("tenant", "bytes", 10, 11), False),
    (IntegrityError("frame 3", "bad tag"), False),
    (SecretNotFound("vault:kv/x", "missing"), False),
    (KeyboardInterrupt(), False),
])
def test_counts_as_failure(exc: BaseException, counts: bool) -> None:
    assert counts_as_failure(exc) is counts


def test_guards_share_one_breaker_and_bulkhead_per_child_until_the_options_change() -> None:
    clock = FakeClock()
    guards = Guards(clock=clock)
    changes: list[tuple[str, str, str]] = []
    guards.add_listener(lambda *change: changes.append(change))
    options = ResilienceOptions(max_concurrent_calls=3, breaker=BreakerOptions(window_size=2, minimum_calls=2))
    b, bulkhead = guards.guard("storage:local", options)
    assert guards.guard("storage:local", ResilienceOptions.model_validate(options.model_dump())) == (b, bulkhead)
    assert bulkhead.max_concurrent == 3 and b.options.window_size == 2
    other, _ = guards.guard("kms:local", ResilienceOptions())
    assert other is not b

    call(b, failed=True)
    call(b, failed=True)
    with pytest.raises(BulkheadFull), ExitStack() as held:
        for _ in range(4):
            held.enter_context(bulkhead.slot())
    snap = guards.snapshot()
    assert snap["storage:local"]["state"] == "open" and snap["storage:local"]["rejected"] == 1
    assert snap["storage:local"]["in_flight"] == 0 and snap["kms:local"]["state"] == "closed"
    assert changes == [("storage:local", "closed", "open")]

    renewed, _ = guards.guard("storage:local", ResilienceOptions(max_concurrent_calls=4))
    assert renewed is not b and renewed.state == "closed"


def test_process_guards_is_one_registry() -> None:
    assert process_guards() is process_guards() and isinstance(process_guards(), Guards)
