"""The local KEK keyring: file safety, sealing, wrapping, rotation, retirement, shredding, concurrency."""
from __future__ import annotations

import base64
import json
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from dwray.core import keyring_file
from dwray.core.keyring import LocalKeyring
from dwray.core.master_key import load_master_key
from dwray.errors import (
    DwrayError,
    IntegrityError,
    InvalidArgument,
    KeyNotFound,
    KeyRetired,
    KeyringError,
    KeyShredded,
    MasterKeyMissing,
)

KEK = "tenant:default"


@pytest.fixture
def master(tmp_path: Path) -> str:
    """A master key file of this test's own (the default one is shared by the session)."""
    return f"secret://file/{tmp_path / 'config' / 'master.key'}"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keyring.json"


@pytest.fixture
def ring(path: Path, master: str) -> LocalKeyring:
    return LocalKeyring(path, master)


def mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def sealed_entries(p: Path) -> list[str]:
    doc = json.loads(p.read_bytes())
    return [k for kek in doc["keks"].values() for k in kek.get("versions", {}).values()]


def kek_material(keyring: LocalKeyring) -> list[bytes]:
    """The KEKs in clear, as the keyring holds them in memory (what must never reach the file)."""
    keyring.kek_ids()
    return [k for kek in keyring._state.keks.values() for k in kek.versions.values()]


def forms(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), base64.b64encode(secret), base64.b64encode(secret)[:40],
            base64.urlsafe_b64encode(secret)[:40]]


