"""``dw secret``, run as a user would: the local store, Vault and AWS, and telling a running warehouse."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest
import ray

from actors.handles import PluginHandle
from actors.supervisor import create_supervisor
from dwray.config import DwrayConfig, LocalSecretsConfig, SecretsConfig
from dwray.core.datadir_lock import DataDirLock, LockHolder, RayEndpoint
from dwray.core.supervision import SupervisorSpec
from dwray.secrets import LocalSecretStore, resolver_settings
from dwray.secrets.key_file import create_key_file
from dwray.testing.secret_conformance import value_fingerprint as fp


def dw(env: dict[str, str], *args: str, stdin: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["dw", *args], input=stdin, capture_output=True, env={**os.environ, **env}, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"dw {' '.join(args)} failed ({result.returncode}): {result.stderr.decode()}")
    return result


def dw_json(env: dict[str, str], *args: str, stdin: bytes | None = None) -> Any:
    return json.loads(dw(env, *args, "--json", stdin=stdin).stdout)


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """A config home of its own (the local store and master key live there) and a data dir."""
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg"), "DWRAY_DATA_DIR": str(tmp_path / "data")}


def test_the_local_store_round_trip(home: dict[str, str], tmp_path: Path) -> None:
    stored = dw(home, "secret", "set", "db/password", stdin=b"first value\n")
    assert b"first value" not in stored.stdout + stored.stderr
    assert b"stored secret://local/db/password version 1" in stored.stdout
    assert dw(home, "secret", "get", "db/password").stdout == b"first value"
    value_file = tmp_path / "value"
    value_file.write_bytes(b"second value\n")
    rotated = dw_json(home, "secret", "rotate", "db/password", "--value-file", str(value_file))
    assert rotated == {"ref": "secret://local/db/password", "version": "2", "previous": "1", "warehouse": None}
    assert dw_json(home, "secret", "get", "secret://local/db/password", "--version", "1")["value"] == "first value"
    listed = dw_json(home, "secret", "list")
    assert listed == [{"name": "db/password", "current": "2", "versions": ["1", "2"]}]
    table = dw(home, "secret", "list").stdout.decode()
    assert "db/password" in table and "value" not in table
    store = Path(home["XDG_CONFIG_HOME"]) / "dwray" / "secrets.json"
    assert stat.S_IMODE(store.stat().st_mode) == 0o600 and b"second value" not in store.read_bytes()
    assert dw_json(home, "secret", "rm", "db/password") == {"deleted": "secret://local/db/password",
                                                            "warehouse": None}
    gone = dw(home, "secret", "get", "db/password", check=False)
    assert gone.returncode == 1 and b"not found" in gone.stderr and b"Traceback" not in gone.stderr


def test_fields_and_check_and_set(home: dict[str, str]) -> None:
    dw(home, "secret", "set", "api", stdin=b'{"user": "ana", "token": "t0k"}')
    assert dw(home, "secret", "get", "api#token").stdout == b"t0k"
    assert dw(home, "secret", "get", "api", "--field", "user").stdout == b"ana"
    lost = dw(home, "secret", "set", "api", "--cas", "0", stdin=b"x", check=False)
    assert lost.returncode == 1 and b"was changed by another writer" in lost.stderr
    assert dw_json(home, "secret", "set", "api", "--cas", "1", stdin=b"y")["version"] == "2"


def test_values_never_come_from_the_command_line(home: dict[str, str]) -> None:
    extra = dw(home, "secret", "set", "name", "the-value", check=False)
    assert extra.returncode == 2
    empty = dw(home, "secret", "set", "name", stdin=b"", check=False)
    assert empty.returncode == 1 and b"never on the command line" in empty.stderr
    missing = dw(home, "secret", "rotate", "absent", stdin=b"v", check=False)
    assert missing.returncode == 1 and b"secret://local/absent not found" in missing.stderr
    unconfigured = dw(home, "secret", "get", "x#y", "--manager", "vault", check=False)
    assert unconfigured.returncode == 1 and b"[secrets.vault] address" in unconfigured.stderr


def test_the_vault_manager(home: dict[str, str], openbao: Any) -> None:
    env = {**home, "DWRAY_SECRETS__VAULT__ADDRESS": openbao.address,
           "DWRAY_SECRETS__VAULT__TOKEN": "secret://env/DW_TEST_VAULT_TOKEN",
           "DW_TEST_VAULT_TOKEN": openbao.token}
    name = f"cli-{uuid.uuid4().hex[:8]}/db"
    dw(env, "secret", "set", name, "--manager", "vault", stdin=b'{"password": "v1"}')
    assert dw(env, "secret", "get", f"secret://vault/{name}#password").stdout == b"v1"
    assert dw_json(env, "secret", "rotate", name, "--manager", "vault", stdin=b'{"password": "v2"}')["version"] == "2"
    assert hvac.Client(url=openbao.address, token=openbao.token).secrets.kv.v2.read_secret_version(
        path=name, raise_on_deleted_version=True)["data"]["data"] == {"password": "v2"}
    listed = dw_json(env, "secret", "list", name.split("/")[0] + "/", "--manager", "vault")
    assert listed == [{"name": name, "current": "2", "versions": ["1", "2"]}]
    dw(env, "secret", "rm", name, "--manager", "vault")
    assert dw(env, "secret", "get", f"secret://vault/{name}#password", check=False).returncode == 1


def test_the_aws_manager(home: dict[str, str], moto_aws: Any) -> None:
    env = {**home, "DWRAY_SECRETS__AWS__REGION": "us-east-1", "DWRAY_SECRETS__AWS__ENDPOINT_URL": moto_aws.address,
           "DWRAY_SECRETS__AWS__ACCESS_KEY_ID": "secret://env/DW_TEST_AWS_KEY",
           "DWRAY_SECRETS__AWS__SECRET_ACCESS_KEY": "secret://env/DW_TEST_AWS_SECRET",
           "DW_TEST_AWS_KEY": "testing", "DW_TEST_AWS_SECRET": "testing"}
    name = f"cli-{uuid.uuid4().hex[:8]}"
    first = dw_json(env, "secret", "set", name, "--manager", "aws", stdin=b"one")["version"]
    second = dw_json(env, "secret", "rotate", f"secret://aws/{name}", stdin=b"two")["version"]
    assert dw(env, "secret", "get", f"secret://aws/{name}").stdout == b"two"
    assert dw(env, "secret", "get", name, "--manager", "aws", "--version", first).stdout == b"one"
    assert [row["current"] for row in dw_json(env, "secret", "list", name, "--manager", "aws")] == [second]
    dw(env, "secret", "rm", name, "--manager", "aws", "--force")
    assert dw(env, "secret", "get", name, "--manager", "aws", check=False).returncode == 1


@pytest.fixture
def held_data_dir(ray_session: Any, tmp_path: Path) -> Iterator[tuple[Path, str, str]]:
    """A data dir whose lock names a supervisor on the session's Ray (as a running warehouse's does)."""
    namespace = f"dwray-test-{uuid.uuid4().hex[:10]}"
    data_dir = tmp_path / "data"
    endpoint = RayEndpoint(ray.get_runtime_context().gcs_address, namespace, "dwray:supervisor", os.getpid(), False)
    lock = DataDirLock(data_dir).acquire(LockHolder.this_process("test_cli_secret").served_by(endpoint))
    try:
        yield data_dir, namespace, "dwray:supervisor"
    finally:
        lock.release()


def test_rotate_tells_the_running_warehouse(held_data_dir: tuple[Path, str, str], tmp_path: Path) -> None:
    data_dir, namespace, supervisor_name = held_data_dir
    key = tmp_path / "store.key"
    create_key_file(key, "secret://file/test")
    config = DwrayConfig(secrets=SecretsConfig(watch_interval=3600, local=LocalSecretsConfig(
        path=tmp_path / "secrets.json", key_file=key)))
    LocalSecretStore.from_config(config).put("service/token", "before")
    env = {"DWRAY_DATA_DIR": str(data_dir), "DWRAY_SECRETS__LOCAL__PATH": str(tmp_path / "secrets.json"),
           "DWRAY_SECRETS__LOCAL__KEY_FILE": str(key)}
    child = {"id": "user", "plugin": "dwray.testing.secret_conformance:SecretUser",
             "config": {"ref": "secret://local/service/token", "settings": resolver_settings(config)}}
    actor = create_supervisor(SupervisorSpec(name=supervisor_name, children=[child]), namespace=namespace)
    try:
        ray.get(actor.start.remote(), timeout=60)
        user = PluginHandle("user", namespace=namespace)
        assert user.call("fingerprint") == fp("before")
        report = dw_json(env, "secret", "rotate", "service/token", stdin=b"after\n")
        assert report["warehouse"] == {"ref": "secret://local/service/token", "told": ["user"], "using": ["user"],
                                       "failed": {}}
        assert user.call("fingerprint") == fp("after")
        assert user.call("accepted_fingerprints") == [fp("after"), fp("before")]
        human = dw(env, "secret", "set", "service/token", stdin=b"third").stdout.decode()
        assert "told the running warehouse: 1 plugin(s), 1 using it" in human
        assert user.call("fingerprint") == fp("third")
    finally:
        ray.get(actor.stop.remote(), timeout=30)
        ray.kill(actor)
