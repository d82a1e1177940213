"""Supervision rules in the Erlang/OTP manner, as pure logic (no Ray).

``actors/supervisor.py`` is the Ray shell that applies these rules to plugin
host actors; everything it decides is decided here, so it can be tested in one
process:

``ChildSpec`` / ``SupervisorSpec``
    what to run and how: the plugin, its config, its restart type, how long it
    may take to shut down, its Ray options and placement, its caps and deadlines.
``should_restart``
    the restart type rule: permanent children always come back, transient ones
    only after an abnormal exit, temporary ones never.
``plan_restart``
    the strategy rule: given the child that exited and the start order, which
    siblings to stop (reverse start order) and which children to start again
    (start order).
``RestartIntensity``
    more than ``max_restarts`` restarts within ``period`` seconds escalates.
``Backoff``
    full-jitter exponential delay before a child is started again.

An exit is *normal* when the supervisor stopped the child itself or the
plugin asked to stop (``Plugin.request_stop``); every other exit (crash, kill,
hung ping, missed call deadline, memory cap, failed start) is abnormal.
"""
from __future__ import annotations

import random
import re
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dwray.config import MemoryConfig, ResilienceOptions, Size
from dwray.config_telemetry import LoggingConfig, TracingConfig
from dwray.core.plugin_trust.settings import PluginTrust
from dwray.core.sandbox import SandboxSettings

__all__ = [
    "Backoff",
    "ChildSpec",
    "Restart",
    "RestartIntensity",
    "RestartPlan",
    "Strategy",
    "SupervisorSpec",
    "TreeBackoff",
    "plan_restart",
    "should_restart",
]

# Child ids name actors (``dwray:<id>``): "storage:local", "catalog", "stage:frames:0".
_CHILD_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
_METHOD = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NODE_ID = re.compile(r"^[0-9a-f]{56}$")
# Ray's predefined resources have their own ChildSpec fields.
_PREDEFINED_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


