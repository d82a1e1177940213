"""The running warehouse's scrubber: every blob of every storage target read back and verified on a
schedule, at a bounded rate, and repaired from a replica where there is one.

A supervised child of the plugin tree (``service.scrubber``, when ``[scrub]
interval`` is set). Every interval (``actors.periodic_service``) it runs one
pass, ``Warehouse.scrub()`` over the tree's storage actors: each step of it
runs in a storage actor (a pool checks block CRCs and repairs; a plain backend
reads each blob end to end), at most ``[scrub] rate`` bytes per second. The
pass's report is kept for ``dw scrub --report``; ``status()`` (shown by
``dw status`` and the gateway's ``/metrics``) has its totals and the step
under way.
"""
from __future__ import annotations

import logging
from typing import Any

from actors.housekeeper import SETTINGS_SCHEMA
from actors.periodic_service import PeriodicService
from dwray.config import DwrayConfig
from dwray.core.plugins import Manifest
from dwray.core.scrubbing import COUNTS

__all__ = ["ScrubberPlugin"]

log = logging.getLogger(__name__)


class ScrubberPlugin(PeriodicService):
    """Scrub passes over every storage target of the warehouse whose tree it belongs to."""

    manifest = Manifest(name="service.scrubber", kind="service", version="1.0.0", capabilities=("scrub",),
                        config_schema=SETTINGS_SCHEMA)
    doing = "scrub pass"

    def __init__(self, settings: dict[str, Any]) -> None:
        self._last: dict[str, Any] | None = None
        self._current: dict[str, Any] | None = None
        self._found = dict.fromkeys(COUNTS, 0)
        super().__init__(settings)

    def interval_of(self, config: DwrayConfig) -> float:
        return config.scrub.interval

    def _stepped(self, target: str, step: dict[str, Any]) -> None:
        current = self._current or {}
        self._current = {"target": target, "cursor": step.get("cursor", ""),
                         "bytes": current.get("bytes", 0) + int(step.get("bytes", 0))}

    def do_round(self, warehouse: Any) -> None:
        self._current = {"target": None, "cursor": "", "bytes": 0}
        try:
            report = warehouse.scrub(stop=self._stop, on_step=self._stepped)
        finally:
            self._current = None
        self._last = report
        for count in COUNTS:
            self._found[count] += report["totals"][count]
        totals = report["totals"]
        if totals["corrupt"] or totals["missing"] or totals["unrepairable"]:
            log.warning("scrub pass: %d corrupt and %d missing replica(s), %d repaired, %d unrepairable blob(s)",
                        totals["corrupt"], totals["missing"], totals["repaired"], totals["unrepairable"])

    def round_status(self) -> dict[str, Any]:
        last = self._last
        summary = None if last is None else {
            "finished": last["finished"], "seconds": last["seconds"], "complete": last["complete"],
            "totals": last["totals"],
            "unrepairable": {name: t["unrepairable"] for name, t in last["targets"].items() if t["unrepairable"]},
            "errors": {name: t["error"] for name, t in last["targets"].items() if t["error"]}}
        return {"rate": self._config.scrub.rate, "running": self._current, "last_pass": summary,
                "found": dict(self._found)}
