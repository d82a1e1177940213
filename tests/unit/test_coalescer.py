"""Group calls: concurrent callers share one remote call; each gets its own result."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from actors.coalescer import Coalescer
from dwray.errors import BucketNotFound


def test_concurrent_callers_are_batched_and_get_their_own_results() -> None:
    batches: list[list[int]] = []
    gate = threading.Event()

    def send(items: list[int], contexts: list[dict[str, str]]) -> list[object]:
        assert len(contexts) == len(items)
        batches.append(list(items))
        if len(batches) == 1:
            gate.wait(5)  # hold the first batch so that the others queue up behind it
        return [BucketNotFound(f"b{i}") if i == 13 else i * 10 for i in items]

    coalesce = Coalescer(send)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(coalesce, i) for i in range(16)]
        time.sleep(0.3)
        gate.set()
        outcomes = []
        for i, future in enumerate(futures):
            if i == 13:
                with pytest.raises(BucketNotFound):
                    future.result()
            else:
                outcomes.append(future.result())
    assert outcomes == [i * 10 for i in range(16) if i != 13]
    assert sorted(i for batch in batches for i in batch) == list(range(16))
    assert len(batches) < 16  # the callers that waited went out together
    assert max(len(batch) for batch in batches) > 1


def test_a_failing_send_fails_its_whole_batch_only() -> None:
    calls = []

    def send(items: list[str], contexts: list[dict[str, str]]) -> list[str]:
        calls.append(items)
        if "boom" in items:
            raise ConnectionError("actor died")
        return [item.upper() for item in items]

    coalesce = Coalescer(send)
    with pytest.raises(ConnectionError):
        coalesce("boom")
    assert coalesce("fine") == "FINE"  # leadership was released after the failure
    assert calls == [["boom"], ["fine"]]


def test_each_callers_wait_counts_once_as_its_requests_phase() -> None:
    from dwray.core.request_timing import RequestTimer, add_time, timing

    gate = threading.Event()
    batches: list[list[int]] = []

    def send(items: list[int], contexts: list[dict[str, str]]) -> list[int]:
        batches.append(list(items))
        add_time("catalog", 100.0)  # what a plugin handle adds for its call: never counted twice
        if len(batches) == 1:
            gate.wait(5)  # the second caller queues behind the first batch
        return items

    coalesce = Coalescer(send, phase="catalog")
    timers = [RequestTimer(), RequestTimer()]

    def call(index: int) -> int:
        with timing(timers[index]):
            return coalesce(index)

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(call, 0)
        time.sleep(0.1)
        second = pool.submit(call, 1)  # queues: the first caller leads, and sends its batch too
        time.sleep(0.1)
        gate.set()
        assert (first.result(), second.result()) == (0, 1)
    assert batches == [[0], [1]]
    for timer in timers:
        assert 0.0 < timer.phases()["catalog"] < 100.0, timer.phases()
