"""The supervisor on a real local Ray, in the spirit of Erlang's supervisor_SUITE:
start and stop, strategies, restart types, escalation, shutdown and admission.

Every test runs its own supervisor in its own namespace and stops it (and
kills it) afterwards. Plugins come from ``dwray.testing.plugins``; crashes
are real process exits or ``kill -9`` of the host's worker PID. The helpers
here are shared with ``test_supervisor_calls.py``.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray
from ray.exceptions import RayActorError

from actors.handles import PluginHandle
from actors.supervisor import create_supervisor
from dwray.core.supervision import SupervisorSpec
from dwray.errors import (
    NotReady,
    PluginRefused,
    PluginUnavailable,
)
from tests.helpers import wait_until

P = "dwray.testing.plugins:"
# Pings are frequent, so deaths are noticed fast; their timeout is generous, so that a
# loaded machine does not fail a healthy plugin (the hung-ping test sets its own).
FAST = {"ping_interval": 0.2, "ping_timeout": 5.0, "backoff_base": 0.05, "backoff_max": 0.2,
        "max_restarts": 10, "period": 60.0}


def echo(child_id: str, **options: Any) -> dict[str, Any]:
    return {"id": child_id, "plugin": P + "Echo", **options}


@dataclass
class Supervised:
    actor: Any
    namespace: str
    spec: SupervisorSpec

    def status(self) -> dict[str, Any]:
        return ray.get(self.actor.status.remote(), timeout=30)

    def child(self, child_id: str) -> dict[str, Any]:
        return next(c for c in self.status()["children"] if c["id"] == child_id)

    def events(self, limit: int = 1000) -> list[dict[str, Any]]:
        return ray.get(self.actor.events.remote(limit), timeout=30)

    def ready(self) -> tuple[bool, str]:
        return tuple(ray.get(self.actor.ready.remote(), timeout=30))  # type: ignore[return-value]

    def handle(self, child_id: str, **options: Any) -> PluginHandle:
        return PluginHandle(child_id, namespace=self.namespace, **options)

    def host(self, child_id: str) -> Any:
        actor, _ = ray.get(self.actor.handle.remote(child_id, 10.0), timeout=30)
        return actor

    def running_at(self, child_id: str, generation: int) -> dict[str, Any] | None:
        child = self.child(child_id)
        return child if child["state"] == "running" and child["generation"] == generation else None

    def wait_running(self, child_id: str, generation: int, timeout: float = 20.0) -> dict[str, Any]:
        return wait_until(lambda: self.running_at(child_id, generation), timeout,
                          f"{child_id} running at generation {generation}")

    def events_after(self, kind: str, child: str | None) -> list[dict[str, Any]]:
        events = self.events()
        first = next(i for i, e in enumerate(events) if e["kind"] == kind and e["child"] == child)
        return events[first:]


@contextlib.contextmanager
def supervisors() -> Iterator[Callable[..., Supervised]]:
    """A maker of supervisors (each in a unique namespace) over the given children;
    every one made is stopped and killed on leaving the block."""
    made: list[Any] = []

    def make(children: list[dict[str, Any]], start: bool = True, **options: Any) -> Supervised:
        namespace = f"dwray-test-{uuid.uuid4().hex[:10]}"
        spec = SupervisorSpec(children=children, **{**FAST, **options})
        actor = create_supervisor(spec, namespace=namespace)
        made.append(actor)
        if start:
            ray.get(actor.start.remote(), timeout=60)
        return Supervised(actor, namespace, spec)

    try:
        yield make
    finally:
        for actor in made:
            try:
                ray.get(actor.stop.remote(), timeout=30)
            finally:
                ray.kill(actor)


@pytest.fixture
def supervise(ray_session: Any) -> Iterator[Callable[..., Supervised]]:
    """Start a supervisor (unique namespace) over the given children; stopped and killed afterwards."""
    with supervisors() as make:
        yield make


def kill_9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
               5.0, f"pid {pid} to die")


def crash(sup: Supervised, child_id: str) -> None:
    """Make the child's process exit (a real crash), through a plain call."""
    with pytest.raises(PluginUnavailable, match="not idempotent"):
        sup.handle(child_id).call("crash")


