"""Plugins at work under the supervisor on a real local Ray: failure detection
(health pings, kill -9, call deadlines), PluginHandle's calls and retries, the
memory cap and trace propagation. Crashes are real process exits or ``kill -9``
of the host's worker PID.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors.handles import PluginHandle
from actors.plugin_host import (
    DEFAULT_CGROUP_ROOT,
    cgroup_v2_memory_available,
    place_in_memory_cgroup,
)
from dwray.errors import (
    BlobNotFound,
    InvalidArgument,
    PluginError,
    PluginNotFound,
    PluginTimeout,
    PluginUnavailable,
)
from tests.helpers import wait_until
from tests.integration.test_supervisor import (
    P,
    Supervised,
    crash,
    echo,
    kill_9,
    supervisors,
)


@pytest.fixture
def supervise(ray_session: Any) -> Iterator[Callable[..., Supervised]]:
    """Start a supervisor (unique namespace) over the given children; stopped and killed afterwards."""
    with supervisors() as make:
        yield make


# -- failure detection ----------------------------------------------------------------------------


def test_hung_health_ping_is_killed_and_restarted(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([{"id": "hung", "plugin": P + "HangingHealth"}], ping_timeout=1.0)
    old_pid = sup.child("hung")["pid"]
    assert sup.handle("hung").call("hang") is True
    child = sup.wait_running("hung", 2, 15.0)
    assert child["last_failure"] == "health ping did not answer within 1 s (ping_timeout); killed"
    wait_until(lambda: not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE,
               10.0, "the hung host to be killed")


def test_plugin_reporting_unhealthy_is_restarted(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("ill")])
    sup.handle("ill").call("sicken")
    child = sup.wait_running("ill", 2, 10.0)
    assert child["last_failure"] == "plugin reports it is unhealthy: {'ok': False, 'why': 'sick'}"


def test_kill_9_of_the_worker_pid_is_restarted_with_a_new_generation(
        supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("victim")])
    handle = sup.handle("victim")
    old_pid = handle.call("pid")
    assert old_pid == sup.child("victim")["pid"]
    kill_9(old_pid)
    child = sup.wait_running("victim", 2, 10.0)
    assert child["pid"] != old_pid and "actor died" in child["last_failure"]
    assert handle.call("pid", idempotent=True) == child["pid"]


def test_plugin_exception_reaches_the_caller_and_the_host_lives_on(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("e")])
    handle = sup.handle("e")
    pid = handle.call("pid")
    with pytest.raises(PluginError) as info:
        handle.call("fail", "boom")
    assert type(info.value) is PluginError
    assert str(info.value) == "plugin 'e' failed in fail: ValueError: boom"
    with pytest.raises(BlobNotFound) as missing:
        handle.call("missing_blob", "a/b")
    assert type(missing.value) is BlobNotFound and missing.value.blob_id == "a/b"
    for bad in ("_secret", "close", "request_stop", "no_such_method"):
        with pytest.raises(InvalidArgument, match=f"no public method '{bad}'"):
            handle.call(bad)
    assert handle.call("pid") == pid
    assert sup.child("e")["generation"] == 1 and sup.child("e")["restarts"] == 0


def test_call_deadline_raises_plugin_timeout_and_counts_as_a_failure(
        supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("slow", method_timeouts={"sleep": 0.3})])
    handle = sup.handle("slow")
    began = time.monotonic()
    with pytest.raises(PluginTimeout, match=r"'slow' did not answer sleep within 0\.3 s"):
        handle.call("sleep", 30)
    assert time.monotonic() - began < 3.0
    child = sup.wait_running("slow", 2, 10.0)
    assert child["last_failure"] == "call sleep passed its 0.3 s deadline"
    # An explicit timeout beats the spec's.
    with pytest.raises(PluginTimeout, match=r"within 0\.2 s"):
        handle.call("sleep", 30, timeout=0.2)
    sup.wait_running("slow", 3, 10.0)
    assert handle.call("sleep", 0.01) == 0.01


# -- PluginHandle ----------------------------------------------------------------------------------


def test_idempotent_call_is_retried_once_after_the_actor_dies(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("r")])
    handle = sup.handle("r")
    old_pid = handle.call("pid")
    kill_9(old_pid)
    began = time.monotonic()
    new_pid = handle.call("pid", idempotent=True)
    assert new_pid != old_pid and handle.generation == 2
    assert time.monotonic() - began < 15.0


def test_non_idempotent_call_is_not_retried(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("r")])
    handle = sup.handle("r")
    assert handle.call("add", 1) == 1
    kill_9(handle.call("pid"))
    with pytest.raises(PluginUnavailable, match="the call to add was not retried because it is not idempotent"):
        handle.call("add", 1)
    sup.wait_running("r", 2)
    assert handle.call("add", 5) == 5  # a new generation: a fresh plugin instance


def test_submit_and_resolve_keep_calls_in_flight(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("pipe")])
    handle = sup.handle("pipe")
    refs = [handle.submit("echo", i) for i in range(20)]
    assert handle.resolve(refs, "echo") == list(range(20))
    first, second = handle.submit("pair", "x", "y", num_returns=2)
    assert handle.resolve([first, second], "pair") == ["x", "y"]
    with pytest.raises(PluginError, match="ValueError: bad"):
        handle.resolve(handle.submit("fail", "bad"), "fail")
    with pytest.raises(BlobNotFound):
        handle.resolve(handle.submit("missing_blob", "z"), "missing_blob")
    with pytest.raises(PluginTimeout):
        handle.resolve(handle.submit("sleep", 30), "sleep", timeout=0.2)
    sup.wait_running("pipe", 2, 10.0)
    assert handle.resolve(handle.submit("echo", "again"), "echo") == "again"
    ref = handle.submit("sleep", 30)
    kill_9(sup.child("pipe")["pid"])
    with pytest.raises(PluginUnavailable, match="submit them again"):
        handle.resolve(ref, "sleep", timeout=10)


def test_handle_waits_for_a_restart(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("w")], backoff_base=0.5, backoff_max=0.5)
    crash(sup, "w")
    actor, generation = ray.get(sup.actor.handle.remote("w", 15.0, 1), timeout=30)
    assert generation == 2
    assert ray.get(actor.call.remote("echo", "up")) == "up"
    with pytest.raises(PluginUnavailable, match="no supervisor"):
        PluginHandle("w", namespace=sup.namespace, supervisor_name="nobody").call("echo", 1)
    with pytest.raises(PluginNotFound, match="'nope'"):
        sup.handle("nope").call("echo", 1)


# -- memory cap -----------------------------------------------------------------------------------


def test_memory_cap_watchdog_stops_the_host_and_it_is_restarted(supervise: Callable[..., Supervised]) -> None:
    cap = 200 << 20
    sup = supervise([{"id": "hog", "plugin": P + "MemoryHog", "memory_cap": cap}])
    # This machine has cgroup v1 (a tmpfs of per-controller mounts): the watchdog enforces the cap.
    assert ray.get(sup.host("hog").memory_enforcement.remote()) == "rss-watchdog"
    handle = sup.handle("hog")
    old_pid = handle.call("pid")
    assert handle.call("allocate", 16) == 16 << 20  # under the cap: nothing happens
    with contextlib.suppress(PluginUnavailable):  # the watchdog may stop the host before the call returns
        handle.call("allocate", 300)
    child = sup.wait_running("hog", 2, 15.0)
    failure = child["last_failure"]
    assert failure.startswith("memory cap exceeded: RSS ") and failure.endswith(f"> cap {cap}")
    assert int(failure.split("RSS ")[1].split(" ")[0]) > cap
    assert child["pid"] != old_pid
    # The cached handle may still name the stopped host: an idempotent call moves to the new one.
    assert handle.call("allocate", 1, idempotent=True) == 1 << 20  # a fresh instance holds nothing


def test_this_machine_has_no_cgroup_v2_memory_controller() -> None:
    assert cgroup_v2_memory_available(DEFAULT_CGROUP_ROOT) is False


def test_cgroup_v2_writer_against_a_fake_hierarchy(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    assert cgroup_v2_memory_available(tmp_path)
    stale = tmp_path / "dwray" / "storage_local-g1-999"
    stale.mkdir(parents=True)
    busy = tmp_path / "dwray" / "storage_local-g0-998"
    busy.mkdir()
    (busy / "cgroup.procs").write_text("998\n")  # a cgroup with a process left cannot be removed
    leaf = place_in_memory_cgroup(tmp_path, "storage_local-g2-1234", 1234, 64 << 20)
    assert leaf == tmp_path / "dwray" / "storage_local-g2-1234"
    assert (leaf / "memory.max").read_text() == f"{64 << 20}\n"
    assert (leaf / "cgroup.procs").read_text() == "1234\n"
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory\n"
    assert (tmp_path / "dwray" / "cgroup.subtree_control").read_text() == "+memory\n"
    assert not stale.exists() and busy.exists()


def test_cgroup_v2_detection_needs_the_memory_controller(tmp_path: Path) -> None:
    assert not cgroup_v2_memory_available(tmp_path)  # no cgroup.controllers at all
    (tmp_path / "cgroup.controllers").write_text("cpu io pids\n")
    assert not cgroup_v2_memory_available(tmp_path)


# -- tracing ------------------------------------------------------------------------------------------


def test_calls_carry_the_trace_context_into_the_host(supervise: Callable[..., Supervised]) -> None:
    sup = supervise([echo("traced", env_vars={"DWRAY_TRACE_MEMORY": "1"}), echo("plain")])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    handle = sup.handle("traced")
    assert handle.call("getenv", "DWRAY_TRACE_MEMORY") == "1"
    with tracer.start_as_current_span("driver-put") as driver:
        assert handle.call("echo", 7) == 7
        assert handle.resolve(handle.submit("echo", 8), "echo") == 8
    context = driver.get_span_context()
    spans = [s for s in ray.get(sup.host("traced").finished_spans.remote()) if s["name"] == "traced.echo"]
    assert len(spans) == 2
    for span in spans:
        assert span["trace_id"] == format(context.trace_id, "032x")
        assert span["parent_span_id"] == format(context.span_id, "016x")
        assert span["attributes"] == {"dwray.child": "traced", "dwray.plugin": "echo",
                                      "dwray.generation": 1, "dwray.method": "echo"}
    # A call outside any span starts a new trace in the host.
    handle.call("echo", 9)
    last = ray.get(sup.host("traced").finished_spans.remote())[-1]
    assert last["parent_span_id"] is None and last["trace_id"] != format(context.trace_id, "032x")
    with pytest.raises(InvalidArgument, match="DWRAY_TRACE_MEMORY=1"):
        ray.get(sup.host("plain").finished_spans.remote())
