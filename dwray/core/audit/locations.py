"""Where a data dir's audit log, its signing key, its checkpoint copies and its monitor state live.

Only the log itself is in the data dir. The log id is derived from the data
dir's resolved path (or set, ``[audit] log_id``, after a move), not stored in
it: someone rewriting the data dir cannot swap the log for a fresh one under
a new id, whose copy folder would be empty.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from dwray.config import DwrayConfig, default_master_key_path

__all__ = ["AuditLocations"]


@dataclass(frozen=True)
class AuditLocations:
    """The paths of one data dir's audit log (see ``[audit]`` in the config)."""

    log_id: str
    folder: Path
    signing_key: Path
    copy_dir: Path
    monitor_state: Path

    @property
    def database(self) -> Path:
        return self.folder / "log.sqlite"

    @classmethod
    def of(cls, config: DwrayConfig) -> AuditLocations:
        data_dir = config.data_dir.resolve()
        audit = config.audit
        log_id = audit.log_id or hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
        home = default_master_key_path().parent  # beside the master key
        return cls(
            log_id=log_id,
            folder=data_dir / "audit",
            signing_key=(audit.signing_key or home / "audit-signing.key").expanduser().resolve(),
            copy_dir=(audit.checkpoint_copy_dir or home / "audit-checkpoints" / log_id).expanduser().resolve(),
            monitor_state=(audit.monitor_state or home / "audit-monitor" / f"{log_id}.json").expanduser().resolve())
