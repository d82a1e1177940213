"""Throwaway plugins for the supervision tests, importable by Ray workers.

Each one misbehaves in one way on purpose; name them in a ``ChildSpec`` as
``"dwray.testing.plugins:<Class>"``.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from dwray.core.plugins import Manifest, Plugin
from dwray.errors import BlobNotFound

__all__ = [
    "Configured",
    "CrashOnStart",
    "CrashWhileMarked",
    "Echo",
    "Flaky",
    "FutureSdk",
    "HangingClose",
    "HangingHealth",
    "MemoryHog",
    "PressureAware",
    "SlowHandshake",
]

_FOREVER = 3600.0


class Echo(Plugin):
    """Answers, counts, sleeps, raises, crashes and falls ill on command.

    ``close_marker``: a file that ``close()`` writes, so tests can tell an
    orderly stop from a kill.
    """

    manifest = Manifest(name="echo", kind="service", version="1.2.3", capabilities=("echo",),
                        config_schema={"type": "object",
                                       "properties": {"close_marker": {"type": "string"}},
                                       "additionalProperties": False})

    def __init__(self, close_marker: str | None = None) -> None:
        self.close_marker = close_marker
        self.count = 0
        self.sick = False
        self._lock = threading.Lock()

    def health(self) -> dict[str, Any]:
        return {"ok": False, "why": "sick"} if self.sick else {"ok": True}

    def sicken(self) -> None:
        self.sick = True

    def echo(self, value: Any) -> Any:
        return value

    def add(self, n: int = 1) -> int:
        with self._lock:
            self.count += n
            return self.count

    def pid(self) -> int:
        return os.getpid()

    def getenv(self, name: str) -> str | None:
        return os.environ.get(name)

    def pair(self, a: Any, b: Any) -> tuple[Any, Any]:
        return a, b

    def sleep(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def fail(self, message: str) -> None:
        raise ValueError(message)

    def missing_blob(self, blob_id: str) -> None:
        raise BlobNotFound(blob_id)

    def crash(self, code: int = 1) -> None:
        os._exit(code)

    def finish(self, reason: str = "work done") -> str:
        self.request_stop(reason)
        return reason

    def close(self) -> None:
        if self.close_marker:
            Path(self.close_marker).write_text(f"closed by {os.getpid()}\n")


class SlowHandshake(Plugin):
    """Its constructor never returns."""

    manifest = Manifest(name="slow-handshake", kind="service", version="0.1")

    def __init__(self) -> None:
        threading.Event().wait(_FOREVER)


class HangingHealth(Plugin):
    """After ``hang()``, its health check never returns."""

    manifest = Manifest(name="hanging-health", kind="service", version="0.1")

    def __init__(self) -> None:
        self._hung = threading.Event()

    def hang(self) -> bool:
        self._hung.set()
        return True

    def pid(self) -> int:
        return os.getpid()

    def health(self) -> dict[str, Any]:
        if self._hung.is_set():
            threading.Event().wait(_FOREVER)
        return {"ok": True}


class HangingClose(Plugin):
    """Its ``close()`` never returns."""

    manifest = Manifest(name="hanging-close", kind="service", version="0.1")

    def close(self) -> None:
        threading.Event().wait(_FOREVER)


class MemoryHog(Plugin):
    """Allocates (and touches) memory on command and keeps it."""

    manifest = Manifest(name="memory-hog", kind="service", version="0.1")

    def __init__(self) -> None:
        self._held: list[bytearray] = []

    def allocate(self, mib: int) -> int:
        # Filled with ones, not zeros: calloc'd zero pages would not be resident.
        self._held.append(bytearray(b"\x01") * (mib << 20))
        return sum(len(block) for block in self._held)

    def pid(self) -> int:
        return os.getpid()


class FutureSdk(Plugin):
    """Needs an SDK this dwray does not offer."""

    manifest = Manifest(name="future-sdk", kind="service", version="9.0", sdk=">=2,<3")


class Configured(Plugin):
    """Declares a config schema: ``root`` (string, required) and ``level`` (integer >= 1)."""

    manifest = Manifest(name="configured", kind="storage", version="0.1",
                        config_schema={"type": "object", "required": ["root"],
                                       "properties": {"root": {"type": "string"},
                                                      "level": {"type": "integer", "minimum": 1}},
                                       "additionalProperties": False})

    def __init__(self, root: str, level: int = 1) -> None:
        self.root = root
        self.level = level

    def settings(self) -> dict[str, Any]:
        return {"root": self.root, "level": self.level}


class CrashOnStart(Plugin):
    """Its process exits in the constructor, every time (a restart loop)."""

    manifest = Manifest(name="crash-on-start", kind="service", version="0.1")

    def __init__(self) -> None:
        os._exit(3)


class CrashWhileMarked(Plugin):
    """Its process exits in the constructor while the file ``marker`` exists (a fault an operator clears)."""

    manifest = Manifest(name="crash-while-marked", kind="service", version="0.1",
                        config_schema={"type": "object", "properties": {"marker": {"type": "string"}},
                                       "required": ["marker"], "additionalProperties": False})

    def __init__(self, marker: str) -> None:
        if Path(marker).exists():
            os._exit(3)
        self.marker = marker

    def echo(self, value: Any) -> Any:
        return value

    def crash(self, code: int = 1) -> None:
        os._exit(code)


class Flaky(Plugin):
    """Fails, hangs or slows down on command, for breaker, bulkhead and deadline tests.

    ``set_mode(mode, seconds)``: ``"ok"`` answers at once; ``"fail"`` raises a
    plain exception (the host makes it a ``PluginError``); ``"missing"`` answers
    with a dwray error (``BlobNotFound``: the plugin works); ``"slow"`` answers
    after ``seconds``; ``"hang"`` answers after an hour. ``work(value)`` obeys
    the mode; ``calls()`` counts the ``work`` calls that reached the plugin.
    """

    manifest = Manifest(name="flaky", kind="service", version="0.1")

    def __init__(self) -> None:
        self._mode = ("ok", 0.0)
        self._calls = 0
        self._lock = threading.Lock()

    def set_mode(self, mode: str, seconds: float = 0.0) -> str:
        if mode not in {"ok", "fail", "missing", "slow", "hang"}:
            raise ValueError(f"mode must be ok, fail, missing, slow or hang, not {mode!r}")
        self._mode = (mode, float(seconds))
        return mode

    def calls(self) -> int:
        return self._calls

    def work(self, value: Any) -> Any:
        with self._lock:
            self._calls += 1
        mode, seconds = self._mode
        if mode == "fail":
            raise RuntimeError("failing on command")
        if mode == "missing":
            raise BlobNotFound(str(value))
        if mode == "slow":
            time.sleep(seconds)
        elif mode == "hang":
            time.sleep(_FOREVER)
        return value


class PressureAware(Plugin):
    """Keeps the memory pressure levels the supervisor told it of, in order (``levels()``)."""

    manifest = Manifest(name="pressure-aware", kind="service", version="0.1")

    def __init__(self) -> None:
        self._levels: list[str] = []

    def on_memory_pressure(self, level: str) -> None:
        self._levels.append(level)

    def levels(self) -> list[str]:
        return list(self._levels)
