"""Group calls made concurrently by many threads into one remote call.

The catalog proxy's commits (a group commit), the key proxy's wraps and the
frame engine's small objects go through one each.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate

from dwray.core.request_timing import add_time, timing

__all__ = ["Coalescer"]


class Coalescer:
    """Group calls made concurrently by many threads into one remote call.

    The first caller to arrive becomes the leader: it sends everything queued
    as one batch, then any batch that queued meanwhile, while the others wait
    for their own result. Alone, a caller sends a batch of one at once, so
    nothing waits on a timer. This is how the catalog's commits become a group
    commit (one transaction, one fsync, for all the writers that arrived
    together).
    """

    def __init__(self, send: Callable[[list[Any], list[dict[str, str]]], list[Any]], max_batch: int = 64,
                 max_leaders: int = 1, phase: str | None = None) -> None:
        """``send(items, trace_contexts)`` makes the remote call for a batch and returns one result per item.

        ``max_leaders`` batches may be in flight at once (more overlap, smaller batches).
        ``phase``: each caller's whole wait (queueing, and the call its batch went in) counts
        as that phase of its timed request (``dwray.core.request_timing``), whichever thread
        made the call; the leader's call itself is then not counted again.
        """
        self._send = send
        self._phase = phase
        self._max_batch = max_batch
        self._max_leaders = max_leaders
        self._lock = threading.Lock()
        self._queue: list[tuple[Any, _Slot]] = []
        self._leaders = 0

    def __call__(self, item: Any) -> Any:
        if self._phase is None:
            return self._wait_for(item)
        started = time.perf_counter()
        try:
            return self._wait_for(item)
        finally:
            add_time(self._phase, time.perf_counter() - started)

    def _wait_for(self, item: Any) -> Any:
        slot = _Slot()
        # Each caller's trace context travels with its item, so the grouped
        # call appears in every caller's trace, not only the leader's.
        propagate.inject(slot.carrier)
        with self._lock:
            self._queue.append((item, slot))
            lead = self._leaders < self._max_leaders
            if lead:
                self._leaders += 1
        if lead:
            if self._phase is None:
                self._lead()
            else:
                with timing(None):  # counted above, for every caller alike
                    self._lead()
        slot.done.wait()
        if isinstance(slot.value, BaseException):
            raise slot.value
        return slot.value

    def _lead(self) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                if not batch:
                    self._leaders -= 1
                    return
            # The call runs in the first caller's trace; the host adds a span to each other's.
            token = otel_context.attach(propagate.extract(batch[0][1].carrier))
            try:
                results = self._send([item for item, _ in batch], [slot.carrier for _, slot in batch])
            except BaseException as exc:  # noqa: BLE001 - every waiter gets the batch's error
                results = [exc] * len(batch)
            finally:
                otel_context.detach(token)
            for (_, slot), value in zip(batch, results):
                slot.value = value
                slot.done.set()


class _Slot:
    __slots__ = ("carrier", "done", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.carrier: dict[str, str] = {}
