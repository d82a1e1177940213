"""The identity store and access keys, on a real SQLite file and a real local keyring."""
from __future__ import annotations

import base64
import hashlib
import pickle
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.builtins.services import IdentityPlugin
from dwray.core.access_keys import (
    ACCESS_KEY_KEK,
    AccessKeys,
    BootstrapResult,
    NewAccessKey,
    ResolvedKey,
)
from dwray.core.identity import IdentityStore, StoredAccessKey
from dwray.core.keyring import LocalKeyring
from dwray.core.plugins import check_manifest, load_plugin_class
from dwray.errors import (
    AccessKeyNotFound,
    AlreadyExists,
    IntegrityError,
    InvalidArgument,
    SchemaVersionError,
    TenantAlreadyExists,
    TenantNotFound,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IdentityStore]:
    identity = IdentityStore(tmp_path / "identity.db")
    yield identity
    identity.close()


@pytest.fixture
def keyring(tmp_path: Path) -> LocalKeyring:
    return LocalKeyring(tmp_path / "keys" / "keyring.json")


@pytest.fixture
def keys(store: IdentityStore, keyring: LocalKeyring) -> AccessKeys:
    return AccessKeys(store, keyring)


def raw_secret(secret: str) -> bytes:
    return base64.urlsafe_b64decode(secret + "=")


# Tenants ---------------------------------------------------------------------

def test_tenants_are_created_listed_and_deleted(store: IdentityStore) -> None:
    made = store.create_tenant("acme", "the first customer")
    assert (made.name, made.description) == ("acme", "the first customer")
    assert store.get_tenant("acme") == made
    store.create_tenant("beta")
    assert [t.name for t in store.list_tenants()] == ["acme", "beta"]
    with pytest.raises(TenantAlreadyExists, match="'acme' already exists"):
        store.create_tenant("acme")
    store.delete_tenant("beta")
    with pytest.raises(TenantNotFound, match="'beta'"):
        store.get_tenant("beta")
    with pytest.raises(TenantNotFound):
        store.delete_tenant("beta")


