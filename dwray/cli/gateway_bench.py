"""``dw bench --mode s3``: boto3 load against the gateway, and the same load against SeaweedFS.

The gateway is the one ``dw up`` runs for this data dir (or ``--endpoint``);
the benchmark makes itself a tenant and an access key through the admin API
and revokes the key afterwards. With no gateway running, it starts a temporary
one (a local Ray, a temp data dir, a free port) and stops it at the end.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from dwray.cli.admin_client import AdminError, discover
from dwray.core.ports import free_port
from dwray.errors import NotReady

__all__ = ["run_gateway_bench"]

BENCH_TENANT = "bench"


def _bench_key(admin: Any) -> tuple[str, str]:
    try:
        admin.post("/tenants", {"name": BENCH_TENANT, "description": "dw bench --mode s3"})
    except AdminError as error:
        if error.status != 409:
            raise
    new = admin.post("/keys", {"tenant": BENCH_TENANT, "description": "dw bench --mode s3"})
    return new["access_key_id"], new["secret_access_key"]


def run_gateway_bench(state: Any, *, endpoint: str | None, threads: int, small_count: int, large_count: int,
                      compare: bool) -> Any:
    from dwray.cli.bench_s3 import S3Target, run_s3_bench
    from dwray.cli.state import command_config

    config = command_config(state)
    temporary = None
    try:
        admin = discover(config, endpoint=endpoint)
    except (NotReady, Exception) as error:  # noqa: BLE001 - no gateway here: start a temporary one
        if endpoint is not None:
            raise
        del error
        from serve_apps.launch import start_gateway

        folder = Path(tempfile.mkdtemp(prefix="dwray-bench-"))
        # Its own gateway, so no rate limit: the bench drives load on purpose (the defaults would cap it).
        unlimited = config.gateway.rate_limit.model_copy(update={"tenant_rate": 0.0, "key_rate": 0.0, "tenants": {}})
        gateway = config.gateway.model_copy(update={"port": free_port(), "host": "127.0.0.1",
                                                    "rate_limit": unlimited})
        # A Ray of its own: joining a Ray already on this machine would redeploy that
        # cluster's gateway app (Serve has one app of this name per cluster).
        temporary = start_gateway(config.model_copy(update={"data_dir": folder / "data", "gateway": gateway}),
                                  address="local", started_by="dw bench --mode s3")
        admin = discover(temporary.config)
    access_key_id, secret = _bench_key(admin)
    try:
        target = S3Target("dwray", admin.endpoint, access_key_id, secret)
        return run_s3_bench(target, threads=threads, small_count=small_count, large_count=large_count,
                            compare=compare)
    finally:
        try:
            admin.delete(f"/keys/{access_key_id}")
        finally:
            if temporary is not None:
                import shutil

                from serve_apps.launch import stop_gateway

                stop_gateway(temporary, timeout=5)
                shutil.rmtree(temporary.config.data_dir.parent, ignore_errors=True)