class Restart(StrEnum):
    """When a child that exited is started again."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(StrEnum):
    """Which siblings a child's restart takes along."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChildSpec(_Spec):
    """One plugin the supervisor runs in its own plugin host actor."""

    id: str = Field(description="child id; the actor is named dwray:<id>")
    plugin: str = Field(description="entry point name or 'module:Class'")
    kind: str | None = Field(None, description="manifest kind the plugin must declare; None accepts any")
    config: dict[str, Any] = Field(default_factory=dict, description="keyword arguments for the plugin class")
    restart: Restart = Restart.PERMANENT
    shutdown: float | Literal["brutal_kill"] = Field(
        5.0, description="seconds allowed for an orderly close() before the actor is killed, or brutal_kill")
    required: bool = Field(True, description="the warehouse is not ready without this child")
    # Ray options and placement.
    num_cpus: float = Field(0.0, ge=0)
    memory: Size | None = Field(None, gt=0, description="Ray memory resource to reserve, bytes")
    max_concurrency: int = Field(8, ge=1, le=1000, description="threads serving plugin calls")
    node_id: str | None = Field(None, description="hex Ray node id the host must run on")
    node_labels: dict[str, str] = Field(default_factory=dict, description="Ray label selector for the node")
    resources: dict[str, float] = Field(default_factory=dict, description="custom Ray resources to reserve")
    env_vars: dict[str, str] = Field(default_factory=dict, description="environment of the host process")
    # Caps and deadlines.
    memory_cap: Size | None = Field(None, gt=0, description="bytes of memory the host may use; enforced")
    call_timeout: float = Field(60.0, gt=0, description="default deadline of a call, seconds")
    method_timeouts: dict[str, float] = Field(default_factory=dict, description="deadlines by method name")
    start_timeout: float = Field(60.0, gt=0, description="seconds Ray may take to place and start the host")
    handshake_timeout: float = Field(30.0, gt=0, description="seconds the plugin may take to start")
    resilience: ResilienceOptions = Field(default_factory=ResilienceOptions,
                                          description="breaker, retries and bulkhead of every caller")
    standby: bool = Field(False, description="keep a pre-started host ready to take over at once")
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings,
                                     description="how a third-party plugin is confined (dwray.core.sandbox)")
    plugin_trust: PluginTrust = Field(default_factory=PluginTrust,
                                      description="what may load: folders, signatures, allowlists (plugin_trust)")
    # Telemetry of the host process (dwray.core.telemetry): secret references only, resolved in the host.
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="where the host's spans go")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="how the host's log lines look")

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _CHILD_ID.match(value):
            raise ValueError("must be 1-100 characters of letters, digits, '_', '.', ':' or '-', "
                             "starting with a letter or digit")
        return value

    @field_validator("plugin")
    @classmethod
    def _check_plugin(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name an entry point or a 'module:Class'")
        return value

    @field_validator("shutdown")
    @classmethod
    def _check_shutdown(cls, value: float | str) -> float | str:
        if not isinstance(value, str) and value <= 0:
            raise ValueError("must be a positive number of seconds or 'brutal_kill'")
        return value

    @field_validator("node_id")
    @classmethod
    def _check_node_id(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_ID.match(value):
            raise ValueError("must be a Ray node id: 56 lowercase hex digits")
        return value

    @field_validator("resources")
    @classmethod
    def _check_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in _PREDEFINED_RESOURCES:
                raise ValueError(f"{name!r} is set by its own field (num_cpus, memory), not in resources")
            if amount <= 0:
                raise ValueError(f"resource {name!r} must be a positive amount, not {amount}")
        return value

    @field_validator("method_timeouts")
    @classmethod
    def _check_method_timeouts(cls, value: dict[str, float]) -> dict[str, float]:
        for name, seconds in value.items():
            if not _METHOD.match(name):
                raise ValueError(f"{name!r} is not a public method name")
            if seconds <= 0:
                raise ValueError(f"timeout of {name!r} must be positive, not {seconds}")
        return value

    @model_validator(mode="after")
    def _check_placement(self) -> ChildSpec:
        if self.node_id is not None and self.node_labels:
            raise ValueError("set node_id or node_labels, not both "
                             "(a node id is itself the label 'ray.io/node-id')")
        return self

    def timeout_for(self, method: str) -> float:
        """The deadline of a call to ``method``, seconds."""
        return self.method_timeouts.get(method, self.call_timeout)

    @property
    def actor_name(self) -> str:
        """The Ray actor name of this child's host."""
        return f"dwray:{self.id}"


class SupervisorSpec(_Spec):
    """A supervisor: its strategy, restart intensity, backoff, pings and children."""

    name: str = Field("dwray:supervisor", min_length=1, description="Ray actor name of the supervisor")
    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = Field(5, ge=0, description="restart intensity: more than this many restarts ...")
    period: float = Field(30.0, gt=0, description="... within this many seconds escalates")
    backoff_base: float = Field(0.1, ge=0, description="first restart delay bound, seconds")
    backoff_max: float = Field(10.0, ge=0, description="largest restart delay, seconds")
    ping_interval: float = Field(1.0, gt=0, description="seconds between health pings of a child")
    ping_timeout: float = Field(5.0, gt=0, description="a ping not answered within this is a hung plugin")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="memory pressure levels of the node")
    tree_backoff_base: float = Field(1.0, ge=0, description="first delay before the tree restarts, seconds")
    tree_backoff_max: float = Field(30.0, ge=0, description="largest delay before the tree restarts, seconds")
    max_tree_restarts: int | None = Field(None, ge=0, description="tree restarts before giving up; None = never")
    standby_delay: float = Field(0.0, ge=0, description="seconds after the first start before spares are prepared")
    defer_optional: bool = Field(False, description="start children that are not required after start() returns")
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="where the supervisor's spans go")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="how its log lines look")
    children: list[ChildSpec] = Field(default_factory=list, description="in start order")

    @field_validator("children", mode="before")
    @classmethod
    def _name_the_bad_child(cls, value: Any) -> Any:
        # pydantic would locate an error as children.3.field; say which child instead.
        if not isinstance(value, list):
            return value
        checked = []
        for index, item in enumerate(value):
            if isinstance(item, ChildSpec):
                checked.append(item)
                continue
            try:
                checked.append(ChildSpec.model_validate(item))
            except ValidationError as exc:
                label = repr(item.get("id")) if isinstance(item, Mapping) and "id" in item else f"#{index}"
                problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(child)'}: {err['msg']}"
                                     for err in exc.errors())
                raise ValueError(f"child {label}: {problems}") from None
        return checked

    @model_validator(mode="after")
    def _check_whole(self) -> SupervisorSpec:
        seen: set[str] = set()
        for child in self.children:
            if child.id in seen:
                raise ValueError(f"duplicate child id {child.id!r}")
            seen.add(child.id)
        if self.backoff_max < self.backoff_base:
            raise ValueError(f"backoff_max ({self.backoff_max}) is below backoff_base ({self.backoff_base})")
        if self.tree_backoff_max < self.tree_backoff_base:
            raise ValueError(f"tree_backoff_max ({self.tree_backoff_max}) is below tree_backoff_base "
                             f"({self.tree_backoff_base})")
        return self

    def child(self, child_id: str) -> ChildSpec:
        """The spec of one child; ``KeyError`` if there is none."""
        for child in self.children:
            if child.id == child_id:
                return child
        raise KeyError(child_id)

    @property
    def order(self) -> list[str]:
        """Child ids in start order."""
        return [child.id for child in self.children]