# -- start, status, stop -----------------------------------------------------------------


def test_start_admits_children_in_order_and_reports_them(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("storage:local"), echo("catalog"), echo("stage:frames:0")])
    status = sup.status()
    assert status["state"] == "running" and status["strategy"] == "one_for_one"
    node = ray.get_runtime_context().get_node_id()
    for child in status["children"]:
        assert child["state"] == "running" and child["generation"] == 1 and child["restarts"] == 0
        assert child["manifest"] == {"name": "echo", "version": "1.2.3"} and child["kind"] == "service"
        assert child["node_id"] == node and psutil.pid_exists(child["pid"])
        assert child["last_failure"] is None
    started = [e["child"] for e in sup.events() if e["kind"] == "started"]
    assert started == ["storage:local", "catalog", "stage:frames:0"]
    # Plugin hosts are named actors in the supervisor's namespace: dwray:<child id>:<8 hex digits>.
    storage = sup.child("storage:local")
    assert re.fullmatch(r"dwray:storage:local:[0-9a-f]{8}", storage["actor"]), storage["actor"]
    host = ray.get_actor(storage["actor"], namespace=sup.namespace)
    assert host._actor_id.hex() == storage["actor_id"]
    assert ray.get(host.pid.remote()) == storage["pid"]
    assert sup.ready() == (True, "ready")
    assert ray.get(sup.actor.started.remote())
    wait_until(lambda: sup.child("catalog")["health"] == {"ok": True}, 5.0, "a health ping")
    assert sup.handle("catalog").call("echo", {"x": [1, 2]}) == {"x": [1, 2]}


def test_stop_closes_children_in_reverse_order(supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    ids = ["a", "b", "c"]
    sup = supervise([echo(c, config={"close_marker": str(tmp_path / c)}) for c in ids])
    hosts = {c: sup.host(c) for c in ids}
    status = ray.get(sup.actor.stop.remote(), timeout=30)
    assert status["state"] == "stopped"
    assert [c["state"] for c in status["children"]] == ["stopped"] * 3
    stopped = [e for e in sup.events() if e["kind"] == "stopped"]
    assert [e["child"] for e in stopped] == ["c", "b", "a"]
    assert {e["how"] for e in stopped} == {"closed"}
    assert all((tmp_path / c).read_text().startswith("closed by") for c in ids)
    for host in hosts.values():
        with pytest.raises(RayActorError):
            ray.get(host.pid.remote(), timeout=10)
    assert sup.ready()[0] is False
    with pytest.raises(PluginUnavailable, match="stopped"):
        sup.handle("a").call("echo", 1)


def test_orderly_stop_lets_calls_in_flight_finish(supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    sup = supervise([echo("busy", config={"close_marker": str(tmp_path / "busy")})])
    handle = sup.handle("busy")
    ref = handle.submit("sleep", 0.5)
    time.sleep(0.1)
    ray.get(sup.actor.stop.remote(), timeout=30)
    assert handle.resolve(ref, "sleep") == 0.5  # the reply was delivered before the host exited
    assert (tmp_path / "busy").exists()
    assert [e["how"] for e in sup.events() if e["kind"] == "stopped"] == ["closed"]


# -- strategies --------------------------------------------------------------------------------


def test_one_for_one_restarts_only_the_failed_child(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("a"), echo("b"), echo("c")], strategy="one_for_one")
    crash(sup, "b")
    sup.wait_running("b", 2)
    assert [(c["id"], c["generation"]) for c in sup.status()["children"]] == [("a", 1), ("b", 2), ("c", 1)]
    after = sup.events_after("failure", "b")
    assert [e["child"] for e in after if e["kind"] == "stopped"] == []
    assert [e["child"] for e in after if e["kind"] == "started"] == ["b"]
    assert sup.child("b")["restarts"] == 1 and "actor died" in sup.child("b")["last_failure"]


def test_one_for_all_restarts_every_child(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("a"), echo("b"), echo("c")], strategy="one_for_all")
    old = {c["id"]: c["pid"] for c in sup.status()["children"]}
    crash(sup, "b")
    for child_id in "abc":
        sup.wait_running(child_id, 2)
    after = sup.events_after("failure", "b")
    assert [e["child"] for e in after if e["kind"] == "stopped"] == ["c", "a"]
    assert [e["child"] for e in after if e["kind"] == "started"] == ["a", "b", "c"]
    restart = next(e for e in after if e["kind"] == "restart")
    assert restart["stop"] == ["c", "a"] and restart["start"] == ["a", "b", "c"]
    assert all(c["pid"] != old[c["id"]] for c in sup.status()["children"])


