"""PluginHost: one plugin instance in its own Ray actor, under a memory cap.

The supervisor creates one host per child (``max_restarts=0``: restarts are
counted by the supervisor only), then calls ``handshake()``, which loads the
plugin class, checks its manifest against the child spec *before* any plugin
code runs with the config, instantiates it and returns the manifest.

A spare host (``ChildSpec.standby``) is created ahead of need: ``prepare()``
loads and checks the class without instantiating it, and on a restart
``activate(generation)`` hands it the new generation before the handshake.
``memory_pressure(level)`` passes the node's memory pressure, from the
supervisor, to the plugin's ``on_memory_pressure``.

Plugin calls run on the default concurrency group (``max_concurrency``
threads, from the child spec). Control calls (handshake, ping, shutdown, exit,
pid, node_id, finished_spans) have their own small thread group, so a plugin
busy with data calls still answers its health pings.

Orderly stop: ``shutdown()`` refuses new calls (``PluginUnavailable``), waits
for the calls in flight, then runs the plugin's ``close()``; ``exit()`` then
ends the actor gracefully. The supervisor bounds both and kills the actor if
they overrun.

The host never dies from a plugin exception: a dwray error passes through
unchanged (it pickles), anything else becomes ``PluginError(child, method,
reason)``.

Memory cap (``ChildSpec.memory_cap``):
- cgroup v2 with the memory controller and a writable hierarchy: the host
  moves itself into ``<root>/dwray/<child>-g<generation>-<pid>`` with
  ``memory.max`` set, so the kernel enforces the cap;
- always: an RSS watchdog thread that, past the cap, reports
  ``memory cap exceeded: RSS X > cap Y`` to the supervisor and exits the
  process. On cgroup v1 hosts (and in containers without a delegated v2
  hierarchy) it is the only enforcement; on v2 it gives the supervisor the
  reason when it wins the race with the kernel.

Secret rotation, without a restart:
- ``secret_rotated(ref)`` (from the supervisor, which ``dw secret rotate``
  tells) drops the secret from this process's shared resolvers
  (``dwray.secrets.invalidate_shared``) and calls the plugin's
  ``on_secret_rotated(ref)``;
- a plugin with a ``secret_resolver`` is also watched: every ``[secrets]
  watch_interval`` seconds the host asks for the current version of each of
  its ``secret_refs()`` and calls the same hook when one changed (a rotation
  made elsewhere: another host, the Vault UI, the AWS console).

Third-party plugins (``dwray.core.sandbox.is_builtin_plugin`` is false, and
``[sandbox] mode`` is not ``never``) do not run in this process: the host
starts them in a sandboxed subprocess (``actors.sandbox_host``) and forwards
the handshake, calls, health pings, secret rotations and close to it. Their
memory cap counts the subprocess too, and its death is the plugin's failure:
reported to the supervisor like a memory cap, and the host exits. Built-in
plugins run here exactly as before.

Tracing: ``call`` takes the caller's OpenTelemetry context in the reserved
keyword ``_dwray_trace`` and runs the method in a span ``<child id>.<method>``.
The host applies the child spec's ``tracing`` and ``logging`` sections to its
process (:mod:`dwray.core.telemetry`): spans are exported where the config
says, log lines carry the trace of the call that wrote them; ``shutdown()``
sends the spans still held; ``configure_telemetry(tracing, logging)`` applies
reloaded sections in place. With ``DWRAY_TRACE_MEMORY=1`` in the host's
environment, finished spans are also kept in memory and ``finished_spans()``
returns them (for tests).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import ray
from opentelemetry import propagate, trace

from actors.sandbox_host import SandboxedPlugin
from dwray.config_telemetry import LoggingConfig, TracingConfig
from dwray.core import telemetry
from dwray.core.plugins import Manifest, Plugin, check_manifest, load_plugin_class
from dwray.core.sandbox import is_builtin_plugin
from dwray.core.supervision import ChildSpec
from dwray.core.telemetry import add_span_processor, flush_telemetry
from dwray.errors import DwrayError, InvalidArgument, PluginError, PluginUnavailable
from dwray.secret_ref import parse_secret_ref
from dwray.secrets.resolver import invalidate_shared

__all__ = [
    "CONTROL_GROUP",
    "DEFAULT_CGROUP_ROOT",
    "MEMORY_EXIT_CODE",
    "TRACE_KWARG",
    "PluginHost",
    "RssWatchdog",
    "SecretWatch",
    "cgroup_v2_memory_available",
    "place_in_memory_cgroup",
]

logger = logging.getLogger(__name__)

CONTROL_GROUP = "control"
DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMORY_EXIT_CODE = 137
SANDBOX_EXIT_CODE = 1
TRACE_KWARG = "_dwray_trace"
TRACE_MEMORY_ENV = "DWRAY_TRACE_MEMORY"
SPAN_FLUSH_TIMEOUT = 2.0
# Lifecycle methods belong to the supervisor, not to callers.
_NOT_CALLABLE = frozenset({"close", "request_stop"})


def cgroup_v2_memory_available(root: Path = DEFAULT_CGROUP_ROOT) -> bool:
    """Whether ``root`` is a cgroup v2 hierarchy offering the memory controller that we may write."""
    try:
        controllers = (root / "cgroup.controllers").read_text().split()
    except OSError:
        return False
    return "memory" in controllers and os.access(root, os.W_OK)


def _enable_memory_controller(group: Path) -> None:
    control = group / "cgroup.subtree_control"
    current = control.read_text().split() if control.exists() else []
    if "memory" not in current:
        control.write_text("+memory\n")


def place_in_memory_cgroup(root: Path, name: str, pid: int, limit: int) -> Path:
    """Move ``pid`` into a new cgroup ``<root>/dwray/<name>`` whose ``memory.max`` is ``limit`` bytes.

    Empty cgroups left by earlier generations of the same child are removed
    (rmdir of a cgroup succeeds only when no process is left in it).
    """
    parent = root / "dwray"
    _enable_memory_controller(root)
    parent.mkdir(exist_ok=True)
    _enable_memory_controller(parent)
    stem = name.rsplit("-g", 1)[0]
    for stale in parent.glob(f"{stem}-g*"):
        if stale.name != name:
            with contextlib.suppress(OSError):
                stale.rmdir()
    leaf = parent / name
    leaf.mkdir(exist_ok=True)
    (leaf / "memory.max").write_text(f"{limit}\n")
    # Without swap the cap is a cap on memory, not on memory plus swap.
    if (leaf / "memory.swap.max").exists():
        (leaf / "memory.swap.max").write_text("0\n")
    (leaf / "cgroup.procs").write_text(f"{pid}\n")
    return leaf


class RssWatchdog(threading.Thread):
    """Polls the process's private resident memory and calls ``on_exceeded(reason)`` once past ``cap``.

    Private RSS (resident minus shared pages) leaves out the Ray object store's
    shared mappings, which zero-copy reads map into every reader.
    """

    def __init__(self, cap: int, on_exceeded: Callable[[str], None], interval: float = 0.2,
                 tree: bool = False) -> None:
        super().__init__(name="dwray-rss-watchdog", daemon=True)
        self.cap = cap
        self.tree = tree
        self.interval = interval
        self._on_exceeded = on_exceeded
        self._stopped = threading.Event()
        self._process = psutil.Process()

    def private_rss(self) -> int:
        """This process's private RSS; with ``tree``, plus its descendants' (a sandboxed plugin's subprocess)."""
        processes = [self._process, *(self._process.children(recursive=True) if self.tree else ())]
        total = 0
        for process in processes:
            try:
                info = process.memory_info()
            except psutil.Error:
                continue
            total += int(info.rss - getattr(info, "shared", 0))
        return total

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            rss = self.private_rss()
            if rss > self.cap:
                self._on_exceeded(f"memory cap exceeded: RSS {rss} > cap {self.cap}")
                return

    def stop(self) -> None:
        self._stopped.set()


def _same_secret(ref: str, other: str) -> bool:
    """Whether two references name the same secret (fields aside)."""
    a, b = parse_secret_ref(ref), parse_secret_ref(other)
    return (a.scheme, a.name) == (b.scheme, b.name)


class SecretWatch(threading.Thread):
    """Polls the versions of a plugin's ``secret_refs()`` and calls ``on_rotated(ref)`` when one changes.

    The interval is the plugin resolver's ``watch_interval``. A manager that
    cannot be reached is logged (reference and reason, never a value) and
    asked again next time; the plugin keeps its cached value meanwhile.
    """

    def __init__(self, child_id: str, plugin: Plugin, on_rotated: Callable[[str], None]) -> None:
        super().__init__(name="dwray-secret-watch", daemon=True)
        self._child_id = child_id
        self._plugin = plugin
        self._on_rotated = on_rotated
        self._stopped = threading.Event()
        self._versions: dict[str, str] = {}

    def check(self) -> list[str]:
        """Ask once for every watched reference's version; return (and report) the ones that changed."""
        resolver = self._plugin.secret_resolver
        if resolver is None:
            return []
        changed = []
        for ref in list(self._plugin.secret_refs()):
            try:
                version = str(resolver.version(ref))
            except DwrayError as exc:
                logger.warning("child %s: cannot check secret %s for rotation: %s", self._child_id, ref, exc)
                continue
            if ref in self._versions and self._versions[ref] != version:
                changed.append(ref)
                self._on_rotated(ref)
            self._versions[ref] = version
        return changed

    def run(self) -> None:
        while True:
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watch must outlive a plugin's bad hook
                logger.exception("child %s: the secret watch failed once", self._child_id)
            resolver = self._plugin.secret_resolver
            if self._stopped.wait(resolver.watch_interval if resolver is not None else 60.0):
                return

    def stop(self) -> None:
        self._stopped.set()


def _install_memory_tracing() -> Any:
    """Also keep this process's finished spans in memory (``DWRAY_TRACE_MEMORY=1``); return the exporter.

    (The exporter is kept on the host, not in a module global: Ray ships the
    actor class by value, with its own copy of this module's globals.)
    """
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _span_dict(span: Any) -> dict[str, Any]:
    parent = span.parent
    return {
        "name": span.name,
        "trace_id": format(span.context.trace_id, "032x"),
        "span_id": format(span.context.span_id, "016x"),
        "parent_span_id": format(parent.span_id, "016x") if parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
    }


def _has_public_method(plugin: Any, method: str) -> bool:
    if isinstance(plugin, SandboxedPlugin):
        return plugin.has_method(method)
    return callable(getattr(type(plugin), method, None))


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


@ray.remote(concurrency_groups={CONTROL_GROUP: 3}, max_restarts=0, max_task_retries=0)
class PluginHost:
    """Hosts one plugin instance for the supervisor; see the module docstring."""

    def __init__(self, spec: ChildSpec, generation: int, supervisor: Any = None,
                 cgroup_root: str = str(DEFAULT_CGROUP_ROOT)) -> None:
        self._spec = spec
        self._generation = generation
        self._supervisor = supervisor
        self._plugin: Plugin | SandboxedPlugin | None = None
        self._cgroup_root = Path(cgroup_root)
        # Decided from package metadata: no third-party code runs in this process to decide it.
        self._sandboxed = spec.sandbox.mode != "never" and not is_builtin_plugin(spec.plugin)
        self._manifest: Manifest | None = None
        self._prepared: tuple[type[Plugin], Manifest] | None = None  # a standby's loaded plugin class
        self._start_lock = threading.Lock()
        # Calls in flight, so that an orderly shutdown lets them finish before close().
        self._idle = threading.Condition()
        self._inflight = 0
        self._closing = False
        # Spans exported and log lines shaped as the config says; a header secret that cannot be
        # resolved here degrades to no export (logged) rather than keeping the plugin from serving.
        telemetry.configure_telemetry(spec.tracing, spec.logging, f"plugin:{spec.id}", degrade=True)
        self._span_exporter = _install_memory_tracing() if os.environ.get(TRACE_MEMORY_ENV) == "1" else None
        self._tracer = trace.get_tracer("dwray.plugin_host")
        self._enforcement = "none"
        self._watchdog: RssWatchdog | None = None
        self._secret_watch: SecretWatch | None = None
        if spec.memory_cap is not None:
            self._enforce_memory_cap(spec.memory_cap, Path(cgroup_root))

    # -- memory cap -----------------------------------------------------------

    def _enforce_memory_cap(self, cap: int, cgroup_root: Path) -> None:
        methods = []
        if cgroup_v2_memory_available(cgroup_root):
            name = f"{re.sub(r'[^A-Za-z0-9_.-]', '_', self._spec.id)}-g{self._generation}-{os.getpid()}"
            try:
                place_in_memory_cgroup(cgroup_root, name, os.getpid(), cap)
                methods.append("cgroup-v2")
            except OSError as exc:
                # A v2 tree we may not delegate in (a container's root cgroup holds
                # processes, so it cannot enable controllers): the watchdog remains.
                logger.warning("child %s: cannot use cgroup v2 memory cap (%s); using the RSS watchdog",
                               self._spec.id, exc)
        self._watchdog = RssWatchdog(cap, self._memory_exceeded, tree=self._sandboxed)
        self._watchdog.start()
        methods.append("rss-watchdog")
        self._enforcement = "+".join(methods)

    def _memory_exceeded(self, reason: str) -> None:
        self._fail_and_exit(reason, MEMORY_EXIT_CODE)

    def _sandbox_exited(self, reason: str) -> None:
        self._fail_and_exit(reason, SANDBOX_EXIT_CODE)

    def _fail_and_exit(self, reason: str, code: int) -> None:
        logger.error("child %s generation %d: %s; exiting", self._spec.id, self._generation, reason)
        if self._supervisor is not None:
            try:
                ray.get(self._supervisor.report_failure.remote(self._spec.id, self._generation, reason),
                        timeout=5)
            except Exception:  # noqa: BLE001 - exiting regardless; the supervisor's pings notice the death
                logger.exception("child %s: could not report its failure to the supervisor", self._spec.id)
        os._exit(code)

    @ray.method(concurrency_group=CONTROL_GROUP)
    def memory_enforcement(self) -> str:
        """How the memory cap is enforced here: "cgroup-v2+rss-watchdog", "rss-watchdog" or "none"."""
        return self._enforcement

    # -- lifecycle --------------------------------------------------------------

    @ray.method(concurrency_group=CONTROL_GROUP)
    def prepare(self) -> None:
        """A standby's warm-up: load and check the plugin class now, instantiate it at the handshake.

        Nothing of the plugin runs (no file or connection is opened), so a
        standby may wait beside the running host of the same child.
        """
        if self._sandboxed:
            return  # its subprocess starts at the handshake, with the generation it will serve
        with self._start_lock:
            if self._prepared is None:
                cls = load_plugin_class(self._spec.plugin, self._spec.plugin_trust)
                self._prepared = (cls, check_manifest(self._spec.id, getattr(cls, "manifest", None),
                                                      self._spec.kind, self._spec.config))

    @ray.method(concurrency_group=CONTROL_GROUP)
    def activate(self, generation: int) -> tuple[int, str]:
        """Promote this standby to serve ``generation``; returns ``(pid, node id)``. The handshake follows."""
        with self._start_lock:
            if self._plugin is not None:
                raise InvalidArgument(f"the host of {self._spec.id!r} already serves generation {self._generation}")
            self._generation = generation
        return os.getpid(), ray.get_runtime_context().get_node_id()

    @ray.method(concurrency_group=CONTROL_GROUP)
    def memory_pressure(self, level: str) -> None:
        """The node's memory pressure changed (from the supervisor): tell the plugin."""
        plugin = self._started("on_memory_pressure")
        hook = getattr(plugin, "on_memory_pressure", None)
        if hook is None:  # a sandboxed plugin's proxy, or a plugin from before the hook
            return
        try:
            hook(level)
        except DwrayError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise PluginError(self._spec.id, "on_memory_pressure", _reason(exc)) from None

    @ray.method(concurrency_group=CONTROL_GROUP)
    def handshake(self) -> Manifest:
        """Load, check and instantiate the plugin; return its manifest.

        Raises ``PluginRefused`` (manifest does not fit the spec),
        ``PluginNotFound`` (no such plugin) or ``PluginError`` (the plugin's
        constructor raised).
        """
        spec = self._spec
        with self._start_lock:
            if self._plugin is not None and self._manifest is not None:
                return self._manifest
            if self._sandboxed:
                return self._start_sandboxed()
            if self._prepared is not None:
                cls, manifest = self._prepared
            else:
                cls = load_plugin_class(spec.plugin, spec.plugin_trust)
                # Checked before instantiation: an incompatible plugin's code never runs with this config.
                manifest = check_manifest(spec.id, getattr(cls, "manifest", None), spec.kind, spec.config)
            try:
                plugin = cls(**spec.config)
            except DwrayError:
                raise
            except Exception as exc:  # noqa: BLE001 - any plugin failure is reported, the host lives on
                raise PluginError(spec.id, "handshake", _reason(exc)) from None
            plugin._dwray_stop_hook = self._stop_requested
            self._plugin, self._manifest = plugin, manifest
            if plugin.secret_resolver is not None:
                self._secret_watch = SecretWatch(spec.id, plugin, self._rotated)
                self._secret_watch.start()
            return manifest

    def _start_sandboxed(self) -> Manifest:
        sandboxed = SandboxedPlugin(self._spec, self._generation, on_stop=self._stop_requested,
                                    on_exit=self._sandbox_exited, cgroup_root=self._cgroup_root)
        try:
            manifest = sandboxed.start()
        except BaseException:
            sandboxed.close()
            raise
        self._plugin, self._manifest = sandboxed, manifest
        return manifest

    @ray.method(concurrency_group=CONTROL_GROUP)
    def sandbox_info(self) -> dict[str, Any]:
        """How the plugin is confined: isolation ("in-process", "subprocess", "bwrap", "bwrap+no-network"),
        CPU cap enforcement, its own folder and its subprocess's PID."""
        plugin = self._plugin
        if not isinstance(plugin, SandboxedPlugin):
            return {"isolation": "in-process", "cpu": "none", "folder": None, "pid": None}
        return {"isolation": plugin.isolation, "cpu": plugin.cpu_enforcement, "folder": str(plugin.folder),
                "pid": plugin.subprocess_pid()}

    def _stop_requested(self, reason: str) -> None:
        if self._supervisor is None:
            raise RuntimeError("this plugin host has no supervisor to stop it")
        self._supervisor.report_exit.remote(self._spec.id, self._generation, reason)

    def _started(self, method: str) -> Any:
        if self._plugin is None:
            raise PluginUnavailable(self._spec.id, f"cannot run {method}: the handshake has not run")
        return self._plugin

    @ray.method(concurrency_group=CONTROL_GROUP)
    def ping(self) -> Any:
        """The plugin's ``health()`` answer."""
        plugin = self._started("health")
        try:
            return plugin.health()
        except DwrayError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise PluginError(self._spec.id, "health", _reason(exc)) from None

    def _rotated(self, ref: str) -> None:
        """Forget the secret ``ref`` names in this process and tell the plugin."""
        invalidate_shared(ref)
        plugin = self._started("on_secret_rotated")
        try:
            plugin.on_secret_rotated(ref)
        except DwrayError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise PluginError(self._spec.id, "on_secret_rotated", _reason(exc)) from None

    @ray.method(concurrency_group=CONTROL_GROUP)
    def secret_rotated(self, ref: str) -> bool:
        """A rotation event for the secret ``ref`` names: drop it from the caches here and call the plugin's
        ``on_secret_rotated``. Returns whether the plugin declares that it uses the secret."""
        parse_secret_ref(ref)
        self._rotated(ref)
        plugin = self._started("secret_refs")
        return any(_same_secret(ref, used) for used in plugin.secret_refs())

    @ray.method(concurrency_group=CONTROL_GROUP)
    def shutdown(self) -> None:
        """Orderly stop: refuse new calls, let the calls in flight finish, then ``close()`` the plugin.

        The supervisor bounds this with the child's shutdown timeout, then
        calls ``exit()`` (and kills the actor if that does not end it).
        """
        with self._idle:
            self._closing = True
            self._idle.wait_for(lambda: self._inflight == 0)
        plugin = self._plugin
        if plugin is None:
            return
        if self._watchdog is not None:
            self._watchdog.stop()
        if self._secret_watch is not None:
            self._secret_watch.stop()
        try:
            plugin.close()
        except DwrayError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise PluginError(self._spec.id, "close", _reason(exc)) from None
        finally:
            flush_telemetry(SPAN_FLUSH_TIMEOUT)  # the last batch of spans, before exit() ends the process

    @ray.method(concurrency_group=CONTROL_GROUP)
    def configure_telemetry(self, tracing: TracingConfig, logging: LoggingConfig) -> None:
        """Apply reloaded ``[tracing]`` and ``[logging]`` sections to this process, in place (no restart).

        A header reference that does not resolve raises its dwray error and
        leaves the previous settings in force (the supervisor records it).
        """
        telemetry.configure_telemetry(tracing, logging, f"plugin:{self._spec.id}")
        self._spec = self._spec.model_copy(update={"tracing": tracing, "logging": logging})

    @ray.method(concurrency_group=CONTROL_GROUP)
    def exit(self) -> None:
        """End the actor gracefully: replies of calls still running are delivered first.

        The caller sees the actor die (``RayActorError``), not a return value.
        """
        ray.actor.exit_actor()

    @ray.method(concurrency_group=CONTROL_GROUP)
    def pid(self) -> int:
        return os.getpid()

    @ray.method(concurrency_group=CONTROL_GROUP)
    def node_id(self) -> str:
        return ray.get_runtime_context().get_node_id()

    @ray.method(concurrency_group=CONTROL_GROUP)
    def finished_spans(self) -> list[dict[str, Any]]:
        """Spans finished in this process, as plain dicts (needs ``DWRAY_TRACE_MEMORY=1``)."""
        if self._span_exporter is None:
            raise InvalidArgument(f"span capture is off in {self._spec.id!r}: "
                                  f"set {TRACE_MEMORY_ENV}=1 in the child's env_vars")
        return [_span_dict(span) for span in self._span_exporter.get_finished_spans()]

    # -- the data path ------------------------------------------------------------

    def call(self, method: str, *args: Any, _dwray_trace: dict[str, str] | None = None,
             _dwray_fanin: list[dict[str, str]] | None = None, **kwargs: Any) -> Any:
        """Run ``plugin.<method>(*args, **kwargs)`` in a span joined to the caller's trace."""
        plugin = self._started(method)
        if method.startswith("_") or method in _NOT_CALLABLE or not _has_public_method(plugin, method):
            raise InvalidArgument(f"plugin {self._spec.id!r} has no public method {method!r}")
        with self._idle:
            if self._closing:
                raise PluginUnavailable(self._spec.id, f"cannot run {method}: the plugin is shutting down")
            self._inflight += 1
        try:
            return self._traced_call(plugin, method, args, kwargs, _dwray_trace, _dwray_fanin)
        finally:
            with self._idle:
                self._inflight -= 1
                if self._inflight == 0:
                    self._idle.notify_all()

    def _traced_call(self, plugin: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                     _dwray_trace: dict[str, str] | None, fanin: list[dict[str, str]] | None) -> Any:
        """Run the call in a span of the caller's trace.

        A grouped call (``fanin``: the contexts of every caller whose request it
        carries, e.g. a group commit) also gets a span in each of those callers'
        traces, linked to the main span, so every operation's trace shows it.
        """
        context = propagate.extract(_dwray_trace) if _dwray_trace else None
        attributes = {
            "dwray.child": self._spec.id,
            "dwray.plugin": self._manifest.name if self._manifest else self._spec.plugin,
            "dwray.generation": self._generation,
            "dwray.method": method,
        }
        name = f"{self._spec.id}.{method}"
        with self._tracer.start_as_current_span(name, context=context, kind=trace.SpanKind.SERVER,
                                                attributes=attributes) as main:
            main_trace = main.get_span_context().trace_id
            joined = []
            for carrier in fanin or ():
                caller = propagate.extract(carrier)
                if trace.get_current_span(caller).get_span_context().trace_id in (0, main_trace):
                    continue
                joined.append(self._tracer.start_span(
                    name, context=caller, kind=trace.SpanKind.SERVER, attributes={**attributes, "dwray.grouped": True},
                    links=[trace.Link(main.get_span_context())]))
            try:
                return getattr(plugin, method)(*args, **kwargs)
            except DwrayError:
                raise
            except Exception as exc:  # noqa: BLE001 - the host never dies from a plugin exception
                raise PluginError(self._spec.id, method, _reason(exc)) from None
            finally:
                for span in joined:
                    span.end()
