"""One supervised child: its record, and starting and stopping its plugin host actor.

The supervisor (``actors.supervisor``) decides *when* a child starts or stops
and keeps the events; this module does the Ray work for one child:

- :func:`start_host` creates the host actor (named ``dwray:<child id>``,
  ``max_restarts=0``), waits for Ray to place it (``start_timeout``),
  handshakes (``handshake_timeout``) and checks the manifest; a child that is
  not admitted raises :class:`StartFailed`, which says whether trying again
  may help.
- :func:`prepare_standby` starts a spare host for a child whose spec asks for
  one (``standby``): the worker process runs and the plugin class is loaded
  and checked, but not instantiated. :func:`start_host` promotes it (the
  plugin is instantiated at the handshake, as in any host), so a restart
  does not wait for Ray to start a worker process.
- :func:`stop_host` gives the child its ``shutdown`` seconds for the host's
  ``shutdown()``, ends the actor gracefully (so replies in flight are
  delivered) and ``ray.kill``s whatever is left; ``brutal_kill`` kills at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import ActorUnschedulableError, RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.handles import death_reason
from actors.plugin_host import PluginHost
from dwray.core.plugins import Manifest, check_manifest
from dwray.core.supervision import ChildSpec
from dwray.errors import DwrayError, InvalidArgument, PluginNotFound, PluginRefused

__all__ = ["StartFailed", "SupervisedChild", "drop_standby", "host_name", "host_options", "kill_host",
           "prepare_standby", "prestart_host", "start_host", "stop_host", "unwrap_task_error"]

# How long a killed host may take to be gone.
_DEATH_WAIT = 5.0
# How long a standby may take to answer its promotion (it is running: this is a round trip).
_PROMOTE_WAIT = 5.0
_EXIT_WAIT = 2.0


def host_name(spec: ChildSpec) -> str:
    """A new host's Ray actor name: ``dwray:<child id>:<8 hex digits>``.

    Unique per host, so that a standby can be started beside the running host,
    and a restarted supervisor need not wait for the names of the hosts it
    lost to be released.
    """
    return f"{spec.actor_name}:{secrets.token_hex(4)}"


def host_options(spec: ChildSpec, namespace: str) -> dict[str, Any]:
    """Ray actor options for a child's plugin host: resources and placement from its spec."""
    options: dict[str, Any] = {
        "name": host_name(spec),
        "namespace": namespace,
        "num_cpus": spec.num_cpus,
        "max_concurrency": spec.max_concurrency,
        "max_restarts": 0,
        "max_task_retries": 0,
    }
    if spec.memory is not None:
        options["memory"] = spec.memory
    if spec.resources:
        options["resources"] = dict(spec.resources)
    if spec.node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(spec.node_id, soft=False)
    if spec.node_labels:
        # Ray 2.60 label selectors: {"key": "value"} means equality; Ray also
        # understands "!v", "in(a,b)" and "!in(a,b)". Every node carries
        # "ray.io/node-id"; others come from `ray start --labels`.
        options["label_selector"] = dict(spec.node_labels)
    if spec.env_vars:
        options["runtime_env"] = {"env_vars": dict(spec.env_vars)}
    return options


def unwrap_task_error(exc: BaseException) -> BaseException:
    """The exception a Ray task raised, rather than Ray's wrapper around it."""
    if isinstance(exc, RayTaskError) and isinstance(exc.cause, BaseException):
        return exc.cause
    return exc


class StartFailed(Exception):
    """A child could not be started; ``retry`` says whether trying again may help."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


@dataclass
class SupervisedChild:
    """What the supervisor knows of one child: its spec, state and current host."""

    spec: ChildSpec
    state: str = "idle"
    generation: int = 0
    host: Any = None
    restarts: int = 0
    attempts: int = 0  # consecutive restarts, for the backoff
    admitted: bool = False
    started_at: float = 0.0
    last_failure: str | None = None
    pid: int | None = None
    node_id: str | None = None
    manifest: Manifest | None = None
    health: Any = field(default=None, repr=False)
    host_name: str | None = None  # the Ray actor name of the current host
    # A spare (host, name, prepared), promoted at the next start: prepared in the background after a
    # start (prepare_standby), or only created, for a start of several children (prestart_host).
    standby: tuple[Any, str, bool] | None = None
    standby_task: Any = None  # the asyncio task preparing it

    @property
    def id(self) -> str:
        return self.spec.id


async def start_host(child: SupervisedChild, namespace: str, supervisor: Any, cgroup_root: str) -> bool:
    """Create (or promote the standby of) and admit the host of ``child``'s current generation.

    Raises ``StartFailed`` if it is not admitted. On success ``child.host``,
    ``host_name``, ``pid``, ``manifest`` and ``node_id`` describe the new host,
    and the result says whether it was a prepared standby; on failure the host is
    killed and ``child.host`` is ``None``.
    """
    spec = child.spec
    prepared = child.standby is not None and child.standby[2]
    promoted = await _promote_standby(child)
    if promoted is None:
        host, name = _create_host(child, namespace, supervisor, cgroup_root)
    else:
        host, name = promoted
    child.host, child.host_name = host, name
    try:
        if promoted is None:
            try:
                child.pid = await asyncio.wait_for(host.pid.remote(), spec.start_timeout)
            except TimeoutError:
                raise StartFailed(f"the host was not placed and started within {spec.start_timeout:g} s "
                                  "(start_timeout); check its resources and placement", retry=True) from None
            except RayActorError as exc:
                raise StartFailed(f"the host died while starting: {death_reason(exc)}", retry=True) from None
            except ActorUnschedulableError as exc:  # not a RayActorError: e.g. hard affinity to a node gone
                raise StartFailed(f"the host cannot be placed: {str(exc)[:300]}", retry=True) from None
        try:
            manifest = await asyncio.wait_for(host.handshake.remote(), spec.handshake_timeout)
            child.manifest = check_manifest(spec.id, manifest, spec.kind, spec.config)
        except TimeoutError:
            raise StartFailed(f"the handshake did not return within {spec.handshake_timeout:g} s "
                              "(handshake_timeout)", retry=True) from None
        except RayActorError as exc:
            raise StartFailed(f"the host died during the handshake: {death_reason(exc)}", retry=True) from None
        except (RayTaskError, DwrayError) as exc:
            cause = unwrap_task_error(exc)
            # A manifest that does not fit, or a plugin that does not exist, will not fit next time either.
            if isinstance(cause, PluginRefused):
                raise StartFailed(str(cause.reason), retry=False) from None
            if isinstance(cause, (PluginNotFound, InvalidArgument)):
                raise StartFailed(str(cause), retry=False) from None
            raise StartFailed(f"the handshake failed: {cause}", retry=True) from None
        if child.node_id is None:
            child.node_id = await host.node_id.remote()
    except BaseException:
        ray.kill(host, no_restart=True)
        child.host = child.host_name = None
        raise
    return promoted is not None and prepared


async def _promote_standby(child: SupervisedChild) -> tuple[Any, str] | None:
    """Hand ``child``'s prepared standby its new generation; ``None`` if there is none that answers."""
    standby, child.standby = child.standby, None
    if standby is None:
        return None
    host, name, prepared = standby
    # A spare that was only created may still be waiting for Ray to start its worker process.
    wait = _PROMOTE_WAIT if prepared else child.spec.start_timeout
    try:
        child.pid, child.node_id = await asyncio.wait_for(host.activate.remote(child.generation), wait)
    except Exception:  # noqa: BLE001 - a standby that died or hangs is dropped; a new host is created instead
        ray.kill(host, no_restart=True)
        child.pid = child.node_id = None
        return None
    return host, name