def plaintext_keyring(path: Path, keks: dict[str, dict[int, bytes]]) -> None:
    """A keyring as releases before the sealing wrote it (format 1: KEKs in base64)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    doc = {"format": 1, "keks": {
        kek_id: {"primary": max(versions), "minimum": 1,
                 "versions": {str(v): base64.b64encode(k).decode() for v, k in versions.items()}}
        for kek_id, versions in keks.items()}}
    path.write_text(json.dumps(doc))
    path.chmod(0o600)


def gcm_wrap(kek: bytes, kek_id: str, version: int, dek: bytes) -> bytes:
    """A DEK wrapped as releases before the sealing did: nonce || AES-256-GCM, KEK id and version as AAD."""
    nonce = os.urandom(12)
    aad = b"dwray-kek-wrap-v1" + len(kek_id).to_bytes(4, "big") + kek_id.encode() + version.to_bytes(8, "big")
    return nonce + AESGCM(kek).encrypt(nonce, dek, aad)


def remac(path: Path, master: str, doc: dict) -> None:
    """Write ``doc`` with a valid MAC, as only a holder of the master key could."""
    doc.pop("mac", None)
    doc["mac"] = base64.b64encode(keyring_file._mac(load_master_key(master).reveal_bytes(), doc)).decode()
    path.write_text(json.dumps(doc))


# Files -------------------------------------------------------------------------

def test_file_is_created_0600_in_a_0700_folder(path: Path, master: str) -> None:
    keyring = LocalKeyring(path, master)
    assert not path.exists()
    assert keyring.ensure(KEK) == 1
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.with_name(path.name + ".lock")) == 0o600
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_every_folder_it_creates_is_0700(tmp_path: Path, master: str) -> None:
    os.chmod(tmp_path, 0o755)
    path = tmp_path / "a" / "b" / "keyring.json"
    LocalKeyring(path, master).ensure(KEK)
    assert [mode(tmp_path / "a"), mode(tmp_path / "a" / "b"), mode(path)] == [0o700, 0o700, 0o600]
    assert mode(tmp_path) == 0o755


@pytest.mark.parametrize("loose", [0o644, 0o640, 0o604, 0o660])
def test_refuses_a_file_others_can_read(path: Path, master: str, loose: int) -> None:
    LocalKeyring(path, master).ensure(KEK)
    os.chmod(path, loose)
    with pytest.raises(KeyringError, match=f"chmod 600 {path}"):
        LocalKeyring(path, master)


def test_refuses_a_file_loosened_under_a_running_keyring(ring: LocalKeyring, path: Path) -> None:
    ring.ensure(KEK)
    os.chmod(path, 0o644)
    with pytest.raises(KeyringError, match="chmod 600"):
        ring.wrap(KEK, os.urandom(32))


# Sealing -------------------------------------------------------------------------

def test_the_file_holds_kek_material_only_sealed(ring: LocalKeyring, path: Path) -> None:
    ring.ensure(KEK)
    ring.rotate(KEK)
    ring.ensure("system:access-keys")
    keks = kek_material(ring)
    assert len(keks) == 3 and len(set(keks)) == 3
    raw = path.read_bytes()
    assert json.loads(raw)["format"] == 2
    for kek in keks:
        for form in forms(kek):
            assert form not in raw
    # Sealed entries are KWP of 32 bytes (40 bytes), one per version.
    assert [len(base64.b64decode(s)) for s in sealed_entries(path)] == [40, 40, 40]


def test_a_wrong_master_key_fails_at_once_naming_the_reference(ring: LocalKeyring, path: Path,
                                                               tmp_path: Path) -> None:
    ring.ensure(KEK)
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    with pytest.raises(MasterKeyMissing, match="does not open the keyring") as caught:
        LocalKeyring(path, f"secret://file/{other}", create_master=False)
    assert str(other) in str(caught.value)
    assert other.read_bytes().hex() not in str(caught.value)


def test_a_sealed_keyring_never_gets_a_new_master_key(ring: LocalKeyring, path: Path, master: str) -> None:
    ring.ensure(KEK)
    key_file = Path(master.removeprefix("secret://file/"))
    key_file.unlink()
    # create_master is on, yet a new key could not open the keyring: refuse instead.
    with pytest.raises(MasterKeyMissing, match="does not exist.*is sealed under it: restore the key"):
        LocalKeyring(path, master, create_master=True)
    assert not key_file.exists()


def test_an_altered_file_is_refused(ring: LocalKeyring, path: Path) -> None:
    ring.ensure(KEK)
    ring.rotate(KEK)
    ring.retire_below(KEK, 2)
    doc = json.loads(path.read_bytes())
    doc["keks"][KEK]["minimum"] = 1  # un-retire version 1 without the master key
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="was altered"):
        ring.describe(KEK)


def test_sealed_keks_are_bound_to_their_id_and_version(ring: LocalKeyring, path: Path, master: str) -> None:
    ring.ensure(KEK)
    ring.rotate(KEK)
    doc = json.loads(path.read_bytes())
    versions = doc["keks"][KEK]["versions"]
    versions["1"], versions["2"] = versions["2"], versions["1"]
    remac(path, master, doc)  # even with a valid MAC, a swapped entry does not unseal
    with pytest.raises(KeyringError, match="version . does not unseal"):
        LocalKeyring(path, master)


# Wrapping ------------------------------------------------------------------------

def test_wrap_unwrap_round_trip(ring: LocalKeyring) -> None:
    ring.ensure(KEK)
    dek = os.urandom(32)
    version, wrapped = ring.wrap(KEK, dek)
    assert version == 1
    assert dek not in wrapped and len(wrapped) == 40  # AES-KWP of 32 bytes
    assert ring.unwrap(KEK, version, wrapped) == dek
    # KWP is deterministic: no nonce, so no budget of wraps per key.
    assert ring.wrap(KEK, dek)[1] == wrapped
    assert ring.wrap(KEK, os.urandom(32))[1] != wrapped


def test_unknown_kek_or_version_raises_key_not_found(ring: LocalKeyring) -> None:
    with pytest.raises(KeyNotFound):
        ring.wrap(KEK, os.urandom(32))
    ring.ensure(KEK)
    version, wrapped = ring.wrap(KEK, os.urandom(32))
    with pytest.raises(KeyNotFound, match="version 2"):
        ring.unwrap(KEK, 2, wrapped)
    with pytest.raises(KeyNotFound):
        ring.unwrap("tenant:other", version, wrapped)
    with pytest.raises(KeyNotFound):
        ring.describe("tenant:other")
    with pytest.raises(KeyNotFound):
        ring.rotate("tenant:other")


def test_bad_arguments_are_refused(ring: LocalKeyring) -> None:
    ring.ensure(KEK)
    with pytest.raises(InvalidArgument, match="32 bytes"):
        ring.wrap(KEK, b"short")
    with pytest.raises(InvalidArgument, match="KEK id"):
        ring.ensure("")
    with pytest.raises(InvalidArgument, match="KEK id"):
        ring.destroy("")


def test_ensure_is_idempotent_and_returns_the_primary(ring: LocalKeyring, path: Path) -> None:
    assert ring.ensure(KEK) == 1
    before = path.read_bytes()
    assert ring.ensure(KEK) == 1
    assert path.read_bytes() == before
    ring.rotate(KEK)
    assert ring.ensure(KEK) == 2
    assert ring.ensure("tenant:b") == 1
    assert ring.kek_ids() == ["tenant:b", KEK]


def test_rotate_changes_primary_and_old_versions_still_unwrap(ring: LocalKeyring) -> None:
    ring.ensure(KEK)
    old_dek = os.urandom(32)
    old = ring.wrap(KEK, old_dek)
    assert ring.rotate(KEK) == 2
    new_dek = os.urandom(32)
    new = ring.wrap(KEK, new_dek)
    assert new[0] == 2
    assert ring.unwrap(KEK, *old) == old_dek
    assert ring.unwrap(KEK, *new) == new_dek
    assert ring.describe(KEK) == {"kek_id": KEK, "versions": [1, 2], "primary": 2, "minimum": 1,
                                  "shredded": False}


def test_wrapped_dek_is_bound_to_its_kek_and_version(path: Path, master: str) -> None:
    # tenant:b version 1 and both versions of KEK share the very same key material:
    # only the derivation from id and version can still tell the three apart.
    shared = os.urandom(32)
    plaintext_keyring(path, {KEK: {1: shared, 2: shared}, "tenant:b": {1: shared}})
    keyring = LocalKeyring(path, master)
    dek = os.urandom(32)
    version, wrapped = keyring.wrap(KEK, dek)
    assert version == 2 and keyring.unwrap(KEK, 2, wrapped) == dek
    with pytest.raises(IntegrityError):
        keyring.unwrap("tenant:b", 1, wrapped)
    with pytest.raises(IntegrityError):
        keyring.unwrap(KEK, 1, wrapped)


def test_deks_wrapped_by_earlier_releases_still_unwrap_and_rewrap_to_kwp(path: Path, master: str) -> None:
    kek = os.urandom(32)
    plaintext_keyring(path, {KEK: {1: kek}})
    dek = os.urandom(32)
    legacy = gcm_wrap(kek, KEK, 1, dek)
    keyring = LocalKeyring(path, master)
    assert keyring.unwrap(KEK, 1, legacy) == dek
    damaged = legacy[:-1] + bytes([legacy[-1] ^ 1])
    with pytest.raises(IntegrityError, match="authentication failed"):
        keyring.unwrap(KEK, 1, damaged)
    version, moved = keyring.rewrap(KEK, 1, legacy)
    assert version == 1 and len(moved) == 40
    assert keyring.unwrap(KEK, version, moved) == dek


def test_rewrap_moves_a_dek_to_the_primary(ring: LocalKeyring) -> None:
    ring.ensure(KEK)
    dek = os.urandom(32)
    old = ring.wrap(KEK, dek)
    ring.rotate(KEK)
    ring.rotate(KEK)
    version, wrapped = ring.rewrap(KEK, *old)
    assert version == 3 and wrapped != old[1]
    ring.retire_below(KEK, 3)
    assert ring.unwrap(KEK, version, wrapped) == dek
    with pytest.raises(KeyRetired):
        ring.rewrap(KEK, *old)
    with pytest.raises(IntegrityError):
        ring.rewrap(KEK, version, wrapped[:-1] + bytes([wrapped[-1] ^ 1]))


def test_retire_below_makes_old_versions_retired(ring: LocalKeyring, path: Path, master: str) -> None:
    ring.ensure(KEK)
    v1 = ring.wrap(KEK, os.urandom(32))
    ring.rotate(KEK)
    v2_dek = os.urandom(32)
    v2 = ring.wrap(KEK, v2_dek)
    ring.retire_below(KEK, 2)
    with pytest.raises(KeyRetired, match="minimum decryption version is 2"):
        ring.unwrap(KEK, *v1)
    assert ring.unwrap(KEK, *v2) == v2_dek
    assert ring.describe(KEK)["minimum"] == 2
    # Another process sees the retirement.
    with pytest.raises(KeyRetired):
        LocalKeyring(path, master).unwrap(KEK, *v1)


def test_retire_cannot_pass_the_primary(ring: LocalKeyring) -> None:
    ring.ensure(KEK)
    ring.rotate(KEK)
    for minimum in (3, 0, -1):
        with pytest.raises(InvalidArgument, match="must be 1..2"):
            ring.retire_below(KEK, minimum)
    assert ring.describe(KEK)["minimum"] == 1


def test_tampered_wrapped_dek_raises_integrity_error(ring: LocalKeyring) -> None:
    ring.ensure(KEK)
    version, wrapped = ring.wrap(KEK, os.urandom(32))
    for position in (0, 7, 8, 20, len(wrapped) - 1):
        damaged = bytearray(wrapped)
        damaged[position] ^= 0x01
        with pytest.raises(IntegrityError, match="authentication failed"):
            ring.unwrap(KEK, version, bytes(damaged))
    for damaged in (wrapped[:-1], wrapped + b"\x00", b""):
        with pytest.raises(IntegrityError, match="wrapped DEK is"):
            ring.unwrap(KEK, version, damaged)


# Shredding -----------------------------------------------------------------------

def test_destroy_shreds_every_version_and_leaves_a_tombstone(ring: LocalKeyring, path: Path, master: str) -> None:
    ring.ensure(KEK)
    ring.ensure("tenant:keep")
    kept_dek = os.urandom(32)
    kept = ring.wrap("tenant:keep", kept_dek)
    wrapped = [ring.wrap(KEK, os.urandom(32))]
    ring.rotate(KEK)
    wrapped.append(ring.wrap(KEK, os.urandom(32)))
    doomed = [k for k in kek_material(ring) if k not in kek_material_of(ring, "tenant:keep")]
    sealed_before = json.loads(path.read_bytes())["keks"][KEK]["versions"]
    # A temp file a dead writer left (say, a copy of the keyring) goes too.
    stale = path.with_name(f".{path.name}.99999.1.tmp")
    stale.write_bytes(path.read_bytes())
    stale.chmod(0o600)

    ring.destroy(KEK)

    assert not stale.exists()
    doc = json.loads(path.read_bytes())
    assert doc["keks"][KEK] == {"shredded": True}
    raw = path.read_bytes()
    assert all(s.encode() not in raw for s in sealed_before.values())
    assert all(form not in raw for kek in doomed for form in forms(kek))
    for keyring in (ring, LocalKeyring(path, master)):  # this instance and another process alike
        for version, blob in wrapped:
            with pytest.raises(KeyShredded, match="crypto-shredded"):
                keyring.unwrap(KEK, version, blob)
        for call in (lambda k=keyring: k.wrap(KEK, os.urandom(32)), lambda k=keyring: k.rotate(KEK),
                     lambda k=keyring: k.retire_below(KEK, 1), lambda k=keyring: k.ensure(KEK),
                     lambda k=keyring: k.rewrap(KEK, *wrapped[0])):
            with pytest.raises(KeyShredded):
                call()
        assert keyring.describe(KEK) == {"kek_id": KEK, "versions": [], "primary": None, "minimum": None,
                                         "shredded": True}
        assert keyring.kek_ids() == ["tenant:keep"]
        assert keyring.unwrap("tenant:keep", *kept) == kept_dek
    ring.destroy(KEK)  # again: nothing changes
    assert json.loads(path.read_bytes())["keks"][KEK] == {"shredded": True}


def kek_material_of(keyring: LocalKeyring, kek_id: str) -> list[bytes]:
    return list(keyring._state.keks[kek_id].versions.values())


def test_destroying_an_unknown_id_leaves_a_tombstone(ring: LocalKeyring) -> None:
    ring.destroy("tenant:never")
    with pytest.raises(KeyShredded):
        ring.ensure("tenant:never")
    assert ring.describe("tenant:never")["shredded"] is True


def test_a_tombstone_cannot_be_removed_without_the_master_key(ring: LocalKeyring, path: Path) -> None:
    ring.ensure(KEK)
    ring.destroy(KEK)
    doc = json.loads(path.read_bytes())
    del doc["keks"][KEK]
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="was altered"):
        ring.ensure(KEK)


# Processes and failures -----------------------------------------------------------

def test_keys_persist_across_instances(ring: LocalKeyring, path: Path, master: str) -> None:
    ring.ensure(KEK)
    dek1 = os.urandom(32)
    wrapped1 = ring.wrap(KEK, dek1)
    ring.rotate(KEK)
    dek2 = os.urandom(32)
    wrapped2 = ring.wrap(KEK, dek2)

    second = LocalKeyring(path, master)
    assert second.unwrap(KEK, *wrapped1) == dek1
    assert second.unwrap(KEK, *wrapped2) == dek2
    assert second.describe(KEK) == ring.describe(KEK)


def test_an_instance_sees_rotations_made_by_another(path: Path, master: str) -> None:
    mine, theirs = LocalKeyring(path, master), LocalKeyring(path, master)
    mine.ensure(KEK)
    assert theirs.rotate(KEK) == 2
    dek = os.urandom(32)
    wrapped = theirs.wrap(KEK, dek)
    assert mine.wrap(KEK, os.urandom(32))[0] == 2
    assert mine.unwrap(KEK, *wrapped) == dek
    assert mine.rotate(KEK) == 3


def test_a_failed_write_changes_nothing(ring: LocalKeyring, path: Path) -> None:
    ring.ensure(KEK)
    before = path.read_bytes()
    # Occupy the temp file's name so the atomic write cannot start.
    blocker = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    blocker.mkdir()
    with pytest.raises(KeyringError, match="could not write keyring"):
        ring.rotate(KEK)
    with pytest.raises(KeyringError, match="could not write keyring"):
        ring.ensure("tenant:new")
    with pytest.raises(KeyringError, match="could not write keyring"):
        ring.destroy(KEK)
    assert path.read_bytes() == before
    assert ring.describe(KEK)["versions"] == [1]
    assert ring.wrap(KEK, os.urandom(32))[0] == 1
    assert ring.kek_ids() == [KEK]
    blocker.rmdir()
    assert ring.rotate(KEK) == 2


def test_concurrent_rotations_yield_distinct_versions(path: Path, master: str) -> None:
    LocalKeyring(path, master).ensure(KEK)
    # Several instances stand in for processes: each has its own in-memory
    # state and thread lock, so only the file lock keeps them apart.
    keyrings = [LocalKeyring(path, master) for _ in range(4)]
    start = threading.Barrier(8)

    def rotate(i: int) -> list[int]:
        start.wait()
        return [keyrings[i % 4].rotate(KEK) for _ in range(5)]

    with ThreadPoolExecutor(8) as pool:
        versions = [v for batch in pool.map(rotate, range(8)) for v in batch]
    assert sorted(versions) == list(range(2, 42))
    reader = LocalKeyring(path, master)
    described = reader.describe(KEK)
    assert described["versions"] == list(range(1, 42)) and described["primary"] == 41
    assert len(set(sealed_entries(path))) == 41
    assert len(set(kek_material(reader))) == 41


def test_malformed_file_is_a_keyring_error_without_contents(ring: LocalKeyring, path: Path, master: str) -> None:
    ring.ensure(KEK)
    sealed = sealed_entries(path)[0]
    doc = json.loads(path.read_bytes())
    doc["keks"][KEK]["versions"]["1"] = sealed + "!"
    remac(path, master, doc)
    with pytest.raises(KeyringError, match="malformed") as caught:
        LocalKeyring(path, master)
    assert sealed not in str(caught.value)
    path.write_text("{not json")
    with pytest.raises(KeyringError, match="malformed"):
        LocalKeyring(path, master)
    path.write_text(json.dumps({"format": 99, "keks": {}}))
    with pytest.raises(KeyringError, match="unsupported format"):
        LocalKeyring(path, master)


def test_no_key_material_in_repr_describe_or_errors(ring: LocalKeyring, path: Path, master: str) -> None:
    ring.ensure(KEK)
    ring.rotate(KEK)
    dek = os.urandom(32)
    version, wrapped = ring.wrap(KEK, dek)
    ring.retire_below(KEK, 2)
    ring.ensure("tenant:gone")
    ring.destroy("tenant:gone")
    texts = [repr(ring), str(ring), json.dumps(ring.describe(KEK)), repr(ring.describe(KEK)),
             repr(ring._state), repr(ring._master)]
    for call in (
        lambda: ring.unwrap(KEK, 1, wrapped),
        lambda: ring.unwrap(KEK, version, wrapped[:-1] + bytes([wrapped[-1] ^ 1])),
        lambda: ring.unwrap(KEK, 9, wrapped),
        lambda: ring.unwrap("tenant:gone", 1, wrapped),
    ):
        with pytest.raises(DwrayError) as caught:
            call()
        texts += [str(caught.value), repr(caught.value)]
    assert repr(ring) == f"LocalKeyring({str(path)!r})"
    secrets = kek_material(ring) + [dek, load_master_key(master).reveal_bytes()]
    assert len(secrets) == 4
    for text in texts:
        for secret in secrets:
            for form in (secret.hex(), repr(secret), base64.b64encode(secret).decode()):
                assert form not in text


def test_stale_temp_file_of_a_dead_writer_is_removed(tmp_path: Path, master: str) -> None:
    path = tmp_path / "keys" / "keyring.json"
    keyring = LocalKeyring(path, master)
    keyring.ensure("tenant:a")
    stale = tmp_path / "keys" / ".keyring.json.99999.1.tmp"
    stale.write_bytes(b'{"left": "by a writer killed mid-save"}')
    stale.chmod(0o600)
    keyring.rotate("tenant:a")
    assert not stale.exists()
    assert keyring.describe("tenant:a")["primary"] == 2
    # Opening removes them too, before any write.
    stale.write_bytes(b'{"left": "by a writer killed mid-save"}')
    LocalKeyring(path, master)
    assert not stale.exists()


def test_default_master_key_is_the_xdg_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    keyring = LocalKeyring(tmp_path / "keys" / "keyring.json")
    keyring.ensure(KEK)
    key_file = tmp_path / "xdg" / "dwray" / "master.key"
    assert keyring.master_ref == f"secret://file/{key_file}"
    assert len(base64.b64decode(key_file.read_bytes())) == 32
    assert mode(key_file) == 0o600 and mode(key_file.parent) == 0o700


# Migration ------------------------------------------------------------------------

def test_a_plaintext_keyring_is_sealed_in_place_on_first_open(path: Path, master: str) -> None:
    keks = {KEK: {1: os.urandom(32), 2: os.urandom(32)}, "system:access-keys": {1: os.urandom(32)}}
    plaintext_keyring(path, keks)
    deks = {(kek_id, v): os.urandom(32) for kek_id, versions in keks.items() for v in versions}
    legacy = {where: gcm_wrap(keks[where[0]][where[1]], *where, dek) for where, dek in deks.items()}
    # A temp file an old writer left when it died: a plaintext copy of the keyring.
    stale = path.with_name(f".{path.name}.4242.7.tmp")
    stale.write_bytes(path.read_bytes())
    stale.chmod(0o600)

    keyring = LocalKeyring(path, master)

    assert json.loads(path.read_bytes())["format"] == 2
    assert mode(path) == 0o600
    everything = b"".join(p.read_bytes() for p in path.parent.iterdir() if p.is_file())
    for versions in keks.values():
        for kek in versions.values():
            assert all(form not in everything for form in forms(kek))
    assert sorted(p.name for p in path.parent.iterdir()) == ["keyring.json", "keyring.json.lock"]
    for (kek_id, version), wrapped in legacy.items():
        assert keyring.unwrap(kek_id, version, wrapped) == deks[(kek_id, version)]
    assert keyring.describe(KEK) == {"kek_id": KEK, "versions": [1, 2], "primary": 2, "minimum": 1,
                                     "shredded": False}
    sealed = path.read_bytes()
    LocalKeyring(path, master)  # a sealed keyring is not written again on open
    assert path.read_bytes() == sealed