@pytest.mark.parametrize("name", ["", "Acme", "-x", "a/b", "x" * 64, 7])
def test_bad_tenant_names_are_refused(store: IdentityStore, name: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid tenant name"):
        store.create_tenant(name)  # type: ignore[arg-type]
    assert store.list_tenants() == []


def test_bad_descriptions_are_refused(store: IdentityStore) -> None:
    with pytest.raises(InvalidArgument, match="description"):
        store.create_tenant("acme", "x" * 2000)
    with pytest.raises(InvalidArgument, match="description"):
        store.create_tenant("acme", None)  # type: ignore[arg-type]


def test_a_tenant_with_active_keys_cannot_be_deleted(keys: AccessKeys, store: IdentityStore) -> None:
    store.create_tenant("acme")
    key = keys.create("acme")
    with pytest.raises(InvalidArgument, match="1 active access key"):
        store.delete_tenant("acme")
    keys.revoke(key.access_key_id)
    store.delete_tenant("acme")
    assert keys.list(include_revoked=True) == []  # its revoked keys went with it


# Access keys -----------------------------------------------------------------

def test_create_and_lookup(keys: AccessKeys, store: IdentityStore) -> None:
    store.create_tenant("acme")
    new = keys.create("acme", "ci robot")
    assert isinstance(new, NewAccessKey) and new.tenant == "acme"
    assert re.fullmatch(r"DW[A-Z0-9]{18}", new.access_key_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", new.secret_access_key)
    assert len(raw_secret(new.secret_access_key)) == 32
    assert keys.lookup(new.access_key_id) == ResolvedKey(new.access_key_id, new.secret_access_key, "acme")
    [info] = keys.list("acme")
    assert (info.access_key_id, info.tenant, info.description, info.active) == (
        new.access_key_id, "acme", "ci robot", True)
    assert (info.kek_id, info.kek_version) == (ACCESS_KEY_KEK, 1)


def test_keys_are_random(keys: AccessKeys, store: IdentityStore) -> None:
    store.create_tenant("acme")
    made = [keys.create("acme") for _ in range(20)]
    assert len({k.access_key_id for k in made}) == 20
    assert len({k.secret_access_key for k in made}) == 20


def test_unknown_or_malformed_ids_resolve_to_none(keys: AccessKeys) -> None:
    assert keys.lookup("DWAAAAAAAAAAAAAAAAAA") is None
    assert keys.lookup("") is None
    assert keys.lookup("x'; DROP TABLE access_keys; --") is None
    assert keys.lookup(None) is None  # type: ignore[arg-type]


def test_a_key_needs_an_existing_tenant(keys: AccessKeys) -> None:
    with pytest.raises(TenantNotFound, match="'ghost'"):
        keys.create("ghost")
    assert keys.list(include_revoked=True) == []


def test_revoked_keys_stop_resolving_and_lose_their_secret(keys: AccessKeys, store: IdentityStore,
                                                           tmp_path: Path) -> None:
    store.create_tenant("acme")
    new = keys.create("acme")
    revoked = keys.revoke(new.access_key_id)
    assert not revoked.active and revoked.revoked is not None
    assert keys.lookup(new.access_key_id) is None
    assert store.get_access_key(new.access_key_id) is None
    assert keys.list("acme") == []
    assert keys.list("acme", include_revoked=True) == [revoked]
    assert keys.revoke(new.access_key_id) == revoked  # revoking again changes nothing
    with pytest.raises(AccessKeyNotFound, match="DWNOSUCHKEY0000000000"):
        keys.revoke("DWNOSUCHKEY0000000000")
    with sqlite3.connect(tmp_path / "identity.db") as db:
        assert db.execute("SELECT wrapped_secret FROM access_keys").fetchall() == [(None,)]


def test_tenants_are_isolated(keys: AccessKeys, store: IdentityStore) -> None:
    store.create_tenant("acme")
    store.create_tenant("beta")
    a, b = keys.create("acme"), keys.create("beta")
    assert keys.lookup(a.access_key_id).tenant == "acme"  # type: ignore[union-attr]
    assert keys.lookup(b.access_key_id).tenant == "beta"  # type: ignore[union-attr]
    assert [k.access_key_id for k in keys.list("acme")] == [a.access_key_id]
    assert [k.access_key_id for k in keys.list("beta")] == [b.access_key_id]
    assert {k.access_key_id for k in keys.list()} == {a.access_key_id, b.access_key_id}
    keys.revoke(a.access_key_id)
    assert keys.lookup(b.access_key_id) is not None
    with pytest.raises(TenantNotFound):
        keys.list("ghost")


def test_adding_the_same_key_twice_is_a_no_op_but_a_different_one_is_refused(store: IdentityStore) -> None:
    store.create_tenant("acme")
    first = store.add_access_key("DWSAMEKEY00000000000", "acme", ACCESS_KEY_KEK, 1, b"w" * 60)
    epoch = store.epoch()
    assert store.add_access_key("DWSAMEKEY00000000000", "acme", ACCESS_KEY_KEK, 1, b"w" * 60) == first
    assert store.epoch() == epoch
    with pytest.raises(AlreadyExists, match="DWSAMEKEY00000000000"):
        store.add_access_key("DWSAMEKEY00000000000", "acme", ACCESS_KEY_KEK, 1, b"x" * 60)
    with pytest.raises(InvalidArgument, match="invalid access key id"):
        store.add_access_key("short", "acme", ACCESS_KEY_KEK, 1, b"w" * 60)


def test_a_tampered_wrapped_secret_is_an_integrity_error(keys: AccessKeys, store: IdentityStore,
                                                         tmp_path: Path) -> None:
    store.create_tenant("acme")
    new = keys.create("acme")
    with sqlite3.connect(tmp_path / "identity.db") as db:
        db.execute("UPDATE access_keys SET wrapped_secret = ?", (b"\0" * 60,))
    with pytest.raises(IntegrityError):
        keys.lookup(new.access_key_id)


def test_rewrap_moves_secrets_to_the_new_kek_version(keys: AccessKeys, store: IdentityStore,
                                                     keyring: LocalKeyring) -> None:
    store.create_tenant("acme")
    made = [keys.create("acme") for _ in range(5)]
    keys.revoke(made[0].access_key_id)
    assert keys.rewrap() == 0  # nothing below the primary yet
    assert keyring.rotate(ACCESS_KEY_KEK) == 2
    assert len(store.keys_wrapped_below(ACCESS_KEY_KEK, 2)) == 4  # the revoked key has nothing to rewrap
    assert keys.rewrap(batch=3) == 4
    assert store.keys_wrapped_below(ACCESS_KEY_KEK, 2) == []
    assert {k.kek_version for k in keys.list("acme")} == {2}
    keyring.retire_below(ACCESS_KEY_KEK, 2)  # version 1 can no longer unwrap: the secrets must not need it
    for key in made[1:]:
        assert keys.lookup(key.access_key_id).secret_access_key == key.secret_access_key  # type: ignore[union-attr]


def test_replace_wrapped_secret_is_compare_and_set(store: IdentityStore) -> None:
    store.create_tenant("acme")
    store.add_access_key("DWCASKEY000000000000", "acme", ACCESS_KEY_KEK, 1, b"a" * 60)
    stale = store.get_access_key("DWCASKEY000000000000")
    assert isinstance(stale, StoredAccessKey)
    assert store.replace_wrapped_secret(stale, b"b" * 60, 2)
    assert not store.replace_wrapped_secret(stale, b"c" * 60, 3)  # someone got there first
    current = store.get_access_key("DWCASKEY000000000000")
    assert (current.wrapped_secret, current.kek_version) == (b"b" * 60, 2)  # type: ignore[union-attr]


# Epoch -----------------------------------------------------------------------

def test_every_change_moves_the_epoch_and_reads_do_not(keys: AccessKeys, store: IdentityStore,
                                                       keyring: LocalKeyring) -> None:
    seen = [store.epoch()]

    def moved() -> bool:
        seen.append(store.epoch())
        return seen[-1] > seen[-2]

    store.create_tenant("acme")
    assert moved()
    new = keys.create("acme")
    assert moved()
    keys.lookup(new.access_key_id), keys.list(), store.list_tenants(), store.get_tenant("acme")
    keys.check_admin_token("nope")
    assert not moved()
    made = keys.create_admin_token("ops")
    assert moved()
    assert keys.check_admin_token(made.token)  # records its last use: no one's rights change
    assert not moved()
    keys.revoke_admin_token("ops")
    assert moved()
    keyring.rotate(ACCESS_KEY_KEK)
    keys.rewrap()
    assert moved()
    keys.revoke(new.access_key_id)
    assert moved()
    keys.revoke(new.access_key_id)
    assert not moved()
    with pytest.raises(TenantAlreadyExists):
        store.create_tenant("acme")
    assert not moved()  # a failed change rolls the epoch back with it
    store.delete_tenant("acme")
    assert moved()


def test_the_epoch_is_shared_by_every_process_on_the_file(store: IdentityStore, tmp_path: Path) -> None:
    other = IdentityStore(tmp_path / "identity.db")
    try:
        before = other.epoch()
        store.create_tenant("acme")
        assert other.epoch() == before + 1
        assert other.get_tenant("acme").name == "acme"
    finally:
        other.close()


# Admin tokens and bootstrap --------------------------------------------------

def test_admin_tokens_are_checked_by_hash(keys: AccessKeys, store: IdentityStore, tmp_path: Path) -> None:
    assert store.count_admin_tokens() == 0
    token = keys.create_admin_token("ops-laptop").token
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token) and store.count_admin_tokens() == 1
    assert keys.check_admin_token(token)
    assert not keys.check_admin_token(token[:-1])
    assert not keys.check_admin_token(token + "x")
    assert not keys.check_admin_token("")
    assert not keys.check_admin_token(None)  # type: ignore[arg-type]
    assert not keys.check_admin_token("é" * 43)
    second = keys.create_admin_token("ci").token
    assert keys.check_admin_token(second) and keys.check_admin_token(token)
    with sqlite3.connect(tmp_path / "identity.db") as db:
        stored = {row[0] for row in db.execute("SELECT token_hash FROM admin_tokens")}
    assert stored == {hashlib.sha256(t.encode()).hexdigest() for t in (token, second)}
    with pytest.raises(InvalidArgument, match="SHA-256"):
        store.add_admin_token(token, "raw")


def test_bootstrap_happens_once(keys: AccessKeys, store: IdentityStore) -> None:
    result = keys.bootstrap("default")
    assert isinstance(result, BootstrapResult)
    assert result.tenant == "default" and result.access_key.tenant == "default"
    assert keys.lookup(result.access_key.access_key_id) == ResolvedKey(
        result.access_key.access_key_id, result.access_key.secret_access_key, "default")
    assert keys.check_admin_token(result.admin_token)
    assert [t.name for t in store.list_tenants()] == ["default"]
    assert keys.bootstrap("default") is None
    assert keys.bootstrap("other") is None
    assert len(keys.list()) == 1 and store.count_admin_tokens() == 1
    assert [t.name for t in store.list_tenants()] == ["default"]


def test_bootstrap_does_nothing_once_keys_or_tokens_exist(tmp_path: Path, keyring: LocalKeyring) -> None:
    with_key = AccessKeys(IdentityStore(tmp_path / "a.db"), keyring)
    with_key.store.create_tenant("acme")
    with_key.create("acme")
    assert with_key.bootstrap("default") is None
    with_token = AccessKeys(IdentityStore(tmp_path / "b.db"), keyring)
    with_token.create_admin_token("ops")
    assert with_token.bootstrap("default") is None
    assert with_token.store.list_tenants() == []


def test_bootstrap_keeps_an_existing_default_tenant(keys: AccessKeys, store: IdentityStore) -> None:
    made = store.create_tenant("default", "made by hand")
    assert keys.bootstrap("default") is not None
    assert store.get_tenant("default") == made


def test_concurrent_bootstraps_create_exactly_one_set(tmp_path: Path, keyring: LocalKeyring) -> None:
    results: list[BootstrapResult | None] = []
    stores = [IdentityStore(tmp_path / "identity.db") for _ in range(4)]

    def run(store: IdentityStore) -> None:
        results.append(AccessKeys(store, keyring).bootstrap("default"))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(r is not None for r in results) == 1
    assert len(stores[0].list_access_keys()) == 1 and stores[0].count_admin_tokens() == 1


# Secrets stay secret ---------------------------------------------------------

def test_no_secret_in_any_repr_str_or_error(keys: AccessKeys, store: IdentityStore) -> None:
    result = keys.bootstrap("default")
    assert result is not None
    new = keys.create("default")
    secrets_ = [result.admin_token, result.access_key.secret_access_key, new.secret_access_key]
    resolved = keys.lookup(new.access_key_id)
    stored = store.get_access_key(new.access_key_id)
    errors: list[BaseException] = []
    for attempt in (lambda: store.add_access_key(new.access_key_id, "default", ACCESS_KEY_KEK, 1, b"\0" * 60),
                    lambda: store.add_admin_token(result.admin_token, "raw")):
        with pytest.raises((AlreadyExists, InvalidArgument)) as caught:
            attempt()
        errors.append(caught.value)
    shown = [result, new, resolved, stored, keys, store, *keys.list(), *errors]
    text = " ".join(repr(obj) + str(obj) for obj in shown)
    for secret in secrets_:
        assert secret not in text
    assert stored is not None and repr(stored.wrapped_secret) not in text
    assert new.access_key_id in text  # the ids do show, so the objects are recognisable


def test_the_database_holds_no_plaintext_secret(keys: AccessKeys, tmp_path: Path) -> None:
    result = keys.bootstrap("default")
    assert result is not None
    new = keys.create("default")
    keys.store.close()  # type: ignore[union-attr]
    blob = b"".join(p.read_bytes() for p in tmp_path.glob("identity.db*"))
    assert new.access_key_id.encode() in blob  # the scan does see what the store wrote
    for secret in (new.secret_access_key, result.access_key.secret_access_key):
        assert secret.encode() not in blob
        assert raw_secret(secret) not in blob
        assert base64.b64encode(raw_secret(secret)) not in blob
    assert result.admin_token.encode() not in blob


def test_results_pickle_across_actors_and_keep_their_secret(keys: AccessKeys, store: IdentityStore) -> None:
    store.create_tenant("acme")
    new = keys.create("acme")
    resolved = keys.lookup(new.access_key_id)
    assert pickle.loads(pickle.dumps(resolved)) == resolved
    assert pickle.loads(pickle.dumps(store.get_access_key(new.access_key_id))) == store.get_access_key(
        new.access_key_id)


# Schema, plugin, tree --------------------------------------------------------

def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    IdentityStore(tmp_path / "identity.db").close()
    with sqlite3.connect(tmp_path / "identity.db") as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(SchemaVersionError, match="99"):
        IdentityStore(tmp_path / "identity.db")


def test_the_plugin_is_registered_and_serves_the_store(tmp_path: Path) -> None:
    cls = load_plugin_class("service.identity")
    assert cls is IdentityPlugin
    config = {"path": str(tmp_path / "identity.db")}
    assert check_manifest("identity", cls.manifest, "service", config).name == "service.identity"
    plugin = IdentityPlugin(**config)
    plugin.create_tenant("acme")
    assert plugin.get_tenant("acme").name == "acme"
    assert plugin.epoch() == 1
    assert plugin.health() == {"ok": True, "schema_version": 3}
    plugin.close()


def test_the_warehouse_tree_runs_identity_right_after_the_catalog(tmp_path: Path) -> None:
    from actors.bootstrap import warehouse_children
    from dwray.config import DwrayConfig

    children = warehouse_children(DwrayConfig(data_dir=tmp_path / "data"))
    ids = [child.id for child in children]
    assert ids[ids.index("catalog") + 1] == "identity"
    identity = children[ids.index("identity")]
    assert (identity.plugin, identity.kind) == ("service.identity", "service")
    assert identity.config == {"path": str((tmp_path / "data" / "identity.db").resolve())}
