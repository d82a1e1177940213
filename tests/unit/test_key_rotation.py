"""KEK rotation, rewrap (batched, resumable, with progress) and retirement on the local keyring.

The same maintenance runs against Vault Transit in ``tests/integration/test_kms_transit.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dwray.core.catalog import Catalog, WrappedKey
from dwray.core.frames import KeyHeader
from dwray.core.keyring import LocalKeyring
from dwray.core.warehouse import Warehouse
from dwray.errors import InvalidArgument, KeyRetired, KeyringError, KeyShredded
from tests.conftest import TEST_FRAME_SIZE, make_config

MIN_PART = 2 * TEST_FRAME_SIZE


@pytest.fixture
def wh(tmp_path: Path) -> Iterator[Warehouse]:
    config = make_config(tmp_path / "data")
    config = config.model_copy(update={"limits": config.limits.model_copy(update={"min_part_size": MIN_PART})})
    with Warehouse(config) as warehouse:
        yield warehouse


def key_headers(wh: Warehouse, tenant: str = "default") -> list[KeyHeader]:
    rows = wh.catalog.wrapped_below_page(f"tenant:{tenant}", 2**31, limit=100_000)
    return [KeyHeader.from_bytes(row.key_header if isinstance(row, WrappedKey) else row.placement.key_header)
            for row in rows]


def blobs(wh: Warehouse) -> dict[str, bytes]:
    return {blob_id: wh.backend.get_blob(blob_id) for blob_id in wh.backend.list_blobs("")}


def fill(wh: Warehouse) -> dict[str, bytes]:
    """Three objects, a two-part multipart object and an upload in progress: six DEKs."""
    wh.create_bucket("bkt")
    objects = {f"k{n}": os.urandom(1000 + n) for n in range(3)}
    for key, data in objects.items():
        wh.put("bkt", key, data)
    parts = [os.urandom(MIN_PART), os.urandom(10)]
    upload = wh.create_multipart_upload("bkt", "multi")
    etags = [(n, wh.upload_part("bkt", "multi", upload.upload_id, n, data).etag)
             for n, data in enumerate(parts, start=1)]
    wh.complete_multipart_upload("bkt", "multi", upload.upload_id, etags)
    objects["multi"] = b"".join(parts)
    pending = wh.create_multipart_upload("bkt", "pending")
    wh.upload_part("bkt", "pending", pending.upload_id, 1, os.urandom(MIN_PART))
    return objects


def test_rewrap_moves_every_dek_in_batches_touching_no_data(wh: Warehouse) -> None:
    objects = fill(wh)
    assert len(key_headers(wh)) == 6
    assert wh.rotate_keys() == 2
    before = blobs(wh)
    seen: list[tuple[int, int]] = []
    assert wh.rewrap(batch=4, progress=lambda done, total: seen.append((done, total))) == 6
    assert seen == [(0, 6), (4, 6), (6, 6)]
    assert {h.kek_version for h in key_headers(wh)} == {2}
    assert blobs(wh) == before
    assert {key: wh.get("bkt", key) for key in objects} == objects
    assert wh.rewrap(progress=lambda done, total: seen.append((done, total))) == 0
    assert seen[-1] == (0, 0)


def test_an_interrupted_rewrap_continues_where_it_stopped(wh: Warehouse) -> None:
    objects = fill(wh)
    wh.rotate_keys()

    def interrupt(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        wh.rewrap(batch=4, progress=interrupt)
    assert sorted(h.kek_version for h in key_headers(wh)) == [1, 1, 2, 2, 2, 2]
    assert wh.rewrap(batch=4) == 2
    assert {h.kek_version for h in key_headers(wh)} == {2}
    assert {key: wh.get("bkt", key) for key in objects} == objects


def test_retire_reports_what_each_older_version_still_wraps(wh: Warehouse) -> None:
    wh.create_bucket("bkt")
    wh.put("bkt", "a", b"version one")
    old = key_headers(wh)[0]
    wh.rotate_keys()
    wh.put("bkt", "b", b"version two")
    wh.put("bkt", "c", b"version two again")
    wh.rotate_keys()
    wh.put("bkt", "d", b"version three")
    assert wh.wrapped_by_version(3) == {1: 1, 2: 2}
    assert wh.wrapped_by_version(4) == {1: 1, 2: 2, 3: 1}
    assert wh.wrapped_by_version(1) == {}
    with pytest.raises(KeyringError, match=r"3 object\(s\).*\(1 under version 1, 2 under version 2\); run rewrap"):
        wh.retire_keys(3)
    with pytest.raises(KeyringError, match=r"\(1 under version 1\)"):
        wh.retire_keys(2)
    assert wh.keyring.describe("tenant:default")["minimum"] == 1  # nothing was retired
    assert wh.rewrap() == 3
    assert wh.wrapped_by_version(3) == {1: 0, 2: 0}
    wh.retire_keys(3)
    assert wh.keyring.describe("tenant:default")["minimum"] == 3
    with pytest.raises(KeyRetired):
        wh.keyring.unwrap("tenant:default", 1, old.wrapped_dek)
    assert [wh.get("bkt", key) for key in "abcd"] == [b"version one", b"version two", b"version two again",
                                                      b"version three"]
    for bad in (0, -1, True, "2"):
        with pytest.raises(InvalidArgument, match="positive int"):
            wh.wrapped_by_version(bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgument, match="positive int"):
            wh.rewrap(batch=bad)  # type: ignore[arg-type]


def test_rotate_all_keys_rotates_every_live_kek(wh: Warehouse) -> None:
    for tenant in ("acme", "globex", "gone"):
        wh.create_bucket(f"{tenant}-bkt", tenant=tenant)
        wh.put(f"{tenant}-bkt", "x", tenant.encode(), tenant=tenant)
    wh.keyring.ensure("system:access-keys")
    wh.rotate_keys(tenant="acme")
    wh.keyring.destroy("tenant:gone")
    assert wh.rotate_all_keys() == {"system:access-keys": 2, "tenant:acme": 3, "tenant:globex": 2}
    with pytest.raises(KeyShredded):
        wh.rotate_keys(tenant="gone")
    assert wh.get("acme-bkt", "x", tenant="acme") == b"acme"


class StuckCatalog(Catalog):
    """A catalog whose compare-and-set never lands (a fault injected into a real catalog)."""

    def replace_key_header(self, record: object, key_header: bytes, kek_version: int) -> bool:
        return False


def test_a_rewrap_that_cannot_move_a_row_stops_instead_of_looping(tmp_path: Path) -> None:
    config = make_config(tmp_path / "data")
    with Warehouse(config) as wh:
        wh.create_bucket("bkt")
        wh.put("bkt", "k", b"data")
        wh.rotate_keys()
    stuck = StuckCatalog(config.catalog_path)
    keyring = LocalKeyring(config.keyring_path, config.master_key_ref, create_master=False, config=config)
    with Warehouse(config, catalog=stuck, keyring=keyring) as wh:
        with pytest.raises(KeyringError, match="makes no progress on 1 row"):
            wh.rewrap()


def dw(data_dir: Path, *args: str, check: bool = True, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["dw", *args], input=stdin, capture_output=True, timeout=120,
                            env={**os.environ, "DWRAY_DATA_DIR": str(data_dir)})
    assert not check or result.returncode == 0, result.stderr.decode()
    return result


def test_keys_commands_report_refuse_and_show_progress(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dw(data, "mb", "bkt")
    dw(data, "put", "-", "bkt/a", stdin=b"A")
    dw(data, "--tenant", "acme", "mb", "acme-bkt")
    dw(data, "--tenant", "acme", "put", "-", "acme-bkt/b", stdin=b"B")
    assert json.loads(dw(data, "keys", "rotate", "--tenant", "acme", "--json").stdout) == {"primary": 2}
    assert json.loads(dw(data, "keys", "rotate", "--all", "--json").stdout) == {
        "rotated": {"tenant:acme": 3, "tenant:default": 2}}
    refused = dw(data, "keys", "retire", "--below", "3", "--tenant", "acme", check=False)
    assert refused.returncode == 1
    assert (b"1 data key(s) are still wrapped under KEK versions below 3; run rewrap first (dw keys rewrap)"
            in refused.stderr)
    report = refused.stdout.decode()
    assert "data keys still wrapped under KEK versions below 3:" in report
    assert [line.split() for line in report.splitlines()[-2:]] == [["1", "1"], ["2", "0"]]
    progress = dw(data, "keys", "rewrap", "--tenant", "acme", "--progress")
    assert b"re-wrapped 1 data key(s)" in progress.stdout and b"1/1" in progress.stderr
    assert json.loads(dw(data, "keys", "retire", "--below", "3", "--tenant", "acme", "--json").stdout) == {
        "minimum": 3}
    twice = dw(data, "keys", "retire", "2", "--below", "2", check=False)
    assert twice.returncode == 1 and b"give the version once" in twice.stderr
    assert dw(data, "--tenant", "acme", "get", "acme-bkt/b").stdout == b"B"
