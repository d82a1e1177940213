"""``dw bench --mode s3``: boto3 load against the gateway, and the same load against SeaweedFS.

The gateway is the one ``dw up`` runs for this data dir (or ``--endpoint``);
the benchmark makes itself a tenant and an access key through the admin API
and revokes the key afterwards. With no gateway running, it starts a temporary
one that is what ``dw up`` would run with this configuration (the same
replicas and settings) but for: a Ray of its own, a temp data dir, a free
loopback port, no rate limits (the bench drives load on purpose) and
``Server-Timing`` headers on (the report's per-request profile); it is
stopped at the end.
"""
from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dwray.cli.admin_client import AdminError, discover
from dwray.config import DwrayConfig
from dwray.core.ports import free_port
from dwray.errors import NotReady

__all__ = ["bench_gateway_config", "run_gateway_bench"]

BENCH_TENANT = "bench"


def _bench_key(admin: Any) -> tuple[str, str]:
    try:
        admin.post("/tenants", {"name": BENCH_TENANT, "description": "dw bench --mode s3"})
    except AdminError as error:
        if error.status != 409:
            raise
    new = admin.post("/keys", {"tenant": BENCH_TENANT, "description": "dw bench --mode s3"})
    return new["access_key_id"], new["secret_access_key"]


def bench_gateway_config(config: DwrayConfig, folder: Path) -> DwrayConfig:
    """``config`` as the temporary gateway runs it: in ``folder``, on a free loopback port, unlimited, timed."""
    gateway = config.gateway
    unlimited = gateway.rate_limit.model_copy(update={"tenant_rate": 0.0, "key_rate": 0.0, "tenants": {}})
    gateway = gateway.model_copy(update={"port": free_port(), "host": "127.0.0.1", "rate_limit": unlimited,
                                         "server_timing": True})
    bench = config.model_copy(update={"data_dir": folder / "data", "gateway": gateway})
    return type(bench).model_validate(bench.model_dump())  # model_copy does not validate


def run_gateway_bench(state: Any, *, endpoint: str | None, processes: int, threads: int, small_count: int,
                      large_count: int, seconds: float | None, compare: bool,
                      progress: Callable[[str], None] | None = None) -> Any:
    from dwray.cli.bench_s3 import check_bench_arguments, run_s3_bench
    from dwray.cli.bench_s3_load import S3Target
    from dwray.cli.state import command_config

    check_bench_arguments(processes=processes, threads=threads, small_count=small_count, large_count=large_count,
                          seconds=seconds)
    config = command_config(state)
    temporary = None
    try:
        admin = discover(config, endpoint=endpoint)
    except NotReady:
        if endpoint is not None:
            raise
        from serve_apps.launch import start_gateway

        folder = Path(tempfile.mkdtemp(prefix="dwray-bench-"))
        if progress is not None:
            progress("no gateway running: starting a temporary one")
        # A Ray of its own: joining a Ray already on this machine would redeploy that
        # cluster's gateway app (Serve has one app of this name per cluster).
        try:
            temporary = start_gateway(bench_gateway_config(config, folder), address="local",
                                      started_by="dw bench --mode s3")
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        admin = discover(temporary.config)
    try:
        access_key_id, secret = _bench_key(admin)
        try:
            target = S3Target("dwray", admin.endpoint, access_key_id, secret)
            return run_s3_bench(target, processes=processes, threads=threads, small_count=small_count,
                                large_count=large_count, seconds=seconds, compare=compare, progress=progress)
        finally:
            admin.delete(f"/keys/{access_key_id}")
    finally:
        if temporary is not None:
            from serve_apps.launch import stop_gateway

            stop_gateway(temporary, timeout=5)
            shutil.rmtree(temporary.config.data_dir.parent, ignore_errors=True)