def test_rest_for_one_restarts_the_failed_child_and_those_started_after(
        supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("a"), echo("b"), echo("c")], strategy="rest_for_one")
    crash(sup, "b")
    sup.wait_running("b", 2)
    sup.wait_running("c", 2)
    assert sup.child("a")["generation"] == 1
    after = sup.events_after("failure", "b")
    assert [e["child"] for e in after if e["kind"] == "stopped"] == ["c"]
    assert [e["child"] for e in after if e["kind"] == "started"] == ["b", "c"]


# -- restart types -------------------------------------------------------------------------------


def test_permanent_child_comes_back_after_a_crash_and_after_a_normal_exit(
        supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("p", restart="permanent")])
    crash(sup, "p")
    sup.wait_running("p", 2)
    assert sup.handle("p").call("finish", "done for now") == "done for now"
    sup.wait_running("p", 3)
    kinds = [(e["kind"], e["generation"]) for e in sup.events() if e["kind"] in {"failure", "exit"}]
    assert kinds == [("failure", 1), ("exit", 2)]


def test_transient_child_stays_down_after_a_normal_exit_only(
        supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    sup = supervise([echo("t", restart="transient", config={"close_marker": str(tmp_path / "t")})])
    crash(sup, "t")
    sup.wait_running("t", 2)
    sup.handle("t").call("finish", "all work done")
    wait_until(lambda: sup.child("t")["state"] == "terminated", what="t terminated")
    time.sleep(0.5)  # a few ping intervals: nothing restarts it
    child = sup.child("t")
    assert child["state"] == "terminated" and child["generation"] == 2 and child["last_failure"] is None
    # A normal exit is an orderly stop: close() ran.
    assert (tmp_path / "t").exists()
    with pytest.raises(PluginUnavailable, match="terminated"):
        sup.handle("t").call("echo", 1)
    assert sup.ready() == (False, "required child 't' is terminated")


def test_temporary_child_is_never_restarted(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("keep"), echo("temp", restart="temporary", required=False)])
    crash(sup, "temp")
    wait_until(lambda: sup.child("temp")["state"] == "failed", what="temp failed")
    time.sleep(0.5)
    temp = sup.child("temp")
    assert temp["generation"] == 1 and temp["restarts"] == 0 and "actor died" in temp["last_failure"]
    assert sup.ready() == (True, "ready")  # not required
    assert sup.child("keep")["generation"] == 1


def test_temporary_sibling_is_stopped_by_one_for_all_and_not_restarted(
        supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("a"), echo("temp", restart="temporary", required=False), echo("c")],
                    strategy="one_for_all")
    crash(sup, "c")
    sup.wait_running("a", 2)
    sup.wait_running("c", 2)
    assert sup.child("temp")["state"] == "stopped" and sup.child("temp")["generation"] == 1


# -- intensity and escalation -------------------------------------------------------------------


