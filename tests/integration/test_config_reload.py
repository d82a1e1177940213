"""Hot configuration reload on a running Ray warehouse: live limits, plugin restarts, rollback, records.

One warehouse of this module's own (a reload changes it, so not the session's
shared one) in a namespace of its own; the tests run in order against it, each
from the config the one before left. A gateway replica's context
(``serve_apps.context.GatewayContext``, without Serve) shows that replicas take
new rate limits and log levels without a restart.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.bootstrap import release_data_dir, start_supervisor
from actors.config_reload import UpReloader, history_path, read_history, reload_config
from actors.handles import PluginHandle, running_config
from dwray.config import load_config
from dwray.core.audit import AuditLocations
from dwray.core.audit.reader import AuditReader
from dwray.errors import ConfigError
from tests.helpers import wait_until

LOGGER = "dwray.reloadtest"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return json.dumps(str(value))


def _toml(data: dict[str, Any], prefix: tuple[str, ...] = ()) -> str:
    """A small TOML writer for the config dicts of these tests (tables, scalars, lists of scalars)."""
    lines = [f"{json.dumps(key)} = {_toml_value(value)}" for key, value in data.items()
             if not isinstance(value, dict)]
    text = (f"[{'.'.join(json.dumps(part) for part in prefix)}]\n" if prefix and lines else "") + \
        "".join(line + "\n" for line in lines)
    for key, value in data.items():
        if isinstance(value, dict):
            text += _toml(value, (*prefix, key))
    return text


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


class Running:
    """The module's warehouse, its base config as a dict, and a way to write config files from it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.namespace = f"dwray-test-reload-{uuid.uuid4().hex[:8]}"
        self.base: dict[str, Any] = {
            "data_dir": str(folder / "data"),
            "storage": {"backend": "local"}, "pipeline": {"frame_size": 4096},
            "sweeper": {"interval": 0}, "scrub": {"interval": 0},
            "runtime": {"namespace": self.namespace, "ping_interval": 0.5, "standby_hosts": False},
        }
        self.start_file = self.write("start", {})
        self.config = load_config(self.start_file)
        self.supervisor = start_supervisor(self.config)
        self.count = 0

    def write(self, name: str, over: dict[str, Any], *, raw: str = "") -> Path:
        path = self.folder / f"{name}.toml"
        path.write_text(_toml(_merge(self.base, over)) + raw)
        return path

    def reload(self, over: dict[str, Any], *, raw: str = "") -> dict[str, Any]:
        self.count += 1
        path = self.write(f"reload-{self.count}", over, raw=raw)
        return reload_config(self.running(), self.supervisor, path, principal="test_config_reload",
                             apply_here="test")

    def running(self) -> Any:
        return running_config(self.config, self.supervisor)

    def status(self) -> dict[str, dict[str, Any]]:
        children = ray.get(self.supervisor.status.remote(), timeout=30)["children"]
        return {child["id"]: child for child in children}

    def generations(self) -> dict[str, int]:
        return {child_id: child["generation"] for child_id, child in self.status().items()}

    def holders(self) -> set[str]:
        """The running children that hold the whole config (the settings child, services): every
        applied reload restarts them. (The bus holds only the sections it reads: not one of them.)"""
        return {child_id for child_id, child in self.status().items()
                if child["state"] == "running" and "gateway" in self.spec(child_id).config.get("settings", {})}

    def spec(self, child_id: str) -> Any:
        return ray.get(self.supervisor.child_spec.remote(child_id), timeout=30)

    def warehouse(self) -> Any:
        from actors.attach import RayWarehouse

        return RayWarehouse(self.running(), self.supervisor, owns_ray=False)

    def stop(self) -> None:
        try:
            ray.get(self.supervisor.stop.remote(), timeout=120)
        finally:
            ray.kill(self.supervisor)
            release_data_dir(self.config)


