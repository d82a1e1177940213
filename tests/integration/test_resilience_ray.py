"""The resilience every plugin call gets (``actors.handles``), with a real plugin in a real host actor.

A ``Flaky`` plugin (``dwray.testing.plugins``) fails, slows down or hangs on
command; its host is supervised as any plugin is. The checks look at the
plugin's own count of calls that reached it (asked of its host directly, past
the caller's breaker), the supervisor's readiness and status, and the errors
callers get.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import ray

from actors.handles import PluginHandle
from actors.supervisor import create_supervisor
from dwray.core.supervision import SupervisorSpec
from dwray.errors import BlobNotFound, BulkheadFull, CircuitOpen, PluginError, PluginTimeout
from tests.helpers import wait_until

RESILIENCE = {
    "breaker": {"window_size": 4, "minimum_calls": 4, "failure_rate_threshold": 50,
                "slow_call_rate_threshold": 50, "slow_call_duration": 0.3, "wait_in_open": 1.0,
                "half_open_calls": 2},
    "max_concurrent_calls": 2,
}


class Tree:
    def __init__(self, actor: Any, namespace: str) -> None:
        self.actor = actor
        self.namespace = namespace

    def handle(self) -> PluginHandle:
        return PluginHandle("flaky", namespace=self.namespace)

    def host(self) -> Any:
        return ray.get(self.actor.handle.remote("flaky", 10.0), timeout=30)[0]

    def direct(self, method: str, *args: Any) -> Any:
        """A call to the plugin that bypasses the caller's breaker and bulkhead."""
        return ray.get(self.host().call.remote(method, *args), timeout=30)

    def ready(self) -> tuple[bool, str]:
        return tuple(ray.get(self.actor.ready.remote(), timeout=30))  # type: ignore[return-value]

    def child(self) -> dict[str, Any]:
        return ray.get(self.actor.status.remote(), timeout=30)["children"][0]


@pytest.fixture
def tree(ray_session: Any) -> Iterator[Tree]:
    namespace = f"dwray-resilience-{uuid.uuid4().hex[:8]}"
    spec = SupervisorSpec(children=[{"id": "flaky", "plugin": "dwray.testing.plugins:Flaky",
                                     "resilience": RESILIENCE}],
                          ping_interval=0.2, max_restarts=10, period=60.0, backoff_base=0.05, backoff_max=0.1)
    actor = create_supervisor(spec, namespace=namespace)
    try:
        ray.get(actor.start.remote(), timeout=60)
        yield Tree(actor, namespace)
    finally:
        try:
            ray.get(actor.stop.remote(), timeout=60)
        finally:
            ray.kill(actor)


def test_failing_plugin_opens_the_breaker_which_fails_fast_then_half_opens_and_closes(tree: Tree) -> None:
    handle = tree.handle()
    assert handle.call("work", 1) == 1
    tree.direct("set_mode", "fail")
    for _ in range(3):
        with pytest.raises(PluginError, match="failing on command"):
            handle.call("work", 2)
    # 3 failures in a window of 4: open. The next calls fail fast without reaching the plugin.
    reached = tree.direct("calls")
    with pytest.raises(CircuitOpen, match=r"failure rate 75% \(threshold 50%\)"):
        handle.call("work", 3)
    assert tree.direct("calls") == reached
    # The supervisor hears of it: a required plugin with an open breaker makes the warehouse not ready.
    wait_until(lambda: tree.child()["breaker"] == "open", 10.0, "the supervisor to hear the breaker opened")
    ready, reason = tree.ready()
    assert not ready and reason.startswith("breaker open: plugin 'flaky'"), reason
    # The plugin recovers; after wait_in_open two trial calls pass and the breaker closes.
    tree.direct("set_mode", "ok")
    assert wait_until(lambda: _succeeds(handle, 4), 10.0, "a trial call once the breaker half-opens")
    assert handle.call("work", 5) == 5
    assert handle.guards()[0].state == "closed"
    wait_until(lambda: tree.ready() == (True, "ready"), 10.0, "readiness once the breaker closed")
    assert tree.child()["breaker"] == "closed"


def test_answers_of_a_working_plugin_do_not_count_as_failures(tree: Tree) -> None:
    handle = tree.handle()
    tree.direct("set_mode", "missing")
    for n in range(6):  # a dwray error is the plugin's answer (NotFound), not its failure
        with pytest.raises(BlobNotFound):
            handle.call("work", f"blob-{n}")
    tree.direct("set_mode", "ok")
    assert handle.call("work", 1) == 1
    assert handle.guards()[0].state == "closed"
    assert tree.direct("calls") == 7


def test_slow_plugin_opens_the_breaker_on_the_slow_call_rate(tree: Tree) -> None:
    handle = tree.handle()
    tree.direct("set_mode", "slow", 0.5)
    for value in range(4):
        assert handle.call("work", value) == value  # each one answers, but slower than 0.3 s
    with pytest.raises(CircuitOpen, match=r"slow-call rate 100% \(threshold 50%, slower than 0.3 s\)"):
        handle.call("work", 9)


def test_hanging_plugin_misses_its_deadline_and_is_restarted(tree: Tree) -> None:
    handle = tree.handle()
    assert handle.call("work", 1) == 1
    generation = tree.child()["generation"]
    tree.direct("set_mode", "hang")
    with pytest.raises(PluginTimeout, match="did not answer work within"):
        handle.call("work", 2, timeout=1.0)
    # The supervisor was told; the hung host is killed and a fresh one (mode "ok") serves.
    wait_until(lambda: tree.child()["generation"] > generation and tree.child()["state"] == "running", 30.0,
               "the hung plugin to be restarted")
    assert handle.call("work", 3, idempotent=True, timeout=30) == 3


def test_bulkhead_fails_the_excess_call_fast(tree: Tree) -> None:
    handle = tree.handle()
    tree.direct("set_mode", "slow", 3.0)
    _, bulkhead = handle.guards()
    with ThreadPoolExecutor(2) as pool:
        busy = [pool.submit(handle.call, "work", n) for n in range(2)]
        wait_until(lambda: bulkhead.in_flight == 2, 10.0, "two calls in flight")
        with pytest.raises(BulkheadFull, match="2 call"):
            handle.call("work", 9)
        assert sorted(f.result(timeout=30) for f in busy) == [0, 1]
    assert bulkhead.rejected == 1
    assert tree.direct("calls") == 2  # the refused call never reached the plugin


def _succeeds(handle: PluginHandle, value: int) -> bool:
    try:
        return handle.call("work", value) == value
    except CircuitOpen:
        return False
