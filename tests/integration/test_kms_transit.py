"""The Vault Transit key service against a real OpenBao dev server (the ``openbao`` fixture).

Each test uses a key prefix of its own, so tests share the session's OpenBao
without seeing each other's keys. Client timeouts are short, so a paused
server (``openbao.pause()``) fails calls fast.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest

from dwray.config import DwrayConfig, KmsConfig
from dwray.core.catalog import WrappedKey
from dwray.core.frames import KeyHeader
from dwray.core.key_services import open_key_service
from dwray.core.transit_keyring import TransitKeyring
from dwray.core.warehouse import Warehouse
from dwray.errors import (
    IntegrityError,
    InvalidArgument,
    KeyNotFound,
    KeyRetired,
    KeyringError,
    KeyShredded,
    KmsUnavailable,
    ObjectNotFound,
)
from dwray.secret_ref import SecretValue
from tests.conftest import make_config
from tests.servers import ServerProcess

TIMEOUT = 1.5


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def token_var(openbao: ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """An environment variable holding the root token, for a ``secret://env/`` reference."""
    name = f"TEST_BAO_TOKEN_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(name, openbao.token)
    return name


def transit_config(data_dir: Path, openbao: ServerProcess, token_ref: str, prefix: str) -> DwrayConfig:
    config = make_config(data_dir)
    return config.model_copy(update={"kms": KmsConfig(plugin="vault-transit", address=openbao.address,
                                                      token=token_ref, key_prefix=prefix, timeout=TIMEOUT)})


@pytest.fixture
def transit_wh(tmp_path: Path, openbao: ServerProcess, token_var: str, prefix: str) -> Iterator[Warehouse]:
    with Warehouse(transit_config(tmp_path / "data", openbao, f"secret://env/{token_var}", prefix)) as wh:
        yield wh


@pytest.fixture
def vault(openbao: ServerProcess) -> hvac.Client:
    """An admin's client, to look at what dwray left in OpenBao."""
    return hvac.Client(url=openbao.address, token=openbao.token, timeout=10)


@pytest.fixture
def keyring(openbao: ServerProcess, prefix: str) -> TransitKeyring:
    return TransitKeyring(openbao.address, lambda: SecretValue(openbao.token), key_prefix=prefix, timeout=TIMEOUT)


def transit_key(vault: hvac.Client, name: str) -> dict[str, Any]:
    return vault.secrets.transit.read_key(name)["data"]


def key_headers(wh: Warehouse, tenant: str = "default") -> list[KeyHeader]:
    """Every DEK's key header of the tenant: objects', segments' and parts'."""
    rows = wh.catalog.wrapped_below_page(f"tenant:{tenant}", 2**31, limit=100_000)
    return [KeyHeader.from_bytes(row.key_header if isinstance(row, WrappedKey) else row.placement.key_header)
            for row in rows]


def blobs(wh: Warehouse) -> dict[str, bytes]:
    return {blob_id: wh.backend.get_blob(blob_id) for blob_id in wh.backend.list_blobs("")}


def test_a_warehouse_on_transit_puts_and_gets_with_keks_that_stay_in_vault(
        transit_wh: Warehouse, vault: hvac.Client, prefix: str) -> None:
    wh = transit_wh
    wh.create_bucket("bkt")
    payload = os.urandom(3 * 4096 + 17)
    wh.put("bkt", "obj", payload)
    wh.put("bkt", "small", b"hello")
    assert wh.get("bkt", "obj") == payload and wh.get("bkt", "small") == b"hello"
    # DEKs are wrapped by Transit: Transit's own ciphertext, bound to version 1 of the tenant's key.
    headers = key_headers(wh)
    assert len(headers) == 2
    assert all(h.kek_id == "tenant:default" and h.kek_version == 1 and h.wrapped_dek.startswith(b"vault:v1:")
               for h in headers)
    key = transit_key(vault, f"{prefix}tenant-default")
    assert key["type"] == "aes256-gcm96" and key["derived"] is True and key["exportable"] is False
    # No KEK material in the data dir: there is no local keyring at all.
    assert not wh.config.keyring_path.exists()
    assert wh.keyring.describe("tenant:default") == {
        "kek_id": "tenant:default", "versions": [1], "primary": 1, "minimum": 1, "shredded": False,
        "transit_key": f"{prefix}tenant-default"}
    assert wh.keyring.kek_ids() == ["tenant:default"]
    # The DEK is bound to its KEK id (Transit derivation context): another id's key refuses it.
    wh.keyring.ensure("tenant:other")
    header = headers[0]
    with pytest.raises(IntegrityError, match="authentication failed"):
        wh.keyring.unwrap("tenant:other", 1, header.wrapped_dek)


