"""The running warehouse's housekeeper: abandoned multipart uploads expire and unreferenced blobs
are swept without anyone running ``dw sweep``.

A supervised child of the plugin tree (``service.housekeeper``), started last.
Every ``[sweeper] interval`` seconds (jittered by up to a tenth, so the
housekeepers of several warehouses on one cluster drift apart) it runs one
round on a ``RayWarehouse`` over the tree's own actors:

1. ``expire_uploads()``: uploads begun more than ``[limits] multipart_upload_expiry``
   ago are aborted through the client's abort path, which releases their
   quota reservations;
2. ``sweep()``: blobs no committed row references and older than
   ``[sweeper] grace_seconds`` (the parts of those uploads among them) are deleted.

A failed round is logged and counted, never raised: housekeeping is not worth
a restart of the tree (a crash here would count toward the supervisor's
restart intensity). The first round waits one interval, so a warehouse that
starts does not begin with a full scan of its backend.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import ray

from dwray.config import DwrayConfig
from dwray.core.plugins import Manifest, Plugin

__all__ = ["HousekeeperPlugin"]

log = logging.getLogger(__name__)


class HousekeeperPlugin(Plugin):
    """Periodic upload expiry and blob sweeping for the warehouse whose tree it belongs to."""

    manifest = Manifest(
        name="service.housekeeper", kind="service", version="1.0.0", capabilities=("housekeeping",),
        config_schema={"type": "object", "properties": {"settings": {"type": "object"}},
                       "required": ["settings"], "additionalProperties": False})

    def __init__(self, settings: dict[str, Any]) -> None:
        self._config = DwrayConfig.model_validate(settings)
        self._interval = self._config.sweeper.interval
        self._stop = threading.Event()
        self._warehouse: Any = None
        self._rounds = self._failures = self._expired = self._swept = 0
        self._last_round: float | None = None
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        if self._interval > 0:
            self._thread = threading.Thread(target=self._loop, name="dwray-housekeeper", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval * (1 + random.uniform(0, 0.1))):  # noqa: S311 - jitter only
            self.run_once()

    def run_once(self) -> dict[str, Any]:
        """One round now (also what ``status()`` reports); errors are logged and reported, not raised."""
        try:
            warehouse = self._warehouse_over_tree()
            expired = warehouse.expire_uploads()
            report = warehouse.sweep()
        except Exception as exc:  # noqa: BLE001 - a failed round must not take the tree down
            self._failures += 1
            # The class and message only: dwray errors never carry secrets or object data.
            self._last_error = f"{type(exc).__name__}: {exc}"
            log.warning("housekeeping round failed: %s", self._last_error)
        else:
            self._expired += expired
            self._swept += report.deleted
            self._last_error = None
            if expired or report.deleted:
                log.info("housekeeping: %d multipart upload(s) expired, %d blob(s) swept", expired, report.deleted)
        self._rounds += 1
        self._last_round = time.time()
        return self.status()

    def status(self) -> dict[str, Any]:
        return {"interval": self._interval, "rounds": self._rounds, "failures": self._failures,
                "uploads_expired": self._expired, "blobs_swept": self._swept,
                "last_round": self._last_round, "last_error": self._last_error}

    def _warehouse_over_tree(self) -> Any:
        if self._warehouse is None:
            from actors.attach import RayWarehouse  # the tree's proxies; imported late, as the host runs us

            runtime = self._config.runtime
            supervisor = ray.get_actor(runtime.supervisor_name, namespace=runtime.namespace)
            self._warehouse = RayWarehouse(self._config, supervisor)
        return self._warehouse

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._warehouse is not None:
            self._warehouse.close()  # detaches: this client neither started the tree nor Ray
