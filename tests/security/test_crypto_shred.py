"""Crypto-shredding: after ``shred_tenant`` no byte of the tenant's data decrypts, with the whole machine.

The attacker here has everything: a raw copy of the tenant's blobs and of the
catalog's key headers taken before the shred, the data dir after it, and the
master key (so every KEK still in the keyring, in the clear). The test tries to
recover each of the tenant's data keys with every KEK version left (through
the keyring, and by hand with each KEK's raw material and its derived wrapping
keys), and to decrypt the blobs with whatever it recovers: nothing. The same
attack, run before the shred, recovers every key and decrypts every blob, so
the test would fail if the shred left the key behind. Other tenants' data
still reads. In process, on the real local disk backend and the sealed local
keyring (the Vault Transit keyring's ``destroy`` is tested against OpenBao
with its other tests).
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap_with_padding

from dwray.core.access_keys import AccessKeys
from dwray.core.data_keys import BUCKET_KEY_SIZE, derive_dek
from dwray.core.frames import FORMAT_DERIVED_DEK, FrameOpener, FrameTable, KeyHeader, ObjectIdentity
from dwray.core.identity import IdentityStore, TenantShredded
from dwray.core.keyring import LocalKeyring
from dwray.core.keyring_file import Kek
from dwray.core.warehouse import Warehouse
from dwray.core.warehouse.tenants import ShredReport, TenantHasBuckets, shred_tenant
from dwray.errors import DwrayError, InvalidArgument, KeyShredded, TenantNotFound
from tests.conftest import TEST_FRAME_SIZE, make_config

DOOMED, KEEPER = "doomed", "keeper"


@dataclass(frozen=True)
class SealedBlob:
    """One sealed blob as an attacker copied it: its bytes, its key header and frame table, whose object it is."""

    identity: ObjectIdentity | None  # None for multipart pieces (their frames are bound to the part)
    header: bytes
    frame_table: bytes
    blob: bytes


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[tuple[Warehouse, IdentityStore]]:
    config = make_config(tmp_path / "data")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"min_part_size": 1024})})
    identity = IdentityStore(config.identity_path)
    try:
        with Warehouse(config) as warehouse:
            yield warehouse, identity
    finally:
        identity.close()


def fill(wh: Warehouse, identity: IdentityStore) -> dict[tuple[str, str], bytes]:
    """Two tenants with data in every form: single- and multi-frame objects, two KEK versions,
    noncurrent versions, a delete marker, a completed multipart object and an upload in progress."""
    keys = AccessKeys(identity, wh.keyring)
    written: dict[tuple[str, str], bytes] = {}
    for tenant in (DOOMED, KEEPER):
        identity.create_tenant(tenant)
        keys.create(tenant)
    wh.create_bucket("doomed-plain", tenant=DOOMED)
    wh.create_bucket("doomed-versions", versioning=True, tenant=DOOMED)
    for key, data in (("small", b"doomed small object"), ("frames", os.urandom(3 * TEST_FRAME_SIZE + 17))):
        wh.put("doomed-plain", key, data, tenant=DOOMED)
        written[("doomed-plain", key)] = data
    wh.rotate_keys(tenant=DOOMED)  # a second KEK version: every version must go
    wh.put("doomed-plain", "after-rotation", b"wrapped under version 2", tenant=DOOMED)
    written[("doomed-plain", "after-rotation")] = b"wrapped under version 2"
    wh.put("doomed-versions", "history", b"old version", tenant=DOOMED)
    wh.put("doomed-versions", "history", b"new version", tenant=DOOMED)
    wh.delete("doomed-versions", "history", tenant=DOOMED)  # a delete marker over both
    upload = wh.create_multipart_upload("doomed-plain", "multi", tenant=DOOMED)
    parts = [wh.upload_part("doomed-plain", "multi", upload.upload_id, n, os.urandom(2048), tenant=DOOMED)
             for n in (1, 2)]
    wh.complete_multipart_upload("doomed-plain", "multi", upload.upload_id,
                                 [(p.part_number, p.etag) for p in parts], tenant=DOOMED)
    pending = wh.create_multipart_upload("doomed-versions", "pending", tenant=DOOMED)
    wh.upload_part("doomed-versions", "pending", pending.upload_id, 1, b"part in progress", tenant=DOOMED)
    wh.create_bucket("keeper-data", tenant=KEEPER)
    wh.put("keeper-data", "kept", b"the keeper's data", tenant=KEEPER)
    return written


def copy_sealed(wh: Warehouse, tenant: str) -> list[SealedBlob]:
    """What an attacker copies: every blob of ``tenant`` with the catalog's key header and frame table for it."""
    root = wh.storage_path()
    assert root is not None
    sealed = []
    with sqlite3.connect(wh.config.catalog_path) as db:
        rows = db.execute("SELECT bucket, key, version_id, blob_id, key_header, frame_table, inline_data FROM objects "
                          "WHERE tenant = ? AND blob_id IS NOT NULL", (tenant,)).fetchall()
        for bucket, key, version, blob_id, header, table, inline in rows:
            # A small object's sealed records are in its row (inline), a larger one's in its blob.
            sealed.append(SealedBlob(ObjectIdentity(tenant, bucket, key, version), header, table,
                                     inline if inline is not None else (root / blob_id).read_bytes()))
        pieces = db.execute(
            "SELECT blob_id, key_header, frame_table FROM object_segments WHERE tenant = ? UNION ALL "
            "SELECT p.blob_id, p.key_header, p.frame_table FROM multipart_parts p "
            "JOIN multipart_uploads u ON u.upload_id = p.upload_id WHERE u.tenant = ?", (tenant, tenant)).fetchall()
        for blob_id, header, table in pieces:
            sealed.append(SealedBlob(None, header, table, (root / blob_id).read_bytes()))
    return sealed


