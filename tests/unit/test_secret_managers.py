"""The local, env and file secret managers: the conformance suite, and what only each of them does."""
from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat
import uuid
from pathlib import Path
from typing import Any

import pytest

from dwray.builtins.secret_managers import (
    AwsSecretsPlugin,
    EnvSecretsPlugin,
    FileSecretsPlugin,
    LocalSecretsPlugin,
    VaultSecretsPlugin,
)
from dwray.config import (
    AwsSecretsConfig,
    DwrayConfig,
    KeysConfig,
    LocalSecretsConfig,
    SecretsConfig,
    VaultSecretsConfig,
)
from dwray.core.plugins import check_manifest, discover, load_plugin_class
from dwray.errors import IntegrityError, InvalidArgument, PluginRefused, SecretNotFound, SecretUnavailable
from dwray.secrets import EnvSecretManager, FileSecretManager, LocalSecretStore, manager_class
from dwray.secrets.base import SecretInput, SecretManager, encode_value
from dwray.secrets.key_file import create_key_file, parse_key_material, read_key_file
from dwray.secrets.local import KEEP_VERSIONS, default_secret_store_path
from dwray.secrets.local_keys import SCRYPT_N, SCRYPT_P, SCRYPT_R
from dwray.testing.secret_conformance import ReadOnlySecretManagerConformance, SecretManagerConformance


def make_key_file(folder: Path) -> Path:
    path = folder / "store.key"
    create_key_file(path, "secret://file/test")
    return path


# -- conformance -----------------------------------------------------------------------------------

class TestLocalStoreWithKeyFile(SecretManagerConformance):
    @pytest.fixture
    def manager(self, tmp_path: Path) -> SecretManager:
        return LocalSecretStore(tmp_path / "cfg" / "secrets.json", key_file=make_key_file(tmp_path))


