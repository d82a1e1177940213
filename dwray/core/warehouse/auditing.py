"""The warehouse's audit hook: every checked operation's access, allowed or denied, goes to the audit log.

``dwray.core.warehouse.access`` calls ``audit_access`` after each public
operation (and on a denial), before the call returns or raises. The record of
a write (anything that is not a Get, Head or List) is durable before this
returns, so no acknowledged write lacks its record; records of reads are
batched (``dwray.core.audit.deferred``) and appended with the next write or
within a fraction of a second.
"""
from __future__ import annotations

import time

from dwray.core.models import TenantContext
from dwray.core.warehouse.base import WarehouseBase

__all__ = ["Auditing", "is_read_action"]

_READ_VERBS = ("Get", "Head", "List")


def is_read_action(action: str) -> bool:
    """``s3:GetObject``, ``s3:ListBucket``... change nothing; every other action may."""
    return action.rpartition(":")[2].startswith(_READ_VERBS)


class Auditing(WarehouseBase):
    """Appends one audit record per access (see the module docstring)."""

    def audit_access(self, ctx: TenantContext, action: str, resource: str, outcome: str,
                     error: BaseException | None = None) -> None:
        """Record ``action`` on ``resource`` by ``ctx``: ``outcome`` is ``allowed``, ``denied`` or ``error``."""
        if self.audit is None or self._audit_reads is None:
            return
        record = {
            "time": time.time(), "principal": ctx.principal, "tenant": ctx.tenant,
            "access_key_id": getattr(ctx, "access_key_id", None),
            "action": action, "resource": resource, "outcome": outcome,
            "error": type(error).__name__ if error is not None else None,
            "request_id": getattr(ctx, "request_id", None),
            "source_address": getattr(ctx, "source_address", None),
        }
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
