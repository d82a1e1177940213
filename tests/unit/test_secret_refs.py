"""Secret references, the redacting value, and the resolver: caching, rotation grace, invalidation."""
from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import pytest

from dwray.config import (
    DwrayConfig,
    KeysConfig,
    LocalSecretsConfig,
    SecretsConfig,
    VaultSecretsConfig,
)
from dwray.errors import InvalidArgument, SecretNotFound
from dwray.secret_ref import SecretRef, SecretValue, parse_secret_ref
from dwray.secrets import (
    LocalSecretStore,
    SecretResolver,
    invalidate_shared,
    resolve_secret,
    resolver_settings,
    shared_resolver,
)
from dwray.secrets.key_file import create_key_file


class Clock:
    """A clock the test moves by hand, starting now (the local store stamps versions with the real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def local_config(tmp_path: Path, grace: float = 60.0, watch: float = 30.0) -> DwrayConfig:
    key = tmp_path / "store.key"
    if not key.exists():
        create_key_file(key, "secret://file/test")
    return DwrayConfig(secrets=SecretsConfig(grace_seconds=grace, watch_interval=watch,
                                             local=LocalSecretsConfig(path=tmp_path / "secrets.json", key_file=key)))


# -- references ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, parsed", [
    ("secret://env/DB_PASSWORD", SecretRef("env", "DB_PASSWORD")),
    ("secret://file//run/secrets/db", SecretRef("file", "/run/secrets/db")),
    ("secret://file/relative/token", SecretRef("file", "relative/token")),
    ("secret://local/db/password", SecretRef("local", "db/password")),
    ("secret://vault/dwray/db#password", SecretRef("vault", "dwray/db", "password")),
    ("secret://aws/prod/db", SecretRef("aws", "prod/db")),
    ("secret://aws/prod/db#user", SecretRef("aws", "prod/db", "user")),
])
def test_references_parse_and_print_back(text: str, parsed: SecretRef) -> None:
    assert parse_secret_ref(text) == parsed and str(parsed) == text


@pytest.mark.parametrize("text, complaint", [
    ("hunter2", "a secret value itself may not appear"),
    ("secret://ftp/x", "must be one of"),
    ("secret://env/1BAD", "not an environment variable name"),
    ("secret://env/X#f", "takes no #FIELD"),
    ("secret://vault/dwray/db", "needs #FIELD"),
    ("secret://local/a//b", "non-empty parts"),
    ("secret://local/../x", "non-empty parts"),
    ("secret://aws/x#bad field", "#FIELD must be"),
])
def test_bad_references_are_refused_saying_why(text: str, complaint: str) -> None:
    with pytest.raises(InvalidArgument, match=complaint) as refused:
        parse_secret_ref(text)
    if not text.startswith("secret://"):
        assert text not in str(refused.value)


def test_a_secret_value_never_shows_itself() -> None:
    value = SecretValue("s3cret", ref="secret://env/X", version="1")
    for shown in (repr(value), str(value), f"{value}", f"{value!r}", "%s" % value, json.dumps({"v": str(value)})):
        assert "s3cret" not in shown and "**********" in shown
    assert value == "s3cret" and value == b"s3cret" and value == SecretValue("s3cret") and value != "other"
    with pytest.raises(TypeError, match="may not be pickled") as refused:
        pickle.dumps(value)
    assert "s3cret" not in str(refused.value)


# -- the resolver --------------------------------------------------------------------------------------

def test_values_are_cached_until_invalidated_or_stale(tmp_path: Path) -> None:
    clock = Clock()
    config = local_config(tmp_path, watch=30)
    resolver = SecretResolver(config, clock=clock)
    store = LocalSecretStore.from_config(config)
    store.put("api", {"user": "u", "token": "one"})
    assert resolver.get("secret://local/api#token") == "one"
    assert resolver.get("secret://local/api#user") == "u"
    store.rotate("api", {"user": "u", "token": "two"})
    assert resolver.get("secret://local/api#token") == "one"  # cached
    assert resolver.version("secret://local/api#token") == "2"  # asked now
    resolver.invalidate("secret://local/api")  # every field of it
    assert resolver.get("secret://local/api#token") == "two"
    store.rotate("api", {"user": "u", "token": "three"})
    clock.now += 31  # older than watch_interval: read again
    assert resolver.get("secret://local/api#token") == "three"
    store.rotate("api", {"user": "u", "token": "four"})
    resolver.invalidate()
    assert resolver.get("secret://local/api#token") == "four"


def test_env_and_file_values_are_read_fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    resolver = SecretResolver(DwrayConfig())
    monkeypatch.setenv("DW_TEST_FRESH", "one")
    assert resolver.get("secret://env/DW_TEST_FRESH") == "one"
    first = resolver.version("secret://env/DW_TEST_FRESH")
    monkeypatch.setenv("DW_TEST_FRESH", "two")
    assert resolver.get("secret://env/DW_TEST_FRESH") == "two"
    assert resolver.version("secret://env/DW_TEST_FRESH") != first
    path = tmp_path / "token"
    path.touch(mode=0o600)
    path.write_text("a\n")
    assert resolver.get(f"secret://file/{path}") == "a"
    path.write_text("b\n")
    assert resolver.get(f"secret://file/{path}") == "b"
    assert resolver.accepted(f"secret://file/{path}") == ["b"]


def test_the_previous_value_is_accepted_for_the_grace_period(tmp_path: Path) -> None:
    clock = Clock()
    config = local_config(tmp_path, grace=60)
    resolver = SecretResolver(config, clock=clock)
    store = LocalSecretStore.from_config(config)
    store.put("token", "old")
    assert resolver.accepted("secret://local/token") == ["old"]
    store.rotate("token", "new")
    resolver.invalidate("secret://local/token")
    accepted = resolver.accepted("secret://local/token")
    assert accepted == ["new", "old"] and [value.version for value in accepted] == ["2", "1"]
    clock.now += 61
    assert resolver.accepted("secret://local/token") == ["new"]


def test_no_grace_accepts_only_the_current_value(tmp_path: Path) -> None:
    config = local_config(tmp_path, grace=0)
    store = LocalSecretStore.from_config(config)
    store.put("token", "old")
    store.rotate("token", "new")
    assert SecretResolver(config).accepted("secret://local/token") == ["new"]


def test_settings_cross_processes_without_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_VAULT_TOKEN", "s.very-secret-token")
    config = local_config(tmp_path).model_copy(update={"keys": KeysConfig(master="secret://env/DW_TEST_MASTER")})
    config = config.model_copy(update={"secrets": config.secrets.model_copy(update={
        "vault": VaultSecretsConfig(address="http://127.0.0.1:1", token="secret://env/DW_TEST_VAULT_TOKEN")})})
    settings = resolver_settings(config)
    text = json.dumps(settings)
    assert "very-secret-token" not in text and "secret://env/DW_TEST_VAULT_TOKEN" in text
    assert settings["master"] == "secret://env/DW_TEST_MASTER" and settings["create_master"] is False
    rebuilt = SecretResolver.from_settings(json.loads(text))
    LocalSecretStore.from_config(config).put("n", "v")
    assert rebuilt.get("secret://local/n") == "v"
    assert rebuilt.config.secrets == config.secrets


def test_resolve_secret_shares_one_resolver_per_configuration(tmp_path: Path) -> None:
    config = local_config(tmp_path)
    assert shared_resolver(config) is shared_resolver(config.model_copy())
    assert shared_resolver(config) is not shared_resolver(local_config(tmp_path, grace=1))
    store = LocalSecretStore.from_config(config)
    store.put("shared", "one")
    assert resolve_secret("secret://local/shared", config) == "one"
    store.rotate("shared", "two")
    assert resolve_secret("secret://local/shared", config) == "one"
    invalidate_shared("secret://local/shared")
    assert resolve_secret("secret://local/shared", config) == "two"


def test_managers_credentials_may_not_live_in_a_manager(tmp_path: Path) -> None:
    vault = DwrayConfig(secrets=SecretsConfig(vault=VaultSecretsConfig(address="http://127.0.0.1:1",
                                                                       token="secret://vault/t#token")))
    with pytest.raises(InvalidArgument, match=r"\[secrets.vault\] token must be a secret://env/"):
        SecretResolver(vault).get("secret://vault/x#y")
    local = DwrayConfig(secrets=SecretsConfig(local=LocalSecretsConfig(path=tmp_path / "s.json",
                                                                       passphrase="secret://local/pass")))
    with pytest.raises(InvalidArgument, match="cannot hold its own passphrase"):
        SecretResolver(local).get("secret://local/x")


def test_a_missing_secret_names_its_reference(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DW_TEST_UNSET", raising=False)
    with pytest.raises(SecretNotFound, match="secret://env/DW_TEST_UNSET"):
        resolve_secret("secret://env/DW_TEST_UNSET")
    LocalSecretStore.from_config(local_config(tmp_path)).put("present", "v")
    with pytest.raises(SecretNotFound, match="secret://local/absent"):
        SecretResolver(local_config(tmp_path)).get("secret://local/absent")