def recover_deks(keyring: LocalKeyring, header: KeyHeader) -> list[bytes]:
    """Every DEK the attacker can get out of ``header``'s wrapped DEK (or, in version 2, wrapped
    bucket key and DEK salt) with the keyring as it is now.

    Through the keyring, under the header's own KEK id and every (id, version)
    left; and by hand, with each KEK version's raw material: as the KWP key, as
    the AES-GCM key of the earlier wrap format, and through the wrapping-key
    derivation for the header's KEK id and version and for its own.
    """
    found = []
    attempts = [(header.kek_id, header.kek_version)]
    for kek_id in keyring.kek_ids():
        attempts += [(kek_id, version) for version in keyring.describe(kek_id)["versions"]]
    for kek_id, version in attempts:
        try:
            found.append(keyring.unwrap(kek_id, version, header.wrapped_dek))
        except DwrayError:
            pass
    for kek_id, kek in keyring._state.keks.items():
        for version, material in kek.versions.items():
            one = Kek({version: material}, version, version)
            candidates = [material, one.wrapping_key(kek_id, version)]
            candidates.append(Kek({header.kek_version: material}, header.kek_version, header.kek_version)
                              .wrapping_key(header.kek_id, header.kek_version))
            for key in candidates:
                try:
                    found.append(aes_key_unwrap_with_padding(key, header.wrapped_dek))
                except (InvalidUnwrap, ValueError):
                    pass
            wrapped = header.wrapped_dek
            if len(wrapped) > 12:
                try:
                    found.append(AESGCM(material).decrypt(wrapped[:12], wrapped[12:], None))
                except InvalidTag:
                    pass
    if header.format_version == FORMAT_DERIVED_DEK:
        return [derive_dek(key, header.dek_salt) for key in found if len(key) == BUCKET_KEY_SIZE]
    return found


def decrypts(blob: SealedBlob, deks: list[bytes]) -> bool:
    """Whether any of ``deks`` opens the blob's first frame (objects; multipart pieces: whether any DEK exists)."""
    if blob.identity is None:
        return bool(deks)
    header, table = KeyHeader.from_bytes(blob.header), FrameTable.from_bytes(blob.frame_table)
    start, end = table.record_range(0)
    for dek in deks:
        opener = FrameOpener(blob.identity, dek, header.nonce_prefix, frame_size=header.frame_size)
        try:
            opener.open(0, blob.blob[start:end], len(table) == 1)
            return True
        except DwrayError:
            pass
    return False


def reopen_keyring(wh: Warehouse) -> LocalKeyring:
    """The keyring as anyone with the data dir and the master key opens it: from the file."""
    return LocalKeyring(wh.config.keyring_path, wh.config.master_key_ref, create_master=False)


