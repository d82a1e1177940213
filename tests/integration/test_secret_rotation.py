"""A rotated secret reaches running plugins without a restart, on a real Ray.

A ``SecretUser`` plugin (``dwray.testing.secret_conformance``) reads a secret of
the local store through its own resolver and reports fingerprints of what it
sees. Rotations reach it by the supervisor's event (``secret_rotated``) or by
its host's periodic watch; the previous value stays accepted for the grace
period. The plugin's process and generation never change.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from dwray.builtins.secret_managers import LocalSecretsPlugin
from dwray.config import DwrayConfig, LocalSecretsConfig, SecretsConfig
from dwray.errors import InvalidArgument
from dwray.secrets import LocalSecretStore, resolver_settings
from dwray.secrets.key_file import create_key_file
from dwray.testing.secret_conformance import value_fingerprint as fp
from tests.helpers import wait_until
from tests.integration.test_supervisor import Supervised, supervisors

USER = "dwray.testing.secret_conformance:SecretUser"


def store_config(folder: Path, *, watch: float = 3600.0, grace: float = 600.0) -> DwrayConfig:
    key = folder / "store.key"
    if not key.exists():
        create_key_file(key, "secret://file/test")
    return DwrayConfig(secrets=SecretsConfig(watch_interval=watch, grace_seconds=grace, local=LocalSecretsConfig(
        path=folder / "secrets.json", key_file=key)))


def user_child(config: DwrayConfig, ref: str, child_id: str = "user") -> dict[str, Any]:
    return {"id": child_id, "plugin": USER, "kind": "service",
            "config": {"ref": ref, "settings": resolver_settings(config)}}


@pytest.fixture
def supervise(ray_session: Any) -> Iterator[Callable[..., Supervised]]:
    with supervisors() as make:
        yield make


def test_a_rotation_event_reaches_the_running_plugin(supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    config = store_config(tmp_path)
    store = LocalSecretStore.from_config(config)
    name = f"rotation/{uuid.uuid4().hex[:8]}"
    ref = f"secret://local/{name}"
    store.put(name, "old value")
    sup = supervise([user_child(config, ref), {"id": "bystander", "plugin": "dwray.testing.plugins:Echo"}])
    user = sup.handle("user")
    before = sup.child("user")
    assert user.call("fingerprint") == fp("old value")
    store.rotate(name, "new value")
    assert user.call("fingerprint") == fp("old value")  # cached: the watch is an hour away
    told = ray.get(sup.actor.secret_rotated.remote(ref), timeout=60)
    assert told == {"ref": ref, "told": ["user", "bystander"], "using": ["user"], "failed": {}}
    assert user.call("fingerprint") == fp("new value")
    assert user.call("accepted_fingerprints") == [fp("new value"), fp("old value")]
    assert user.call("rotations_told") == [ref]
    after = sup.child("user")
    assert (after["generation"], after["pid"], after["restarts"]) == (before["generation"], before["pid"], 0)
    event = next(e for e in sup.events() if e["kind"] == "secret_rotated")
    assert event["reason"] == ref and event["using"] == ["user"]


def test_the_hosts_watch_notices_a_rotation_made_elsewhere(supervise: Callable[..., Supervised],
                                                           tmp_path: Path) -> None:
    config = store_config(tmp_path, watch=0.5)
    store = LocalSecretStore.from_config(config)
    name = f"watched/{uuid.uuid4().hex[:8]}"
    ref = f"secret://local/{name}"
    store.put(name, {"password": "first"})
    sup = supervise([user_child(config, f"{ref}#password")])
    user = sup.handle("user")
    pid = sup.child("user")["pid"]
    assert user.call("fingerprint") == fp("first")
    store.rotate(name, {"password": "second"})
    wait_until(lambda: user.call("rotations_told") == [f"{ref}#password"], 20, "the watch to see the rotation")
    assert user.call("fingerprint") == fp("second")
    assert sup.child("user")["pid"] == pid


def test_after_the_grace_period_only_the_new_value_is_accepted(supervise: Callable[..., Supervised],
                                                               tmp_path: Path) -> None:
    config = store_config(tmp_path, grace=3.0)
    store = LocalSecretStore.from_config(config)
    name = f"grace/{uuid.uuid4().hex[:8]}"
    ref = f"secret://local/{name}"
    store.put(name, "old")
    sup = supervise([user_child(config, ref)])
    user = sup.handle("user")
    store.rotate(name, "new")
    ray.get(sup.actor.secret_rotated.remote(ref), timeout=60)
    assert user.call("accepted_fingerprints") == [fp("new"), fp("old")]
    wait_until(lambda: user.call("accepted_fingerprints") == [fp("new")], 20, "the grace period to end")


def test_the_supervisor_refuses_a_bad_reference(supervise: Callable[..., Supervised], tmp_path: Path) -> None:
    sup = supervise([{"id": "bystander", "plugin": "dwray.testing.plugins:Echo"}])
    with pytest.raises(InvalidArgument, match="expected a secret reference"):
        ray.get(sup.actor.secret_rotated.remote("not-a-reference"), timeout=60)


def test_a_secret_manager_runs_as_a_plugin_with_references_only(supervise: Callable[..., Supervised],
                                                                tmp_path: Path) -> None:
    config = store_config(tmp_path)
    child_config = LocalSecretsPlugin.config_from(config)
    sup = supervise([{"id": "secrets:local", "plugin": "secrets.local", "kind": "secrets", "config": child_config}])
    manager = sup.handle("secrets:local")
    version = manager.call("put", "via/plugin", "plugin value")
    value, seen = manager.call("reveal", "via/plugin")
    assert (value, seen) == (b"plugin value", version)
    assert manager.call("rotate", "via/plugin", "second") == "2"
    assert [entry.version for entry in manager.call("versions", "via/plugin")] == ["1", "2"]
    assert LocalSecretStore.from_config(config).get("via/plugin", version="1") == "plugin value"
    arguments = json.dumps(ray.get(sup.actor.child_spec.remote("secrets:local"), timeout=30).model_dump(mode="json"))
    key = (tmp_path / "store.key").read_text().strip()
    assert key not in arguments and "plugin value" not in arguments
    assert sup.child("secrets:local")["manifest"]["name"] == "secrets.local"
