"""The local KEK keyring: file safety, wrapping, rotation, retirement, concurrency."""
from __future__ import annotations

import base64
import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dwray.core.keyring import LocalKeyring
from dwray.errors import (
    DwrayError,
    IntegrityError,
    InvalidArgument,
    KeyNotFound,
    KeyRetired,
    KeyringError,
)

KEK = "tenant:default"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def raw_keys(p: Path) -> list[bytes]:
    doc = json.loads(p.read_bytes())
    return [base64.b64decode(k) for kek in doc["keks"].values() for k in kek["versions"].values()]


def test_file_is_created_0600_in_a_0700_folder(path: Path) -> None:
    keyring = LocalKeyring(path)
    assert not path.exists()
    assert keyring.ensure(KEK) == 1
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.with_name(path.name + ".lock")) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_every_folder_it_creates_is_0700(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "a" / "b" / "keyring.json"
    LocalKeyring(path).ensure(KEK)
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(path)] == [0o700, 0o700, 0o600]
    assert mode(tmp_path) == 0o755


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_refuses_a_file_others_can_read(path: Path, loose: int) -> None:
    LocalKeyring(path).ensure(KEK)
    os.chmod(path, loose)
    with pytest.raises(KeyringError, match=f"chmod 600 {path}"):
        LocalKeyring(path)