class TestLocalStoreWithPassphrase(SecretManagerConformance):
    @pytest.fixture
    def manager(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SecretManager:
        monkeypatch.setenv("DW_TEST_STORE_PASSPHRASE", "correct horse battery staple")
        return LocalSecretStore(tmp_path / "secrets.json", passphrase="secret://env/DW_TEST_STORE_PASSPHRASE")


class TestEnvManager(ReadOnlySecretManagerConformance):
    @pytest.fixture
    def manager(self, monkeypatch: pytest.MonkeyPatch) -> SecretManager:
        self.monkeypatch = monkeypatch
        return EnvSecretManager()

    @pytest.fixture
    def name(self) -> str:
        return f"DW_CONFORMANCE_{uuid.uuid4().hex[:12].upper()}"

    def provision(self, manager: SecretManager, name: str, value: SecretInput) -> None:
        self.monkeypatch.setenv(name, encode_value(value, name).decode())


class TestFileManager(ReadOnlySecretManagerConformance):
    bad_names = ("", "a\x00b")

    @pytest.fixture
    def manager(self) -> SecretManager:
        return FileSecretManager()

    @pytest.fixture
    def name(self, tmp_path: Path) -> str:
        return str(tmp_path / f"secret-{uuid.uuid4().hex[:8]}")

    def provision(self, manager: SecretManager, name: str, value: SecretInput) -> None:
        path = Path(name)
        path.touch(mode=0o600)
        path.write_bytes(encode_value(value, name) + b"\n")


# -- the local store ---------------------------------------------------------------------------------

def test_the_store_file_is_private_and_states_its_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_PASS", "pass phrase")
    old = os.umask(0)
    try:
        store = LocalSecretStore(tmp_path / "home" / "dwray" / "secrets.json", passphrase="secret://env/DW_TEST_PASS")
        store.put("db/password", "s3cret value")
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    document = json.loads(store.path.read_text())
    assert document["key"]["kek"] == "scrypt" and document["key"]["wrap"] == "aes-kwp"
    assert document["key"]["scrypt"] == {"n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P} == {"n": 2**15, "r": 8, "p": 1}
    assert len(base64.b64decode(document["key"]["salt"])) == 16
    raw = store.path.read_bytes()
    for form in (b"s3cret value", base64.b64encode(b"s3cret value"), b"s3cret value".hex().encode()):
        assert form not in raw
    assert not [p for p in store.path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_wrong_passphrase_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_PASS", "right")
    LocalSecretStore(tmp_path / "s.json", passphrase="secret://env/DW_TEST_PASS").put("x", "value")
    monkeypatch.setenv("DW_TEST_PASS", "wrong")
    with pytest.raises(SecretUnavailable, match=r"passphrase secret://env/DW_TEST_PASS does not open"):
        LocalSecretStore(tmp_path / "s.json", passphrase="secret://env/DW_TEST_PASS").get("x")
    other_key = make_key_file(tmp_path)
    with pytest.raises(SecretUnavailable, match="was created with a passphrase"):
        LocalSecretStore(tmp_path / "s.json", key_file=other_key).get("x")


def test_a_wrong_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    LocalSecretStore(tmp_path / "s.json", key_file=make_key_file(tmp_path / "a")).put("x", "value")
    with pytest.raises(SecretUnavailable, match="does not open the secret store"):
        LocalSecretStore(tmp_path / "s.json", key_file=make_key_file(tmp_path / "b")).get("x")


def test_the_passphrase_must_come_from_env_or_file(tmp_path: Path) -> None:
    for ref in ("secret://local/pass", "secret://vault/p#f", "secret://aws/p"):
        with pytest.raises(InvalidArgument, match="cannot hold its own passphrase"):
            LocalSecretStore(tmp_path / "s.json", passphrase=ref)


def test_sealed_values_are_bound_to_their_name_and_version(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "s.json", key_file=make_key_file(tmp_path))
    store.put("a", "value of a")
    store.put("b", "value of b")
    document = json.loads(store.path.read_text())
    document["secrets"]["a"]["versions"][0]["sealed"] = document["secrets"]["b"]["versions"][0]["sealed"]
    document["secrets"]["a"]["versions"][0]["nonce"] = document["secrets"]["b"]["versions"][0]["nonce"]
    store.path.write_text(json.dumps(document))
    with pytest.raises(IntegrityError, match="fails authentication"):
        store.get("a")
    assert store.get("b") == "value of b"


def test_the_last_versions_are_kept(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "s.json", key_file=make_key_file(tmp_path))
    written = [store.put("rotating", f"v{n}") for n in range(KEEP_VERSIONS + 5)]
    assert [entry.version for entry in store.versions("rotating")] == written[-KEEP_VERSIONS:]
    assert store.get("rotating", version=written[-KEEP_VERSIONS]) == f"v{5}"
    with pytest.raises(SecretNotFound, match="not kept"):
        store.get("rotating", version=written[0])
    with pytest.raises(InvalidArgument, match="at least 10"):
        LocalSecretStore(tmp_path / "s.json", key_file=tmp_path / "store.key", keep_versions=3)


def _put_many(path: str, key_file: str, worker: int, count: int) -> None:
    store = LocalSecretStore(path, key_file=key_file)
    for n in range(count):
        store.put(f"w{worker}/n{n}", f"{worker}-{n}")


def test_writers_in_several_processes_lose_nothing(tmp_path: Path) -> None:
    key_file = make_key_file(tmp_path)
    path = tmp_path / "s.json"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_put_many, args=(str(path), str(key_file), w, 15)) for w in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    store = LocalSecretStore(path, key_file=key_file)
    assert len(store.list()) == 45
    assert all(store.get(f"w{w}/n{n}") == f"{w}-{n}" for w in range(3) for n in range(15))


def test_by_default_the_store_is_keyed_by_the_master_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    store = LocalSecretStore.from_config(DwrayConfig())
    assert store.path == tmp_path / "xdg" / "dwray" / "secrets.json" == default_secret_store_path()
    store.put("x", "value")
    master = tmp_path / "xdg" / "dwray" / "master.key"
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    assert len(read_key_file(master, "secret://file/master")) == 32
    assert LocalSecretStore.from_config(DwrayConfig()).get("x") == "value"
    master.unlink()
    configured = DwrayConfig(keys=KeysConfig(master=f"secret://file/{master}"))
    with pytest.raises(SecretNotFound, match="there is no file"):
        LocalSecretStore.from_config(configured).get("x")


def test_a_missing_store_is_not_found_and_not_created_by_reads(tmp_path: Path) -> None:
    store = LocalSecretStore(tmp_path / "none" / "s.json", key_file=make_key_file(tmp_path))
    with pytest.raises(SecretNotFound, match="does not exist yet"):
        store.get("x")
    assert store.list() == []
    with pytest.raises(SecretNotFound):
        store.delete("x")
    assert not store.path.exists()


def test_a_damaged_store_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text("{not json")
    with pytest.raises(SecretUnavailable, match="is not a dwray secret store file"):
        LocalSecretStore(path, key_file=make_key_file(tmp_path)).get("x")


# -- key files -------------------------------------------------------------------------------------------

def test_key_files_are_read_in_every_spelling(tmp_path: Path) -> None:
    key = os.urandom(32)
    for spelling in (key, key.hex().encode() + b"\n", base64.b64encode(key) + b"\n"):
        assert parse_key_material(spelling) == key
    assert parse_key_material(b"too short") is None
    path = tmp_path / "k"
    path.write_bytes(b"not a key at all, not hex, not base64!!")
    path.chmod(0o600)
    with pytest.raises(SecretUnavailable, match="does not hold a 256-bit key"):
        read_key_file(path, "secret://file/k")
    path.chmod(0o644)
    with pytest.raises(SecretUnavailable, match="chmod 600"):
        read_key_file(path, "secret://file/k")


def test_two_creators_of_a_key_file_agree(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "master.key"
    first = create_key_file(path, "secret://file/x")
    assert create_key_file(path, "secret://file/x") == first == read_key_file(path, "secret://file/x")


# -- env and file ---------------------------------------------------------------------------------------

def test_a_secret_file_others_may_read_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("value\n")
    path.chmod(0o644)
    with pytest.raises(SecretUnavailable) as refused:
        FileSecretManager().get(str(path))
    assert str(path) in str(refused.value) and f"chmod 600 {path}" in str(refused.value)
    assert "value" not in str(refused.value).replace("secret", "")
    path.chmod(0o600)
    assert FileSecretManager().get(str(path)) == "value"


def test_file_values_lose_one_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.touch(mode=0o600)
    for written, read in ((b"v\n", b"v"), (b"v\r\n", b"v"), (b"v\n\n", b"v\n"), (b"v", b"v")):
        path.write_bytes(written)
        assert FileSecretManager().get(str(path)).reveal_bytes() == read
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(SecretUnavailable, match="is a folder"):
        FileSecretManager().get(str(folder))


def test_env_values_are_read_fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = EnvSecretManager()
    monkeypatch.setenv("DW_TEST_FRESH", "one")
    assert manager.get("DW_TEST_FRESH") == "one"
    monkeypatch.setenv("DW_TEST_FRESH", "two")
    assert manager.get("DW_TEST_FRESH") == "two"
    monkeypatch.delenv("DW_TEST_FRESH")
    with pytest.raises(SecretNotFound, match="not set"):
        manager.get("DW_TEST_FRESH")


# -- the registry -------------------------------------------------------------------------------------------

def test_every_scheme_has_a_manager_class() -> None:
    for scheme in ("env", "file", "local", "vault", "aws"):
        cls: Any = manager_class(scheme)
        assert issubclass(cls, SecretManager) and cls.scheme == scheme
    with pytest.raises(InvalidArgument, match="no secret manager 'nope'"):
        manager_class("nope")


def test_config_sections_build_the_local_store(tmp_path: Path) -> None:
    key = make_key_file(tmp_path)
    config = DwrayConfig(secrets=SecretsConfig(local=LocalSecretsConfig(path=tmp_path / "x.json", key_file=key)))
    store = LocalSecretStore.from_config(config)
    assert store.path == tmp_path / "x.json"
    store.put("n", "v")
    assert LocalSecretStore(tmp_path / "x.json", key_file=key).get("n") == "v"


# -- the managers as plugins ------------------------------------------------------------------------

def test_the_managers_are_registered_plugins_of_kind_secrets() -> None:
    found = discover()
    for name, cls in (("secrets.local", LocalSecretsPlugin), ("secrets.vault", VaultSecretsPlugin),
                      ("secrets.aws", AwsSecretsPlugin), ("secrets.env", EnvSecretsPlugin),
                      ("secrets.file", FileSecretsPlugin)):
        assert name in found and load_plugin_class(name) is cls
        assert cls.manifest.name == name and cls.manifest.kind == "secrets"


def test_plugin_configs_hold_references_not_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_PASS", "the passphrase itself")
    config = DwrayConfig(secrets=SecretsConfig(
        local=LocalSecretsConfig(path=tmp_path / "s.json", passphrase="secret://env/DW_TEST_PASS"),
        vault=VaultSecretsConfig(address="http://127.0.0.1:8200", token="secret://env/DW_TEST_PASS"),
        aws=AwsSecretsConfig(region="eu-west-1", access_key_id="secret://env/DW_TEST_PASS",
                             secret_access_key="secret://env/DW_TEST_PASS")))
    for cls in (LocalSecretsPlugin, VaultSecretsPlugin, AwsSecretsPlugin, EnvSecretsPlugin, FileSecretsPlugin):
        child_config = cls.config_from(config)
        assert "the passphrase itself" not in json.dumps(child_config)
        check_manifest(cls.manifest.name, cls.manifest, "secrets", child_config)
    with pytest.raises(PluginRefused, match="config field passphrase"):
        check_manifest("secrets:local", LocalSecretsPlugin.manifest, "secrets",
                       {"path": "/x", "passphrase": "the passphrase itself"})


def test_the_local_plugin_forwards_the_contract(tmp_path: Path) -> None:
    plugin = LocalSecretsPlugin(path=str(tmp_path / "s.json"), key_file=str(make_key_file(tmp_path)))
    first = plugin.put("app/key", {"user": "u", "password": "p"})
    assert plugin.reveal("app/key", "password") == (b"p", first)
    second = plugin.rotate("app/key", "plain")
    assert plugin.current_version("app/key") == second
    assert plugin.previous_version("app/key").version == first  # type: ignore[union-attr]
    assert [entry.version for entry in plugin.versions("app/key")] == [first, second]
    assert plugin.list("app/") == ["app/key"] and plugin.health() == {"ok": True, "manager": "local"}
    plugin.delete("app/key")
    with pytest.raises(SecretNotFound):
        plugin.reveal("app/key")
    plugin.close()


def test_a_plugin_forgets_a_rotated_secret_and_its_host_watch_notices(tmp_path: Path) -> None:
    from actors.plugin_host import SecretWatch
    from dwray.secrets import resolver_settings
    from dwray.testing.secret_conformance import SecretUser, value_fingerprint

    config = DwrayConfig(secrets=SecretsConfig(local=LocalSecretsConfig(path=tmp_path / "s.json",
                                                                        key_file=make_key_file(tmp_path))))
    store = LocalSecretStore.from_config(config)
    store.put("watched", "one")
    user = SecretUser("secret://local/watched", resolver_settings(config))
    watch = SecretWatch("user", user, user.on_secret_rotated)
    assert watch.check() == []
    store.rotate("watched", "two")
    assert user.fingerprint() == value_fingerprint("one")  # cached
    assert watch.check() == ["secret://local/watched"]
    assert user.fingerprint() == value_fingerprint("two") and user.rotations_told() == ["secret://local/watched"]
    assert watch.check() == []