def test_rotate_rewrap_and_retire_through_transit(transit_wh: Warehouse, vault: hvac.Client, prefix: str) -> None:
    wh = transit_wh
    name = f"{prefix}tenant-default"
    wh.create_bucket("bkt")
    objects = {f"k{n}": os.urandom(100 + n * 2000) for n in range(5)}
    for key, data in objects.items():
        wh.put("bkt", key, data)
    old_dek = key_headers(wh)[0]
    assert wh.rotate_keys() == 2
    assert transit_key(vault, name)["latest_version"] == 2
    wh.put("bkt", "new", b"under version two")
    assert {h.kek_version for h in key_headers(wh)} == {1, 2}

    # Retiring is refused, with the count per version, while version 1 still wraps DEKs.
    assert wh.wrapped_by_version(2) == {1: 5}
    with pytest.raises(KeyringError, match=r"5 under version 1.*rewrap first"):
        wh.retire_keys(2)
    assert transit_key(vault, name)["min_decryption_version"] == 1

    before = blobs(wh)
    seen: list[tuple[int, int]] = []
    assert wh.rewrap(batch=2, progress=lambda done, total: seen.append((done, total))) == 5
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert {h.kek_version for h in key_headers(wh)} == {2}
    assert all(h.wrapped_dek.startswith(b"vault:v2:") for h in key_headers(wh))
    assert blobs(wh) == before  # only DEKs were rewrapped: not one byte of object data changed
    for key, data in objects.items():
        assert wh.get("bkt", key) == data

    assert wh.wrapped_by_version(2) == {1: 0}
    wh.retire_keys(2)
    assert transit_key(vault, name)["min_decryption_version"] == 2
    assert wh.keyring.describe("tenant:default")["minimum"] == 2
    # Vault now refuses a DEK wrapped under version 1 (the copy kept from before the rewrap).
    with pytest.raises(KeyRetired) as retired:
        wh.keyring.unwrap("tenant:default", 1, old_dek.wrapped_dek)
    assert retired.value.minimum == 2
    with pytest.raises(KeyRetired):
        wh.keyring.rewrap("tenant:default", 1, old_dek.wrapped_dek)
    assert wh.rewrap() == 0
    assert wh.get("bkt", "new") == b"under version two"
    # A retirement can be undone while the versions exist (nothing is trimmed).
    wh.keyring.retire_below("tenant:default", 1)
    assert len(wh.keyring.unwrap("tenant:default", 1, old_dek.wrapped_dek)) == 32
    with pytest.raises(InvalidArgument, match=r"1\.\.2"):
        wh.keyring.retire_below("tenant:default", 3)


