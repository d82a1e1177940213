"""Named admin tokens with expiry, token files, the local ``dw-up@<host>`` token and tenant tombstones.

All on a real SQLite identity store and a real local keyring in temp folders.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from dwray.core.access_keys import AccessKeys, NewAdminToken, parse_expiry
from dwray.core.gateway_files import (
    GatewayFiles,
    issue_local_admin_token,
    local_token_name,
    read_token_file,
    write_private_file,
)
from dwray.core.identity import (
    LAST_USED_RESOLUTION,
    MIGRATIONS,
    AdminTokenExists,
    AdminTokenNotFound,
    IdentityStore,
    TenantShredded,
)
from dwray.core.keyring import LocalKeyring
from dwray.errors import AlreadyExists, InvalidArgument, TenantNotFound


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IdentityStore]:
    identity = IdentityStore(tmp_path / "identity.db")
    yield identity
    identity.close()


@pytest.fixture
def keys(store: IdentityStore, tmp_path: Path) -> AccessKeys:
    return AccessKeys(store, LocalKeyring(tmp_path / "keys" / "keyring.json"))


def db_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


# Named tokens ----------------------------------------------------------------------------

def test_tokens_are_named_listed_and_revoked_by_name(keys: AccessKeys, store: IdentityStore) -> None:
    ops = keys.create_admin_token("ops-laptop", description="Ana's laptop")
    ci = keys.create_admin_token("ci@build.example")
    assert isinstance(ops, NewAdminToken) and ops.token != ci.token
    listed = keys.list_admin_tokens()
    assert [t.name for t in listed] == ["ci@build.example", "ops-laptop"]
    assert listed[1] == ops.info and listed[1].description == "Ana's laptop"
    assert len({t.token_id for t in listed}) == 2 and all(len(t.token_id) == 16 for t in listed)
    assert all(t.expires is None and t.last_used is None for t in listed)
    revoked = keys.revoke_admin_token("ops-laptop")
    assert revoked.name == "ops-laptop"
    assert not keys.check_admin_token(ops.token) and keys.check_admin_token(ci.token)
    assert [t.name for t in keys.list_admin_tokens()] == ["ci@build.example"]
    with pytest.raises(AdminTokenNotFound, match="no admin token named 'ops-laptop'"):
        keys.revoke_admin_token("ops-laptop")
    again = keys.create_admin_token("ops-laptop")  # a revoked token's name is free again
    assert keys.check_admin_token(again.token) and not keys.check_admin_token(ops.token)


def test_a_name_is_unique_unless_replaced(keys: AccessKeys) -> None:
    first = keys.create_admin_token("robot")
    with pytest.raises(AdminTokenExists, match="'robot' exists"):
        keys.create_admin_token("robot")
    assert keys.check_admin_token(first.token)
    second = keys.create_admin_token("robot", replace=True)
    assert keys.check_admin_token(second.token) and not keys.check_admin_token(first.token)
    assert [t.token_id for t in keys.list_admin_tokens()] == [second.info.token_id]


def test_adding_the_same_token_again_is_a_no_op(store: IdentityStore) -> None:
    digest = hashlib.sha256(b"some token").hexdigest()
    info = store.add_admin_token(digest, "once", time.time() + 60)
    epoch = store.epoch()
    assert store.add_admin_token(digest, "once", time.time() + 60, replace=True) == info
    assert store.epoch() == epoch and store.count_admin_tokens() == 1
    with pytest.raises(AlreadyExists, match="under another name"):
        store.add_admin_token(digest, "twice")


@pytest.mark.parametrize("name", ["", "-lead", "has space", "a/b", "x" * 65, "é", None, 7])
def test_bad_token_names_are_refused(keys: AccessKeys, name: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid admin token name"):
        keys.create_admin_token(name)  # type: ignore[arg-type]
    assert keys.list_admin_tokens() == []


def test_listings_and_reprs_never_show_a_token_or_its_hash(keys: AccessKeys, store: IdentityStore) -> None:
    new = keys.create_admin_token("ops", expires=time.time() + 3600)
    digest = hashlib.sha256(new.token.encode()).hexdigest()
    shown = " ".join(repr(x) + str(x) for x in (new, *keys.list_admin_tokens(), keys.find_admin_token(new.token)))
    assert new.token not in shown and digest not in shown
    assert "ops" in shown and new.info.token_id in shown  # the objects are recognisable
    assert db_rows(store.path, "SELECT token_hash FROM admin_tokens") == [(digest,)]


# Expiry ----------------------------------------------------------------------------------

def test_an_expired_token_is_found_but_not_valid(keys: AccessKeys, store: IdentityStore) -> None:
    new = keys.create_admin_token("short", expires=time.time() + 0.3)
    assert keys.check_admin_token(new.token)
    time.sleep(0.4)
    assert not keys.check_admin_token(new.token)
    found = keys.find_admin_token(new.token)
    assert found is not None and found.name == "short" and found.expired()
    assert [t.expired() for t in keys.list_admin_tokens()] == [True]  # still listed, until revoked
    keys.revoke_admin_token("short")
    assert keys.find_admin_token(new.token) is None


@pytest.mark.parametrize("expires", [0.0, -5.0, float("inf"), float("nan"), "tomorrow", True])
def test_bad_or_past_expiries_are_refused(keys: AccessKeys, expires: object) -> None:
    with pytest.raises(InvalidArgument, match="expiry"):
        keys.create_admin_token("bad", expires=expires)  # type: ignore[arg-type]
    assert keys.list_admin_tokens() == []


def test_parse_expiry_reads_durations_and_iso_times() -> None:
    now = 1_900_000_000.0
    assert parse_expiry("90s", now) == now + 90
    assert parse_expiry("15m", now) == now + 900
    assert parse_expiry(" 12h ", now) == now + 12 * 3600
    assert parse_expiry("30d", now) == now + 30 * 86400
    assert parse_expiry("2w", now) == now + 14 * 86400
    assert parse_expiry("2031-01-31T18:00:00Z", now) == datetime(2031, 1, 31, 18, tzinfo=timezone.utc).timestamp()
    assert parse_expiry("2031-01-31T19:00:00+01:00", now) == parse_expiry("2031-01-31T18:00Z", now)
    assert parse_expiry("2031-01-31", now) == datetime(2031, 1, 31, tzinfo=timezone.utc).timestamp()  # UTC


@pytest.mark.parametrize(("text", "message"), [
    ("", "duration"), ("0d", "longer than zero"), ("30 days", "neither a duration"), ("-1d", "neither"),
    ("1y", "neither"), ("2001-01-01", "not in the future"), ("9" * 12 + "d", "neither"), ("３０d", "neither"),
])
def test_parse_expiry_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_expiry(text, 1_900_000_000.0)


# Constant-time check and last use --------------------------------------------------------

def test_a_token_is_found_only_by_its_exact_hash(keys: AccessKeys) -> None:
    tokens = [keys.create_admin_token(f"t{n}").token for n in range(5)]
    for n, token in enumerate(tokens):
        found = keys.find_admin_token(token)
        assert found is not None and found.name == f"t{n}"
    for wrong in (tokens[0][:-1], tokens[0] + "A", tokens[0].upper(), "", "é" * 43, None):
        assert keys.find_admin_token(wrong) is None  # type: ignore[arg-type]
    assert keys.store.find_admin_token(12) is None  # type: ignore[arg-type]


def test_last_use_is_recorded_at_most_once_a_minute(keys: AccessKeys, store: IdentityStore) -> None:
    new = keys.create_admin_token("ops")
    before = time.time()
    assert keys.check_admin_token(new.token)
    [listed] = keys.list_admin_tokens()
    assert listed.last_used is not None and listed.last_used >= before
    epoch = store.epoch()
    assert keys.check_admin_token(new.token)
    [again] = keys.list_admin_tokens()
    assert again.last_used == listed.last_used and store.epoch() == epoch
    with sqlite3.connect(store.path) as db:  # a minute later, as far as the store can tell
        db.execute("UPDATE admin_tokens SET last_used = last_used - ?", (LAST_USED_RESOLUTION + 1,))
    assert keys.check_admin_token(new.token)
    [later] = keys.list_admin_tokens()
    assert later.last_used is not None and later.last_used >= before and store.epoch() == epoch


def test_an_expired_token_use_is_not_recorded(keys: AccessKeys) -> None:
    new = keys.create_admin_token("short", expires=time.time() + 0.2)
    time.sleep(0.3)
    assert not keys.check_admin_token(new.token)
    assert keys.list_admin_tokens()[0].last_used is None


# Migration from unnamed tokens -----------------------------------------------------------

def test_tokens_made_before_names_existed_get_legacy_names(tmp_path: Path) -> None:
    path = tmp_path / "identity.db"
    with sqlite3.connect(path) as db:
        for statement in MIGRATIONS[0].split(";"):
            if statement.strip():
                db.execute(statement)
        db.execute("PRAGMA user_version=1")
        old = [hashlib.sha256(f"old-{n}".encode()).hexdigest() for n in range(2)]
        db.executemany("INSERT INTO admin_tokens VALUES (?, ?, ?)", [(h, 1.0, "created on first start") for h in old])
    store = IdentityStore(path)
    try:
        listed = store.list_admin_tokens()
        assert [t.name for t in listed] == sorted(f"legacy-{t.token_id}" for t in listed)
        assert all(t.expires is None and t.description == "created on first start" for t in listed)
        keys = AccessKeys(store, LocalKeyring(tmp_path / "keyring.json"))
        assert keys.check_admin_token("old-0") and keys.check_admin_token("old-1")
        keys.revoke_admin_token(listed[0].name)
        assert store.count_admin_tokens() == 1
    finally:
        store.close()


# Tenant tombstones -----------------------------------------------------------------------

def test_shredding_a_tenant_removes_every_key_and_refuses_its_name(keys: AccessKeys, store: IdentityStore) -> None:
    store.create_tenant("acme")
    store.create_tenant("beta")
    active, revoked, other = keys.create("acme"), keys.create("acme"), keys.create("beta")
    keys.revoke(revoked.access_key_id)
    epoch = store.epoch()
    tombstone = store.shred_tenant("acme")
    assert (tombstone.name, tombstone.kek_id, tombstone.access_keys_removed) == ("acme", "tenant:acme", 2)
    assert store.epoch() > epoch
    assert keys.lookup(active.access_key_id) is None and keys.lookup(other.access_key_id) is not None
    assert [k.access_key_id for k in keys.list(include_revoked=True)] == [other.access_key_id]
    with pytest.raises(TenantNotFound):
        store.get_tenant("acme")
    with pytest.raises(TenantShredded, match="'acme' was crypto-shredded"):
        store.create_tenant("acme")
    assert isinstance(TenantShredded("acme"), AlreadyExists)
    again = store.shred_tenant("acme")  # a rerun finds the tombstone and changes nothing
    assert (again.name, again.shredded, again.access_keys_removed) == ("acme", tombstone.shredded, 0)
    with pytest.raises(TenantNotFound, match="'ghost'"):
        store.shred_tenant("ghost")


# Token files -----------------------------------------------------------------------------

def test_private_files_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_private_file(tmp_path / "token", "abc")
        write_private_file(tmp_path / "token", "def")  # replaced atomically, still private
    finally:
        os.umask(old)
    assert (tmp_path / "token").stat().st_mode & 0o777 == 0o600
    assert read_token_file(tmp_path / "token") == "def"
    assert [p.name for p in tmp_path.iterdir()] == ["token"]  # no temp file left behind


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_token_file_others_may_touch_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token"
    write_private_file(path, "sekrit-token-value")
    os.chmod(path, mode)
    with pytest.raises(InvalidArgument, match=f"may be read or written by others \\(mode 0{mode:o}\\)") as caught:
        read_token_file(path)
    assert "chmod 600" in str(caught.value) and "sekrit" not in str(caught.value)


def test_token_files_must_hold_one_token(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o700)
    for content, message in ((b"", "empty"), (b"two words\n", "more than one word"),
                             (b"\xff\xfe", "not ASCII"), (b"x" * 5000, "too long")):
        path = tmp_path / "token"
        path.write_bytes(content)
        os.chmod(path, 0o600)
        with pytest.raises(InvalidArgument, match=message):
            read_token_file(path)
    with pytest.raises(InvalidArgument, match="not a regular file"):
        read_token_file(tmp_path)
    (tmp_path / "token").write_text("fine\n")
    (tmp_path / "token").chmod(0o400)  # read-only for its owner is private too
    assert read_token_file(tmp_path / "token") == "fine"
    with pytest.raises(FileNotFoundError):
        read_token_file(tmp_path / "missing")


# The local dw-up@<host> token ------------------------------------------------------------

def test_local_token_names_are_valid_whatever_the_host() -> None:
    assert local_token_name("build-7.example.org") == "dw-up@build-7.example.org"
    assert local_token_name("weird host/name") == "dw-up@weird-host-name"
    assert local_token_name("") == "dw-up@localhost"
    assert len(local_token_name("h" * 200)) == 64


def test_each_start_replaces_the_local_token_so_a_lost_file_leaves_no_valid_token(
        keys: AccessKeys, tmp_path: Path) -> None:
    files = GatewayFiles(tmp_path / "gateway")
    first = issue_local_admin_token(keys, files, "default", host="box")
    assert first is not None and first.tenant == "default"
    assert files.read_admin_token() == first.admin_token
    assert (tmp_path / "gateway").stat().st_mode & 0o777 == 0o700
    assert files.admin_token.stat().st_mode & 0o777 == 0o600
    assert [t.name for t in keys.list_admin_tokens()] == ["dw-up@box"]

    files.admin_token.unlink()  # the file is lost (or copied away)
    assert issue_local_admin_token(keys, files, "default", host="box") is None  # the next start
    second = files.read_admin_token()
    assert second is not None and second != first.admin_token
    assert keys.check_admin_token(second) and not keys.check_admin_token(first.admin_token)
    assert [t.name for t in keys.list_admin_tokens()] == ["dw-up@box"]

    assert issue_local_admin_token(keys, files, "default", host="box") is None  # a start with the file there
    third = files.read_admin_token()
    assert third is not None and not keys.check_admin_token(second) and keys.check_admin_token(third)
    # Another host's gateway has a token of its own, and each can be revoked by name.
    other = GatewayFiles(tmp_path / "elsewhere")
    issue_local_admin_token(keys, other, "default", host="other-box")
    assert [t.name for t in keys.list_admin_tokens()] == ["dw-up@box", "dw-up@other-box"]
    assert keys.check_admin_token(third)
    keys.revoke_admin_token("dw-up@box")
    assert not keys.check_admin_token(third) and keys.check_admin_token(other.read_admin_token() or "")


def test_a_loose_local_token_file_is_refused_not_used(keys: AccessKeys, tmp_path: Path) -> None:
    files = GatewayFiles(tmp_path / "gateway")
    issue_local_admin_token(keys, files, "default", host="box")
    os.chmod(files.admin_token, 0o644)
    with pytest.raises(InvalidArgument, match="chmod 600"):
        files.read_admin_token()
    issue_local_admin_token(keys, files, "default", host="box")  # a restart writes a private one again
    assert files.admin_token.stat().st_mode & 0o777 == 0o600 and files.read_admin_token()
