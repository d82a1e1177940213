"""Memory pressure: how much of the node's memory is in use, as levels with hysteresis.

A process that runs out of memory is OOM-killed, and with it every request it
was serving. Instead, a ``MemoryMonitor`` reads the memory in use every
``[memory] interval`` seconds and moves through three levels:

- ``normal``;
- ``warning``: caches shrink (the bucket records and data keys of every
  ``Warehouse`` in the process, the memory backend) and plugins are told
  (``Plugin.on_memory_pressure``, through the supervisor);
- ``critical``: new writes and large reads are refused with ``Backpressure``
  (``503 SlowDown`` with ``Retry-After`` at the gateway) before any of their
  bytes are held, while small reads, deletes and listings go on.

A level is entered at its fraction of the limit and left only once the use is
``hysteresis`` below that, so a use hovering at a threshold does not flap.

What "in use" means follows what the kernel's OOM killer acts on: the limit of
the process's own memory cgroup (or of an ancestor's) where one is set, else
the machine's memory. Page cache that the kernel can drop at once (inactive
file pages) does not count, as ``docker stats`` and the kubelet count it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dwray.config import MemoryConfig
from dwray.errors import Backpressure, InvalidArgument

__all__ = ["LEVELS", "MemoryMonitor", "MemoryReading", "PressureLevels", "read_memory", "shared_monitor"]

_log = logging.getLogger(__name__)

LEVELS = ("normal", "warning", "critical")
_SOURCES = {"cgroup-v2": "the cgroup v2 limit", "cgroup-v1": "the cgroup v1 limit", "machine": "the machine's memory"}

Listener = Callable[[str, str, "MemoryReading"], None]


@dataclass(frozen=True)
class MemoryReading:
    """Bytes in use against a limit, and where the limit comes from (``cgroup-v2``, ``cgroup-v1``, ``machine``)."""

    used: int
    limit: int
    source: str

    @property
    def fraction(self) -> float:
        return self.used / self.limit if self.limit > 0 else 1.0

    def describe(self) -> str:
        return (f"{self.used} bytes in use of {self.limit} ({self.fraction:.1%}, "
                f"{_SOURCES.get(self.source, self.source)})")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (v2's no limit) and the unreadable: none


def _stat(path: Path, name: str) -> int:
    """One counter of a ``memory.stat`` file (0 when absent)."""
    try:
        for line in path.read_text().splitlines():
            field, _, value = line.partition(" ")
            if field == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _meminfo(proc: Path) -> tuple[int, int]:
    """The machine's memory: (total, available) bytes from ``/proc/meminfo``."""
    fields: dict[str, int] = {}
    for line in (proc / "meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0]) * 1024  # the file says kB and means KiB
    if "MemTotal" not in fields:
        raise InvalidArgument(f"{proc / 'meminfo'} has no MemTotal line")
    return fields["MemTotal"], fields.get("MemAvailable", fields.get("MemFree", 0))


def _own_cgroups(proc: Path) -> dict[str, str]:
    """The process's cgroup paths from ``/proc/self/cgroup``: ``"v2"`` and ``"memory"`` (v1)."""
    found: dict[str, str] = {}
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            found["v2"] = path
        elif "memory" in controllers.split(","):
            found["memory"] = path
    return found


def _lineage(mount: Path, path: str) -> Iterator[Path]:
    """The cgroup folder of ``path`` under ``mount`` and its ancestors up to the mount.

    In a cgroup namespace (a container) the path is relative to a root the
    process cannot see (or climbs out of it with ``..``), and the mount itself
    is its cgroup: then only the mount.
    """
    here = mount / path.strip("/")
    if ".." in Path(path).parts or not here.is_dir():
        here = mount
    yield here
    while here != mount and mount in here.parents:
        here = here.parent
        yield here


def _tightest(readings: Iterator[MemoryReading | None], machine_total: int) -> MemoryReading | None:
    """The reading closest to its limit, among cgroups whose limit is below the machine's memory."""
    limited = [r for r in readings if r is not None and 0 < r.limit < machine_total]
    return max(limited, key=lambda r: r.fraction, default=None)


def _v2(folder: Path) -> MemoryReading | None:
    limit, current = _read_int(folder / "memory.max"), _read_int(folder / "memory.current")
    if limit is None or current is None:
        return None
    return MemoryReading(max(current - _stat(folder / "memory.stat", "inactive_file"), 0), limit, "cgroup-v2")


def _v1(folder: Path) -> MemoryReading | None:
    limit, usage = _read_int(folder / "memory.limit_in_bytes"), _read_int(folder / "memory.usage_in_bytes")
    if limit is None or usage is None:
        return None
    used = usage - _stat(folder / "memory.stat", "total_inactive_file")
    return MemoryReading(max(used, 0), limit, "cgroup-v1")


def _v2_has_memory(cgroup_root: Path) -> bool:
    """Whether ``cgroup_root`` is a unified (v2) mount with the memory controller."""
    try:
        return "memory" in (cgroup_root / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def read_memory(cgroup_root: Path = Path("/sys/fs/cgroup"), proc: Path = Path("/proc")) -> MemoryReading:
    """The memory in use now: the process's cgroup against its limit where one is set, else the machine's.

    cgroup v2 (``cgroup_root`` is the unified mount): ``memory.current`` minus
    ``inactive_file`` against ``memory.max`` (``max``: none). cgroup v1
    (``cgroup_root/memory``): ``memory.usage_in_bytes`` minus
    ``total_inactive_file`` against ``memory.limit_in_bytes`` (v1 says no
    limit with a huge number). The process's own cgroup and each ancestor
    are read, as an ancestor's limit binds too; the one nearest its limit
    counts. A limit at or above the machine's memory is no limit. Without
    one: ``MemTotal - MemAvailable`` of ``/proc/meminfo``.
    """
    total, available = _meminfo(proc)
    own = _own_cgroups(proc)
    if "v2" in own and _v2_has_memory(cgroup_root):
        reading = _tightest((_v2(folder) for folder in _lineage(cgroup_root, own["v2"])), total)
        if reading is not None:
            return reading
    if "memory" in own and (cgroup_root / "memory").is_dir():
        reading = _tightest((_v1(folder) for folder in _lineage(cgroup_root / "memory", own["memory"])), total)
        if reading is not None:
            return reading
    return MemoryReading(max(total - available, 0), total, "machine")


class PressureLevels:
    """The level after each reading: a level is entered at its fraction and left only
    ``hysteresis`` below it (leaving ``critical`` may land in ``warning`` or ``normal``)."""

    def __init__(self, warning: float, critical: float, hysteresis: float) -> None:
        for name, value in (("warning", warning), ("critical", critical)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise InvalidArgument(f"the {name} level must be a fraction in (0, 1], not {value!r}")
        if isinstance(hysteresis, bool) or not isinstance(hysteresis, (int, float)) or not 0 <= hysteresis < 1:
            raise InvalidArgument(f"hysteresis must be a fraction in [0, 1), not {hysteresis!r}")
        if critical < warning:
            raise InvalidArgument(f"the critical level ({critical}) is below the warning level ({warning})")
        self.warning, self.critical, self.hysteresis = float(warning), float(critical), float(hysteresis)
        self.level = "normal"

    def threshold(self, level: str) -> float:
        """The fraction at which ``level`` is entered."""
        return self.critical if level == "critical" else self.warning

    def update(self, fraction: float) -> str:
        rank = LEVELS.index(self.level)
        for level in ("critical", "warning"):
            # A level at or below the current one is held until `hysteresis` below its threshold.
            held = LEVELS.index(level) <= rank
            if fraction >= self.threshold(level) - (self.hysteresis if held else 0.0):
                self.level = level
                return level
        self.level = "normal"
        return "normal"


class MemoryMonitor:
    """Readings of the node's memory on a daemon thread, the level they make, and who to tell.

    ``start()`` takes the first reading at once and then one every
    ``config.interval`` seconds; ``check()`` takes one now. Listeners get
    ``(old, new, reading)`` on each change of level, on the reading thread:
    they must be quick (drop a cache, send a message) and must not block.
    """

    def __init__(self, config: MemoryConfig, *, reader: Callable[[], MemoryReading] = read_memory) -> None:
        self.config = config
        self._reader = reader
        self._levels = PressureLevels(config.warning, config.critical, config.hysteresis)
        self.level = "normal"
        self.reading: MemoryReading | None = None
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()  # one reading and its notices at a time, so listeners see changes in order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def __repr__(self) -> str:
        return f"MemoryMonitor(level={self.level!r}, warning={self.config.warning}, critical={self.config.critical})"

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def check(self) -> str:
        """Take one reading now; returns the level it makes (and tells the listeners of a change)."""
        with self._lock:
            reading = self._reader()
            old, new = self.level, self._levels.update(reading.fraction)
            self.reading, self.level = reading, new
            if new == old:
                return new
            log = _log.warning if LEVELS.index(new) > LEVELS.index(old) else _log.info
            log("memory pressure %s -> %s: %s", old, new, reading.describe())
            for fn in list(self._listeners):
                try:
                    fn(old, new, reading)
                except Exception:  # noqa: BLE001 - one listener's failure must not stop the others
                    _log.exception("a memory pressure listener failed on %s -> %s", old, new)
            return new

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> MemoryMonitor:
        """Take the first reading and start the reading thread (once)."""
        with self._lock:
            if self.running:
                return self
            self._stop.clear()
            self._tick()
            self._thread = threading.Thread(target=self._run, name="dwray-memory-monitor", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.config.interval):
            self._tick()

    def _tick(self) -> None:
        try:
            self.check()
        except Exception as exc:  # noqa: BLE001 - a failed reading keeps the last level; said once per streak
            if not self._failing:
                _log.warning("cannot read the memory in use (keeping level %s): %s", self.level, exc)
            self._failing = True
        else:
            self._failing = False

    def status(self) -> dict[str, Any]:
        """``{"level","used","limit","fraction","source","warning","critical"}`` (``None`` before a reading)."""
        reading = self.reading
        return {"level": self.level, "used": reading.used if reading else None,
                "limit": reading.limit if reading else None,
                "fraction": round(reading.fraction, 4) if reading else None,
                "source": reading.source if reading else None,
                "warning": self.config.warning, "critical": self.config.critical}

    def refuse_if_critical(self, what: str) -> None:
        """Raise ``Backpressure`` naming ``what`` was refused and why, if the level is critical."""
        reading = self.reading
        if self.level != "critical" or reading is None:
            return
        config = self.config
        raise Backpressure(
            f"memory is critical, {what} refused: {reading.describe()}; critical from "
            f"{config.critical:.0%} until below {max(config.critical - config.hysteresis, 0):.0%}",
            config.retry_after)


_shared: dict[MemoryConfig, MemoryMonitor] = {}
_shared_lock = threading.Lock()


def shared_monitor(config: MemoryConfig) -> MemoryMonitor | None:
    """The process's running monitor for ``config`` (started on first use); ``None`` when disabled."""
    if not config.enabled:
        return None
    with _shared_lock:
        monitor = _shared.get(config)
        if monitor is None or not monitor.running:
            monitor = _shared[config] = MemoryMonitor(config).start()
        return monitor
