"""The sandboxed side of a third-party plugin: ``python -m dwray.core.sandbox_child``.

Its host actor (``actors.sandbox_host``) starts it (under bubblewrap where
that works, always with a scrubbed environment) and talks to it over its
stdin and stdout. Frames are a 4-byte big-endian length and a msgpack
map. msgpack, not pickle, in *both* directions: the host must never unpickle
what a hostile plugin writes, and plain values (None, bool, int, float, str,
bytes, lists, maps) are what crosses; a result of any other type is an error.

Requests ``{"id", "op", ...}``; ops ``load`` (find the class, return its
manifest and public methods: nothing of the plugin runs with its config
yet), ``start`` (instantiate with the config), ``call``, ``health``,
``secret_rotated`` and ``close``. Replies ``{"id", "ok", "result"}`` or
``{"id", "ok": False, "error": {"type", "message"}}``; the plugin's
``request_stop(reason)`` sends ``{"event": "stop", "reason"}``. Calls run on
threads, so a slow call does not hold up health checks. End of input ends
the process.

The plugin's own ``print`` goes to stderr: fd 1 is pointed there at start,
and the frames use a private copy of the original stdout.
"""
from __future__ import annotations

import dataclasses
import os
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO

import msgpack

__all__ = ["MAX_FRAME", "FrameError", "read_frame", "write_frame"]

# A frame larger than this is refused (a hostile peer cannot make the other side allocate at will).
MAX_FRAME = 64 << 20
_HEADER = struct.Struct(">I")
# Lifecycle methods belong to the host, not to callers.
_NOT_CALLABLE = frozenset({"close", "request_stop", "health", "secret_refs", "on_secret_rotated"})


class FrameError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The next frame's map, or None at end of input."""
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise FrameError("input ended inside a frame header")
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes exceeds the {MAX_FRAME}-byte limit")
    body = stream.read(size)
    if len(body) < size:
        raise FrameError("input ended inside a frame")
    try:
        message = msgpack.unpackb(body, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise FrameError(f"a frame is not msgpack: {exc}") from None
    if not isinstance(message, dict):
        raise FrameError(f"a frame holds a {type(message).__name__}, not a map")
    return message


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    """Write one frame (raises ``TypeError`` for a value msgpack cannot carry)."""
    body = msgpack.packb(message, use_bin_type=True)
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _unknown_op(op: object) -> None:
    raise ValueError(f"unknown op {op!r}")


class _Child:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._plugin: Any = None
        self._cls: Any = None
        self._pool = ThreadPoolExecutor(max_workers=int(os.environ.get("DWRAY_SANDBOX_THREADS", "8")))

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            try:
                write_frame(self._out, message)
            except (TypeError, ValueError, OverflowError) as exc:
                write_frame(self._out, {"id": message.get("id"), "ok": False, "error": {
                    "type": "TypeError", "message": f"the result is not a plain value (None, bool, int, float, "
                                                    f"str, bytes, list, dict): {exc}"}})

    def reply(self, request_id: int, work: Any) -> None:
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the host as a reply
            self.send({"id": request_id, "ok": False,
                       "error": {"type": type(exc).__name__, "message": str(exc)[:2000]}})
        else:
            self.send({"id": request_id, "ok": True, "result": result})

    def load(self, plugin: str, trust: dict[str, Any] | None = None) -> dict[str, Any]:
        from dwray.core.plugin_trust import PluginTrust
        from dwray.core.plugins import load_plugin_class

        cls = load_plugin_class(plugin, PluginTrust.from_dict(trust) if trust is not None else None)
        manifest = getattr(cls, "manifest", None)
        self._cls = cls
        methods = sorted(name for name in dir(cls) if not name.startswith("_") and name not in _NOT_CALLABLE
                         and callable(getattr(cls, name, None)))
        shape = dataclasses.asdict(manifest) if dataclasses.is_dataclass(manifest) else None
        return {"manifest": shape, "methods": methods}

    def start(self, config: dict[str, Any]) -> None:
        plugin = self._cls(**config)
        plugin._dwray_stop_hook = lambda reason: self.send({"event": "stop", "reason": str(reason)})
        self._plugin = plugin

    def call(self, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if method.startswith("_") or method in _NOT_CALLABLE or not callable(getattr(self._cls, method, None)):
            raise AttributeError(f"no public method {method!r}")
        return getattr(self._plugin, method)(*args, **kwargs)

    def secret_rotated(self, ref: str) -> list[str]:
        self._plugin.on_secret_rotated(ref)
        return list(self._plugin.secret_refs())

    def serve(self, stream: BinaryIO) -> None:
        while (request := read_frame(stream)) is not None:
            request_id, op = request.get("id"), request.get("op")
            if op == "load":
                self.reply(request_id, lambda r=request: self.load(str(r["plugin"]), r.get("trust")))
            elif op == "start":
                self.reply(request_id, lambda r=request: self.start(dict(r["config"])))
            elif op == "close":
                self._pool.shutdown(wait=True)
                self.reply(request_id, lambda: self._plugin.close() if self._plugin is not None else None)
                return
            elif op == "call":
                self._pool.submit(self.reply, request_id, lambda r=request: self.call(
                    str(r["method"]), list(r.get("args") or []), dict(r.get("kwargs") or {})))
            elif op == "health":
                self._pool.submit(self.reply, request_id, lambda: self._plugin.health())
            elif op == "secret_rotated":
                self._pool.submit(self.reply, request_id, lambda r=request: self.secret_rotated(str(r["ref"])))
            else:
                self.reply(request_id, lambda o=op: _unknown_op(o))


def main() -> None:
    # What the plugin writes in its folder is private, like the rest of the data dir.
    os.umask(0o077)
    # Frames go to a private copy of stdout; whatever the plugin prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _Child(out).serve(sys.stdin.buffer)


if __name__ == "__main__":
    main()
