"""The Vault secret manager against a real OpenBao dev server: the conformance suite, auth, renewal, outages."""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from dwray.config import DwrayConfig, SecretsConfig, VaultSecretsConfig
from dwray.errors import InvalidArgument, SecretNotFound, SecretUnavailable
from dwray.secrets import SecretResolver, VaultSecretManager, resolve_secret
from dwray.secrets.base import SecretManager
from dwray.testing.secret_conformance import SecretManagerConformance

READ_WRITE = 'path "secret/*" { capabilities = ["create", "read", "update", "delete", "list"] }'


def root(openbao: Any) -> hvac.Client:
    return hvac.Client(url=openbao.address, token=openbao.token)


def policy(openbao: Any, rules: str) -> str:
    name = f"dwray-test-{uuid.uuid4().hex[:8]}"
    root(openbao).sys.create_or_update_policy(name=name, policy=rules)
    return name


def token(openbao: Any, rules: str = READ_WRITE, **options: Any) -> str:
    created = root(openbao).auth.token.create(policies=[policy(openbao, rules)], **options)
    return created["auth"]["client_token"]


@pytest.fixture
def token_env(openbao: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An env variable holding a fresh read-write token; the reference to it."""
    variable = f"DW_TEST_VAULT_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(variable, token(openbao))
    yield f"secret://env/{variable}"


class TestVaultConformance(SecretManagerConformance):
    @pytest.fixture
    def manager(self, openbao: Any, token_env: str) -> Iterator[SecretManager]:
        manager = VaultSecretManager(openbao.address, token=token_env, timeout=10)
        yield manager
        manager.close()


def test_a_renewable_token_is_renewed_before_it_expires(openbao: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TEST_SHORT_TOKEN", token(openbao, ttl="4s", renewable=True, explicit_max_ttl="60s"))
    manager = VaultSecretManager(openbao.address, token="secret://env/DW_TEST_SHORT_TOKEN", timeout=5)
    name = f"renew-{uuid.uuid4().hex[:8]}"
    manager.put(name, "v")
    # Past half the TTL each time; after 7.5 s the token would have expired twice over without renewals.
    for _ in range(3):
        time.sleep(2.5)
        assert manager.get(name) == "v"
    status = manager.auth_status()
    assert status == {"method": "token", "logins": 1, "renewals": status["renewals"]} and status["renewals"] >= 2


def test_approle_logs_in_again_when_its_token_expires(openbao: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client = root(openbao)
    mount = f"approle-{uuid.uuid4().hex[:8]}"
    client.sys.enable_auth_method("approle", path=mount)
    client.auth.approle.create_or_update_approle("dwray", token_policies=[policy(openbao, READ_WRITE)],
                                                 token_ttl="2s", token_max_ttl="2s", mount_point=mount)
    monkeypatch.setenv("DW_TEST_ROLE_ID", client.auth.approle.read_role_id("dwray", mount_point=mount)
                       ["data"]["role_id"])
    monkeypatch.setenv("DW_TEST_SECRET_ID", client.auth.approle.generate_secret_id("dwray", mount_point=mount)
                       ["data"]["secret_id"])
    manager = VaultSecretManager(openbao.address, role_id="secret://env/DW_TEST_ROLE_ID",
                                 secret_id="secret://env/DW_TEST_SECRET_ID", approle_mount=mount, timeout=5)
    name = f"approle-{uuid.uuid4().hex[:8]}"
    manager.put(name, {"password": "p"})
    time.sleep(3)  # the token's maximum TTL is over
    assert manager.get(name, field="password") == "p"
    assert manager.auth_status()["method"] == "approle" and manager.auth_status()["logins"] >= 2


def test_a_token_file_replaced_after_revocation_is_read_again(openbao: Any, tmp_path: Path) -> None:
    token_file = tmp_path / "vault-token"
    first = token(openbao)
    token_file.touch(mode=0o600)
    token_file.write_text(first + "\n")
    manager = VaultSecretManager(openbao.address, token=f"secret://file/{token_file}", timeout=5)
    name = f"reread-{uuid.uuid4().hex[:8]}"
    manager.put(name, "v")
    root(openbao).auth.token.revoke(first)
    token_file.write_text(token(openbao) + "\n")
    assert manager.get(name) == "v"
    assert manager.auth_status()["logins"] == 2


def test_a_forbidden_path_is_a_clear_error_without_the_token(openbao: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    limited = token(openbao, 'path "secret/data/elsewhere/*" { capabilities = ["read"] }')
    monkeypatch.setenv("DW_TEST_LIMITED", limited)
    manager = VaultSecretManager(openbao.address, token="secret://env/DW_TEST_LIMITED", timeout=5)
    with pytest.raises(SecretUnavailable, match=r"refused access \(403\)") as refused:
        manager.get("dwray/forbidden", field="x")
    assert limited not in str(refused.value) and limited not in repr(manager)


def test_vault_down_is_unavailable_and_it_recovers(openbao: Any, token_env: str) -> None:
    manager = VaultSecretManager(openbao.address, token=token_env, timeout=2)
    name = f"outage-{uuid.uuid4().hex[:8]}"
    manager.put(name, "survives")
    openbao.pause()
    try:
        started = time.monotonic()
        with pytest.raises(SecretUnavailable, match="did not answer in time"):
            manager.get(name)
        assert time.monotonic() - started < 15
    finally:
        openbao.resume()
    assert manager.get(name) == "survives"


def test_an_unreachable_address_is_unavailable(token_env: str) -> None:
    from dwray.core.ports import free_port

    manager = VaultSecretManager(f"http://127.0.0.1:{free_port()}", token=token_env, timeout=2)
    with pytest.raises(SecretUnavailable, match="cannot be reached"):
        manager.get("x", field="y")


def test_vault_credentials_must_come_from_env_or_file(openbao: Any) -> None:
    for field, ref in (("token", "secret://vault/dwray/token#t"), ("token", "secret://local/token"),
                       ("role_id", "secret://aws/role")):
        options = {field: ref, **({"secret_id": "secret://env/X"} if field == "role_id" else {})}
        with pytest.raises(InvalidArgument, match=rf"\[secrets.vault\] {field} must be a secret://env/"):
            VaultSecretManager(openbao.address, **options)
    with pytest.raises(InvalidArgument, match="needs credentials"):
        VaultSecretManager(openbao.address)
    with pytest.raises(InvalidArgument, match="needs an address"):
        VaultSecretManager("", token="secret://env/X")


def test_the_resolver_reads_vault_fields_from_config(openbao: Any, token_env: str) -> None:
    config = DwrayConfig(secrets=SecretsConfig(vault=VaultSecretsConfig(address=openbao.address, token=token_env)))
    name = f"resolved-{uuid.uuid4().hex[:8]}"
    writer = SecretResolver(config).manager("vault")
    writer.put(name, {"user": "ana", "password": "first"})
    assert resolve_secret(f"secret://vault/{name}#password", config) == "first"
    assert resolve_secret(f"secret://vault/{name}#user", config).reveal() == "ana"
    with pytest.raises(SecretNotFound, match="no field 'nope'"):
        resolve_secret(f"secret://vault/{name}#nope", config)
