"""``dw quota set|show``: hard quotas of tenants and buckets, through the running gateway's admin API.

The limits are enforced by the catalog in the transaction of each write, so
they hold for every client (S3, driver, gateway replicas) at once; these
commands only change and read them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.gateway_cmds import _admin, admin_options
from dwray.cli.output import emit, print_table
from dwray.cli.state import State, command
from dwray.core.catalog.quotas import parse_limit
from dwray.errors import InvalidArgument

__all__ = ["quota_group"]


@cli.group("quota")
def quota_group() -> None:
    """Hard quotas: bytes, objects and buckets a tenant (or one bucket) may hold."""


@command(quota_group, "set")
@click.argument("tenant")
@click.option("--bucket", default=None, help="limit this bucket of the tenant instead of the whole tenant")
@click.option("--max-bytes", default=None, help="bytes stored, e.g. 10GiB (0 or 'none' clears)")
@click.option("--max-objects", default=None, help="object versions stored (0 or 'none' clears)")
@click.option("--max-buckets", default=None, help="buckets owned, tenant only (0 or 'none' clears)")
@admin_options
def quota_set(state: State, as_json: bool, tenant: str, bucket: str | None, max_bytes: str | None,
              max_objects: str | None, max_buckets: str | None, endpoint: str | None,
              admin_token_file: Path | None) -> None:
    """Set limits; those not given stay as they are. Writes that would pass a limit are refused."""
    given = {"max_bytes": max_bytes, "max_objects": max_objects, "max_buckets": max_buckets}
    limits = {name: parse_limit(name, value) for name, value in given.items() if value is not None}
    if not limits:
        raise InvalidArgument("give at least one of --max-bytes, --max-objects, --max-buckets")
    if bucket is not None and "max_buckets" in limits:
        raise InvalidArgument("--max-buckets is a tenant limit; leave out --bucket to set it")
    path = f"/quotas/{quote(tenant, safe='')}" + (f"/buckets/{quote(bucket, safe='')}" if bucket else "")
    quota = _admin(state, endpoint, admin_token_file).request("PUT", path, json_body=limits)
    emit(as_json, quota, lambda: _print([quota]))


@command(quota_group, "show")
@click.argument("tenant", required=False)
@admin_options
def quota_show(state: State, as_json: bool, tenant: str | None, endpoint: str | None,
               admin_token_file: Path | None) -> None:
    """Usage and limits of one tenant and its buckets, or of every tenant that stores or has a quota."""
    admin = _admin(state, endpoint, admin_token_file)
    quotas = [admin.get(f"/quotas/{quote(tenant, safe='')}")] if tenant else admin.get("/quotas")
    emit(as_json, quotas[0] if tenant else quotas, lambda: _print(quotas))


def _print(quotas: list[dict[str, Any]]) -> None:
    table = Table(box=None)
    for column in ("tenant", "bucket", "bytes", "objects", "buckets"):
        table.add_column(column)
    for quota in quotas:
        scopes = [(quota.get("bucket") or "*", quota)]
        scopes += [(name, {**entry, "tenant": quota["tenant"]}) for name, entry in quota.get("buckets", {}).items()]
        for name, scope in scopes:
            usage, limits = scope["usage"], scope["limits"]
            table.add_row(quota["tenant"], name, *(_of(usage.get(what), limits.get(f"max_{what}"))
                                                   for what in ("bytes", "objects", "buckets")))
    print_table(table)


def _of(used: int | None, limit: int | None) -> str:
    if used is None:
        return ""
    return f"{used} / {limit}" if limit is not None else f"{used} / -"
