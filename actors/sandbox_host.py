"""SandboxedPlugin: the host actor's stand-in for a third-party plugin that runs in a subprocess.

``actors.plugin_host.PluginHost`` uses it in place of the plugin object when
``dwray.core.sandbox`` says the plugin is not built in and ``[sandbox] mode``
is not ``never``. It starts ``python -m dwray.core.sandbox_child``:

- under bubblewrap (``dwray.core.sandbox.bwrap_argv``) when bwrap works here;
  with ``mode = "always"`` a plugin is refused when it does not; with
  ``auto`` it still runs in a subprocess, with the scrubbed environment but
  the host's view of the filesystem and network (a warning is logged);
- always with the scrubbed environment (``scrub_env``) and its own folder
  (0700) as HOME and working directory;
- only after the host checked the plugin's provenance without importing it
  (``dwray.core.plugins.check_plugin_source``: allowlists, folder rules,
  signatures); the subprocess loads it with the same ``plugin_trust``, a
  folder plugin's folder bound read-only;
- with its CPU capped in a cgroup when ``cpu_quota`` is set and a writable
  hierarchy exists (else a warning: the cap is not enforced).

The subprocess is spawned from the thread that reads its replies and lives
as long as it: bwrap's ``--die-with-parent`` fires when the *thread* that
forked it ends. Frames are msgpack both ways (``dwray.core.sandbox_child``):
the host never unpickles what the plugin sends, and what a hostile plugin
says in an error only becomes the text of a ``PluginError``. The
subprocess ending outside an orderly ``close()`` is the plugin failing:
``on_exit(reason)`` tells the host, which reports it and exits, and the
supervisor restarts the child as for any crash.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import psutil

from dwray.core.plugins import Manifest, check_manifest, check_plugin_source
from dwray.core.sandbox import (
    SandboxLayout,
    bwrap_argv,
    bwrap_works,
    find_bwrap,
    place_in_cpu_cgroup,
    plugin_import_roots,
    scrub_env,
)
from dwray.core.sandbox_child import FrameError, read_frame, write_frame
from dwray.core.supervision import ChildSpec
from dwray.errors import PluginError, PluginRefused, PluginUnavailable

__all__ = ["SandboxedPlugin"]

logger = logging.getLogger(__name__)

# Errors of the child's "load" that mean the plugin cannot be admitted (and trying again will not help).
_REFUSALS = frozenset({"PluginNotFound", "PluginRefused", "InvalidArgument", "ImportError",
                       "ModuleNotFoundError", "AttributeError"})
_CLOSE_WAIT = 5.0


def _text(value: Any, limit: int = 500) -> str:
    """A hostile peer's value, reduced to bounded text."""
    return str(value)[:limit]