def test_an_interrupted_rewrap_continues_where_it_stopped(transit_wh: Warehouse) -> None:
    wh = transit_wh
    wh.create_bucket("bkt")
    for n in range(5):
        wh.put("bkt", f"k{n}", f"object {n}".encode())
    wh.rotate_keys()

    def stop_after_first_batch(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wh.rewrap(batch=2, progress=stop_after_first_batch)
    assert sorted(h.kek_version for h in key_headers(wh)) == [1, 1, 1, 2, 2]  # the first batch is committed
    assert wh.rewrap(batch=2) == 3
    assert {h.kek_version for h in key_headers(wh)} == {2}
    assert [wh.get("bkt", f"k{n}") for n in range(5)] == [f"object {n}".encode() for n in range(5)]


def test_vault_down_fails_clearly_acknowledges_nothing_and_recovers_without_restart(
        transit_wh: Warehouse, openbao: ServerProcess) -> None:
    wh = transit_wh
    wh.create_bucket("bkt")
    wh.create_bucket("new")
    wh.put("bkt", "before", b"written while Vault was up")
    openbao.pause()
    try:
        # The bucket key this process holds for "bkt" still seals and opens its objects (for its TTL)...
        wh.put("bkt", "cached", b"sealed under the cached bucket key")
        assert wh.get("bkt", "before") == b"written while Vault was up"
        # ...and whatever needs Vault fails clearly: a first write to a bucket wraps a new bucket key.
        with pytest.raises(KmsUnavailable, match=f"vault-transit at {openbao.address}") as down:
            wh.put("new", "during", b"must not be acknowledged")
        assert "no answer within 1.5 s" in str(down.value)
        wh.data_keys.forget()
        with pytest.raises(KmsUnavailable):
            wh.get("bkt", "before")
        with pytest.raises(KmsUnavailable):
            wh.rotate_keys()
    finally:
        openbao.resume()
    assert openbao.token not in str(down.value) and openbao.token not in repr(down.value)
    with pytest.raises(ObjectNotFound):
        wh.head("new", "during")  # nothing was committed for the failed put
    # Vault is back: the same warehouse works again, no restart.
    assert wh.get("bkt", "before") == b"written while Vault was up"
    assert wh.get("bkt", "cached") == b"sealed under the cached bucket key"
    wh.put("bkt", "after", b"written after Vault came back")
    assert wh.get("bkt", "after") == b"written after Vault came back"


def test_unreachable_vault_is_kms_unavailable(prefix: str) -> None:
    from dwray.core.ports import free_port

    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    keyring = TransitKeyring(address, lambda: SecretValue("unused"), key_prefix=prefix, timeout=TIMEOUT)
    with pytest.raises(KmsUnavailable, match=rf"vault-transit at {address} is unavailable: cannot connect"):
        keyring.ensure("tenant:default")


def test_a_refusal_names_the_missing_capability_and_a_rotated_token_is_picked_up(
        openbao: ServerProcess, vault: hvac.Client, prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = f"dwray-read-only-{prefix}".rstrip("-")
    vault.sys.create_or_update_policy(policy, f'path "transit/keys/{prefix}*" {{ capabilities = ["read"] }}')
    weak = vault.auth.token.create(policies=[policy], ttl="10m")["auth"]["client_token"]
    admin = TransitKeyring(openbao.address, lambda: SecretValue(openbao.token), key_prefix=prefix, timeout=TIMEOUT)
    admin.ensure("tenant:acme")
    var = f"TEST_BAO_TOKEN_{uuid.uuid4().hex[:8].upper()}"
    monkeypatch.setenv(var, weak)
    config = DwrayConfig(kms=KmsConfig(plugin="vault-transit", address=openbao.address, token=f"secret://env/{var}",
                                       key_prefix=prefix, timeout=TIMEOUT))
    keyring = open_key_service(config)
    assert keyring.ensure("tenant:acme") == 1  # reading the key is allowed
    with pytest.raises(KmsUnavailable, match=rf"permission denied: the token's policy must grant 'update' on "
                                             rf"transit/encrypt/{prefix}tenant-acme") as refused:
        keyring.wrap("tenant:acme", os.urandom(32))
    assert weak not in str(refused.value) and weak not in repr(keyring)
    # The token is rotated at its source: the next call asks the source again, no new service needed.
    monkeypatch.setenv(var, openbao.token)
    version, wrapped = keyring.wrap("tenant:acme", b"k" * 32)
    assert keyring.unwrap("tenant:acme", version, wrapped) == b"k" * 32


def test_destroy_shreds_every_version_for_good(keyring: TransitKeyring, vault: hvac.Client, prefix: str) -> None:
    kek = "tenant:gone"
    keyring.ensure(kek)
    first = keyring.wrap(kek, b"a" * 32)
    keyring.rotate(kek)
    second = keyring.wrap(kek, b"b" * 32)
    keyring.ensure("tenant:kept")
    kept = keyring.wrap("tenant:kept", b"c" * 32)

    keyring.destroy(kek)
    # In Vault: the key is gone and a tombstone (a signing key, which can neither encrypt nor decrypt) holds its name.
    tombstone = transit_key(vault, f"{prefix}tenant-gone")
    assert tombstone["type"] == "ed25519" and tombstone["latest_version"] == 1
    for version, wrapped in (first, second):
        with pytest.raises(KeyShredded, match="tenant:gone"):
            keyring.unwrap(kek, version, wrapped)
        with pytest.raises(KeyShredded):
            keyring.rewrap(kek, version, wrapped)
    for call in (lambda: keyring.ensure(kek), lambda: keyring.wrap(kek, b"d" * 32), lambda: keyring.rotate(kek),
                 lambda: keyring.retire_below(kek, 1)):
        with pytest.raises(KeyShredded):
            call()
    # Nor can anyone with the admin token decrypt the old ciphertext in Vault.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        vault.secrets.transit.decrypt_data(f"{prefix}tenant-gone", ciphertext=first[1].decode(), context="eA==")
    assert keyring.describe(kek)["shredded"] is True
    assert keyring.kek_ids() == ["tenant:kept"]  # a tombstone is no key any more
    # Another process (a fresh keyring, nothing cached) sees the shredding too.
    other = TransitKeyring(keyring.address, lambda: SecretValue(vault.token), key_prefix=prefix, timeout=TIMEOUT)
    with pytest.raises(KeyShredded):
        other.wrap(kek, b"e" * 32)
    keyring.destroy(kek)  # again: nothing to do
    with pytest.raises(KeyNotFound):
        keyring.describe("tenant:never-made")
    keyring.destroy("tenant:never-made")  # unknown: nothing to trim, but the id is dead all the same
    assert keyring.describe("tenant:never-made")["shredded"] is True
    with pytest.raises(KeyShredded):
        keyring.ensure("tenant:never-made")
    assert keyring.unwrap("tenant:kept", *kept) == b"c" * 32  # other KEKs are untouched


def test_wrapped_deks_are_checked(keyring: TransitKeyring) -> None:
    kek = "tenant:acme"
    keyring.ensure(kek)
    version, wrapped = keyring.wrap(kek, b"x" * 32)
    tampered = wrapped[:-6] + (b"AAAAAA" if not wrapped.endswith(b"AAAAAA") else b"BBBBBB")
    with pytest.raises(IntegrityError, match="authentication failed"):
        keyring.unwrap(kek, version, tampered)
    with pytest.raises(IntegrityError, match="says version 1"):
        keyring.unwrap(kek, 2, wrapped)  # the catalog's version must be the ciphertext's
    with pytest.raises(IntegrityError, match="not a Transit ciphertext|vault:vN"):
        keyring.unwrap(kek, 1, os.urandom(60))
    with pytest.raises(KeyNotFound, match="version 7"):
        keyring.unwrap(kek, 7, wrapped.replace(b"vault:v1:", b"vault:v7:"))
    with pytest.raises(KeyNotFound):
        keyring.wrap("tenant:unknown", b"x" * 32)  # never created: no silent upsert
    with pytest.raises(KeyNotFound):
        keyring.rotate("tenant:unknown")
    for bad in ("no-colon", "tenant:", "Tenant:x", "a-b:c", "tenant:x:y", "tenant:a b"):
        with pytest.raises(InvalidArgument, match="SCHEME:NAME"):
            keyring.ensure(bad)
    with pytest.raises(InvalidArgument, match="DEK"):
        keyring.wrap(kek, b"")
    # A batch wraps under one Transit call per KEK id, in order.
    keyring.ensure("tenant:other")
    items = [(kek, b"1" * 32), ("tenant:other", b"2" * 32), (kek, b"3" * 32)]
    wrapped_many = keyring.wrap_many(items)
    assert [keyring.unwrap(k, *w) for (k, _), w in zip(items, wrapped_many, strict=True)] == [d for _, d in items]


def test_a_key_dwray_cannot_bind_is_refused(keyring: TransitKeyring, vault: hvac.Client, prefix: str) -> None:
    vault.secrets.transit.create_key(f"{prefix}tenant-plain", key_type="aes256-gcm96")  # not derived
    with pytest.raises(KeyringError, match="derived aes256-gcm96 key"):
        keyring.ensure("tenant:plain")


def test_bad_settings_are_refused_clearly(openbao: ServerProcess) -> None:
    def token() -> SecretValue:
        return SecretValue("unused")

    with pytest.raises(InvalidArgument, match="address"):
        TransitKeyring("127.0.0.1:8200", token)
    with pytest.raises(InvalidArgument, match="mount"):
        TransitKeyring(openbao.address, token, mount="../sys")
    with pytest.raises(InvalidArgument, match="key_prefix"):
        TransitKeyring(openbao.address, token, key_prefix="a/b")
    from dwray.errors import ConfigError

    with pytest.raises(ConfigError, match="address and token"):
        open_key_service(DwrayConfig(kms=KmsConfig(plugin="vault-transit", address=openbao.address)))
    shown = repr(TransitKeyring(openbao.address, lambda: SecretValue(openbao.token)))
    assert openbao.token not in shown and openbao.address in shown


def test_keys_commands_on_transit(tmp_path: Path, openbao: ServerProcess, token_var: str, prefix: str,
                                  vault: hvac.Client) -> None:
    """``dw keys`` with the key service chosen by DWRAY_KMS__* variables."""
    import json
    import subprocess

    env = {**os.environ, "DWRAY_DATA_DIR": str(tmp_path / "data"), "DWRAY_KMS__PLUGIN": "vault-transit",
           "DWRAY_KMS__ADDRESS": openbao.address, "DWRAY_KMS__TOKEN": f"secret://env/{token_var}",
           "DWRAY_KMS__KEY_PREFIX": prefix, "DWRAY_KMS__TIMEOUT": str(TIMEOUT)}

    def dw(*args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(["dw", *args], env=env, input=stdin, capture_output=True, timeout=120)
        assert not check or result.returncode == 0, result.stderr.decode()
        assert openbao.token.encode() not in result.stdout + result.stderr
        return result

    dw("mb", "bkt")
    dw("put", "-", "bkt/a", stdin=b"A")
    dw("--tenant", "acme", "mb", "acme-bkt")
    dw("--tenant", "acme", "put", "-", "acme-bkt/b", stdin=b"B")
    assert json.loads(dw("keys", "rotate", "--json").stdout) == {"primary": 2}
    assert json.loads(dw("keys", "rotate", "--all", "--json").stdout) == {
        "rotated": {"tenant:acme": 2, "tenant:default": 3}}
    refused = dw("keys", "retire", "--below", "3", check=False)
    assert refused.returncode == 1
    assert b"1 data key(s) are still wrapped under KEK versions below 3" in refused.stderr
    assert refused.stdout.decode().split()[-4:] == ["1", "1", "2", "0"]  # the report came first
    assert json.loads(dw("keys", "rewrap", "--json").stdout) == {"rewrapped": 1}
    assert json.loads(dw("keys", "retire", "--below", "3", "--json").stdout) == {"minimum": 3}
    assert transit_key(vault, f"{prefix}tenant-default")["min_decryption_version"] == 3
    assert transit_key(vault, f"{prefix}tenant-acme")["min_decryption_version"] == 1  # another tenant's KEK
    assert dw("get", "bkt/a").stdout == b"A"
    assert dw("--tenant", "acme", "get", "acme-bkt/b").stdout == b"B"
    both = dw("keys", "rotate", "--all", "--tenant", "acme", check=False)
    assert both.returncode == 1 and b"not both" in both.stderr


def write_private(path: Path, text: str) -> None:
    """Write ``path`` 0600 and swap it in at once, as a secret's rotation does."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, text.encode())
    os.close(fd)
    os.replace(temp, path)


def test_the_transit_plugin_runs_in_a_ray_actor_that_is_given_only_the_reference(
        ray_session: Any, tmp_path: Path, openbao: ServerProcess, vault: hvac.Client, prefix: str) -> None:
    import json
    from concurrent.futures import ThreadPoolExecutor

    from ray.util.state import list_actors

    from actors.attach import RayWarehouse
    from actors.bootstrap import release_data_dir, start_supervisor, supervisor_spec
    from actors.handles import running_config
    from dwray.config import RuntimeConfig

    def new_token() -> str:
        return vault.auth.token.create(policies=["root"], ttl="30m")["auth"]["client_token"]

    token_file = tmp_path / "bao-token"
    first = new_token()
    write_private(token_file, first)
    ref = f"secret://file/{token_file}"
    config = transit_config(tmp_path / "data", openbao, ref, prefix)
    config = config.model_copy(update={"runtime": RuntimeConfig(
        namespace=f"dwray-transit-{uuid.uuid4().hex[:8]}", ping_interval=0.5, stage_placement="caller")})
    spec = supervisor_spec(config)
    (kms,) = [child for child in spec.children if child.kind == "kms"]
    assert (kms.id, kms.plugin, kms.config["token"]) == ("kms:vault-transit", "kms.vault-transit", ref)
    assert first not in repr(spec) and first not in json.dumps([c.config for c in spec.children])

    supervisor = start_supervisor(config)
    try:
        wh = RayWarehouse(config, supervisor)
        wh.create_bucket("bkt")
        payloads = {f"k{n}": os.urandom(5000 + n) for n in range(8)}
        with ThreadPoolExecutor(4) as pool:  # writers arriving together share one Transit batch
            list(pool.map(lambda item: wh.put("bkt", *item), payloads.items()))
        assert {key: wh.get("bkt", key) for key in payloads} == payloads
        assert {h.wrapped_dek[:9] for h in key_headers(wh)} == {b"vault:v1:"}
        assert wh.rotate_keys() == 2
        assert wh.rewrap() == 8
        assert {h.kek_version for h in key_headers(wh)} == {2}

        openbao.pause()
        try:
            with pytest.raises(KmsUnavailable, match="vault-transit at"):
                wh.put("bkt", "during", b"not acknowledged")
        finally:
            openbao.resume()
        with pytest.raises(ObjectNotFound):
            wh.head("bkt", "during")
        wh.put("bkt", "after", b"the actor was never restarted")
        assert wh.get("bkt", "after") == b"the actor was never restarted"
        # The token is rotated: a new one in the file, the old one revoked. The running actor uses the new one.
        second = new_token()
        write_private(token_file, second)
        vault.auth.token.revoke(first)
        wh.put("bkt", "rotated", b"wrapped with the rotated token")
        assert wh.get("bkt", "rotated") == b"wrapped with the rotated token"
        (child,) = [c for c in wh.status()["children"] if c["id"] == "kms:vault-transit"]
        assert child["restarts"] == 0
        # Attaching clients get the running config: it names the token by its reference only.
        assert running_config(config, supervisor).kms.token == ref
        # What Ray shows of the actors (the dashboard's view) holds the reference at most, never the token.
        shown = str(wh.status()) + str(list_actors(address=ray_session.get_runtime_context().gcs_address,
                                                          detail=True, limit=10_000, timeout=30))
        assert first not in shown and second not in shown and openbao.token not in shown
    finally:
        ray_session.get(supervisor.stop.remote(), timeout=120)
        ray_session.kill(supervisor)
        release_data_dir(config)
