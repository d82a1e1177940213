"""The warehouse's audit hook: every checked operation's access, allowed or denied, goes to the audit log.

``dwray.core.warehouse.access`` calls ``audit_access`` after each public
operation (and on a denial), before the call returns or raises. The record of
a write (anything that is not a Get, Head or List) is durable before this
returns, so no acknowledged write lacks its record; records of reads are
batched (``dwray.core.audit.deferred``) and appended with the next write or
within a fraction of a second.
"""
from __future__ import annotations

import contextvars
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from dwray.core.models import TenantContext
from dwray.core.warehouse.base import WarehouseBase

__all__ = ["AheadRecords", "Auditing", "is_read_action"]

# Threads that wait for writes' audit appends (each append waits on the sink's group commit).
AHEAD_THREADS = 32

_READ_VERBS = ("Get", "Head", "List")


def is_read_action(action: str) -> bool:
    """``s3:GetObject``, ``s3:ListBucket``... change nothing; every other action may."""
    return action.rpartition(":")[2].startswith(_READ_VERBS)


class AheadRecords:
    """The ``allowed`` records of a write, being appended while the write runs."""

    def __init__(self, pairs: list[tuple[str, str]], future: Future[Any]) -> None:
        self.pairs = pairs
        self._future = future

    def result(self) -> None:
        """Wait until the records are durable; the audit log's error if they could not be."""
        self._future.result()

    def settle(self) -> None:
        """Wait for the append to end, whatever its outcome (the write failed: its error is the one to raise)."""
        try:
            self._future.result()
        except Exception:  # noqa: BLE001 - the write's own error goes to the caller
            pass


class Auditing(WarehouseBase):
    """Appends one audit record per access (see the module docstring)."""

    _ahead_pool: ThreadPoolExecutor | None = None
    _ahead_lock = threading.Lock()

    def audit_ahead(self, ctx: TenantContext, checks: list[tuple[str, str]]) -> AheadRecords | None:
        """Start appending the ``allowed`` records of a write's pairs durably; ``None`` for a read."""
        if self.audit is None or self._audit_reads is None:
            return None
        pairs = [(action, resource) for action, resource in checks if not is_read_action(action)]
        if not pairs:
            return None
        records = [self._record(ctx, action, resource, "allowed", None) for action, resource in pairs]
        # In the caller's context, so the append's time shows in a timed request's phases.
        append = contextvars.copy_context().run
        return AheadRecords(pairs, self._ahead_threads().submit(append, self._audit_reads.append_all_with, records))

    def _ahead_threads(self) -> ThreadPoolExecutor:
        with self._ahead_lock:
            if self._ahead_pool is None:
                self._ahead_pool = ThreadPoolExecutor(AHEAD_THREADS, thread_name_prefix="dwray-audit-ahead")
            return self._ahead_pool

    def close(self) -> None:
        # Appends still in flight end before the audit sink they go to is closed.
        if self._ahead_pool is not None:
            self._ahead_pool.shutdown(wait=True)
        super().close()

    def _record(self, ctx: TenantContext, action: str, resource: str, outcome: str,
                error: BaseException | None) -> dict[str, Any]:
        return {
            "time": time.time(), "principal": ctx.principal, "tenant": ctx.tenant,
            "access_key_id": getattr(ctx, "access_key_id", None),
            "action": action, "resource": resource, "outcome": outcome,
            "error": type(error).__name__ if error is not None else None,
            "request_id": getattr(ctx, "request_id", None),
            "source_address": getattr(ctx, "source_address", None),
        }

    def audit_access(self, ctx: TenantContext, action: str, resource: str, outcome: str,
                     error: BaseException | None = None) -> None:
        """Record ``action`` on ``resource`` by ``ctx``: ``outcome`` is ``allowed``, ``denied`` or ``error``."""
        if self.audit is None or self._audit_reads is None:
            return
        record = self._record(ctx, action, resource, outcome, error)
        if is_read_action(action):
            self._audit_reads.add(record)
        else:
            self._audit_reads.append_with(record)

    def audit_event(self, *, action: str, resource: str, outcome: str, durable: bool = False,
                    **fields: str | None) -> None:
        """Record something the edge decided without a warehouse operation: a request refused before it
        reached the warehouse (bad signature, unknown key, rate limit), or an admin action.

        ``fields`` are the other record fields (``tenant``, ``principal``, ``access_key_id``, ``error``,
        ``request_id``, ``source_address``). ``durable``: appended before this returns (an admin
        change); otherwise batched like a read's record.
        """
        if self.audit is None or self._audit_reads is None:
            return
        record = {"time": time.time(), "action": action, "resource": resource, "outcome": outcome, **fields}
        if durable:
            self._audit_reads.append_with(record)
        else:
            self._audit_reads.add(record)