def test_restart_loop_escalates_restarts_the_tree_and_gives_up_past_max_tree_restarts(
        supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("good"), {"id": "crasher", "plugin": P + "CrashOnStart", "required": False}],
                    max_restarts=2, period=60.0, tree_backoff_base=0.2, tree_backoff_max=0.4, max_tree_restarts=1)
    wait_until(lambda: sup.status()["state"] == "failed", 60.0, "the supervisor to give up")
    kinds = [e["kind"] for e in sup.events() if e["child"] is None and not e["kind"].startswith("supervisor")]
    # The first escalation restarts the whole tree after the backoff; the second one is past the limit.
    assert kinds == ["escalated", "tree_restart_scheduled", "tree_restarting", "tree_restarted", "escalated",
                     "gave_up"], kinds
    scheduled = next(e for e in sup.events() if e["kind"] == "tree_restart_scheduled")
    assert 0.1 <= scheduled["delay"] <= 0.2, scheduled  # uniform(c/2, c) with c = tree_backoff_base
    ready, reason = sup.ready()
    assert not ready
    assert reason.startswith("failed: gave up after 1 tree restart(s) (max_tree_restarts): more than 2 restarts "
                             "within 60 s; last: child 'crasher'"), reason
    assert "died" in reason
    status = sup.status()
    assert status["tree_restarts"] == 1 and status["last_failure"] in reason
    # Escalation stops every child, in reverse order.
    assert [c["state"] for c in status["children"]] == ["stopped", "stopped"]
    assert [e["kind"] for e in sup.events()].count("start_failed") == 6  # 3 per tree: start and two restarts
    with pytest.raises(NotReady, match="gave up after 1 tree restart"):
        sup.handle("good").call("echo", 1)


def test_escalation_heals_by_itself_once_the_fault_is_gone(
        supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    """A required child that cannot start escalates; the tree keeps restarting, with a growing
    backoff, not ready meanwhile and naming why; once the fault is cleared it serves again by itself."""
    marker = tmp_path / "broken"
    sup = supervise([echo("good"), {"id": "fragile", "plugin": P + "CrashWhileMarked",
                                    "config": {"marker": str(marker)}}],
                    max_restarts=1, period=60.0, tree_backoff_base=0.3, tree_backoff_max=1.0)
    assert sup.handle("fragile").call("echo", 1) == 1
    marker.touch()
    with pytest.raises(PluginUnavailable, match="not idempotent"):
        sup.handle("fragile").call("crash")
    wait_until(lambda: sup.status()["tree_restarts"] >= 2, 60.0, "two tree restarts that fail")
    ready, reason = sup.ready()
    assert not ready and reason.startswith("restarting: "), reason
    assert "child 'fragile'" in reason or "'fragile' refused" in reason, reason
    with pytest.raises(NotReady, match="restarting: "):
        sup.handle("good").call("echo", 2, timeout=0.5)
    delays = [e["delay"] for e in sup.events() if e["kind"] == "tree_restart_scheduled"]
    assert len(delays) >= 2 and delays[0] <= 0.3 and all(0.15 <= d <= 1.0 for d in delays), delays
    marker.unlink()
    wait_until(lambda: sup.ready() == (True, "ready"), 30.0, "the tree to heal by itself")
    status = sup.status()
    assert status["state"] == "running" and "fragile" in status["last_failure"]
    assert sup.handle("fragile").call("echo", 3) == 3
    assert sup.handle("good").call("echo", 4) == 4


def test_killed_supervisor_is_restarted_by_ray_and_starts_its_tree_again(
        supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("a"), echo("b")])
    handle = sup.handle("a")
    assert handle.call("echo", 1, idempotent=True) == 1
    before = sup.status()
    kill_9(before["pid"])
    # Ray restarts the supervisor; the new one starts a fresh tree by itself, and the hosts of the
    # old one end with their owner.
    after = wait_until(lambda: _running_status(sup), 60.0, "the restarted supervisor's tree")
    assert after["pid"] != before["pid"]
    assert after["tree_restarts"] == 1 and "supervisor's process died" in after["last_failure"]
    for old, new in zip(before["children"], after["children"], strict=True):
        assert new["actor_id"] != old["actor_id"] and new["pid"] != old["pid"]
        wait_until(lambda pid=old["pid"]: not psutil.pid_exists(pid)
                   or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, 30.0, "an old host to end")
    # The handle still holds the old tree's host, now dead: the call goes to the new one.
    assert handle.call("echo", 2, idempotent=True, timeout=60) == 2
    assert [e["kind"] for e in sup.events()][:2] == ["supervisor_restarted", "supervisor_starting"]
    assert sup.ready() == (True, "ready")
    # A report about a host of the old incarnation is stale even though its generation number matches.
    assert ray.get(sup.actor.report_failure.remote("a", 1, "old host", before["children"][0]["actor_id"]),
                   timeout=30) is False


