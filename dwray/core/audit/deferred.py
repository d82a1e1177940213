"""Read records, appended a moment later in batches: a read needs its record, not an fsync of its own.

A write's record must be durable before the write is acknowledged, so writes
append synchronously (and take every read record waiting with them). A read
acknowledges nothing that could be lost, so its record waits here up to
``interval`` seconds and goes with the next write or the next timer flush,
many in one group commit. ``close`` flushes what is left.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol

__all__ = ["DeferredRecords"]

_log = logging.getLogger(__name__)
# Beyond this many waiting records (a sink failing for long), the oldest are dropped with a warning.
MAX_WAITING = 100_000


class _Sink(Protocol):
    def append_many(self, records: list[Mapping[str, Any]]) -> list[int]: ...


class DeferredRecords:
    """Records waiting for the next append to ``sink``, flushed at the latest every ``interval`` seconds."""

    def __init__(self, sink: _Sink, interval: float = 0.2) -> None:
        self._sink = sink
        self._interval = interval
        self._lock = threading.Lock()
        self._waiting: list[Mapping[str, Any]] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, record: Mapping[str, Any]) -> None:
        with self._lock:
            self._waiting.append(record)
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="dwray-audit-reads", daemon=True)
                self._thread.start()

    def append_with(self, record: Mapping[str, Any]) -> None:
        """Append ``record`` durably now, after every record waiting (so the log keeps their order)."""
        self.append_all_with([record])

    def append_all_with(self, records: list[Mapping[str, Any]]) -> None:
        """Append ``records`` durably now, after every record waiting (so the log keeps their order)."""
        with self._lock:
            batch, self._waiting = self._waiting, []
        try:
            self._sink.append_many([*batch, *records])
        except BaseException:
            self._requeue(batch)
            raise

    def flush(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        if not batch:
            return
        try:
            self._sink.append_many(batch)
        except Exception as exc:  # noqa: BLE001 - kept for the next try; the warning names the failure
            self._requeue(batch)
            _log.warning("%d audit records of reads wait: the audit log refused them: %s", len(batch), exc)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        self.flush()

    def _requeue(self, batch: list[Mapping[str, Any]]) -> None:
        with self._lock:
            self._waiting[:0] = batch
            excess = len(self._waiting) - MAX_WAITING
            if excess > 0:
                del self._waiting[:excess]
                _log.warning("dropped the %d oldest audit records of reads: the audit log refuses appends", excess)

    def _run(self) -> None:
        while not self._wake.wait(self._interval):
            self.flush()
