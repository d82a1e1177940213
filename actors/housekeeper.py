"""The running warehouse's housekeeper: abandoned multipart uploads expire and unreferenced blobs
are swept without anyone running ``dw sweep``.

A supervised child of the plugin tree (``service.housekeeper``), started last.
Every ``[sweeper] interval`` seconds (``actors.periodic_service``) it runs one
round on a ``RayWarehouse`` over the tree's own actors:

1. ``expire_uploads()``: uploads begun more than ``[limits] multipart_upload_expiry``
   ago are aborted through the client's abort path, which releases their
   quota reservations;
2. ``sweep()``: blobs no committed row references and older than
   ``[sweeper] grace_seconds`` (the parts of those uploads among them) are deleted.
"""
from __future__ import annotations

import logging
from typing import Any

from actors.periodic_service import PeriodicService
from dwray.config import DwrayConfig
from dwray.core.plugins import Manifest

__all__ = ["HousekeeperPlugin"]

log = logging.getLogger(__name__)

SETTINGS_SCHEMA = {"type": "object", "properties": {"settings": {"type": "object"}}, "required": ["settings"],
                   "additionalProperties": False}


class HousekeeperPlugin(PeriodicService):
    """Periodic upload expiry and blob sweeping for the warehouse whose tree it belongs to."""

    manifest = Manifest(name="service.housekeeper", kind="service", version="1.0.0",
                        capabilities=("housekeeping",), config_schema=SETTINGS_SCHEMA)
    doing = "housekeeping"

    def __init__(self, settings: dict[str, Any]) -> None:
        self._expired = self._swept = 0
        super().__init__(settings)

    def interval_of(self, config: DwrayConfig) -> float:
        return config.sweeper.interval

    def do_round(self, warehouse: Any) -> None:
        expired = warehouse.expire_uploads()
        report = warehouse.sweep()
        self._expired += expired
        self._swept += report.deleted
        if expired or report.deleted:
            log.info("housekeeping: %d multipart upload(s) expired, %d blob(s) swept", expired, report.deleted)

    def round_status(self) -> dict[str, Any]:
        return {"uploads_expired": self._expired, "blobs_swept": self._swept}
