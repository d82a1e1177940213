"""The gateway coordinator actor on the session's Ray cluster: reports, draining, epochs, stale replicas."""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.gateway_coordinator import (
    DEFAULT_NAME,
    create_coordinator,
    find_coordinator,
)
from dwray.errors import InvalidArgument
from serve_apps.metrics import GatewayMetrics, render


@pytest.fixture
def coordinator(ray_session: Any) -> Iterator[Callable[..., tuple[Any, str]]]:
    """Create coordinators in fresh namespaces; every one is killed afterwards."""
    made: list[Any] = []

    def make(max_age: float = 30.0) -> tuple[Any, str]:
        namespace = f"dwray-test-{uuid.uuid4().hex[:10]}"
        actor = create_coordinator(namespace, max_age=max_age)
        made.append(actor)
        return actor, namespace

    yield make
    for actor in made:
        ray_session.kill(actor)


def test_reports_from_two_replicas_make_one_page(ray_session: Any, coordinator: Callable[..., tuple[Any, str]]) -> None:
    ray = ray_session
    actor, _ = coordinator()
    a, b = GatewayMetrics(), GatewayMetrics()
    a.observe("PutObject", 200, 0.05, 1024, 0)
    b.observe("GetObject", 200, 0.01, 0, 2048)
    reply = ray.get(actor.report.remote("replica-a", a.exposition(), 2))
    assert reply == {"draining": False, "epoch": 0}
    ray.get(actor.report.remote("replica-b", b.exposition(), 3))
    assert ray.get(actor.in_flight.remote()) == 5

    snapshots = ray.get(actor.snapshots.remote())
    assert snapshots == {"replica-a": a.exposition(), "replica-b": b.exposition()}
    page = render(snapshots, plugins=[], tenants={}, draining=False).decode()
    requests = next(f for f in text_string_to_metric_families(page) if f.name == "dwray_s3_requests")
    assert {(s.labels["replica"], s.labels["operation"]) for s in requests.samples} == {
        ("replica-a", "PutObject"), ("replica-b", "GetObject")}

    # A newer report replaces the older one; forget() drops a replica.
    ray.get(actor.report.remote("replica-a", b"", 0))
    assert ray.get(actor.in_flight.remote()) == 3
    assert ray.get(actor.forget.remote("replica-b")) is True
    assert ray.get(actor.forget.remote("replica-b")) is False
    assert ray.get(actor.snapshots.remote()) == {"replica-a": b""}


def test_draining_and_epoch_round_trip(ray_session: Any, coordinator: Callable[..., tuple[Any, str]]) -> None:
    ray = ray_session
    actor, _ = coordinator()
    assert ray.get(actor.control.remote()) == {"draining": False, "epoch": 0}
    assert ray.get(actor.set_draining.remote(True)) == {"draining": True, "epoch": 0}
    # Replicas learn it from the reply to their next report.
    assert ray.get(actor.report.remote("r1", b"", 0)) == {"draining": True, "epoch": 0}
    assert ray.get(actor.bump_epoch.remote()) == 1
    assert ray.get(actor.bump_epoch.remote()) == 2
    assert ray.get(actor.report.remote("r1", b"", 0)) == {"draining": True, "epoch": 2}
    assert ray.get(actor.set_draining.remote(False)) == {"draining": False, "epoch": 2}
    assert ray.get(actor.control.remote()) == {"draining": False, "epoch": 2}


def test_wait_drained_follows_in_flight_counts(ray_session: Any,
                                               coordinator: Callable[..., tuple[Any, str]]) -> None:
    ray = ray_session
    actor, _ = coordinator()
    ray.get(actor.report.remote("r1", b"", 0))
    ray.get(actor.report.remote("r2", b"", 0))
    # Nothing in flight, but no drain has started: not drained.
    assert ray.get(actor.wait_drained.remote(0.2)) is False

    ray.get(actor.set_draining.remote(True))
    # r1 idles but r2 still serves a request.
    ray.get(actor.report.remote("r1", b"", 0))
    ray.get(actor.report.remote("r2", b"", 1))
    ray.get(actor.report.remote("r1", b"", 0))
    ray.get(actor.report.remote("r2", b"", 1))
    started = time.monotonic()
    assert ray.get(actor.wait_drained.remote(0.3, 0.05)) is False
    assert time.monotonic() - started >= 0.3

    # While someone waits, r2's request finishes: the waiter sees it.
    waiting = actor.wait_drained.remote(10.0, 0.05)
    time.sleep(0.2)
    ray.get(actor.report.remote("r2", b"", 0))
    assert ray.get(waiting, timeout=10) is True
    assert ray.get(actor.in_flight.remote()) == 0


