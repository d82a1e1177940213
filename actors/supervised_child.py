"""One supervised child: its record, and starting and stopping its plugin host actor.

The supervisor (``actors.supervisor``) decides *when* a child starts or stops
and keeps the events; this module does the Ray work for one child:

- :func:`start_host` creates the host actor (named ``dwray:<child id>``,
  ``max_restarts=0``), waits for Ray to place it (``start_timeout``),
  handshakes (``handshake_timeout``) and checks the manifest; a child that is
  not admitted raises :class:`StartFailed`, which says whether trying again
  may help.
- :func:`stop_host` gives the child its ``shutdown`` seconds for the host's
  ``shutdown()``, ends the actor gracefully (so replies in flight are
  delivered) and ``ray.kill``s whatever is left; ``brutal_kill`` kills at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.handles import death_reason
from actors.plugin_host import PluginHost
from dwray.core.plugins import Manifest, check_manifest
from dwray.core.supervision import ChildSpec
from dwray.errors import DwrayError, InvalidArgument, PluginNotFound, PluginRefused

__all__ = ["StartFailed", "SupervisedChild", "host_options", "kill_host", "start_host", "stop_host",
           "unwrap_task_error"]

# How long a killed host may take to be gone (its actor name is released then).
_DEATH_WAIT = 5.0
_EXIT_WAIT = 2.0


def host_options(spec: ChildSpec, namespace: str) -> dict[str, Any]:
    """Ray actor options for a child's plugin host: resources and placement from its spec."""
    options: dict[str, Any] = {
        "name": spec.actor_name,
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

    @property
    def id(self) -> str:
        return self.spec.id


async def start_host(child: SupervisedChild, namespace: str, supervisor: Any, cgroup_root: str) -> None:
    """Create and admit the host of ``child``'s current generation; raise ``StartFailed`` if it is not admitted.

    On success ``child.host``, ``pid``, ``manifest`` and ``node_id`` describe
    the new host; on failure the host is killed and ``child.host`` is ``None``.
    """
    spec = child.spec
    host = await _create_host(child, namespace, supervisor, cgroup_root)
    child.host = host
    try:
        try:
            child.pid = await asyncio.wait_for(host.pid.remote(), spec.start_timeout)
        except TimeoutError:
            raise StartFailed(f"the host was not placed and started within {spec.start_timeout:g} s "
                              "(start_timeout); check its resources and placement", retry=True) from None
        except RayActorError as exc:
            raise StartFailed(f"the host died while starting: {death_reason(exc)}", retry=True) from None
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
        child.node_id = await host.node_id.remote()
    except BaseException:
        ray.kill(host, no_restart=True)
        child.host = None
        raise


async def _create_host(child: SupervisedChild, namespace: str, supervisor: Any, cgroup_root: str) -> Any:
    options = host_options(child.spec, namespace)
    deadline = time.monotonic() + _DEATH_WAIT
    while True:
        try:
            return PluginHost.options(**options).remote(child.spec, child.generation, supervisor, cgroup_root)
        except ValueError as exc:
            # The name of a just-killed generation is released asynchronously.
            if "already" not in str(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


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
    child.host = None
    child.pid = None
    return how


def kill_host(child: SupervisedChild) -> None:
    """Kill ``child``'s host at once, if it has one."""
    if child.host is not None:
        ray.kill(child.host, no_restart=True)
        child.host = None
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
