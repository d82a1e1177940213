"""The warehouse over pools, in one process: placement by tenant and bucket, a mirror that repairs
what rots on one disk, a tiered pool whose moves leave every object readable, sweeping and scrubbing
every target, and ``dw scrub`` on a data dir no warehouse serves."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dwray.config import BackendConfig, PlacementConfig, PoolConfig
from dwray.core.scrubbing import load_report
from dwray.core.warehouse import Warehouse
from dwray.errors import StorageError
from tests.conftest import make_config


def _pooled(data_dir: Path, **placement: object):  # type: ignore[no-untyped-def]
    return make_config(data_dir).model_copy(update={
        "backends": {"disk1": BackendConfig(kind="local", root=data_dir / "disk1"),
                     "disk2": BackendConfig(kind="local", root=data_dir / "disk2"),
                     "hot": BackendConfig(kind="local", root=data_dir / "hot"),
                     "cold": BackendConfig(kind="sqlite", path=data_dir / "cold.sqlite")},
        "pools": {"safe": PoolConfig(kind="mirror", members=["disk1", "disk2"]),
                  "aging": PoolConfig(kind="tiered", hot="hot", cold="cold", after_days=1)},
        "placement": PlacementConfig(**placement)})


def _replica_files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if path.is_file() and not path.name.startswith("."))


def _flip(path: Path, offset: int = 100) -> None:
    os.chmod(path, 0o600)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


@pytest.fixture
def pooled(tmp_path: Path) -> Warehouse:
    config = _pooled(tmp_path / "data", default="safe", tenants={"archive": "aging"},
                     buckets={"scratch": "local"})
    with Warehouse(config) as wh:
        yield wh


def test_placement_sends_each_bucket_to_its_target_and_rows_record_it(pooled: Warehouse, tmp_path: Path) -> None:
    wh = pooled
    data = os.urandom(50_000)  # past the inline limit: a blob
    for tenant, bucket in (("default", "docs"), ("archive", "logs"), ("default", "scratch")):
        wh.create_bucket(bucket, tenant=tenant)
        wh.put(bucket, "k", data, tenant=tenant)
        assert wh.get(bucket, "k", tenant=tenant) == data
    targets = {bucket: wh.catalog.get_object(tenant, bucket, "k").placement.backend
               for tenant, bucket in (("default", "docs"), ("archive", "logs"), ("default", "scratch"))}
    assert targets == {"docs": "safe", "logs": "aging", "scratch": "local"}
    root = tmp_path / "data"
    assert len(_replica_files(root / "disk1")) == len(_replica_files(root / "disk2")) == 1
    assert len(_replica_files(root / "hot")) == 1
    assert len(_replica_files(root / "blobs")) == 1


def test_a_rotten_or_lost_replica_is_read_around_and_repaired(pooled: Warehouse, tmp_path: Path) -> None:
    wh = pooled
    wh.create_bucket("docs")
    data = os.urandom(300_000)
    wh.put("docs", "a", data)
    wh.put("docs", "b", data[::-1])
    disk1 = _replica_files(tmp_path / "data" / "disk1")
    _flip(disk1[0])
    disk1[1].unlink()
    assert wh.get("docs", "a") == data and wh.get("docs", "b") == data[::-1]
    report = wh.scrub()
    # The reads may have repaired both already (read repair runs in the background); the scrub
    # finds whatever is left and repairs it, and nothing is unrepairable.
    assert report["complete"] and report["totals"]["unrepairable"] == 0
    assert report["targets"]["safe"]["blobs"] == 2
    second = wh.scrub()
    assert second["totals"]["corrupt"] == second["totals"]["missing"] == 0
    assert [p.read_bytes() for p in _replica_files(tmp_path / "data" / "disk1")] == \
        [p.read_bytes() for p in _replica_files(tmp_path / "data" / "disk2")]
    assert load_report(tmp_path / "data")["totals"] == second["totals"]


def test_tier_moves_keep_objects_readable_and_sweep_covers_every_target(pooled: Warehouse, tmp_path: Path) -> None:
    wh = pooled
    wh.create_bucket("logs", tenant="archive")
    objects = {f"day{n}": os.urandom(40_000 + n) for n in range(3)}
    for key, body in objects.items():
        wh.put("logs", key, body, tenant="archive")
    storage = wh.storages["aging"]
    moved = storage.move_due(now=__import__("time").time() + 2 * 86400)  # two days on: all due
    assert moved["moved"] == 3 and not moved["failed"]
    assert _replica_files(tmp_path / "data" / "hot") == []
    for key, body in objects.items():
        assert wh.get("logs", key, tenant="archive") == body
    # An orphan on a pool (no row references it) is swept like one on a plain backend.
    storage.put_bytes("archive/orphan", b"x" * 100)
    # A temp file a crashed put left on a member is the member's to sweep, through the pool.
    leftover = tmp_path / "data" / "cold.sqlite"
    assert leftover.exists()
    (tmp_path / "data" / "hot" / ".tmp-0123456789abcdef").write_bytes(b"half a blob")
    report = wh.sweep(grace_seconds=0)
    assert report.deleted == 1 and report.referenced == 3 and report.temp_files == 1
    assert not storage.exists("archive/orphan")
    assert not (tmp_path / "data" / "hot" / ".tmp-0123456789abcdef").exists()


def test_rows_on_a_target_the_config_lost_fail_clearly(tmp_path: Path) -> None:
    config = _pooled(tmp_path / "data", default="safe")
    with Warehouse(config) as wh:
        wh.create_bucket("docs")
        wh.put("docs", "a", os.urandom(50_000))
    plain = make_config(tmp_path / "data")
    with Warehouse(plain) as wh, pytest.raises(StorageError, match="storage target 'safe'.*does not name"):
        wh.get("docs", "a")


def test_dw_scrub_offline_and_its_report(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config_file = tmp_path / "dwray.toml"
    config_file.write_text(f"""data_dir = "{data_dir}"
[pipeline]
frame_size = 4096
[backends.disk1]
kind = "local"
[backends.disk2]
kind = "local"
[pools.safe]
kind = "mirror"
members = ["disk1", "disk2"]
[placement]
default = "safe"
""")
    env = {**os.environ, "DWRAY_CONFIG": str(config_file)}

    def dw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dwray.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    missing = dw("scrub", "--report")
    assert missing.returncode == 1 and "no scrub pass has finished" in missing.stderr
    assert dw("mb", "docs").returncode == 0
    body = tmp_path / "body"
    body.write_bytes(os.urandom(100_000))
    assert dw("put", str(body), "docs/a").returncode == 0, "put failed"
    victim = _replica_files(data_dir / "backends" / "disk2")[0]
    _flip(victim, 5000)
    scrubbed = dw("scrub", "--json", "--rate", "50MB")
    assert scrubbed.returncode == 0, scrubbed.stderr
    report = json.loads(scrubbed.stdout)
    assert report["targets"]["safe"]["corrupt"] == 1 and report["targets"]["safe"]["repaired"] == 1
    assert report["rate"] == 50_000_000
    shown = dw("scrub", "--report")
    assert shown.returncode == 0 and "safe" in shown.stdout and "complete" in shown.stdout
    assert victim.read_bytes() == _replica_files(data_dir / "backends" / "disk1")[0].read_bytes()
    bad = dw("scrub", "--rate", "fast")
    assert bad.returncode == 1 and "--rate" in bad.stderr
