"""The resident memory of the processes on the gateway's data path, sampled while a test streams."""
from __future__ import annotations

import threading
from typing import Any

import psutil

__all__ = ["PeakRss", "data_path_processes"]


def data_path_processes() -> list[psutil.Process]:
    """This machine's Ray workers (replica, plugin hosts, proxies), HAProxy, and this test process."""
    found = [psutil.Process()]
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        name = process.info["name"] or ""
        if (cmdline and cmdline[0].startswith("ray::")) or name == "haproxy":
            found.append(process)
    return found


class PeakRss:
    """Samples the RSS of every process every 50 ms; ``growth()`` is each one's peak over its start."""

    def __init__(self) -> None:
        self.processes = data_path_processes()
        self.start: dict[int, int] = {}
        self.peak: dict[int, int] = {}
        self.names: dict[int, str] = {}
        for process in self.processes:
            try:
                self.start[process.pid] = self.peak[process.pid] = process.memory_info().rss
                self.names[process.pid] = " ".join(process.cmdline()[:1]) or process.name()
            except psutil.Error:
                continue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for process in self.processes:
                if process.pid not in self.start:
                    continue
                try:
                    rss = process.memory_info().rss
                except psutil.Error:
                    continue
                if rss > self.peak[process.pid]:
                    self.peak[process.pid] = rss

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self) -> dict[str, int]:
        return {f"{self.names[pid]} ({pid})": self.peak[pid] - self.start[pid] for pid in self.start}
