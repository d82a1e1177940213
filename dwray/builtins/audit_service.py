"""The audit log as a service plugin (``service.audit``): the one writer of a Ray warehouse's audit log.

Gateway replicas and drivers all hold a ``Warehouse`` over the same data dir;
a Merkle log has one writer, so on Ray it lives in this actor and they reach
it through ``actors.remote_services.RemoteAudit``, whose ``append_many``
coalesces the records of concurrent callers into one call (and the log then
commits what arrives together as one group commit). Its state is the log's
files, so a restart loses nothing acknowledged.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dwray.core.audit import AuditLocations, AuditLog
from dwray.core.plugins import Manifest, Plugin

__all__ = ["AuditLogPlugin"]

_PATH = {"type": "string", "minLength": 1}
_COUNT = {"type": "integer", "minimum": 1}


class AuditLogPlugin(Plugin):
    """Appends audit records, durable and signed before each call returns.

    Its config holds paths only: the signing key is read from its file in this
    actor, never passed as an argument.
    """

    manifest = Manifest(
        name="service.audit", kind="service", version="1.0.0", capabilities=("audit",),
        config_schema={"type": "object", "properties": {
            "log_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"}, "folder": _PATH, "signing_key": _PATH,
            "copy_dir": _PATH, "monitor_state": _PATH, "checkpoint_every": _COUNT, "copy_every": _COUNT,
            "copy_interval": {"type": "number", "exclusiveMinimum": 0}},
            "required": ["log_id", "folder", "signing_key", "copy_dir", "monitor_state"],
            "additionalProperties": False})

    def __init__(self, log_id: str, folder: str, signing_key: str, copy_dir: str, monitor_state: str,
                 checkpoint_every: int = 64, copy_every: int = 1000, copy_interval: float = 60.0) -> None:
        locations = AuditLocations(log_id, Path(folder), Path(signing_key), Path(copy_dir), Path(monitor_state))
        self.log = AuditLog(locations, checkpoint_every=checkpoint_every, copy_every=copy_every,
                            copy_interval=copy_interval)

    @classmethod
    def config_of(cls, locations: AuditLocations, checkpoint_every: int, copy_every: int,
                  copy_interval: float) -> dict[str, Any]:
        """The plugin config for ``locations`` (what ``actors.bootstrap`` starts it with)."""
        return {"log_id": locations.log_id, "folder": str(locations.folder), "signing_key": str(locations.signing_key),
                "copy_dir": str(locations.copy_dir), "monitor_state": str(locations.monitor_state),
                "checkpoint_every": checkpoint_every, "copy_every": copy_every, "copy_interval": copy_interval}

    def append(self, fields: Mapping[str, Any]) -> int:
        return self.log.append(fields)

    def append_many(self, records: Sequence[Mapping[str, Any]]) -> list[int]:
        return self.log.append_many(records)

    def checkpoints_since(self, after: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Checkpoints kept for good past ``after`` entries (the event bus publishes each one)."""
        return self.log.kept_checkpoints(after, limit)

    def health(self) -> dict[str, Any]:
        return {"ok": True, "entries": self.log.size}

    def close(self) -> None:
        self.log.close()
