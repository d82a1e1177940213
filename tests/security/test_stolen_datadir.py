"""A stolen data dir decrypts nothing: the master key that seals the keyring is not in it.

A warehouse stores objects and access keys, then its data dir is copied to a
"machine" without the master key (``XDG_CONFIG_HOME`` pointed elsewhere).
Opening the copy fails at once with ``MasterKeyMissing`` naming the missing
key file (never a value), in process and through ``dw``; a wrong master key
is told apart from a missing one. Then every file under the data dir is
scanned, raw bytes, for every KEK (taken from the sealed keyring with the
master key), every DEK (unwrapped from the catalog's key headers), every
access-key secret, the admin token, the master key and the objects'
plaintexts, in raw, hex and base64 (and UTF-16) forms: none is there.
"""
from __future__ import annotations

import base64
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from dwray.core import keyring_file
from dwray.core.access_keys import AccessKeys
from dwray.core.frames import KeyHeader
from dwray.core.identity import IdentityStore
from dwray.core.keyring import LocalKeyring
from dwray.core.master_key import load_master_key
from dwray.core.warehouse import Warehouse
from dwray.errors import MasterKeyMissing
from tests.conftest import TEST_FRAME_SIZE, make_config
from tests.security.test_at_rest import byte_forms, canary_objects, find_in_files

ROOT = Path(__file__).resolve().parents[2]


def key_headers(data_dir: Path) -> list[KeyHeader]:
    """Every key header the catalog holds: objects, their older versions, parts and segments."""
    db = sqlite3.connect(f"file:{data_dir / 'catalog.db'}?mode=ro", uri=True)
    try:
        rows = [row[0] for table in ("objects", "multipart_parts", "object_segments")
                for row in db.execute(f"SELECT key_header FROM {table} WHERE key_header IS NOT NULL")]
    finally:
        db.close()
    return [KeyHeader.from_bytes(bytes(raw)) for raw in rows]


def keys_of(data_dir: Path, master_ref: str) -> tuple[list[bytes], list[bytes]]:
    """``(KEKs, DEKs)`` of the data dir, recovered with its master key: what a thief would want."""
    master = load_master_key(master_ref)
    path = data_dir / "keys" / "keyring.json"
    _, state = keyring_file.decode(path, path.read_bytes(), master)
    keks = [k for kek in state.keks.values() for k in kek.versions.values()]
    keyring = LocalKeyring(path, master_ref, create_master=False)
    deks = [keyring.unwrap(h.kek_id, h.kek_version, h.wrapped_dek) for h in key_headers(data_dir)]
    return keks, deks


