"""Supervision rules without Ray: specs, restart types, strategies, intensity, backoff."""
from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from dwray.core.supervision import (
    Backoff,
    ChildSpec,
    Restart,
    RestartIntensity,
    RestartPlan,
    Strategy,
    SupervisorSpec,
    plan_restart,
    should_restart,
)

ORDER = ["a", "b", "c", "d"]
PERMANENT = dict.fromkeys(ORDER, Restart.PERMANENT)
ALL_ALIVE = set(ORDER)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- ChildSpec / SupervisorSpec ---------------------------------------------------------


def test_child_spec_defaults_and_derived_values() -> None:
    spec = ChildSpec(id="storage:local", plugin="local", method_timeouts={"put_blob": 120})
    assert spec.restart is Restart.PERMANENT and spec.shutdown == 5.0 and spec.required
    assert spec.num_cpus == 0 and spec.max_concurrency == 8 and spec.memory_cap is None
    assert spec.actor_name == "dwray:storage:local"
    assert spec.timeout_for("put_blob") == 120 and spec.timeout_for("get_blob") == spec.call_timeout
    assert ChildSpec(id="x", plugin="p", shutdown="brutal_kill").shutdown == "brutal_kill"
    assert ChildSpec(id="x", plugin="p", memory_cap="64MiB").memory_cap == 64 << 20


def test_child_spec_is_frozen() -> None:
    spec = ChildSpec(id="x", plugin="p")
    with pytest.raises(ValidationError):
        spec.call_timeout = 1  # type: ignore[misc]