async def prepare_standby(child: SupervisedChild, namespace: str, supervisor: Any, cgroup_root: str) -> None:
    """Start a spare host for ``child`` and load its plugin class; keep it in ``child.standby``.

    A spare that fails to start is dropped (the next restart creates a host as
    usual) and the reason returned through the exception for the caller to log.
    """
    host, name = _create_host(child, namespace, supervisor, cgroup_root)
    try:
        await asyncio.wait_for(host.prepare.remote(), child.spec.start_timeout + child.spec.handshake_timeout)
    except BaseException:
        ray.kill(host, no_restart=True)
        raise
    if child.standby is not None:  # a concurrent preparation won: keep one
        ray.kill(host, no_restart=True)
        return
    child.standby = (host, name, True)


def prestart_host(child: SupervisedChild, namespace: str, supervisor: Any, cgroup_root: str) -> None:
    """Create ``child``'s next host now, without waiting for it, unless a spare is there or coming.

    Called for every child of a start of several (the whole tree at start, or
    after an escalation) before they are started one by one in order: their
    worker processes start together rather than one after another, while the
    handshakes keep the start order.
    """
    if child.standby is not None or (child.standby_task is not None and not child.standby_task.done()):
        return
    child.standby = (*_create_host(child, namespace, supervisor, cgroup_root), False)


def drop_standby(child: SupervisedChild) -> None:
    """Kill ``child``'s spare host and stop preparing one."""
    if child.standby_task is not None:
        child.standby_task.cancel()
        child.standby_task = None
    if child.standby is not None:
        ray.kill(child.standby[0], no_restart=True)
        child.standby = None


def _create_host(child: SupervisedChild, namespace: str, supervisor: Any, cgroup_root: str) -> tuple[Any, str]:
    options = host_options(child.spec, namespace)
    return PluginHost.options(**options).remote(child.spec, child.generation, supervisor, cgroup_root), \
        options["name"]


async def stop_host(child: SupervisedChild) -> str | None:
    """Stop ``child``'s host per its ``shutdown`` spec; return how it went, ``None`` if it had no host."""
    host = child.host
    if host is None:
        return None
    shutdown = child.spec.shutdown
    if shutdown == "brutal_kill":
        how = "brutal_kill"
    else:
        try:
            await asyncio.wait_for(host.shutdown.remote(), float(shutdown))
            how = "closed"
        except TimeoutError:
            how = f"did not shut down within {float(shutdown):g} s (shutdown); killed"
        except RayActorError:
            how = "already dead"
        except RayTaskError as exc:
            how = f"close() failed: {unwrap_task_error(exc)}; killed"
    if how == "closed":
        # A graceful exit delivers the replies of calls that just finished (a
        # plugin's request_stop() call, say); a kill could drop them.
        with contextlib.suppress(TimeoutError, RayActorError):
            await asyncio.wait_for(host.exit.remote(), _EXIT_WAIT)
    ray.kill(host, no_restart=True)
    await _await_death(host)
    child.host = child.host_name = None
    child.pid = None
    return how


def kill_host(child: SupervisedChild) -> None:
    """Kill ``child``'s host at once, if it has one."""
    if child.host is not None:
        ray.kill(child.host, no_restart=True)
        child.host = child.host_name = None
        child.pid = None


async def _await_death(host: Any) -> None:
    deadline = time.monotonic() + _DEATH_WAIT
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(host.pid.remote(), 1.0)
        except RayActorError:
            return
        except TimeoutError:
            continue
        await asyncio.sleep(0.02)
