"""Readiness and the resilience metrics of one gateway replica, from real parts.

The breakers are real ``dwray.core.resilience`` breakers on a test clock,
tripped by recorded failures; the memory monitor is a real
``MemoryMonitor`` whose reader returns a chosen reading (no allocation: the
memory pressure tests fill real memory). ``assess`` composes them with the
supervisor's answer the way ``/healthz/ready`` does.
"""
from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from dwray.config import BreakerOptions, MemoryConfig, ResilienceOptions
from dwray.core.memory_pressure import MemoryMonitor, MemoryReading
from dwray.core.resilience import Guards
from dwray.errors import PluginTimeout
from serve_apps.health import assess
from serve_apps.metrics import ALLOWED_LABELS, GatewayMetrics, render

GiB = 1 << 30
OPTIONS = ResilienceOptions(breaker=BreakerOptions(window_size=4, minimum_calls=4, wait_in_open=10))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def monitor_at(fraction: float) -> MemoryMonitor:
    """A real monitor whose one reading is ``fraction`` of 8 GiB in use."""
    monitor = MemoryMonitor(MemoryConfig(warning=0.8, critical=0.9, hysteresis=0.05),
                            reader=lambda: MemoryReading(int(8 * GiB * fraction), 8 * GiB, "cgroup-v2"))
    monitor.check()
    return monitor


def tripped_guards(clock: Clock, held: contextlib.ExitStack | None = None) -> Guards:
    """Storage's breaker opened by four failed calls; the catalog's closed (one call in flight while ``held``)."""
    guards = Guards(clock=clock)
    storage, _ = guards.guard("storage:local", OPTIONS)
    for _ in range(4):
        storage.acquire()
        storage.record(0.01, failed=True)
    catalog, bulkhead = guards.guard("catalog", OPTIONS)
    catalog.acquire()
    catalog.record(0.01, failed=False)
    if held is not None:
        held.enter_context(bulkhead.slot())
    return guards


def test_ready_when_every_source_passes() -> None:
    result = assess(draining=False, supervisor=(True, "ready"), probes={"catalog": None, "storage": None},
                    guards=Guards().snapshot(), required=None, memory=monitor_at(0.5).status())
    assert result.ready and result.status_code == 200
    assert result.body() == {"status": "ready", "checks": {"plugins": "ok", "catalog": "ok", "storage": "ok",
                                                            "breakers": "ok", "memory": "ok"}}


def test_every_reason_is_named() -> None:
    clock = Clock()
    guards = tripped_guards(clock)
    memory = monitor_at(0.95)
    assert memory.level == "critical"
    result = assess(draining=True, supervisor=(False, "restarting: storage:local failed 6 times in 30 s"),
                    probes={"catalog": None, "storage": PluginTimeout("storage:local", "get", 3.0)},
                    guards=guards.snapshot(), required={"catalog", "storage:local"}, memory=memory.status())
    body = result.body()
    assert result.status_code == 503 and body["status"] == "not ready"
    reasons = body["reasons"]
    assert reasons[0] == "draining"
    assert "restarting: storage:local failed 6 times in 30 s" in reasons
    assert "storage unreachable (PluginTimeout)" in reasons
    breaker = [r for r in reasons if r.startswith("breaker open in this replica: storage:local")]
    assert len(breaker) == 1 and "100% of calls failed" in breaker[0] and "10.0 s left open" in breaker[0]
    assert not [r for r in reasons if "catalog" in r and "breaker" in r]  # its breaker is closed
    critical = [r for r in reasons if r.startswith("memory critical in this replica")]
    assert len(critical) == 1 and f"{int(8 * GiB * 0.95)} of {8 * GiB} bytes" in critical[0]
    assert body["checks"]["catalog"] == "ok" and body["checks"]["plugins"].startswith("restarting: ")
    # Half-open once wait_in_open has passed: still not ready (only trial calls go through).
    clock.now += 10
    half_open = assess(draining=False, supervisor=(True, "ready"), probes={}, guards=guards.snapshot(),
                       required=None, memory=None)
    assert half_open.reasons == [r for r in half_open.reasons if r.startswith("breaker half_open in this replica")]
    assert len(half_open.reasons) == 1


def test_breakers_of_plugins_that_are_not_required_do_not_count() -> None:
    guards = tripped_guards(Clock())
    result = assess(draining=False, supervisor=(True, "ready"), probes={}, guards=guards.snapshot(),
                    required={"catalog"}, memory=monitor_at(0.85).status())  # warning is still ready
    assert result.ready, result.reasons


def test_an_unreachable_supervisor_is_a_reason() -> None:
    result = assess(draining=False, supervisor=TimeoutError("no answer"), probes={}, guards={}, required=None,
                    memory=None)
    assert result.reasons == ["supervisor unreachable (TimeoutError)"]


