"""``dw status``: the running warehouse on one screen, read from its supervisor and the gateway coordinator.

The supervisor's state, the tree's restarts and last failure (the tree is
restarted whole after an escalation), each plugin's state, generation,
restarts, circuit breaker and standby, the memory level of the supervisor's
node, whether a gateway runs and drains, and every reason the warehouse is
not ready. ``--json`` prints the same report as data.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.markup import escape

from dwray.cli.output import printable
from dwray.config import load_config
from dwray.errors import NotReady

__all__ = ["format_bytes", "print_status", "read_status", "readiness_reasons"]

CALL_TIMEOUT = 30.0  # the supervisor and coordinator answer from memory; longer means one is hung


def read_status(address: str | None = None, *, config_path: str | Path | None = None) -> dict[str, Any]:
    """Status of the warehouse in the configured Ray namespace; ``NotReady`` if none runs."""
    import ray

    from actors.attach import dashboard_url, ray_running_locally
    from actors.bootstrap import find_supervisor

    config = load_config(config_path)
    runtime = config.runtime
    if address is None and not os.environ.get("RAY_ADDRESS") and not ray_running_locally():
        raise NotReady("no Ray cluster runs on this machine (start one with cluster/start-local-cluster.sh "
                       "or `ray start --head`), or pass --address")
    ray.init(address=address or "auto", namespace=runtime.namespace, configure_logging=False,
             log_to_driver=False)
    try:
        supervisor = find_supervisor(config)
        if supervisor is None:
            raise NotReady(f"no warehouse supervisor {runtime.supervisor_name!r} in Ray namespace "
                           f"{runtime.namespace!r}")
        report = ray.get(supervisor.status.remote(), timeout=CALL_TIMEOUT)
        ready, reason = ray.get(supervisor.ready.remote(), timeout=CALL_TIMEOUT)
        report.update({"ready": ready, "reason": reason, "gateway": _gateway(runtime.namespace),
                       "storage": _storage(config, supervisor), "dashboard": dashboard_url()})
        report["readiness"] = readiness_reasons(report)
        return report
    finally:
        ray.shutdown()


def _gateway(namespace: str) -> dict[str, Any] | None:
    """The gateway coordinator's control state and how many replicas report; ``None``: no gateway runs."""
    import ray

    from actors.gateway_coordinator import find_coordinator

    coordinator = find_coordinator(namespace)
    if coordinator is None:
        return None
    try:
        control = ray.get(coordinator.control.remote(), timeout=CALL_TIMEOUT)
        replicas = ray.get(coordinator.snapshots.remote(), timeout=CALL_TIMEOUT)
    except Exception as error:  # noqa: BLE001 - shown, not fatal: the warehouse's status stands without it
        return {"error": f"the gateway coordinator did not answer ({type(error).__name__})"}
    return {"draining": bool(control.get("draining")), "replicas": len(replicas)}


def _storage(config: Any, supervisor: Any) -> dict[str, Any]:
    """Each storage target's pool status (replicas, hints, tiers), the scrubber's rounds and the last
    scrub pass's totals. A part that does not answer is shown as its error; the rest stands."""
    from actors.handles import plugin_handle, running_config
    from dwray.core.scrubbing import load_report

    config = running_config(config, supervisor)
    targets: dict[str, Any] = {}
    for target in config.storage_targets:
        try:
            targets[target] = plugin_handle(config, supervisor, f"storage:{target}").call("pool_status",
                                                                                         idempotent=True)
        except Exception as error:  # noqa: BLE001 - shown, not fatal
            targets[target] = {"error": f"{type(error).__name__}: {error}"}
    scrubber = None
    if config.scrub.interval > 0:
        try:
            scrubber = plugin_handle(config, supervisor, "scrubber").call("status", idempotent=True)
        except Exception as error:  # noqa: BLE001 - shown, not fatal
            scrubber = {"error": f"{type(error).__name__}: {error}"}
    last = load_report(config.data_dir)
    last_pass = None if last is None else {key: last.get(key) for key in ("finished", "seconds", "complete",
                                                                          "totals")}
    return {"targets": targets, "scrubber": scrubber, "last_scrub": last_pass}


def readiness_reasons(report: dict[str, Any]) -> list[str]:
    """Every reason the warehouse is not ready: the supervisor's, a draining gateway, open breakers.

    The supervisor names the first reason it finds; breakers and the gateway are
    listed too, so one look shows all of them (as ``/healthz/ready`` does per replica).
    """
    reasons = [] if report.get("ready") else [str(report.get("reason"))]
    gateway = report.get("gateway") or {}
    if gateway.get("draining"):
        reasons.append("gateway draining")
    if gateway.get("error"):
        reasons.append(gateway["error"])
    for child in report.get("children", []):
        breaker = child.get("breaker")
        if child.get("required") and breaker in ("open", "half_open"):
            reason = f"breaker {breaker}: {child.get('id')}"
            if not any(reason in r for r in reasons):
                reasons.append(reason)
    return reasons