def fill(wh: Any, bucket: str, canary: bytes) -> dict[str, bytes]:
    """Objects in every shape (small, multi-frame, versions, multipart, rotated keys) carrying ``canary``."""
    objects = canary_objects(canary)
    wh.create_bucket(bucket, versioning=True)
    for key, data in objects.items():
        wh.put(bucket, key, data)
    wh.put(bucket, "small", b"a second version, still secret: " + canary)
    upload = wh.create_multipart_upload(bucket, "multipart").upload_id
    part = canary * (TEST_FRAME_SIZE // len(canary) + 3)
    etag = wh.upload_part(bucket, "multipart", upload, 1, part).etag
    wh.complete_multipart_upload(bucket, "multipart", upload, [(1, etag)])
    wh.rotate_keys()
    wh.put(bucket, "after-rotation", b"sealed under version 2: " + canary)
    return objects


def steal(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Copy the data dir to a machine state without the master key; ``(copy, where its key would be)``."""
    copy = tmp_path / "stolen"
    shutil.copytree(data_dir, copy, symlinks=True)
    thief_home = tmp_path / "thief-home"
    thief_home.mkdir()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(thief_home))
    monkeypatch.delenv("DWRAY_KEYS__MASTER", raising=False)
    return copy, thief_home / "dwray" / "master.key"


def assert_locked_out(copy: Path, missing_key: Path, secrets_: list[bytes]) -> None:
    """Every way in fails with ``MasterKeyMissing`` naming the missing key file, and creates no key."""
    for open_it in (lambda: Warehouse(make_config(copy)), lambda: LocalKeyring(copy / "keys" / "keyring.json")):
        with pytest.raises(MasterKeyMissing) as caught:
            open_it()
        message = str(caught.value)
        assert message.startswith(f"the master key secret://file/{missing_key} is not usable: the file "
                                  f"{missing_key} does not exist; the keyring {copy / 'keys' / 'keyring.json'} "
                                  f"is sealed under it"), message
        assert all(form.decode("latin-1") not in message for s in secrets_ for form in byte_forms(s).values())
        assert not missing_key.exists(), "a new master key was made for a sealed keyring"


def assert_nothing_in_clear(root: Path, found: dict[str, list[bytes]]) -> None:
    for kind, values in found.items():
        assert values, f"sanity: no {kind} collected"
        for n, value in enumerate(values):
            hits = find_in_files(root, value)
            assert hits == [], f"{kind} #{n} found in clear under the data dir: {hits}"


def test_a_copied_data_dir_decrypts_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "owner-home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    data_dir = tmp_path / "data"
    canary = secrets.token_hex(16).encode()
    with Warehouse(make_config(data_dir)) as wh:
        master_ref = wh.keyring.master_ref
        objects = fill(wh, "stolen-bucket", canary)
        identity = IdentityStore(wh.config.identity_path)
        try:
            identity.create_tenant("acme")
            access = AccessKeys(identity, wh.keyring)
            new_keys = [access.create("acme") for _ in range(3)]
            admin_token = access.create_admin_token("ops").token
        finally:
            identity.close()
        assert wh.get("stolen-bucket", "compressible") == objects["compressible"]  # the data is there
    keks, deks = keys_of(data_dir, master_ref)
    assert len(keks) == 3 and len(deks) >= len(objects) + 3  # tenant v1, v2 and the access-key KEK
    key_secrets = [base64.urlsafe_b64decode(k.secret_access_key + "=") for k in new_keys]
    found = {
        "KEK": keks, "DEK": deks, "master key": [load_master_key(master_ref).reveal_bytes()],
        "access-key secret": key_secrets + [k.secret_access_key.encode() for k in new_keys],
        "admin token": [admin_token.encode()], "canary": [canary],
    }

    copy, missing_key = steal(data_dir, tmp_path, monkeypatch)

    assert_locked_out(copy, missing_key, keks + deks + key_secrets)
    # Through dw as well: a clear one-line error, no traceback.
    result = subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(copy), "get",
                             "stolen-bucket/small", "-"], capture_output=True, text=True, cwd=ROOT,
                            env={k: v for k, v in os.environ.items() if not k.startswith("DWRAY_")}, timeout=120)
    assert result.returncode == 1, result
    assert f"master key secret://file/{missing_key} is not usable" in result.stderr
    assert "Traceback" not in result.stderr and canary.decode() not in result.stdout + result.stderr
    # A wrong master key is told apart from a missing one.
    monkeypatch.setenv("DWRAY_TEST_WRONG_MASTER", os.urandom(32).hex())
    with pytest.raises(MasterKeyMissing, match="secret://env/DWRAY_TEST_WRONG_MASTER is not usable: this master "
                                               "key does not open the keyring"):
        LocalKeyring(copy / "keys" / "keyring.json", "secret://env/DWRAY_TEST_WRONG_MASTER", create_master=False)

    assert_nothing_in_clear(copy, found)
    assert_nothing_in_clear(data_dir, found)
    # Positive control: the scan does find a key where it is in clear.
    (copy / "planted").write_bytes(b"..." + base64.b64encode(keks[0]) + b"...")
    assert "planted: base64+0" in find_in_files(copy, keks[0])


def test_a_copied_ray_data_dir_decrypts_nothing(ray_warehouse: Any, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for a warehouse whose key service runs on Ray (the KMS actor loads the master key itself)."""
    master_ref = ray_warehouse.config.master_key_ref  # as the driver computed it for the KMS actor
    tenant = f"t{uuid.uuid4().hex[:12]}"
    wh = ray_warehouse.for_test(tenant, "actors")
    canary = secrets.token_hex(16).encode()
    objects = fill(wh, f"stolen-{tenant}", canary)
    assert wh.get(f"stolen-{tenant}", "small") != objects["small"]  # overwritten by the second version
    data_dir = ray_warehouse.config.data_dir
    copy, missing_key = steal(data_dir, tmp_path, monkeypatch)
    keks, deks = keys_of(copy, master_ref)
    assert len(keks) >= 2 and len(deks) >= len(objects) + 2

    assert_locked_out(copy, missing_key, keks + deks)
    assert_nothing_in_clear(copy, {"KEK": keks, "DEK": deks, "canary": [canary],
                                   "master key": [load_master_key(master_ref).reveal_bytes()]})
