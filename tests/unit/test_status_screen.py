"""``dw status`` on one screen: the report the supervisor and coordinator give, as a person reads it.

The report is the shape ``read_status`` returns (the supervisor's ``status()``
plus readiness and the gateway); ``tests/integration/gateway/test_status_gateway.py``
reads a real one.
"""
from __future__ import annotations

from typing import Any

import pytest

from dwray.cli.status import format_bytes, print_status, readiness_reasons

GiB = 1 << 30


def report(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "dwray:supervisor", "strategy": "one_for_one", "state": "restarting", "ready": False,
        "reason": "restarting: storage:local failed 6 times in 30 s; tree restart 2 in 4.0 s",
        "tree_restarts": 2, "restarting_in": 3.5, "last_failure": "storage:local exited [SIGKILL]",
        "restarts_in_period": 6, "max_restarts": 5, "period": 30.0,
        "memory": {"level": "warning", "used": int(7.2 * GiB), "limit": 8 * GiB, "fraction": 0.9,
                   "source": "cgroup-v2", "warning": 0.85, "critical": 0.95},
        "gateway": {"draining": True, "replicas": 2},
        "children": [
            {"id": "catalog", "kind": "catalog", "state": "running", "generation": 3, "restarts": 2,
             "breaker": "closed", "standby": True, "required": True, "pid": 4242, "node_id": "ab" * 20,
             "last_failure": None},
            {"id": "storage:local", "kind": "storage", "state": "restarting", "generation": 7, "restarts": 6,
             "breaker": "open", "standby": False, "required": True, "pid": None, "node_id": None,
             "last_failure": "exited [SIGKILL]"},
        ],
    }
    base.update(changes)
    base["readiness"] = readiness_reasons(base)
    return base


def test_readiness_lists_every_reason_once() -> None:
    shown = report()
    assert shown["readiness"] == ["restarting: storage:local failed 6 times in 30 s; tree restart 2 in 4.0 s",
                                  "gateway draining", "breaker open: storage:local"]
    # The supervisor already names the breaker: not repeated.
    named = report(reason="breaker open: storage:local (callers: gw-1)", gateway={"draining": False, "replicas": 1})
    assert named["readiness"] == ["breaker open: storage:local (callers: gw-1)"]
    assert report(ready=True, reason="ready", gateway=None,
                  children=[{"id": "catalog", "breaker": "closed", "required": True}])["readiness"] == []


def test_one_screen_shows_tree_plugins_memory_and_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    print_status(report())
    text = capsys.readouterr().out
    assert "supervisor dwray:supervisor (one_for_one): restarting, not ready" in text
    assert "tree restarts: 2, restarting in 3.5 s" in text
    assert "last failure: storage:local exited [SIGKILL]" in text  # rich markup escaped, shown as sent
    assert "memory: warning, 7.2 GiB of 8.0 GiB in use (cgroup-v2, 90%" in text
    assert "gateway: 2 replica(s) reporting, draining" in text
    for column in ("breaker", "standby", "gen", "restarts"):
        assert column in text
    catalog = next(line for line in text.splitlines() if line.split()[:1] == ["catalog"])
    assert catalog.split()[:7] == ["catalog", "catalog", "running", "3", "2", "closed", "yes"]
    storage = next(line for line in text.splitlines() if line.split()[:1] == ["storage:local"])
    assert storage.split()[:7] == ["storage:local", "storage", "restarting", "7", "6", "open", "no"]
    assert "not ready because:" in text and "  - gateway draining" in text


def test_a_quiet_warehouse(capsys: pytest.CaptureFixture[str]) -> None:
    print_status(report(state="running", ready=True, reason="ready", tree_restarts=0, restarting_in=None,
                        last_failure=None, memory=None, gateway=None,
                        children=[{"id": "catalog", "state": "running", "breaker": "closed", "required": True}]))
    text = capsys.readouterr().out
    assert "running, ready" in text and "tree restarts: 0;" in text and "last failure: -" in text
    assert "memory: not monitored" in text and "gateway: none running" in text
    assert "not ready because" not in text


def test_bytes_read_as_people_do() -> None:
    assert [format_bytes(n) for n in (512, 2048, 3 * GiB, None)] == ["512 B", "2.0 KiB", "3.0 GiB", "?"]