def test_replica_metrics_carry_breakers_bulkheads_and_memory() -> None:
    clock = Clock()
    held = contextlib.ExitStack()
    guards = tripped_guards(clock, held)
    storage, _ = guards.guard("storage:local", OPTIONS)
    try:
        storage.acquire()
    except Exception:  # noqa: BLE001 - refused while open: counted as not permitted
        pass
    memory = monitor_at(0.95)
    replica = GatewayMetrics(guards=guards.snapshot, memory=memory.status)
    tree = {"state": "restarting", "tree_restarts": 3, "children": [
        {"id": "storage:local", "state": "running", "restarts": 1, "breaker": "open"},
        {"id": "catalog", "state": "running", "restarts": 0, "breaker": "closed"}]}
    page = render({"r1": replica.exposition()}, plugins=tree["children"], supervisor=tree, tenants={},
                  draining=False)
    found = {f.name: f for f in text_string_to_metric_families(page.decode())}

    def sample(family: str, **labels: str) -> float:
        values = [s.value for s in found[family].samples if all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(values) == 1, (family, labels, found[family].samples)
        return values[0]

    assert sample("dwray_breaker_state", child="storage:local", state="open", replica="r1") == 1
    assert sample("dwray_breaker_state", child="storage:local", state="closed", replica="r1") == 0
    assert sample("dwray_breaker_state", child="catalog", state="closed", replica="r1") == 1
    assert sample("dwray_breaker_not_permitted", child="storage:local", replica="r1") == 1
    assert sample("dwray_bulkhead_in_flight", child="catalog", replica="r1") == 1
    assert sample("dwray_bulkhead_rejected", child="catalog", replica="r1") == 0
    assert sample("dwray_memory_level", level="critical", replica="r1") == 1
    assert sample("dwray_memory_level", level="normal", replica="r1") == 0
    assert sample("dwray_memory_used_bytes", replica="r1") == int(8 * GiB * 0.95)
    assert sample("dwray_memory_limit_bytes", replica="r1") == 8 * GiB
    assert sample("dwray_supervisor_state", state="restarting") == 1
    assert sample("dwray_supervisor_state", state="running") == 0
    assert sample("dwray_supervisor_tree_restarts") == 3
    assert sample("dwray_plugin_breaker_state", child="storage:local", state="open") == 1
    labels = {name for f in found.values() for s in f.samples for name in s.labels}
    assert labels <= ALLOWED_LABELS, labels - ALLOWED_LABELS
    held.close()
    assert b'dwray_bulkhead_in_flight{child="catalog"} 0.0' in replica.exposition()


def test_a_replica_without_guards_or_memory_adds_nothing() -> None:
    families: dict[str, Any] = {f.name for f in text_string_to_metric_families(GatewayMetrics().exposition().decode())}
    assert not {n for n in families if n.startswith(("dwray_breaker", "dwray_bulkhead", "dwray_memory"))}


class _TrialContext:
    """What ``trial_calls`` uses of a replica's context: its guards, an executor, and handles whose
    ``call`` goes through the guard as ``PluginHandle``'s does (acquire, the call, record)."""

    def __init__(self, guards: Guards, plugin_fails: bool) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.guards, self.plugin_fails, self.calls = guards, plugin_fails, 0
        self.executor = ThreadPoolExecutor(2)

    def guard_snapshot(self) -> dict[str, dict[str, Any]]:
        return self.guards.snapshot()

    def handle(self, child: str) -> Any:
        context = self

        class Handle:
            def call(self, method: str, idempotent: bool = False) -> None:
                breaker, _ = context.guards.guard(child, OPTIONS)
                breaker.acquire()
                context.calls += 1
                breaker.record(0.001, failed=context.plugin_fails)
                breaker.release()
                if context.plugin_fails:
                    raise PluginTimeout(child, method, 1.0)
        return Handle()


def test_a_half_open_breaker_is_closed_by_the_probes_own_trial_calls() -> None:
    """No traffic reaches a replica out of rotation: readiness makes the trial calls a half-open breaker awaits."""
    import asyncio

    from serve_apps import context as replica
    from serve_apps.gateway import _half_open, trial_calls

    for fails, state in ((False, "closed"), (True, "open")):
        clock = Clock()
        guards = tripped_guards(clock)
        clock.now += 10  # wait_in_open has passed
        ctx = _TrialContext(guards, plugin_fails=fails)
        replica.install(ctx)  # type: ignore[arg-type]
        try:
            assert _half_open(ctx) == ["storage:local"]
            asyncio.run(trial_calls(ctx, "storage:local"))
        finally:
            replica.install(None)  # type: ignore[arg-type]
            ctx.executor.shutdown()
        assert guards.snapshot()["storage:local"]["state"] == state
        assert ctx.calls == OPTIONS.breaker.half_open_calls  # the trials it takes to decide, no more
        assert _half_open(ctx) == []
