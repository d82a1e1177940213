"""The running warehouse's tier mover: blobs of tiered pools move from hot to cold in the background.

A supervised child of the plugin tree (``service.tier-mover``, when a tiered
pool is configured). Every ``move_interval`` (the shortest of the tiered
pools', ``actors.periodic_service``) it asks each tiered pool's storage actor
to move what is due (older than ``after_days``, then the oldest while the hot
tier holds more than ``hot_max_bytes``), in rounds of at most ``MOVE_BYTES``
each. Each move is crash-safe in the pool (copy, verify, switch the
placement in the pool's index, then delete), so a kill of either actor at any
moment leaves the object readable and moved exactly once.
"""
from __future__ import annotations

from typing import Any

from actors.housekeeper import SETTINGS_SCHEMA
from actors.periodic_service import PeriodicService
from dwray.config import DwrayConfig
from dwray.core.plugins import Manifest

__all__ = ["TierMoverPlugin"]

MOVE_BYTES = 256 << 20  # per call to a pool: a kill loses at most this much work in flight
MAX_CALLS = 64  # per pool and round, so a round ends and the next one finds new work


class TierMoverPlugin(PeriodicService):
    """Moves due blobs of every tiered pool to their cold tier."""

    manifest = Manifest(name="service.tier-mover", kind="service", version="1.0.0", capabilities=("tiering",),
                        config_schema=SETTINGS_SCHEMA)
    doing = "tier move"

    def __init__(self, settings: dict[str, Any]) -> None:
        self._moved: dict[str, dict[str, int]] = {}
        super().__init__(settings)

    def interval_of(self, config: DwrayConfig) -> float:
        return min((pool.move_interval for pool in config.pools.values() if pool.kind == "tiered"), default=0.0)

    def do_round(self, warehouse: Any) -> None:
        for _ in range(MAX_CALLS):
            if self._stop.is_set():
                return
            moved_now = 0
            for pool, report in warehouse.move_tiers(MOVE_BYTES).items():
                totals = self._moved.setdefault(pool, {"blobs": 0, "bytes": 0})
                totals["blobs"] += int(report.get("moved", 0))
                totals["bytes"] += int(report.get("bytes", 0))
                moved_now += int(report.get("moved", 0))
            if not moved_now:
                return

    def round_status(self) -> dict[str, Any]:
        return {"moved": {pool: dict(totals) for pool, totals in self._moved.items()}}