def format_bytes(count: Any) -> str:
    if not isinstance(count, int) or isinstance(count, bool):
        return "?"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _shown(value: Any) -> str:
    """``value`` as text that can drive neither the terminal nor rich's markup."""
    return escape(printable(str(value)))


def _summary_lines(report: dict[str, Any]) -> list[str]:
    ready = "[green]ready[/green]" if report.get("ready") else "[red]not ready[/red]"
    lines = [f"supervisor {_shown(report.get('name'))} ({report.get('strategy')}): {report.get('state')}, {ready}"]
    tree = f"  tree restarts: {report.get('tree_restarts', 0)}"
    if report.get("restarting_in") is not None:
        tree += f", restarting in {report['restarting_in']:.1f} s"
    tree += f"; restarts in period: {report.get('restarts_in_period', 0)} (max {report.get('max_restarts')} " \
            f"in {report.get('period')} s)"
    lines.append(tree)
    lines.append(f"  last failure: {_shown(report.get('last_failure') or '-')}")
    lines.append(f"  Ray dashboard: {_shown(report.get('dashboard') or 'off')}")
    memory = report.get("memory")
    if memory:
        fraction = memory.get("fraction")
        share = f", {fraction:.0%}" if isinstance(fraction, int | float) else ""
        lines.append(f"  memory: {memory.get('level')}, {format_bytes(memory.get('used'))} of "
                     f"{format_bytes(memory.get('limit'))} in use ({memory.get('source')}{share}; warning at "
                     f"{memory.get('warning', 0):.0%}, critical at {memory.get('critical', 0):.0%})")
    else:
        lines.append("  memory: not monitored")
    gateway = report.get("gateway")
    if gateway is None:
        lines.append("  gateway: none running")
    elif gateway.get("error"):
        lines.append(f"  gateway: {_shown(gateway['error'])}")
    else:
        lines.append(f"  gateway: {gateway.get('replicas')} replica(s) reporting"
                     f"{', draining' if gateway.get('draining') else ''}")
    return lines


def _storage_lines(storage: dict[str, Any]) -> list[str]:
    lines = []
    for target, status in (storage.get("targets") or {}).items():
        details = ", ".join(f"{key} {_shown(value)}" for key, value in status.items() if key != "kind"
                            and not isinstance(value, dict | list))
        lines.append(f"storage {_shown(target)} ({_shown(status.get('kind', '?'))}): {details or 'ok'}")
        members = status.get("members")
        if isinstance(members, dict):
            for name, member in members.items():
                lines.append(f"  member {_shown(name)}: {_shown(member)}")
    last = storage.get("last_scrub")
    if last and last.get("totals"):
        totals = last["totals"]
        lines.append(f"last scrub: {totals.get('blobs')} blob(s), {format_bytes(totals.get('bytes'))}, "
                     f"{totals.get('corrupt')} corrupt, {totals.get('missing')} missing, {totals.get('repaired')} "
                     f"repaired, {totals.get('unrepairable')} unrepairable"
                     f"{'' if last.get('complete') else ' (incomplete)'}")
    else:
        lines.append("last scrub: none yet")
    scrubber = storage.get("scrubber")
    if scrubber:
        running = scrubber.get("running")
        lines.append(f"scrubber: {scrubber.get('rounds', 0)} pass(es)"
                     + (f", scrubbing {_shown(running.get('target'))} now" if running else "")
                     + (f", last error: {_shown(scrubber['last_error'])}" if scrubber.get("last_error") else "")
                     + (f"{_shown(scrubber['error'])}" if scrubber.get("error") else ""))
    return lines


def print_status(report: dict[str, Any]) -> None:
    """The report on one screen (``dw status`` without ``--json``)."""
    from rich.table import Table

    from dwray.cli.output import print_table, stdout

    for line in _summary_lines(report):
        stdout.print(line, highlight=False, soft_wrap=True)
    table = Table(box=None)
    for column in ("plugin", "kind", "state", "gen", "restarts", "breaker", "standby", "pid", "node",
                   "last failure"):
        table.add_column(column)
    for child in report.get("children", []):
        standby = child.get("standby")
        table.add_row(*(_shown(value) for value in (
            child.get("id", "?"), child.get("kind") or "", child.get("state"), child.get("generation"),
            child.get("restarts"), child.get("breaker") or "-", "-" if standby is None else
            ("yes" if standby else "no"), child.get("pid") or "", str(child.get("node_id") or "")[:12],
            child.get("last_failure") or "")))
    print_table(table)
    for line in _storage_lines(report.get("storage") or {}):
        stdout.print(line, highlight=False, soft_wrap=True)
    reasons = report.get("readiness") or []
    if reasons:
        stdout.print("not ready because:", highlight=False)
        for reason in reasons:
            stdout.print(f"  - {_shown(reason)}", highlight=False, soft_wrap=True)
