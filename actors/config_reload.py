"""The reload coordinator: a new config file, validated, diffed, applied all or nothing, recorded.

``reload_config`` is what ``dw config reload``, SIGHUP to ``dw up`` and the
file watch (``watch_config``) run, in the caller's process:

1. load the file (pydantic: a bad field is a ``ConfigError`` naming the
   field and the file);
2. diff it with the running config (the ``settings`` child's), redacted
   (``dwray.core.config_diff``); a change that a running warehouse cannot
   take (its data dir, namespace, gateway address...) refuses the reload;
3. hand the new child specs (``actors.bootstrap.warehouse_children``) to the
   supervisor's ``reconfigure``, which checks each changed plugin's config
   against its running plugin's schema, swaps or restarts the changed
   children and rolls every one of them back if a restarted one fails its
   handshake;
4. record the reload, applied or refused: the supervisor audits it (the
   audit log's ``dwray:ReloadConfig``) and keeps the latest ones; this module
   appends it to ``DATA_DIR/config/history.jsonl`` (0600) for ``dw config
   history``; an applied one is published on the bus as ``config.reloaded``.

What else changes live reads the running config itself: gateway replicas
poll the supervisor's ``config_revision`` and take the new rate limits and log
levels (``serve_apps.context``); callers' handles read deadlines and
resilience options from the children's specs. The process that runs the
reload applies the new ``[logging]`` and ``[tracing]`` to itself.

A refused reload raises ``ConfigError`` naming the file and why, after it is
recorded; nothing of it was applied.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from pydantic import ValidationError

from dwray.config import DwrayConfig, load_config
from dwray.core.config_diff import diff_configs, frozen_changes, summarize
from dwray.core.private_files import make_private_dir
from dwray.errors import ConfigError, DwrayError

__all__ = ["HISTORY_FILE", "UpReloader", "apply_telemetry", "config_diff", "default_source", "history_path",
           "read_history", "record_start", "reload_config", "watch_config"]

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
# Set by 'dw up' options as well as by the file: a reloaded file that leaves them out keeps the running ones.
STARTUP_OPTIONS = ("data_dir", "gateway.host", "gateway.port", "gateway.replicas", "gateway.tls_cert",
                   "gateway.tls_key", "runtime.dashboard", "runtime.defer_optional")
# Restarting plugins one by one (and rolling them back) may take each its start and handshake time.
RECONFIGURE_TIMEOUT = 900.0
CALL_TIMEOUT = 30.0
_history_lock = threading.Lock()


def history_path(data_dir: Path) -> Path:
    """``DATA_DIR/config/history.jsonl``: one JSON object per reload (and per ``dw up``), oldest first."""
    return Path(data_dir) / "config" / HISTORY_FILE


def _append_history(data_dir: Path, entry: dict[str, Any]) -> None:
    path = history_path(data_dir)
    make_private_dir(path.parent)
    line = (json.dumps(entry, sort_keys=True, default=str) + "\n").encode()
    with _history_lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)


def read_history(data_dir: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The latest ``limit`` entries of the history, oldest first (none when no reload was ever made)."""
    path = history_path(data_dir)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    entries = []
    for line in lines[-limit:] if limit else []:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write
    return entries


def record_start(config: DwrayConfig, source: str | Path | None) -> None:
    """Note in the history that the warehouse started with the file ``source`` (``dw up`` calls it):
    ``dw config reload`` with no file reloads that one."""
    _append_history(config.data_dir, {"time": time.time(), "event": "started",
                                      "source": None if source is None else str(Path(source).resolve())})


def default_source(data_dir: Path) -> str | None:
    """The file the warehouse last started or reloaded with, from the history."""
    for entry in reversed(read_history(data_dir, 1000)):
        if entry.get("source") and (entry.get("event") == "started" or entry.get("outcome") == "applied"):
            return str(entry["source"])
    return None


