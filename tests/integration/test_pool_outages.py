"""A mirror with a replica on a real server that dies under load: SeaweedFS (S3) and PostgreSQL.

Each test runs a warehouse whose default pool mirrors a local disk and the
server's backend with a write quorum of 1, puts objects from a thread in a
bounded loop, stops the server in the middle (SeaweedFS: its process ended;
PostgreSQL: ``pg_ctl stop -m immediate``, a crash), keeps writing, starts the
server again, and checks that every acknowledged object reads back byte for
byte and that the replica which missed writes is caught up: every blob the
pool's index holds is on the server again. A single-backend warehouse on the
server is checked too (PostgreSQL; S3's is tests/integration/test_backend_s3.py's
outage test): its writes fail cleanly while the server is down and work again
when it returns.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dwray.config import BackendConfig, PlacementConfig, PoolConfig, StorageConfig
from dwray.core.warehouse import Warehouse
from dwray.errors import DwrayError, StorageError
from dwray.testing.postgres_server import PostgresServer
from tests.conftest import make_config
from tests.servers import SeaweedServer

LOAD_SECONDS = 90.0  # every load loop stops after this long, whatever happens
PACE = 0.05  # seconds between puts: a steady load across a server stop that takes seconds
BODY = 24_000  # past the inline limit: every object has a blob


class Load:
    """Puts from a thread until stopped (bounded in count and time); records what was acknowledged."""

    def __init__(self, wh: Warehouse, bucket: str, limit: int = 3000) -> None:
        self.wh, self.bucket, self.limit = wh, bucket, limit
        self.acked: dict[str, bytes] = {}
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        for n in range(self.limit):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            key, body = f"obj-{n}", os.urandom(BODY)
            try:
                self.wh.put(self.bucket, key, body)
            except DwrayError as exc:
                self.failed.append(type(exc).__name__)
            else:
                self.acked[key] = body
            time.sleep(PACE)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=LOAD_SECONDS + 30)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + LOAD_SECONDS
        while len(self.acked) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.acked) >= count, f"only {len(self.acked)} puts acknowledged"


def _mirror_with(data: Path, remote: BackendConfig) -> Any:
    return make_config(data).model_copy(update={
        "backends": {"disk": BackendConfig(kind="local"), "remote": remote},
        "pools": {"edge": PoolConfig(kind="mirror", members=["disk", "remote"], write_quorum=1)},
        "placement": PlacementConfig(default="edge")})


def _check_outage(wh: Warehouse, remote: Any, stop: Callable[[], None], start: Callable[[], None]) -> None:
    wh.create_bucket("load")
    pool = wh.storages["edge"]
    with Load(wh, "load") as load:
        load.wait_for(10)
        stop()
        before = len(load.acked)
        load.wait_for(before + 20)  # the mirror keeps acknowledging on the surviving replica
        assert pool.pool_status()["hints_pending"] > 0
        assert not load.failed, load.failed  # a write quorum of 1: the outage costs no write
        start()
        load.wait_for(len(load.acked) + 10)
    for key, body in load.acked.items():
        assert wh.get("load", key) == body
    deadline = time.monotonic() + 60
    while pool.pool_status()["hints_pending"] and time.monotonic() < deadline:
        pool.catch_up()
        time.sleep(0.2)
    assert pool.pool_status()["hints_pending"] == 0
    indexed = set(pool.list_blobs(""))
    assert indexed <= set(remote.list_blobs("")), "the replica that was down lacks blobs after catch-up"
    report = wh.scrub()
    assert report["totals"]["corrupt"] == report["totals"]["missing"] == report["totals"]["unrepairable"] == 0


def _check_single_backend(wh: Warehouse, stop: Callable[[], None], start: Callable[[], None]) -> None:
    wh.create_bucket("single")
    acked = {}
    for n in range(5):
        acked[f"before-{n}"] = os.urandom(BODY)
        wh.put("single", f"before-{n}", acked[f"before-{n}"])
    stop()
    started = time.monotonic()
    with pytest.raises(StorageError):
        wh.put("single", "during", os.urandom(BODY))
    assert time.monotonic() - started < 30
    start()
    deadline = time.monotonic() + 60
    while True:
        try:
            wh.put("single", "after", b"a" * BODY)
            break
        except StorageError:
            assert time.monotonic() < deadline, "puts did not work again after the server came back"
            time.sleep(0.3)
    for key, body in acked.items():
        assert wh.get("single", key) == body


@pytest.fixture
def s3_secrets(seaweedfs: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("OUTAGE_S3_AK", seaweedfs.access_key)
    monkeypatch.setenv("OUTAGE_S3_SK", seaweedfs.secret_key)
    seaweedfs.create_bucket("dwray-outages")
    return {"bucket": "dwray-outages", "endpoint": seaweedfs.endpoint, "addressing_style": "path",
            "access_key": "secret://env/OUTAGE_S3_AK", "secret_key": "secret://env/OUTAGE_S3_SK"}


def test_seaweedfs_dies_under_a_mirror_and_its_replica_is_caught_up(
        seaweedfs: SeaweedServer, s3_secrets: dict[str, str], tmp_path: Path) -> None:
    remote = BackendConfig(kind="s3", prefix=f"outage-{uuid.uuid4().hex[:8]}/", **s3_secrets)  # type: ignore[arg-type]
    with Warehouse(_mirror_with(tmp_path / "data", remote)) as wh:
        _check_outage(wh, wh.storages["edge"].members["remote"], lambda: seaweedfs.stop(timeout=1), seaweedfs.start)


def test_postgresql_crashes_under_a_mirror_and_its_replica_is_caught_up(
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTAGE_PG_DSN", postgres.dsn)
    remote = BackendConfig(kind="postgres", dsn="secret://env/OUTAGE_PG_DSN", table=f"outage_{uuid.uuid4().hex[:8]}")
    with Warehouse(_mirror_with(tmp_path / "data", remote)) as wh:
        _check_outage(wh, wh.storages["edge"].members["remote"], lambda: postgres.stop("immediate"), postgres.start)


def test_postgresql_crashes_under_a_single_postgres_backend(postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    monkeypatch.setenv("OUTAGE_PG_DSN", postgres.dsn)
    storage = StorageConfig(backend="postgres", dsn="secret://env/OUTAGE_PG_DSN",
                            table=f"single_{uuid.uuid4().hex[:8]}")
    with Warehouse(make_config(tmp_path / "data").model_copy(update={"storage": storage})) as wh:
        _check_single_backend(wh, lambda: postgres.stop("immediate"), postgres.start)


def test_a_mirror_opens_and_writes_while_its_postgresql_is_down(postgres: PostgresServer,
                                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OUTAGE_PG_DSN", postgres.dsn)
    remote = BackendConfig(kind="postgres", dsn="secret://env/OUTAGE_PG_DSN", table=f"late_{uuid.uuid4().hex[:8]}")
    postgres.stop("immediate")
    try:
        with Warehouse(_mirror_with(tmp_path / "data", remote)) as wh:
            wh.create_bucket("late")
            bodies = {f"k{n}": os.urandom(BODY) for n in range(5)}
            for key, body in bodies.items():
                wh.put("late", key, body)  # a quorum of 1: the local replica acknowledges
            pool = wh.storages["edge"]
            assert pool.pool_status()["hints_pending"] == 5
            postgres.start()
            deadline = time.monotonic() + 60
            while pool.pool_status()["hints_pending"] and time.monotonic() < deadline:
                pool.catch_up()
                time.sleep(0.2)
            assert pool.pool_status()["hints_pending"] == 0
            assert set(pool.list_blobs("")) <= set(pool.members["remote"].list_blobs(""))
            for key, body in bodies.items():
                assert wh.get("late", key) == body
    finally:
        if not postgres.pid:
            postgres.start()