def _running_status(sup: Supervised) -> dict[str, Any] | None:
    """The supervisor's status once it runs with every child running; None while Ray restarts it."""
    try:
        status = sup.status()
    except ray.exceptions.RayActorError:  # ActorUnavailableError: being restarted
        return None
    running = status["state"] == "running" and all(c["state"] == "running" for c in status["children"])
    return status if running else None


def test_memory_pressure_reaches_plugins_and_critical_makes_the_tree_not_ready(
        supervise: Callable[..., Supervised]) -> None:
    """The supervisor's monitor reads the node's real memory; levels set below what is in use
    put it at once at warning (then critical), and every running plugin is told."""
    from dwray.core.memory_pressure import read_memory

    used = read_memory().fraction
    sup = supervise([{"id": "aware", "plugin": P + "PressureAware"}],
                    memory={"warning": round(used / 2, 4), "critical": 1.0, "interval": 0.2, "hysteresis": 0.0})
    handle = sup.handle("aware")
    wait_until(lambda: "warning" in handle.call("levels"), 10.0, "the plugin to be told of the warning")
    status = sup.status()
    assert status["memory"]["level"] == "warning" and status["memory"]["limit"] > 0
    assert sup.ready() == (True, "ready")  # a warning is not a reason to stop serving
    assert any(e["kind"] == "memory_pressure" for e in sup.events())


def test_memory_critical_makes_the_tree_not_ready(supervise: Callable[..., Supervised]) -> None:
    from dwray.core.memory_pressure import read_memory

    used = read_memory().fraction
    sup = supervise([{"id": "aware", "plugin": P + "PressureAware"}],
                    memory={"warning": round(used / 3, 4), "critical": round(used / 2, 4), "interval": 0.2})
    wait_until(lambda: not sup.ready()[0], 10.0, "memory critical to make the tree not ready")
    ready, reason = sup.ready()
    assert reason.startswith("memory critical: ") and "bytes in use" in reason, reason
    wait_until(lambda: "critical" in sup.handle("aware").call("levels"), 10.0, "the plugin to be told")


def test_stale_failure_reports_are_ignored(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("a")])
    assert ray.get(sup.actor.report_failure.remote("a", 0, "from an old generation")) is False
    time.sleep(0.3)
    assert sup.child("a")["generation"] == 1
    assert ray.get(sup.actor.report_failure.remote("a", 1, "caller says it hangs")) is True
    sup.wait_running("a", 2)
    assert sup.child("a")["last_failure"] == "caller says it hangs"