def _load(path: Path, running: DwrayConfig, data_dir: Path | None) -> DwrayConfig:
    """The file's config, as the running warehouse would have it.

    What ``dw up`` may set on its command line (``STARTUP_OPTIONS``: the data
    dir, the gateway's address, replicas and TLS files, the dashboard, deferred starts) is the running value
    unless the file or a ``DWRAY_*`` variable sets it: a file that leaves
    them out changes nothing there. ``data_dir`` (``dw --data-dir``) stands for
    the file's. A bad field is a ``ConfigError`` naming it and the file.
    """
    new = load_config(path)
    with open(path, "rb") as handle:
        written = tomllib.load(handle)
    kept: dict[str, Any] = {}
    for dotted in STARTUP_OPTIONS:
        section, _, name = dotted.rpartition(".")
        table = written.get(section, {}) if section else written
        variable = "DWRAY_" + dotted.upper().replace(".", "__")
        if name not in table and variable not in os.environ:
            kept[dotted] = getattr(getattr(running, section), name) if section else running.data_dir
    update: dict[str, Any] = {"data_dir": Path(data_dir or kept.get("data_dir") or new.data_dir).resolve()}
    for section in ("gateway", "runtime"):
        values = {dotted.split(".", 1)[1]: value for dotted, value in kept.items() if dotted.startswith(f"{section}.")}
        update[section] = getattr(new, section).model_copy(update=values)
    new = new.model_copy(update=update)
    try:
        return type(new).model_validate(new.model_dump())
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
                             for error in exc.errors())
        raise ConfigError(f"with the running {', '.join(kept)}: {problems}", str(path)) from None


def config_diff(running: DwrayConfig, path: str | Path, data_dir: Path | None = None) -> dict[str, Any]:
    """``{"source", "changes", "frozen"}``: how the file differs from ``running``, redacted."""
    source = str(Path(path).resolve())
    new = _load(Path(path), running, data_dir)
    changes = diff_configs(running.model_dump(mode="json"), new.model_dump(mode="json"))
    return {"source": source, "changes": [change.as_dict() for change in changes],
            "frozen": frozen_changes(changes)}


def reload_config(running: DwrayConfig, supervisor: Any, path: str | Path, *, data_dir: Path | None = None,
                  principal: str = "dw config reload", apply_here: str | None = None) -> dict[str, Any]:
    """Reload the warehouse ``supervisor`` runs with ``running`` from the file ``path``; return the result.

    The result is the supervisor's (``outcome``, ``restarted``, ``live``,
    ``revision``, ``generations``) plus ``source`` and ``changes``. Raises
    ``ConfigError`` naming the file when the reload is refused (recorded all
    the same). With ``apply_here`` (a process name) the caller's own logging and
    tracing take the new config too (``dw up``'s process). ``data_dir`` stands
    for the file's data dir (``dw --data-dir``).
    """
    from actors.bootstrap import warehouse_children

    source = str(Path(path).resolve())
    record: dict[str, Any] = {"principal": principal, "source": source, "summary": "", "changes": []}
    new: DwrayConfig | None = None
    try:
        new = _load(Path(path), running, data_dir)
    except ConfigError as exc:
        record.update(summary="the file is invalid", refused=str(exc))
    if new is not None:
        changes = diff_configs(running.model_dump(mode="json"), new.model_dump(mode="json"))
        record.update(summary=summarize(changes), changes=[change.as_dict() for change in changes])
        frozen = frozen_changes(changes)
        if frozen:
            record["refused"] = (f"{', '.join(frozen)} cannot change while the warehouse runs "
                                 "(stop it and start it again with the new file)")
    children = [] if record.get("refused") else warehouse_children(new)  # type: ignore[arg-type]
    result = _reconfigure(supervisor, children, record, None if new is None else (new.tracing, new.logging))
    result.update(source=source, changes=record["changes"])
    _append_history(running.data_dir, {
        "time": time.time(), "event": "reload", "principal": principal, "source": source,
        "outcome": result["outcome"], "reason": result.get("reason"), "revision": result.get("revision"),
        "restarted": result.get("restarted", []), "live": result.get("live", []),
        "rolled_back": result.get("rolled_back", False), "changes": record["changes"]})
    if result["outcome"] == "refused":
        raise ConfigError(str(result.get("reason")), source)
    if result["outcome"] == "applied" and new is not None:
        if apply_here is not None:
            apply_telemetry(new, apply_here)
        _publish(new, result)
    return result


def _reconfigure(supervisor: Any, children: list[Any], record: dict[str, Any],
                 telemetry: tuple[Any, Any] | None) -> dict[str, Any]:
    try:
        return ray.get(supervisor.reconfigure.remote(children, record, telemetry), timeout=RECONFIGURE_TIMEOUT)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, DwrayError):
            raise exc.cause from None
        raise


