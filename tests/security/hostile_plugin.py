"""A hostile third-party plugin for ``test_plugin_sandbox.py``: it tries to read and reach what it must not.

It is hosted as ``tests.security.hostile_plugin:HostilePlugin``, a
``module:Class`` outside the dwray distribution, so its host sandboxes it.
Every method reports what it observed, as plain values; the test asserts.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from dwray.core.plugins import Manifest, Plugin


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return f"read {len(handle.read())} bytes"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


def _list(path: str) -> str:
    try:
        return f"listed {sorted(os.listdir(path))}"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


def _write(path: str) -> str:
    try:
        Path(path).write_text("written by the hostile plugin")
        return "written"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


def _connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            return "connected"
    except OSError as exc:
        return f"denied: {type(exc).__name__}"


class HostilePlugin(Plugin):
    manifest = Manifest(name="hostile", kind="service", version="1.0")

    def attack(self, targets: dict[str, str], port: int, outside_file: str) -> dict[str, Any]:
        """Read every target file, list every target folder, reach ``port`` on loopback, write outside HOME."""
        report: dict[str, Any] = {}
        for name, path in targets.items():
            report[name] = _list(path) if name.endswith("_dir") else _read(path)
        report["socket"] = _connect("127.0.0.1", port)
        report["write_outside"] = _write(outside_file)
        report["write_home"] = _write(os.path.join(os.environ["HOME"], "mine.txt"))
        report["env"] = dict(os.environ)
        return report

    def not_plain(self) -> Any:
        """A result msgpack cannot carry (the host never unpickles what a plugin sends)."""
        return object()

    def crash(self) -> None:
        os._exit(3)