@pytest.mark.parametrize(("field", "value", "needle"), [
    ("id", "bad id!", "id"),
    ("id", "", "id"),
    ("plugin", "  ", "plugin"),
    ("restart", "sometimes", "restart"),
    ("shutdown", 0, "shutdown"),
    ("shutdown", "gently", "shutdown"),
    ("num_cpus", -1, "num_cpus"),
    ("max_concurrency", 0, "max_concurrency"),
    ("memory", 0, "memory"),
    ("memory_cap", "lots", "memory_cap"),
    ("node_id", "not-a-node", "node_id"),
    ("resources", {"CPU": 1}, "resources"),
    ("resources", {"gpu_slot": 0}, "resources"),
    ("call_timeout", 0, "call_timeout"),
    ("method_timeouts", {"_private": 1}, "method_timeouts"),
    ("method_timeouts", {"get": -1}, "method_timeouts"),
    ("handshake_timeout", 0, "handshake_timeout"),
    ("start_timeout", -5, "start_timeout"),
    ("surprise", 1, "surprise"),
])
def test_child_spec_errors_name_the_field(field: str, value: object, needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        ChildSpec(**{"id": "x", "plugin": "p", field: value})
    assert {err["loc"][0] for err in info.value.errors()} == {needle}


def test_child_spec_takes_one_kind_of_node_placement() -> None:
    node = "ab" * 28
    assert ChildSpec(id="x", plugin="p", node_id=node).node_id == node
    with pytest.raises(ValidationError, match="node_id or node_labels, not both"):
        ChildSpec(id="x", plugin="p", node_id=node, node_labels={"zone": "a"})


def test_supervisor_spec_errors_name_the_child_and_field() -> None:
    with pytest.raises(ValidationError) as info:
        SupervisorSpec(children=[{"id": "ok", "plugin": "p"},
                                 {"id": "storage:local", "plugin": "p", "call_timeout": -1}])
    message = str(info.value)
    assert "child 'storage:local'" in message and "call_timeout" in message
    with pytest.raises(ValidationError, match="child #0: id"):
        SupervisorSpec(children=[{"plugin": "p"}])


def test_supervisor_spec_rejects_duplicates_and_bad_backoff() -> None:
    with pytest.raises(ValidationError, match="duplicate child id 'a'"):
        SupervisorSpec(children=[{"id": "a", "plugin": "p"}, {"id": "a", "plugin": "q"}])
    with pytest.raises(ValidationError, match="backoff_max"):
        SupervisorSpec(backoff_base=2, backoff_max=1)
    with pytest.raises(ValidationError, match="strategy"):
        SupervisorSpec(strategy="all_for_none")
    with pytest.raises(ValidationError, match="max_restarts"):
        SupervisorSpec(max_restarts=-1)


def test_supervisor_spec_order_and_lookup() -> None:
    spec = SupervisorSpec(strategy="rest_for_one",
                          children=[{"id": c, "plugin": "p"} for c in ORDER])
    assert spec.strategy is Strategy.REST_FOR_ONE
    assert spec.order == ORDER
    assert spec.child("c").id == "c"
    with pytest.raises(KeyError):
        spec.child("z")


# -- restart types ---------------------------------------------------------------------


@pytest.mark.parametrize(("restart", "normal", "expected"), [
    (Restart.PERMANENT, False, True), (Restart.PERMANENT, True, True),
    (Restart.TRANSIENT, False, True), (Restart.TRANSIENT, True, False),
    (Restart.TEMPORARY, False, False), (Restart.TEMPORARY, True, False),
])
def test_should_restart(restart: Restart, normal: bool, expected: bool) -> None:
    assert should_restart(restart, normal) is expected


# -- strategies ----------------------------------------------------------------------------


def test_one_for_one_restarts_only_the_exited_child() -> None:
    plan = plan_restart(Strategy.ONE_FOR_ONE, "b", ORDER, PERMANENT, ALL_ALIVE - {"b"})
    assert plan == RestartPlan(stop=(), start=("b",), drop=())
    assert plan.restarts


def test_one_for_all_stops_the_others_in_reverse_and_restarts_all_in_order() -> None:
    plan = plan_restart(Strategy.ONE_FOR_ALL, "b", ORDER, PERMANENT, ALL_ALIVE - {"b"})
    assert plan.stop == ("d", "c", "a")
    assert plan.start == ("a", "b", "c", "d")
    assert plan.drop == ()


def test_rest_for_one_takes_the_children_started_after() -> None:
    plan = plan_restart(Strategy.REST_FOR_ONE, "b", ORDER, PERMANENT, ALL_ALIVE - {"b"})
    assert plan.stop == ("d", "c")
    assert plan.start == ("b", "c", "d")
    last = plan_restart(Strategy.REST_FOR_ONE, "d", ORDER, PERMANENT, ALL_ALIVE - {"d"})
    assert last == RestartPlan(stop=(), start=("d",), drop=())


def test_strategies_skip_siblings_that_are_down() -> None:
    alive = {"a", "d"}  # c is terminated; b exited
    plan = plan_restart(Strategy.ONE_FOR_ALL, "b", ORDER, PERMANENT, alive)
    assert plan.stop == ("d", "a")
    assert plan.start == ("a", "b", "d")


def test_temporary_siblings_are_stopped_but_not_restarted() -> None:
    types = {**PERMANENT, "c": Restart.TEMPORARY}
    plan = plan_restart(Strategy.ONE_FOR_ALL, "a", ORDER, types, ALL_ALIVE - {"a"})
    assert plan.stop == ("d", "c", "b")
    assert plan.start == ("a", "b", "d")
    assert plan.drop == ("c",)


def test_a_child_that_stays_down_takes_no_sibling() -> None:
    types = {**PERMANENT, "b": Restart.TEMPORARY}
    for strategy in Strategy:
        plan = plan_restart(strategy, "b", ORDER, types, ALL_ALIVE - {"b"})
        assert plan == RestartPlan(stop=(), start=(), drop=("b",))
        assert not plan.restarts
    transient = {**PERMANENT, "b": Restart.TRANSIENT}
    assert plan_restart(Strategy.ONE_FOR_ALL, "b", ORDER, transient, ALL_ALIVE, normal=True).start == ()
    assert plan_restart(Strategy.ONE_FOR_ALL, "b", ORDER, transient, ALL_ALIVE - {"b"},
                        normal=False).start == ("a", "b", "c", "d")


def test_plan_restart_rejects_an_unknown_child() -> None:
    with pytest.raises(ValueError, match="'z'"):
        plan_restart(Strategy.ONE_FOR_ONE, "z", ORDER, PERMANENT, ALL_ALIVE)


# -- restart intensity ------------------------------------------------------------------


def test_intensity_escalates_on_the_restart_past_the_limit() -> None:
    clock = FakeClock()
    intensity = RestartIntensity(3, 10.0, clock=clock)
    for _ in range(3):
        assert intensity.record()
        clock.now += 1
    assert intensity.count() == 3
    assert not intensity.record()
    assert intensity.describe() == "more than 3 restarts within 10 s"


def test_intensity_forgets_restarts_older_than_the_period() -> None:
    clock = FakeClock()
    intensity = RestartIntensity(2, 10.0, clock=clock)
    assert intensity.record() and intensity.record()
    clock.now += 10.0  # exactly one period later the old restarts are out of the window
    assert intensity.count() == 0
    assert intensity.record() and intensity.record()
    clock.now += 9.9
    assert not intensity.record()


def test_intensity_zero_escalates_at_the_first_restart() -> None:
    assert not RestartIntensity(0, 5.0).record()


def test_intensity_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_restarts"):
        RestartIntensity(-1, 5)
    with pytest.raises(ValueError, match="period"):
        RestartIntensity(1, 0)


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(0.1, 1.0)
    assert [backoff.ceiling(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert backoff.ceiling(10_000) == 1.0


def test_backoff_delays_stay_within_bounds_and_are_jittered() -> None:
    backoff = Backoff(0.1, 1.0, rng=random.Random(7))
    for attempt in range(8):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= backoff.ceiling(attempt) for d in delays)
        assert len(set(delays)) > 150  # full jitter: spread, not one value
        # Full jitter uses the whole range, low and high.
        assert min(delays) < 0.2 * backoff.ceiling(attempt) < 0.8 * backoff.ceiling(attempt) < max(delays)


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    first = [Backoff(0.5, 5.0, rng=random.Random(1)).delay(n) for n in range(5)]
    second = [Backoff(0.5, 5.0, rng=random.Random(1)).delay(n) for n in range(5)]
    assert first == second


def test_backoff_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(-1.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(0.1, 1.0).ceiling(-1)
