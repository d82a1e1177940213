"""The storage targets' and the scrubber's families on the gateway's ``/metrics`` page.

Gathered at scrape time: each storage target's ``pool_status()`` (from its
storage actor: replicas up, hints pending, blobs, bytes and tiers of a pool;
only the kind of a plain backend) and the scrubber's ``status()`` (passes,
what they found, the last pass). A part that does not answer is left off the
page (and logged), so one slow actor cannot take the page down.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from dwray.core.scrubbing import COUNTS

__all__ = ["gather_storage", "storage_families"]

log = logging.getLogger(__name__)


def gather_storage(warehouse: Any, scrubber: Any | None) -> dict[str, Any]:
    """``{"targets": {name: pool_status}, "scrubber": status or None}``; blocking (calls actors)."""
    targets: dict[str, Any] = {}
    for name, backend in warehouse.storages.items():
        try:
            targets[name] = backend.pool_status()
        except Exception as error:  # noqa: BLE001 - left off the page, not fatal
            log.warning("metrics: storage target %s did not answer (%s)", name, type(error).__name__)
    status = None
    if scrubber is not None:
        try:
            status = scrubber.call("status", idempotent=True)
        except Exception as error:  # noqa: BLE001 - left off the page, not fatal
            log.warning("metrics: the scrubber did not answer (%s)", type(error).__name__)
    return {"targets": targets, "scrubber": status}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def storage_families(storage: Mapping[str, Any]) -> list[Metric]:
    blobs = GaugeMetricFamily("dwray_storage_blobs", "Blobs a pool's index holds.", labels=["target"])
    size = GaugeMetricFamily("dwray_storage_bytes", "Bytes of the blobs a pool's index holds.", labels=["target"])
    tiers = GaugeMetricFamily("dwray_storage_tier_bytes", "Bytes on each tier of a tiered pool.",
                              labels=["target", "tier"])
    up = GaugeMetricFamily("dwray_storage_member_up", "1 while a pool's member answers, 0 while it is skipped.",
                           labels=["target", "member"])
    hints = GaugeMetricFamily("dwray_storage_hints_pending",
                              "Replica copies and deletes a pool's members missed and must catch up.",
                              labels=["target"])
    repairs = CounterMetricFamily("dwray_storage_repairs", "Replicas a pool rewrote from a good one since it opened.",
                                  labels=["target"])
    moves = CounterMetricFamily("dwray_storage_moves", "Blobs a tiered pool moved to its cold tier since it opened.",
                                labels=["target"])
    for target, status in (storage.get("targets") or {}).items():
        if not isinstance(status, Mapping) or "members" not in status:
            continue  # a plain backend: it has no index to count from
        for family, key in ((blobs, "blobs"), (size, "bytes"), (hints, "hints_pending"), (repairs, "repairs"),
                            (moves, "moves")):
            value = _number(status.get(key))
            if value is not None:
                family.add_metric([target], value)
        for tier, totals in (status.get("tiers") or {}).items():
            value = _number(totals.get("bytes")) if isinstance(totals, Mapping) else None
            if value is not None:
                tiers.add_metric([target, str(tier)], value)
        for member, member_status in (status.get("members") or {}).items():
            if isinstance(member_status, Mapping):
                up.add_metric([target, str(member)], 1.0 if member_status.get("up") else 0.0)
    families: list[Metric] = [blobs, size, tiers, up, hints, repairs, moves]
    scrubber = storage.get("scrubber")
    if isinstance(scrubber, Mapping):
        families.extend(_scrub_families(scrubber))
    return families


def _scrub_families(status: Mapping[str, Any]) -> list[Metric]:
    passes = CounterMetricFamily("dwray_scrub_passes", "Scrub passes the scrubber ran.")
    passes.add_metric([], float(_number(status.get("rounds")) or 0.0))
    found = CounterMetricFamily("dwray_scrub_found",
                                "What scrub passes found and did: blobs and bytes checked, corrupt and missing "
                                "replicas, repairs, orphan replicas removed.", labels=["what"])
    for count in COUNTS:
        found.add_metric([count], float(_number((status.get("found") or {}).get(count)) or 0.0))
    running = GaugeMetricFamily("dwray_scrub_running", "1 while a scrub pass runs.",
                                value=1.0 if status.get("running") else 0.0)
    families: list[Metric] = [passes, found, running]
    last = status.get("last_pass")
    if isinstance(last, Mapping):
        families.append(GaugeMetricFamily("dwray_scrub_last_pass_timestamp_seconds",
                                          "When the last scrub pass finished (Unix time).",
                                          value=float(_number(last.get("finished")) or 0.0)))
        unrepairable = sum(len(ids) for ids in (last.get("unrepairable") or {}).values())
        families.append(GaugeMetricFamily("dwray_scrub_last_pass_unrepairable",
                                          "Blobs the last scrub pass found with no good copy left.",
                                          value=float(unrepairable)))
    return families