def test_restart_child_is_an_operator_restart(supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    sup = supervise([echo("a", config={"close_marker": str(tmp_path / "a")}), echo("b")],
                    strategy="one_for_all")
    assert ray.get(sup.actor.restart_child.remote("a"), timeout=30) == 2
    assert (tmp_path / "a").exists()  # stopped in order
    status = sup.status()
    assert [c["generation"] for c in status["children"]] == [2, 1]  # no sibling taken along
    assert status["restarts_in_period"] == 0  # not counted towards the intensity


# -- shutdown -----------------------------------------------------------------------------------


def test_shutdown_timeout_kills_a_child_whose_close_hangs(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([{"id": "stuck", "plugin": P + "HangingClose", "shutdown": 0.5}, echo("b")])
    host = sup.host("stuck")
    began = time.monotonic()
    status = ray.get(sup.actor.stop.remote(), timeout=30)
    took = time.monotonic() - began
    assert status["state"] == "stopped"
    assert 0.5 <= took < 5.0
    how = {e["child"]: e["how"] for e in sup.events() if e["kind"] == "stopped"}
    assert how == {"b": "closed", "stuck": "did not shut down within 0.5 s (shutdown); killed"}
    with pytest.raises(RayActorError):
        ray.get(host.pid.remote(), timeout=10)


def test_brutal_kill_skips_close(supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    sup = supervise([echo("gentle", config={"close_marker": str(tmp_path / "gentle")}),
                     echo("brutal", shutdown="brutal_kill", config={"close_marker": str(tmp_path / "brutal")})])
    host = sup.host("brutal")
    ray.get(sup.actor.stop.remote(), timeout=30)
    assert (tmp_path / "gentle").exists() and not (tmp_path / "brutal").exists()
    how = {e["child"]: e["how"] for e in sup.events() if e["kind"] == "stopped"}
    assert how == {"brutal": "brutal_kill", "gentle": "closed"}
    with pytest.raises(RayActorError):
        ray.get(host.pid.remote(), timeout=10)


# -- admission: handshake, manifest, config, placement -----------------------------------------


def test_hanging_handshake_is_refused_naming_the_timeout(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("first"), {"id": "slow", "plugin": P + "SlowHandshake", "handshake_timeout": 0.5}],
                    start=False)
    with pytest.raises(PluginRefused, match=r"'slow' refused: the handshake did not return within 0\.5 s "
                                            r"\(handshake_timeout\)"):
        ray.get(sup.actor.start.remote(), timeout=60)
    status = sup.status()
    assert status["state"] == "failed" and "handshake_timeout" in status["reason"]
    assert [c["state"] for c in status["children"]] == ["stopped", "failed"]
    ready, reason = sup.ready()
    assert not ready and "handshake_timeout" in reason
    # The hung host was killed: no host of that child is left alive.
    wait_until(lambda: _hosts_gone("slow", sup.namespace), 10.0, "the hung host to be killed")


def _hosts_gone(child_id: str, namespace: str) -> bool:
    """No live actor in ``namespace`` is a host of ``child_id`` (named ``dwray:<child id>:<hex>``)."""
    return not [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["namespace"] == namespace and a["name"].startswith(f"dwray:{child_id}:")]


def test_incompatible_sdk_is_refused(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([{"id": "future", "plugin": P + "FutureSdk"}], start=False)
    with pytest.raises(PluginRefused, match=r"supports SDK >=2,<3, this dwray offers SDK 1\.0"):
        ray.get(sup.actor.start.remote(), timeout=60)


def test_config_that_fails_the_schema_is_refused_naming_the_field(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([{"id": "store", "plugin": P + "Configured", "config": {"root": "/data", "level": 0}}],
                    start=False)
    with pytest.raises(PluginRefused, match=r"config field level fails the plugin's schema: minimum 1$"):
        ray.get(sup.actor.start.remote(), timeout=60)


def test_refused_optional_child_stays_down_and_is_not_retried(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("a"), echo("wrong-kind", kind="storage", required=False),
                     {"id": "store", "plugin": P + "Configured", "config": {"root": "/data"}, "kind": "storage"}])
    time.sleep(0.5)
    wrong = sup.child("wrong-kind")
    assert wrong["state"] == "refused" and wrong["generation"] == 1
    assert wrong["last_failure"] == "is a 'service' plugin, the spec expects 'storage'"
    assert sup.ready() == (True, "ready")
    assert sup.handle("store").call("settings") == {"root": "/data", "level": 1}
    with pytest.raises(PluginUnavailable, match="refused"):
        sup.handle("wrong-kind").call("echo", 1)


def test_unknown_plugin_is_refused(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([{"id": "ghost", "plugin": "no_such_entry_point"}], start=False)
    with pytest.raises(PluginRefused, match="no plugin named 'no_such_entry_point'"):
        ray.get(sup.actor.start.remote(), timeout=60)


def test_placement_by_node_id_and_labels(supervise: Callable[..., Supervised]) -> None:
    node = ray.get_runtime_context().get_node_id()
    sup = supervise([echo("by-id", node_id=node), echo("by-label", node_labels={"ray.io/node-id": node})])
    assert sup.child("by-id")["node_id"] == node and sup.child("by-label")["node_id"] == node


@pytest.mark.parametrize("placement", [{"node_labels": {"dwray-test-zone": "nowhere"}},
                                       {"resources": {"dwray_test_no_such_resource": 1}}])
def test_unplaceable_child_fails_start_naming_the_start_timeout(
        supervise: Callable[..., Supervised], placement: dict[str, Any]) -> None:
    sup = supervise([echo("lost", start_timeout=1.0, **placement)], start=False)
    with pytest.raises(PluginRefused, match=r"not placed and started within 1 s \(start_timeout\)"):
        ray.get(sup.actor.start.remote(), timeout=60)
