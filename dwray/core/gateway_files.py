"""The files a running gateway leaves for local ``dw`` commands: its address and the admin token."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["GatewayFiles"]


@dataclass(frozen=True)
class GatewayFiles:
    """Where a running gateway leaves what local ``dw`` commands need."""

    folder: Path

    @property
    def state(self) -> Path:
        return self.folder / "gateway.json"

    @property
    def admin_token(self) -> Path:
        return self.folder / "admin-token"

    def write_state(self, state: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = self.state.with_suffix(".tmp")
        temp.write_text(json.dumps(state, indent=2))
        os.replace(temp, self.state)

    def read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def write_admin_token(self, token: str) -> None:
        """The admin token, readable by the owner only (0600 from creation, never wider)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        temp = self.admin_token.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, token.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self.admin_token)

    def read_admin_token(self) -> str | None:
        try:
            return self.admin_token.read_text().strip() or None
        except FileNotFoundError:
            return None
