"""File modes: the data dir 0700, every database, WAL, shm, key and lock file 0600, whoever creates them first.

Whatever the umask (0o022 or 0o000), a warehouse's files are private to their
owner: dwray creates them so itself instead of trusting the umask. A data dir
an older release left looser (0755, catalog.db 0644) is tightened when it is
ours, and left alone with a warning naming it when it is not.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dwray.core.access_keys import AccessKeys
from dwray.core.identity import IdentityStore
from dwray.core.private_files import tighten
from dwray.core.warehouse import Warehouse
from tests.conftest import TEST_FRAME_SIZE, make_config

# Files every warehouse that stored objects and access keys has, and must hold exactly 0600.
PRIVATE_FILES = ("catalog.db", "catalog.db-wal", "catalog.db-shm", "identity.db", "identity.db-wal",
                 "identity.db-shm", "keys/keyring.json", "keys/keyring.json.lock", "warehouse.lock")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture(params=[0o022, 0o000], ids=["umask-022", "umask-000"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def loose_modes(root: Path) -> list[str]:
    """Every folder under ``root`` (itself included) not 0700 and every file granting group or others anything."""
    found = [] if mode(root) == 0o700 else [f"{root} {mode(root):o}"]
    for folder, dirs, files in os.walk(root):
        found += [f"{Path(folder, d)} {mode(Path(folder, d)):o}" for d in dirs if mode(Path(folder, d)) != 0o700]
        found += [f"{Path(folder, f)} {mode(Path(folder, f)):o}" for f in files if mode(Path(folder, f)) & 0o077]
    return found


def use_warehouse(wh: Any, identity: IdentityStore | None, bucket: str = "modes") -> None:
    """Touch every kind of file a warehouse makes: catalog, blobs, keyring, identity."""
    wh.create_bucket(bucket)
    wh.put(bucket, "small", b"x" * 100)
    wh.put(bucket, "frames", os.urandom(5 * TEST_FRAME_SIZE))
    upload = wh.create_multipart_upload(bucket, "multi").upload_id
    etag = wh.upload_part(bucket, "multi", upload, 1, os.urandom(TEST_FRAME_SIZE)).etag
    wh.complete_multipart_upload(bucket, "multi", upload, [(1, etag)])
    wh.rotate_keys()
    if identity is not None:
        identity.create_tenant("acme")
        AccessKeys(identity, wh.keyring).create("acme")


def test_every_file_of_a_warehouse_is_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    data_dir = tmp_path / "a" / "data"  # its parent is made by the warehouse too
    with Warehouse(make_config(data_dir)) as wh:
        identity = IdentityStore(wh.config.identity_path)
        try:
            use_warehouse(wh, identity)
            # While both databases are open, so their -wal and -shm exist.
            for name in PRIVATE_FILES:
                assert mode(data_dir / name) == 0o600, f"{name} is {mode(data_dir / name):o} under umask {umask:o}"
            assert mode(data_dir) == 0o700
            assert loose_modes(data_dir) == []
        finally:
            identity.close()
        master_key = Path(wh.keyring.master_ref.removeprefix("secret://file/"))
        blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
        assert blobs and all(mode(p) == 0o400 for p in blobs)
    assert loose_modes(data_dir) == []
    assert mode(master_key) == 0o600 and mode(master_key.parent) == 0o700


def test_a_data_dir_left_loose_by_an_older_release_is_tightened(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    previous = os.umask(0o022)
    try:
        # What releases before this one left: a 0755 data dir, 0644 databases with their WAL and shm.
        data_dir.mkdir(mode=0o755)
        (data_dir / "blobs").mkdir(mode=0o750)
        kept_open = []
        for name in ("catalog.db", "identity.db"):
            db = sqlite3.connect(data_dir / name)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS leftover (x)")
            kept_open.append(sqlite3.connect(data_dir / name))  # the WAL and shm stay while one is open
            kept_open[-1].execute("SELECT * FROM leftover").fetchall()
            db.close()
            assert mode(data_dir / name) == mode(data_dir / f"{name}-wal") == mode(data_dir / f"{name}-shm") == 0o644
        # The old catalog has no schema version: let the warehouse make its own.
        kept_open[0].execute("DROP TABLE leftover")
        with Warehouse(make_config(data_dir)) as wh:
            identity = IdentityStore(wh.config.identity_path)
            try:
                use_warehouse(wh, identity)
                for name in ("catalog.db", "identity.db"):
                    for file in (name, f"{name}-wal", f"{name}-shm"):
                        assert mode(data_dir / file) == 0o600, file
            finally:
                identity.close()
        for db in kept_open:
            db.close()
    finally:
        os.umask(previous)
    assert mode(data_dir) == 0o700 and mode(data_dir / "blobs") == 0o700
    assert loose_modes(data_dir) == []


def test_a_loose_folder_someone_else_owns_is_left_alone_with_a_warning(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    if os.geteuid() == 0:
        target = tmp_path / "theirs"
        target.mkdir(mode=0o755)
        os.chown(target, 65534, 65534)  # nobody's
    else:
        target = Path("/")  # root's, and beyond this process's reach
    before = mode(target)
    assert before & 0o077
    with caplog.at_level(logging.WARNING, logger="dwray.core.private_files"):
        tighten(target, 0o700, "data dir")
    assert mode(target) == before
    assert f"data dir {target} is mode {before:o} and owned by uid" in caplog.text
    assert f"chmod 700 {target}" in caplog.text


def test_the_ray_warehouses_data_dir_is_private(ray_warehouse: Any) -> None:
    """The plugins on Ray (catalog, identity, KMS, storage actors) create their files as privately."""
    tenant = f"t{uuid.uuid4().hex[:12]}"
    use_warehouse(ray_warehouse.for_test(tenant, "actors"), None, bucket=f"modes-{tenant}")
    data_dir = ray_warehouse.config.data_dir
    for name in PRIVATE_FILES:
        assert mode(data_dir / name) == 0o600, name
    assert loose_modes(data_dir) == []
