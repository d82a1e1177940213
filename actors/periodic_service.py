"""A supervised child that does one round of work on the warehouse every so often.

The housekeeper, the scrubber and the tier mover are such children: each runs
its rounds on a ``RayWarehouse`` over the tree's own actors, on a thread of
its own, every ``interval`` seconds (jittered by up to a tenth, so the
services of several warehouses on one cluster drift apart). The first round
waits one interval, so a warehouse that starts does not begin with a full scan.

A failed round is logged and counted, never raised: such work is not worth a
restart of the tree (a crash here would count toward the supervisor's
restart intensity). ``status()`` says how the rounds went.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from abc import ABC, abstractmethod
from typing import Any

import ray

from dwray.config import DwrayConfig
from dwray.core.plugins import Plugin

__all__ = ["PeriodicService"]

log = logging.getLogger(__name__)


class PeriodicService(Plugin, ABC):
    """Rounds of ``do_round(warehouse)`` every ``interval`` seconds; subclasses set both."""

    #: what the rounds do, for log lines
    doing = "round"

    def __init__(self, settings: dict[str, Any], interval: float | None = None) -> None:
        self._config = DwrayConfig.model_validate(settings)
        self._interval = self.interval_of(self._config) if interval is None else interval
        self._stop = threading.Event()
        self._round_lock = threading.Lock()
        self._warehouse: Any = None
        self._rounds = self._failures = 0
        self._last_round: float | None = None
        self._last_error: str | None = None
        self._thread: threading.Thread | None = None
        if self._interval > 0:
            self._thread = threading.Thread(target=self._loop, name=f"dwray-{self.doing}", daemon=True)
            self._thread.start()

    @abstractmethod
    def interval_of(self, config: DwrayConfig) -> float:
        """Seconds between rounds, from the config (0: no rounds)."""

    @abstractmethod
    def do_round(self, warehouse: Any) -> None:
        """One round of work; an exception is logged and counted by ``run_once``."""

    def round_status(self) -> dict[str, Any]:
        """What the subclass's rounds did so far, for ``status()``."""
        return {}

    def _loop(self) -> None:
        while not self._stop.wait(self._interval * (1 + random.uniform(0, 0.1))):
            self.run_once()

    def run_once(self) -> dict[str, Any]:
        """One round now (also what ``status()`` reports); errors are logged and reported, not raised.
        Rounds never overlap: a call during a round waits for it."""
        with self._round_lock:
            try:
                self.do_round(self._warehouse_over_tree())
            except Exception as exc:  # noqa: BLE001 - a failed round must not take the tree down
                self._failures += 1
                # The class and message only: dwray errors never carry secrets or object data.
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s failed: %s", self.doing, self._last_error)
            else:
                self._last_error = None
            self._rounds += 1
            self._last_round = time.time()
        return self.status()

    def status(self) -> dict[str, Any]:
        return {"interval": self._interval, "rounds": self._rounds, "failures": self._failures,
                "last_round": self._last_round, "last_error": self._last_error, **self.round_status()}

    def _warehouse_over_tree(self) -> Any:
        if self._warehouse is None:
            from actors.attach import (
                RayWarehouse,  # the tree's proxies; imported late, as the host runs us
            )

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
