"""The tamper-evident audit log: who accessed what, allowed or denied, in a signed Merkle log.

- ``merkle``: RFC 6962 hashing, inclusion and consistency proofs and their verifiers;
- ``records``: what a record holds (never data or secrets);
- ``checkpoints``: Ed25519-signed (size, root, time), and their copies outside the data dir;
- ``locations``: where the log, the signing key, the copies and the monitor state live;
- ``log``: the writer (one per data dir; group commit; a signed checkpoint per commit);
- ``reader``: read-only access for ``dw audit``; ``verify``: the monitor's checks and proofs.

``AuditSink`` is what the warehouse appends to: the ``AuditLog`` itself in one
process, or the ``service.audit`` plugin's remote proxy on Ray.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from dwray.config import DwrayConfig
from dwray.core.audit.locations import AuditLocations
from dwray.core.audit.log import AuditLog

__all__ = ["AuditLocations", "AuditLog", "AuditSink", "open_audit_log"]


@runtime_checkable
class AuditSink(Protocol):
    """Where audit records go; ``append`` returns once the record is durable."""

    def append(self, fields: Mapping[str, Any]) -> int: ...

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]: ...

    def close(self) -> None: ...


def open_audit_log(config: DwrayConfig) -> AuditLog:
    """The writer of ``config``'s data dir's audit log, with its ``[audit]`` settings."""
    audit = config.audit
    return AuditLog(AuditLocations.of(config), checkpoint_every=audit.checkpoint_every,
                    copy_every=audit.copy_every, copy_interval=audit.copy_interval)