class SandboxedPlugin:
    """Forwards the plugin contract (``health``, ``close``, public methods, secret hooks) to the subprocess."""

    secret_resolver = None

    def __init__(self, spec: ChildSpec, generation: int, *, on_stop: Callable[[str], None],
                 on_exit: Callable[[str], None], cgroup_root: Path) -> None:
        self._spec = spec
        self._generation = generation
        self._on_stop = on_stop
        self._on_exit = on_exit
        self._cgroup_root = cgroup_root
        self._settings = spec.sandbox
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[str, Future[Any]]] = {}
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closing = False
        self._admitted = False  # set once started: an end before that fails the start, not the host
        self._ended = False
        self._methods: frozenset[str] = frozenset()
        self._own_temp: Path | None = None
        self._cgroup: Path | None = None
        self.isolation = "none"
        self.cpu_enforcement = "none"
        self.folder = Path()
        self._secret_refs: list[str] = []

    # -- start --------------------------------------------------------------------------

    def start(self) -> Manifest:
        """Start the subprocess, load the plugin class, check its manifest, then instantiate it."""
        spec, settings = self._spec, self._settings
        bwrap = find_bwrap(settings.bwrap)
        works, why = bwrap_works(bwrap) if bwrap else (False, "no bwrap binary found")
        if not works and settings.mode == "always":
            raise PluginRefused(spec.id, f"[sandbox] mode = always, and bubblewrap does not work here: {why}")
        if not works:
            logger.warning("child %s: bubblewrap does not work here (%s); the plugin runs in a subprocess with a "
                           "clean environment only", spec.id, why)
        self.folder = self._make_folder()
        # Provenance first (dwray.core.plugin_trust): a refused plugin's code reaches no process.
        plugin_dir = check_plugin_source(spec.plugin, spec.plugin_trust)
        binds, pythonpath = plugin_import_roots(spec.plugin)
        binds += [plugin_dir] if plugin_dir is not None else []  # a folder plugin's files, read-only
        extra = [Path(p).resolve() for p in settings.import_paths]
        env = scrub_env(os.environ, spec.env_vars, str(self.folder), [str(p) for p in [*pythonpath, *extra]])
        env["DWRAY_SANDBOX_THREADS"] = str(spec.max_concurrency)
        command = [sys.executable, "-B", "-m", "dwray.core.sandbox_child"]
        if works and bwrap:
            layout = SandboxLayout.for_python(self.folder, extra=[*binds, *extra],
                                              hidden=[Path(p) for p in settings.hidden], network=settings.network)
            command = bwrap_argv(bwrap, layout, command)
            self.isolation = "bwrap" if settings.network else "bwrap+no-network"
        else:
            self.isolation = "subprocess"
        self._spawn(command, env)
        if settings.cpu_quota is not None:
            self._cap_cpu(settings.cpu_quota)
        loaded = self._request("load", plugin=spec.plugin, trust=spec.plugin_trust.to_dict())
        manifest = self._manifest(loaded.get("manifest") if isinstance(loaded, dict) else None)
        # Checked before instantiation: an incompatible plugin's code never runs with this config.
        check_manifest(spec.id, manifest, spec.kind, spec.config)
        self._methods = frozenset(_text(m, 200) for m in (loaded.get("methods") or []) if isinstance(m, str))
        self._request("start", config=spec.config)
        self._admitted = True
        return manifest

    def _make_folder(self) -> Path:
        if self._settings.folder is None:
            self._own_temp = Path(tempfile.mkdtemp(prefix="dwray-plugin-"))
            return self._own_temp
        folder = Path(self._settings.folder).resolve()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder.chmod(0o700)
        if folder.parent.name == "plugins":
            folder.parent.chmod(0o700)
        return folder

    def _spawn(self, command: list[str], env: dict[str, str]) -> None:
        started: Future[None] = Future()
        reader = threading.Thread(target=self._run, args=(command, env, started),
                                  name=f"dwray-sandbox-{self._spec.id}", daemon=True)
        reader.start()
        started.result()

    def _run(self, command: list[str], env: dict[str, str], started: Future[None]) -> None:
        """Spawn the subprocess and read its frames until it ends (this thread is its parent)."""
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                    cwd=self.folder, start_new_session=True)
        except OSError as exc:
            started.set_exception(PluginError(self._spec.id, "handshake", f"cannot start the sandbox: {exc}"))
            return
        self._proc = proc
        started.set_result(None)
        reason = "the sandboxed plugin's process ended"
        try:
            assert proc.stdout is not None
            while (message := read_frame(proc.stdout)) is not None:
                self._dispatch(message)
        except FrameError as exc:
            reason = f"the sandboxed plugin broke the protocol: {exc}"
            proc.kill()
        code = proc.wait()
        reason = f"{reason} (exit code {code})"
        with self._pending_lock:
            pending, self._pending, self._ended = self._pending, {}, True
        for method, future in pending.values():
            future.set_exception(PluginUnavailable(self._spec.id, f"{method}: {reason}"))
        if self._admitted and not self._closing:
            self._on_exit(reason)

    def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("event") == "stop":
            self._on_stop(_text(message.get("reason")))
            return
        request_id = message.get("id")
        with self._pending_lock:
            entry = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if entry is None:
            return
        method, future = entry
        if message.get("ok") is True:
            future.set_result(message.get("result"))
            return
        error = message.get("error") if isinstance(message.get("error"), dict) else {}
        kind, text = _text(error.get("type"), 100), _text(error.get("message"))
        if method == "load" and kind in _REFUSALS:
            future.set_exception(PluginRefused(self._spec.id, f"cannot load {self._spec.plugin!r}: {kind}: {text}"))
        else:
            future.set_exception(PluginError(self._spec.id, method, f"{kind}: {text}"))

    def _request(self, op: str, label: str | None = None, **fields: Any) -> Any:
        proc = self._proc
        request_id = next(self._ids)
        future: Future[Any] = Future()
        with self._pending_lock:
            if proc is None or proc.stdin is None or self._ended:
                raise PluginUnavailable(self._spec.id,
                                        f"cannot run {label or op}: the sandboxed process is not running")
            self._pending[request_id] = (label or op, future)
        try:
            with self._write_lock:
                write_frame(proc.stdin, {"id": request_id, "op": op, **fields})
        except (BrokenPipeError, OSError) as exc:
            with self._pending_lock:
                self._pending.pop(request_id, None)
            raise PluginUnavailable(self._spec.id, f"cannot run {label or op}: {exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            with self._pending_lock:
                self._pending.pop(request_id, None)
            raise PluginError(self._spec.id, label or op,
                              f"arguments of a sandboxed plugin must be plain values: {exc}") from None
        return future.result()

    def _manifest(self, shape: Any) -> Manifest:
        if not isinstance(shape, dict):
            raise PluginRefused(self._spec.id, "the class has no dwray Manifest")
        try:
            return Manifest(name=str(shape["name"]), kind=str(shape["kind"]), version=str(shape["version"]),
                            sdk=str(shape.get("sdk", ">=1.0,<2")),
                            capabilities=tuple(str(c) for c in shape.get("capabilities") or ()),
                            config_schema=dict(shape.get("config_schema") or {"type": "object"}))
        except (KeyError, TypeError, ValueError) as exc:
            raise PluginRefused(self._spec.id, f"its manifest is malformed: {_text(exc, 200)}") from None

    def _cap_cpu(self, quota: float) -> None:
        assert self._proc is not None
        name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self._spec.id)}-g{self._generation}-{os.getpid()}"
        try:
            # The subprocess first (what it forks later inherits the group), then whatever it forked already.
            root = psutil.Process(self._proc.pid)
            pids = [self._proc.pid, *(child.pid for child in root.children(recursive=True))]
            self._cgroup = place_in_cpu_cgroup(self._cgroup_root, name, pids, quota)
            self.cpu_enforcement = f"cgroup:{self._cgroup}"
        except (OSError, psutil.Error) as exc:
            logger.warning("child %s: cpu_quota %g is not enforced: cannot use a cpu cgroup (%s)",
                           self._spec.id, quota, exc)

    # -- the plugin contract -------------------------------------------------------------

    def has_method(self, name: str) -> bool:
        return name in self._methods

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or name not in self.__dict__.get("_methods", ()):
            raise AttributeError(name)
        return lambda *args, **kwargs: self._request("call", name, method=name, args=list(args), kwargs=kwargs)

    def health(self) -> Any:
        return self._request("health", "health")

    def secret_refs(self) -> list[str]:
        """The references the plugin named after the last rotation event (its host does not watch them)."""
        return list(self._secret_refs)

    def on_secret_rotated(self, ref: str) -> None:
        refs = self._request("secret_rotated", "on_secret_rotated", ref=ref)
        self._secret_refs = [_text(r) for r in refs] if isinstance(refs, list) else []

    def subprocess_pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def close(self) -> None:
        """Ask the plugin to close, then end the subprocess (killed if it lingers) and remove what it left."""
        self._closing = True
        proc = self._proc
        try:
            if proc is not None and proc.poll() is None:
                self._request("close", "close")
        finally:
            if proc is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()  # type: ignore[union-attr]
                try:
                    proc.wait(_CLOSE_WAIT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            if self._cgroup is not None:
                with contextlib.suppress(OSError):
                    self._cgroup.rmdir()
            if self._own_temp is not None:
                shutil.rmtree(self._own_temp, ignore_errors=True)