def apply_telemetry(config: DwrayConfig, process: str) -> None:
    """This process takes ``config``'s ``[tracing]`` and ``[logging]`` (log levels live)."""
    from dwray.core.telemetry import configure_telemetry

    configure_telemetry(config.tracing, config.logging, process, config=config)


def _publish(config: DwrayConfig, result: dict[str, Any]) -> None:
    """``config.reloaded`` on the bus: which paths changed (never values), revision, restarted plugins."""
    try:
        from actors.events_client import publish
    except ImportError:
        return  # no bus in this build
    payload = {"source": result["source"], "revision": result.get("revision"),
               "restarted": result.get("restarted", []), "paths": [c["path"] for c in result["changes"]]}
    try:
        publish(config, "config.reloaded", "config", payload)
    except Exception as exc:  # noqa: BLE001 - the reload is applied; a missed event must not undo it
        log.warning("could not publish config.reloaded: %s", type(exc).__name__)


class UpReloader:
    """What ``dw up`` holds for reloads: SIGHUP asks for one, ``dw up``'s own loop runs it; a file watch.

    The signal handler only sets a flag (``on_sighup``): the reload makes Ray
    calls, which a signal handler must not. ``poll()``, called from ``dw up``'s
    wait loop, runs it. With ``watch`` the file is also watched (watchfiles) and
    reloaded when it changes. A refused reload is logged and recorded; ``dw up``
    goes on serving the config it has. Reloads are one at a time.
    """

    def __init__(self, config: DwrayConfig, supervisor: Any, source: str | Path | None, *,
                 watch: bool = False, process: str = "dw up") -> None:
        self.config, self.supervisor, self.process = config, supervisor, process
        self.source = None if source is None else Path(source).resolve()
        self.requested = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        record_start(config, self.source)
        if watch and self.source is None:
            raise ConfigError("--watch-config needs a config file (--config or DWRAY_CONFIG)", "dw up")
        self._watch = watch_config(self.running, supervisor, self.source, self._stop, process=process,
                                   lock=self._lock) if watch else None

    def running(self) -> DwrayConfig:
        from actors.handles import running_config

        return running_config(self.config, self.supervisor)

    def on_sighup(self, *_: Any) -> None:
        self.requested.set()

    def poll(self) -> dict[str, Any] | None:
        """Run the reload SIGHUP asked for, if it did; its result (``None``: none asked, or refused)."""
        if not self.requested.is_set():
            return None
        self.requested.clear()
        source = self.source or default_source(self.config.data_dir)
        if source is None:
            log.error("SIGHUP: no config file to reload (dw up was started without --config)")
            return None
        try:
            with self._lock:
                result = reload_config(self.running(), self.supervisor, source, principal=f"SIGHUP to {self.process}",
                                       apply_here=self.process)
        except DwrayError as exc:
            log.error("config reload from %s refused: %s", source, exc)
            return None
        log.info("config reloaded from %s: %s", source, result["outcome"])
        return result

    def close(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.join(timeout=5)


def watch_config(running: Callable[[], DwrayConfig], supervisor: Any, path: str | Path, stop: threading.Event,
                 *, process: str = "dw up", debounce_ms: int = 500,
                 lock: threading.Lock | None = None) -> threading.Thread:
    """Reload from ``path`` whenever it changes (watchfiles), until ``stop`` is set; the thread is returned.

    ``running`` gives the running config at each change (it moves with every
    applied reload). A refused reload is logged and recorded; the watch goes on.
    """
    from watchfiles import watch

    target = Path(path).resolve()
    lock = lock or threading.Lock()

    def loop() -> None:
        for changes in watch(target.parent, stop_event=stop, debounce=debounce_ms, rust_timeout=1000,
                             watch_filter=lambda _change, changed: Path(changed) == target):
            if not changes:
                continue
            try:
                with lock:
                    result = reload_config(running(), supervisor, target, principal=f"{process} (file watch)",
                                           apply_here=process)
                log.info("config reloaded from %s: %s", target, result["outcome"])
            except DwrayError as exc:
                log.error("config reload from %s refused: %s", target, exc)
            except Exception:  # a watch that dies would stop every later reload
                log.exception("config reload from %s failed", target)

    thread = threading.Thread(target=loop, name="dwray-config-watch", daemon=True)
    thread.start()
    return thread