def test_a_shredded_tenants_data_decrypts_under_no_key_left(machine: tuple[Warehouse, IdentityStore]) -> None:
    wh, identity = machine
    written = fill(wh, identity)
    copied = copy_sealed(wh, DOOMED)
    assert len(copied) == 8  # 3 objects, 2 versions of another, 2 segments of the multipart one, 1 pending part
    headers = [KeyHeader.from_bytes(blob.header) for blob in copied]
    assert {(h.kek_id, h.kek_version) for h in headers} == {("tenant:doomed", 1), ("tenant:doomed", 2)}

    # The attack works while the key exists: every DEK comes back and every object's frames open.
    before = reopen_keyring(wh)
    for blob, header in zip(copied, headers):
        assert decrypts(blob, recover_deks(before, header)), "the attack must work before the shred"
    small = next(b for b in copied if b.identity and b.identity.key == "small")
    [dek] = {*recover_deks(before, KeyHeader.from_bytes(small.header))}
    table = FrameTable.from_bytes(small.frame_table)
    opener = FrameOpener(small.identity, dek, KeyHeader.from_bytes(small.header).nonce_prefix,  # type: ignore[arg-type]
                         frame_size=TEST_FRAME_SIZE)
    assert opener.open(0, small.blob[slice(*table.record_range(0))], True) == written[("doomed-plain", "small")]

    report = shred_tenant(wh, identity, DOOMED, force=True)
    # 7 object versions (small, frames, after-rotation, multi, history twice and its delete marker), 4 blobs
    # (frames, 2 segments, the pending part): the 4 small versions were inline, in their rows.
    assert report == ShredReport(DOOMED, "tenant:doomed", [1, 2], 1, ["doomed-plain", "doomed-versions"], 7, 4)

    # With the full machine state after the shred: no DEK comes back, no blob opens.
    after = reopen_keyring(wh)
    assert "tenant:doomed" not in after.kek_ids() and after.kek_ids()  # other KEKs are there to try
    for blob, header in zip(copied, headers):
        assert recover_deks(after, header) == []
        assert not decrypts(blob, recover_deks(after, header))
        with pytest.raises(KeyShredded, match="tenant:doomed"):
            after.unwrap(header.kek_id, header.kek_version, header.wrapped_dek)
    with pytest.raises(KeyShredded):
        after.ensure("tenant:doomed")  # the key never comes back, not even empty

    # Nothing of the tenant is left to find, and the others are untouched.
    assert wh.list_buckets(tenant=DOOMED) == [] and wh.stats(tenant=DOOMED)["objects"] == 0
    root = wh.storage_path()
    assert root is not None and not any(p.is_file() for p in (root / DOOMED).rglob("*"))
    assert wh.get("keeper-data", "kept", tenant=KEEPER) == b"the keeper's data"
    with pytest.raises(TenantNotFound):
        identity.get_tenant(DOOMED)
    assert [k.tenant for k in identity.list_access_keys(include_revoked=True)] == [KEEPER]
    with pytest.raises(TenantShredded):
        identity.create_tenant(DOOMED)


def test_a_tenant_with_buckets_is_shredded_only_when_forced(machine: tuple[Warehouse, IdentityStore]) -> None:
    wh, identity = machine
    fill(wh, identity)
    with pytest.raises(TenantHasBuckets, match="owns 2 bucket\\(s\\) \\('doomed-plain', 'doomed-versions'\\)"):
        shred_tenant(wh, identity, DOOMED)
    # Refused before anything changed.
    assert identity.get_tenant(DOOMED).name == DOOMED and len(identity.list_access_keys(DOOMED)) == 1
    assert wh.get("doomed-plain", "small", tenant=DOOMED) == b"doomed small object"
    assert wh.keyring.describe("tenant:doomed")["versions"] == [1, 2]


def test_a_tenant_without_buckets_needs_no_force(machine: tuple[Warehouse, IdentityStore]) -> None:
    wh, identity = machine
    identity.create_tenant("empty")
    wh.create_bucket("brief", tenant="empty")
    wh.put("brief", "x", b"written once", tenant="empty")
    wh.delete("brief", "x", tenant="empty")
    wh.delete_bucket("brief", tenant="empty")
    report = shred_tenant(wh, identity, "empty")
    assert (report.kek_versions_destroyed, report.buckets_removed, report.object_versions_removed) == ([1], [], 0)
    # A tenant that never stored anything has no KEK: the shred destroys nothing, and says so.
    identity.create_tenant("idle")
    assert shred_tenant(wh, identity, "idle").kek_versions_destroyed == []


def test_an_interrupted_shred_finishes_when_run_again(machine: tuple[Warehouse, IdentityStore]) -> None:
    wh, identity = machine
    fill(wh, identity)
    identity.shred_tenant(DOOMED)  # the run stopped right after removing the tenant
    assert wh.keyring.describe("tenant:doomed")["versions"] == [1, 2]
    report = shred_tenant(wh, identity, DOOMED)  # no force needed: the tenant is already gone
    assert report.kek_versions_destroyed == [1, 2] and report.object_versions_removed == 7
    assert report.access_keys_removed == 0  # removed by the first run
    again = shred_tenant(wh, identity, DOOMED)
    assert (again.kek_versions_destroyed, again.buckets_removed, again.blobs_deleted) == ([], [], 0)


def test_what_cannot_be_shredded(machine: tuple[Warehouse, IdentityStore]) -> None:
    wh, identity = machine
    identity.create_tenant(wh.config.default_tenant)
    with pytest.raises(InvalidArgument, match="default tenant"):
        shred_tenant(wh, identity, wh.config.default_tenant, force=True)
    with pytest.raises(TenantNotFound, match="'ghost'"):
        shred_tenant(wh, identity, "ghost", force=True)
    with pytest.raises(InvalidArgument, match="invalid tenant name"):
        shred_tenant(wh, identity, "Not A Tenant", force=True)
    assert identity.get_tenant(wh.config.default_tenant).name == wh.config.default_tenant