def test_refuses_a_file_loosened_under_a_running_keyring(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        keyring.wrap(KEK, os.urandom(32))


def test_wrap_unwrap_round_trip(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    dek = os.urandom(32)
    version, wrapped = keyring.wrap(KEK, dek)
    assert version == 1
    assert dek not in wrapped and len(wrapped) == 12 + 32 + 16
    assert keyring.unwrap(KEK, version, wrapped) == dek
    # A random nonce per wrap: the same DEK never wraps to the same bytes.
    assert keyring.wrap(KEK, dek)[1] != wrapped


def test_unknown_kek_or_version_raises_key_not_found(path: Path) -> None:
    keyring = LocalKeyring(path)
    with pytest.raises(KeyNotFound):
        keyring.wrap(KEK, os.urandom(32))
    keyring.ensure(KEK)
    version, wrapped = keyring.wrap(KEK, os.urandom(32))
    with pytest.raises(KeyNotFound, match="version 2"):
        keyring.unwrap(KEK, 2, wrapped)
    with pytest.raises(KeyNotFound):
        keyring.unwrap("tenant:other", version, wrapped)
    with pytest.raises(KeyNotFound):
        keyring.describe("tenant:other")
    with pytest.raises(KeyNotFound):
        keyring.rotate("tenant:other")


def test_bad_arguments_are_refused(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    with pytest.raises(InvalidArgument, match="32 bytes"):
        keyring.wrap(KEK, b"short")
    with pytest.raises(InvalidArgument, match="KEK id"):
        keyring.ensure("")


def test_ensure_is_idempotent_and_returns_the_primary(path: Path) -> None:
    keyring = LocalKeyring(path)
    assert keyring.ensure(KEK) == 1
    before = raw_keys(path)
    assert keyring.ensure(KEK) == 1
    assert raw_keys(path) == before
    keyring.rotate(KEK)
    assert keyring.ensure(KEK) == 2
    assert keyring.ensure("tenant:b") == 1
    assert keyring.kek_ids() == ["tenant:b", KEK]


def test_rotate_changes_primary_and_old_versions_still_unwrap(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    old_dek = os.urandom(32)
    old = keyring.wrap(KEK, old_dek)
    assert keyring.rotate(KEK) == 2
    new_dek = os.urandom(32)
    new = keyring.wrap(KEK, new_dek)
    assert new[0] == 2
    assert keyring.unwrap(KEK, *old) == old_dek
    assert keyring.unwrap(KEK, *new) == new_dek
    assert keyring.describe(KEK) == {"kek_id": KEK, "versions": [1, 2], "primary": 2, "minimum": 1}


def test_wrapped_dek_is_bound_to_its_kek_and_version(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    keyring.ensure("tenant:b")
    keyring.rotate(KEK)
    dek = os.urandom(32)
    wrapped = keyring.wrap(KEK, dek)[1]
    # Give tenant:b and version 1 the very same key material as version 2:
    # only the AAD binding can still tell the three apart.
    doc = json.loads(path.read_bytes())
    shared = doc["keks"][KEK]["versions"]["2"]
    doc["keks"]["tenant:b"]["versions"]["1"] = doc["keks"][KEK]["versions"]["1"] = shared
    path.write_text(json.dumps(doc))
    reloaded = LocalKeyring(path)
    assert reloaded.unwrap(KEK, 2, wrapped) == dek
    with pytest.raises(IntegrityError):
        reloaded.unwrap("tenant:b", 1, wrapped)
    with pytest.raises(IntegrityError):
        reloaded.unwrap(KEK, 1, wrapped)


def test_retire_below_makes_old_versions_retired(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    v1 = keyring.wrap(KEK, os.urandom(32))
    keyring.rotate(KEK)
    v2_dek = os.urandom(32)
    v2 = keyring.wrap(KEK, v2_dek)
    keyring.retire_below(KEK, 2)
    with pytest.raises(KeyRetired, match="minimum decryption version is 2"):
        keyring.unwrap(KEK, *v1)
    assert keyring.unwrap(KEK, *v2) == v2_dek
    assert keyring.describe(KEK)["minimum"] == 2
    # Another process sees the retirement.
    with pytest.raises(KeyRetired):
        LocalKeyring(path).unwrap(KEK, *v1)


def test_retire_cannot_pass_the_primary(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    keyring.rotate(KEK)
    for minimum in (3, 0, -1):
        with pytest.raises(InvalidArgument, match="must be 1..2"):
            keyring.retire_below(KEK, minimum)
    assert keyring.describe(KEK)["minimum"] == 1


def test_tampered_wrapped_dek_raises_integrity_error(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    version, wrapped = keyring.wrap(KEK, os.urandom(32))
    for position in (0, 11, 12, 30, len(wrapped) - 1):
        damaged = bytearray(wrapped)
        damaged[position] ^= 0x01
        with pytest.raises(IntegrityError, match="authentication failed"):
            keyring.unwrap(KEK, version, bytes(damaged))
    for damaged in (wrapped[:-1], wrapped + b"\x00", b""):
        with pytest.raises(IntegrityError):
            keyring.unwrap(KEK, version, damaged)


def test_keys_persist_across_instances(path: Path) -> None:
    first = LocalKeyring(path)
    first.ensure(KEK)
    dek1 = os.urandom(32)
    wrapped1 = first.wrap(KEK, dek1)
    first.rotate(KEK)
    dek2 = os.urandom(32)
    wrapped2 = first.wrap(KEK, dek2)

    second = LocalKeyring(path)
    assert second.unwrap(KEK, *wrapped1) == dek1
    assert second.unwrap(KEK, *wrapped2) == dek2
    assert second.describe(KEK) == first.describe(KEK)


def test_an_instance_sees_rotations_made_by_another(path: Path) -> None:
    mine, theirs = LocalKeyring(path), LocalKeyring(path)
    mine.ensure(KEK)
    assert theirs.rotate(KEK) == 2
    dek = os.urandom(32)
    wrapped = theirs.wrap(KEK, dek)
    assert mine.wrap(KEK, os.urandom(32))[0] == 2
    assert mine.unwrap(KEK, *wrapped) == dek
    assert mine.rotate(KEK) == 3


def test_a_failed_write_changes_nothing(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    before = path.read_bytes()
    # Occupy the temp file's name so the atomic write cannot start.
    blocker = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    blocker.mkdir()
    with pytest.raises(KeyringError, match="could not write keyring"):
        keyring.rotate(KEK)
    with pytest.raises(KeyringError, match="could not write keyring"):
        keyring.ensure("tenant:new")
    assert path.read_bytes() == before
    assert keyring.describe(KEK)["versions"] == [1]
    assert keyring.wrap(KEK, os.urandom(32))[0] == 1
    assert keyring.kek_ids() == [KEK]
    blocker.rmdir()
    assert keyring.rotate(KEK) == 2


def test_concurrent_rotations_yield_distinct_versions(path: Path) -> None:
    LocalKeyring(path).ensure(KEK)
    # Several instances stand in for processes: each has its own in-memory
    # state and thread lock, so only the file lock keeps them apart.
    keyrings = [LocalKeyring(path) for _ in range(4)]
    start = threading.Barrier(8)

    def rotate(i: int) -> list[int]:
        start.wait()
        return [keyrings[i % 4].rotate(KEK) for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        versions = [v for batch in pool.map(rotate, range(8)) for v in batch]
    assert sorted(versions) == list(range(2, 42))
    described = LocalKeyring(path).describe(KEK)
    assert described["versions"] == list(range(1, 42)) and described["primary"] == 41
    assert len(set(raw_keys(path))) == 41


def test_malformed_file_is_a_keyring_error_without_contents(path: Path) -> None:
    LocalKeyring(path).ensure(KEK)
    secret = raw_keys(path)[0]
    doc = json.loads(path.read_bytes())
    doc["keks"][KEK]["versions"]["1"] = base64.b64encode(secret).decode() + "!"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="malformed") as caught:
        LocalKeyring(path)
    assert base64.b64encode(secret).decode() not in str(caught.value)
    path.write_text("{not json")
    with pytest.raises(KeyringError, match="malformed"):
        LocalKeyring(path)
    path.write_text(json.dumps({"format": 99, "keks": {}}))
    with pytest.raises(KeyringError, match="unsupported format"):
        LocalKeyring(path)


def test_no_key_material_in_repr_describe_or_errors(path: Path) -> None:
    keyring = LocalKeyring(path)
    keyring.ensure(KEK)
    keyring.rotate(KEK)
    dek = os.urandom(32)
    version, wrapped = keyring.wrap(KEK, dek)
    keyring.retire_below(KEK, 2)
    texts = [repr(keyring), str(keyring), json.dumps(keyring.describe(KEK)), repr(keyring.describe(KEK))]
    for call in (
        lambda: keyring.unwrap(KEK, 1, wrapped),
        lambda: keyring.unwrap(KEK, version, wrapped[:-1] + bytes([wrapped[-1] ^ 1])),
        lambda: keyring.unwrap(KEK, 9, wrapped),
    ):
        with pytest.raises(DwrayError) as caught:
            call()
        texts += [str(caught.value), repr(caught.value)]
    assert repr(keyring) == f"LocalKeyring({str(path)!r})"
    secrets = raw_keys(path) + [dek]
    assert len(secrets) == 3
    for text in texts:
        for secret in secrets:
            for form in (secret.hex(), repr(secret), base64.b64encode(secret).decode()):
                assert form not in text


def test_stale_temp_file_of_a_dead_writer_is_removed(tmp_path: Path) -> None:
    keyring = LocalKeyring(tmp_path / "keys" / "keyring.json")
    keyring.ensure("tenant:a")
    stale = tmp_path / "keys" / ".keyring.json.99999.1.tmp"
    stale.write_bytes(b'{"left": "by a writer killed mid-save"}')
    stale.chmod(0o600)
    keyring.rotate("tenant:a")
    assert not stale.exists()
    assert keyring.describe("tenant:a")["primary"] == 2