def test_a_report_counts_only_after_the_replica_was_told(ray_session: Any,
                                                         coordinator: Callable[..., tuple[Any, str]]) -> None:
    ray = ray_session
    actor, _ = coordinator()
    ray.get(actor.set_draining.remote(True))
    # The first report is answered with "draining", but the replica may have
    # admitted a request while that report was on its way: not yet drained.
    ray.get(actor.report.remote("r1", b"", 0))
    assert ray.get(actor.wait_drained.remote(0.1)) is False
    ray.get(actor.report.remote("r1", b"", 0))
    assert ray.get(actor.wait_drained.remote(0.1)) is True
    # Calling the drain off and on again needs fresh acknowledgements.
    ray.get(actor.set_draining.remote(False))
    ray.get(actor.set_draining.remote(True))
    assert ray.get(actor.wait_drained.remote(0.1)) is False


def test_stale_replicas_are_dropped(ray_session: Any, coordinator: Callable[..., tuple[Any, str]]) -> None:
    ray = ray_session
    # Margins of a second or more: the machine may be busy.
    actor, _ = coordinator(max_age=3.0)
    ray.get(actor.report.remote("gone", b"gone 1\n", 4))
    time.sleep(2.0)
    ray.get(actor.report.remote("alive", b"alive 1\n", 1))
    assert set(ray.get(actor.snapshots.remote())) == {"gone", "alive"}
    assert ray.get(actor.snapshots.remote(1.0)) == {"alive": b"alive 1\n"}
    # The stale report was dropped, not just hidden.
    assert set(ray.get(actor.snapshots.remote())) == {"alive"}
    ray.get(actor.report.remote("late", b"", 2))
    time.sleep(1.2)
    ray.get(actor.report.remote("alive", b"", 1))
    # A replica silent longer than max_age no longer counts, nor blocks a drain.
    assert ray.get(actor.in_flight.remote(1.0)) == 1
    ray.get(actor.set_draining.remote(True))
    ray.get(actor.report.remote("alive", b"", 0))
    ray.get(actor.report.remote("alive", b"", 0))
    assert ray.get(actor.wait_drained.remote(1.0)) is True
    # With every replica gone, nothing is in flight: drained.
    time.sleep(0.3)
    assert ray.get(actor.wait_drained.remote(0.1, 0.05, 0.2)) is True
    assert ray.get(actor.snapshots.remote()) == {}


def test_find_coordinator(ray_session: Any, coordinator: Callable[..., tuple[Any, str]]) -> None:
    ray = ray_session
    actor, namespace = coordinator()
    ray.get(actor.bump_epoch.remote())
    found = find_coordinator(namespace)
    assert found is not None
    assert ray.get(found.control.remote()) == {"draining": False, "epoch": 1}
    # Creating it again under the same name hands back the running one.
    again = create_coordinator(namespace)
    assert ray.get(again.control.remote())["epoch"] == 1
    assert find_coordinator(namespace, name=f"{DEFAULT_NAME}-other") is None
    assert find_coordinator(f"dwray-test-{uuid.uuid4().hex[:10]}") is None


def test_bad_reports_are_refused(ray_session: Any, coordinator: Callable[..., tuple[Any, str]]) -> None:
    ray = ray_session
    actor, _ = coordinator()
    for args, message in ((("", b"", 0), "replica id"), (("r", "text", 0), "exposition must be bytes"),
                          (("r", b"", -1), "in_flight")):
        with pytest.raises(InvalidArgument, match=message):
            ray.get(actor.report.remote(*args))
    with pytest.raises(InvalidArgument, match="max_age"):
        ray.get(actor.snapshots.remote(0))
    assert ray.get(actor.snapshots.remote()) == {}