def should_restart(restart: Restart, normal: bool) -> bool:
    """Whether a child of this restart type is started again after an exit."""
    if restart is Restart.PERMANENT:
        return True
    if restart is Restart.TRANSIENT:
        return not normal
    return False


@dataclass(frozen=True)
class RestartPlan:
    """What the supervisor does after a child exits.

    ``stop``: running siblings to stop, in reverse start order.
    ``start``: children to start again, in start order (empty: nothing restarts).
    ``drop``: children that end up stopped and stay so (temporary siblings
    stopped by the strategy, or the exited child when its type says so).
    """

    stop: tuple[str, ...]
    start: tuple[str, ...]
    drop: tuple[str, ...]

    @property
    def restarts(self) -> bool:
        """Whether this plan counts as a restart for the restart intensity."""
        return bool(self.start)


def plan_restart(strategy: Strategy, exited: str, order: Sequence[str],
                 restart: Mapping[str, Restart], alive: Collection[str], normal: bool = False) -> RestartPlan:
    """Decide what follows the exit of child ``exited``.

    ``order`` is the start order of all children; ``alive`` the children other
    than ``exited`` that are running or waiting to be started again (children
    that were dropped, refused or terminated are not alive and stay down).
    A child whose restart type says it stays down takes no sibling with it.
    """
    if exited not in order:
        raise ValueError(f"child {exited!r} is not in the start order {list(order)}")
    if not should_restart(restart[exited], normal):
        return RestartPlan(stop=(), start=(), drop=(exited,))
    if strategy is Strategy.ONE_FOR_ONE:
        affected = [exited]
    elif strategy is Strategy.ONE_FOR_ALL:
        affected = list(order)
    else:
        affected = list(order[order.index(exited):])
    siblings = [child for child in affected if child != exited and child in alive]
    stop = tuple(reversed(siblings))
    start = tuple(child for child in affected
                  if child == exited or (child in siblings and restart[child] is not Restart.TEMPORARY))
    drop = tuple(child for child in siblings if restart[child] is Restart.TEMPORARY)
    return RestartPlan(stop=stop, start=start, drop=drop)


class RestartIntensity:
    """At most ``max_restarts`` restarts within any ``period`` seconds.

    ``record()`` notes one restart and says whether the limit still holds;
    the (R+1)-th restart inside the window is the one that escalates.
    """

    def __init__(self, max_restarts: int, period: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_restarts < 0:
            raise ValueError(f"max_restarts must be 0 or more, not {max_restarts}")
        if period <= 0:
            raise ValueError(f"period must be positive, not {period}")
        self.max_restarts = max_restarts
        self.period = period
        self._clock = clock
        self._times: deque[float] = deque()

    def _forget_old(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.period:
            self._times.popleft()

    def record(self) -> bool:
        """Note a restart now; ``False`` when that makes more than R within T."""
        now = self._clock()
        self._forget_old(now)
        self._times.append(now)
        return len(self._times) <= self.max_restarts

    def count(self) -> int:
        """Restarts inside the current window."""
        self._forget_old(self._clock())
        return len(self._times)

    def describe(self) -> str:
        return f"more than {self.max_restarts} restarts within {self.period:g} s"


class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**attempt))``.

    Full jitter spreads the restarts of many children that failed together
    (one_for_all, a lost node) instead of retrying them in lockstep.
    """

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        if base < 0 or cap < base:
            raise ValueError(f"need 0 <= base <= cap, got base={base}, cap={cap}")
        self.base = base
        self.cap = cap
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The largest delay for the ``attempt``-th consecutive restart (0-based)."""
        if attempt < 0:
            raise ValueError(f"attempt must be 0 or more, not {attempt}")
        return min(self.cap, self.base * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        """A jittered delay in ``[0, ceiling(attempt)]``."""
        return self._rng.uniform(0.0, self.ceiling(attempt))


class TreeBackoff(Backoff):
    """The delay before the whole tree restarts after an escalation: ``uniform(c/2, c)``, c the ceiling.

    Equal jitter rather than full: the delay must grow with each escalation in
    a row (1 s, 2 s, 4 s ... up to the cap) so a tree that keeps failing is not
    restarted in a tight loop, while a jitter still spreads the warehouses of
    one cluster that failed together.
    """

    def delay(self, attempt: int) -> float:
        ceiling = self.ceiling(attempt)
        return self._rng.uniform(ceiling / 2.0, ceiling)