@pytest.fixture(scope="module")
def running(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    warehouse = Running(tmp_path_factory.mktemp("config-reload"))
    yield warehouse
    warehouse.stop()


@pytest.fixture(scope="module")
def replica(running: Running) -> Iterator[Any]:
    """A gateway replica's context on the running warehouse (its report thread polls for reloads)."""
    from actors.gateway_coordinator import ensure_coordinator
    from serve_apps.gateway import replica_context

    coordinator = ensure_coordinator(running.namespace)
    context = replica_context(running.running(), running.supervisor, coordinator)  # with its S3 handler
    yield context
    context.close()
    ray.kill(coordinator)


def _put_and_get(running: Running, key: str) -> None:
    warehouse = running.warehouse()
    try:
        if "reload" not in {bucket.name for bucket in warehouse.list_buckets()}:
            warehouse.create_bucket("reload")
        warehouse.put("reload", key, f"bytes of {key}".encode() * 100)
        assert warehouse.get("reload", key) == f"bytes of {key}".encode() * 100
    finally:
        warehouse.close()


def test_rate_limits_and_timeouts_change_live(running: Running, replica: Any) -> None:
    replica.check_config()  # the replica's first look: the revision it starts from
    assert "tenant=1000/s" in repr(replica.limiter)
    before, holders = running.generations(), running.holders()
    assert "settings" in holders
    result = running.reload({"gateway": {"rate_limit": {"tenant_rate": 5.0, "tenant_burst": 7.0}},
                             "plugins": {"identity": {"call_timeout": 7.0}}})
    assert result["outcome"] == "applied"
    # Only the children holding the whole config hold the gateway's section; identity's deadline is
    # swapped in, with no restart.
    assert set(result["restarted"]) == holders and "identity" in result["live"]
    after = running.generations()
    assert all(after[child_id] == before[child_id] + 1 for child_id in holders)
    assert {k: v for k, v in after.items() if k not in holders} == \
        {k: v for k, v in before.items() if k not in holders}
    assert running.spec("identity").call_timeout == 7.0
    assert PluginHandle("identity", namespace=running.namespace).deadline("lookup") == 7.0
    # The replica takes the new limits from its report thread, within its check interval.
    wait_until(lambda: "tenant=5/s burst 7" in repr(replica.limiter), 15.0, "the replica's new rate limit")
    assert replica.s3.limiter is replica.limiter  # what the S3 requests are checked against
    assert running.running().gateway.rate_limit.tenant_rate == 5.0
    _put_and_get(running, "after-live-reload")


def test_log_levels_change_live(running: Running, replica: Any) -> None:
    logging.getLogger(LOGGER).setLevel(logging.NOTSET)
    assert logging.getLogger(LOGGER).getEffectiveLevel() > logging.DEBUG
    revision = ray.get(running.supervisor.config_revision.remote(), timeout=30)
    result = running.reload({"gateway": {"rate_limit": {"tenant_rate": 5.0, "tenant_burst": 7.0}},
                             "plugins": {"identity": {"call_timeout": 7.0}},
                             "logging": {"levels": {LOGGER: "DEBUG"}}})
    assert result["outcome"] == "applied" and result["revision"] == revision + 1
    assert [change["path"] for change in result["changes"]] == [f"logging.levels.{LOGGER}"]
    # The process that ran the reload (dw up's, here the test's) and the replica take it at once.
    assert logging.getLogger(LOGGER).getEffectiveLevel() == logging.DEBUG
    wait_until(lambda: replica.config.logging.levels.get(LOGGER) == "DEBUG", 15.0, "the replica's log levels")
    assert all(running.spec(child_id).logging.levels == {LOGGER: "DEBUG"} for child_id in running.status())


def test_a_changed_plugin_config_restarts_only_that_plugin(running: Running) -> None:
    before, holders = running.generations(), running.holders()
    result = running.reload({"gateway": {"rate_limit": {"tenant_rate": 5.0, "tenant_burst": 7.0}},
                             "plugins": {"identity": {"call_timeout": 7.0}},
                             "logging": {"levels": {LOGGER: "DEBUG"}},
                             "catalog": {"busy_timeout_ms": 4321}})
    assert result["outcome"] == "applied"
    assert set(result["restarted"]) == holders | {"catalog"}
    after = running.generations()
    assert all(after[child_id] == before[child_id] + 1 for child_id in holders | {"catalog"})
    untouched = set(after) - holders - {"catalog"}
    assert untouched >= {"identity", "audit", "kms:local", "storage:local"}
    assert {k: after[k] for k in untouched} == {k: before[k] for k in untouched}
    assert running.spec("catalog").config["busy_timeout_ms"] == 4321
    _put_and_get(running, "after-catalog-restart")


def test_a_plugin_that_fails_its_handshake_is_rolled_back(running: Running) -> None:
    before = running.generations()
    serving = {child_id for child_id, child in running.status().items() if child["state"] == "running"}
    old_catalog = running.spec("catalog")
    # The catalog restarts first with its new config, then identity cannot be placed (a node that does not
    # exist): both go back to their old spec and the reload is refused.
    with pytest.raises(ConfigError) as refused:
        running.reload({"gateway": {"rate_limit": {"tenant_rate": 5.0, "tenant_burst": 7.0}},
                        "logging": {"levels": {LOGGER: "DEBUG"}},
                        "catalog": {"busy_timeout_ms": 999},
                        "plugins": {"identity": {"call_timeout": 7.0, "node_id": "ab" * 28}}})
    message = str(refused.value)
    assert "identity" in message and "went back to its old config" in message and "reload-" in message
    after = running.generations()
    assert after["catalog"] == before["catalog"] + 2  # restarted with the new config, then with the old one
    assert running.spec("catalog") == old_catalog and running.spec("identity").node_id is None
    assert running.running().catalog.busy_timeout_ms == 4321
    wait_until(lambda: all(running.status()[child_id]["state"] == "running" for child_id in serving), 60.0,
               "every plugin that served before running again")
    assert ray.get(running.supervisor.ready.remote(), timeout=30) == (True, "ready")
    _put_and_get(running, "after-rollback")
    last = read_history(running.config.data_dir, 1)[-1]
    assert last["outcome"] == "refused" and last["rolled_back"] is True


def test_invalid_files_are_refused_naming_the_field_and_the_file(running: Running) -> None:
    generations = running.generations()
    with pytest.raises(ConfigError) as bad_value:
        running.reload({"gateway": {"rate_limit": {"tenant_rate": -1}}})
    assert "gateway.rate_limit.tenant_rate" in str(bad_value.value)
    assert f"reload-{running.count}.toml" in str(bad_value.value)
    with pytest.raises(ConfigError, match=r"gateway\.nonsense .*unknown field"):
        running.reload({"gateway": {"nonsense": 1}})
    with pytest.raises(ConfigError, match=r"gateway\.port, runtime\.namespace cannot change while the warehouse"):
        running.reload({"gateway": {"port": 9999}, "runtime": {"namespace": "elsewhere"}})
    with pytest.raises(ConfigError, match="changes the set of plugins .*would add scrubber"):
        running.reload({"scrub": {"interval": 3600}})
    assert running.generations() == generations
    assert running.running().gateway.rate_limit.tenant_rate == 5.0


def test_every_reload_is_in_the_history_and_the_audit_log(running: Running) -> None:
    path = history_path(running.config.data_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    entries = [entry for entry in read_history(running.config.data_dir, 100) if entry["event"] == "reload"]
    assert [entry["outcome"] for entry in entries] == ["applied"] * 3 + ["refused"] * 5
    assert "catalog" in entries[2]["restarted"] and "identity" not in entries[2]["restarted"]
    assert {c["path"] for c in entries[2]["changes"]} == {"catalog.busy_timeout_ms"}
    locations = AuditLocations.of(running.config)

    def audited() -> list[dict[str, Any]] | None:
        with AuditReader(locations) as reader:
            found = reader.query(action="dwray:ReloadConfig")
        return found if len(found) >= len(entries) else None
    records = wait_until(audited, 30.0, "every reload in the audit log")
    assert [record["outcome"] for record in records] == ["allowed"] * 3 + ["denied"] * 5
    assert "catalog.busy_timeout_ms: 10000 -> 4321" in records[2]["resource"]
    assert records[3]["error"] and "went back to its old config" in records[3]["error"]
    assert all(record["principal"] == "test_config_reload" for record in records)
    reloads = ray.get(running.supervisor.reloads.remote(10), timeout=30)
    assert [entry["outcome"] for entry in reloads] == ["applied"] * 3 + ["refused"] * 5


def test_the_cli_diffs_reloads_and_lists_the_history(running: Running) -> None:
    same = running.write("cli-same", {"gateway": {"rate_limit": {"tenant_rate": 5.0, "tenant_burst": 7.0}},
                                      "plugins": {"identity": {"call_timeout": 7.0}},
                                      "logging": {"levels": {LOGGER: "DEBUG"}},
                                      "catalog": {"busy_timeout_ms": 4321}})
    changed = running.write("cli-changed", {"gateway": {"rate_limit": {"tenant_rate": 9.0, "tenant_burst": 7.0},
                                                        "port": 9001},
                                            "plugins": {"identity": {"call_timeout": 7.0,
                                                                     "env_vars": {"DB_PASSWORD": "hunter2"}}},
                                            "logging": {"levels": {LOGGER: "DEBUG"}},
                                            "catalog": {"busy_timeout_ms": 4321}})
    def dw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dwray.cli", "--config", str(running.start_file), "config",
                               *args], capture_output=True, text=True, timeout=180, check=False)

    diff = dw("diff", str(same), "--json")
    assert diff.returncode == 0, diff.stderr
    assert json.loads(diff.stdout)["changes"] == []
    diff = dw("diff", str(changed), "--json")
    assert diff.returncode == 0, diff.stderr
    shown = json.loads(diff.stdout)
    assert {c["path"] for c in shown["changes"]} == {"gateway.rate_limit.tenant_rate", "gateway.port",
                                                     "plugins.identity.env_vars.DB_PASSWORD"}
    assert shown["frozen"] == ["gateway.port"] and "hunter2" not in diff.stdout
    refused = dw("reload", str(changed))
    assert refused.returncode == 1 and "gateway.port cannot change" in refused.stderr
    applied = dw("reload", str(same), "--json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["outcome"] == "unchanged"
    history = dw("history", "--json", "--limit", "2")
    assert history.returncode == 0, history.stderr
    assert [entry["outcome"] for entry in json.loads(history.stdout)] == ["refused", "unchanged"]
    assert "hunter2" not in history_path(running.config.data_dir).read_text()


def test_sighup_and_the_file_watch_reload_dw_ups_file(running: Running) -> None:
    settled = {"gateway": {"rate_limit": {"tenant_burst": 7.0}}, "plugins": {"identity": {"call_timeout": 7.0}},
               "logging": {"levels": {LOGGER: "DEBUG"}}, "catalog": {"busy_timeout_ms": 4321}}
    path = running.write("up", _merge(settled, {"gateway": {"rate_limit": {"tenant_rate": 6.0}}}))
    reloader = UpReloader(running.config, running.supervisor, path, watch=True)
    previous = signal.signal(signal.SIGHUP, reloader.on_sighup)
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(reloader.requested.is_set, 10.0, "the SIGHUP")
        result = reloader.poll()
        assert result is not None and result["outcome"] == "applied"
        assert running.running().gateway.rate_limit.tenant_rate == 6.0
        running.write("up", _merge(settled, {"gateway": {"rate_limit": {"tenant_rate": 8.0}}}))

        def rate() -> float | None:
            try:
                return running.running().gateway.rate_limit.tenant_rate == 8.0 or None
            except Exception:  # noqa: BLE001 - the settings plugin is restarting under the reload
                return None
        wait_until(rate, 90.0, "the watched file's reload", interval=0.5)
    finally:
        signal.signal(signal.SIGHUP, previous)
        reloader.close()
    entries = read_history(running.config.data_dir, 3)
    assert entries[0]["event"] == "started" and entries[0]["source"] == str(path)
    assert [(entry["principal"], entry["outcome"]) for entry in entries[1:]] == [
        ("SIGHUP to dw up", "applied"), ("dw up (file watch)", "applied")]


def test_a_supervisor_killed_after_a_reload_comes_back_with_the_reloaded_config(running: Running) -> None:
    """Ray restarts a killed supervisor from its actor arguments (the start config); the spec an applied
    reload made is kept in the GCS and wins, so the reload outlives it. Last: it restarts the tree."""
    result = running.reload({"gateway": {"rate_limit": {"tenant_rate": 5.0, "tenant_burst": 7.0}},
                             "plugins": {"identity": {"call_timeout": 9.0}},
                             "logging": {"levels": {LOGGER: "DEBUG"}},
                             "catalog": {"busy_timeout_ms": 4321}})
    assert result["outcome"] == "applied"
    assert running.spec("identity").call_timeout == 9.0
    pid = ray.get(running.supervisor.status.remote(), timeout=30)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: _restarted_and_running(running, pid), 120.0, "the supervisor to restart and run its tree")
    assert running.spec("identity").call_timeout == 9.0
    assert running.spec("catalog").config["busy_timeout_ms"] == 4321
    assert running.running().gateway.rate_limit.tenant_rate == 5.0  # the settings child's config too
    _put_and_get(running, "after-supervisor-restart")


def _restarted_and_running(running: Running, old_pid: int) -> bool:
    try:
        status = ray.get(running.supervisor.status.remote(), timeout=10)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return False
    return status["pid"] != old_pid and status["state"] == "running"
