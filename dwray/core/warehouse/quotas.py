"""Hard quotas of tenants and buckets: set and read them (the catalog enforces them).

The limits live in the catalog and are checked in the transaction that commits
each write (``dwray.core.catalog.quotas``), so this mixin only validates and
forwards: enforcement needs no cooperation from the write paths above it.
"""
from __future__ import annotations

from types import EllipsisType
from typing import Any

from dwray.core.names import validate_bucket_name
from dwray.core.warehouse.access import operator_only
from dwray.core.warehouse.base import TenantArg, WarehouseBase
from dwray.core.warehouse.tracing import traced

__all__ = ["Quotas"]

Limit = int | None | EllipsisType


class Quotas(WarehouseBase):
    """The quota operations of the warehouse."""

    @traced("set_quota")
    @operator_only("SetQuota")
    def set_quota(self, tenant: TenantArg = None, bucket: str | None = None, *, max_bytes: Limit = ...,
                  max_objects: Limit = ..., max_buckets: Limit = ...) -> dict[str, Any]:
        """Set limits of the tenant's quota, or of one of its buckets' (``bucket``); return the quota.

        A limit left out (``...``) stays as it is; ``None`` or 0 clears it.
        ``max_buckets`` is a tenant limit only. Writes that would pass a limit
        get ``QuotaExceeded``; what is already stored stays.
        """
        ctx = self._tenant(tenant)
        if bucket is not None:
            validate_bucket_name(bucket)
        limits = {name: value for name, value in
                  (("max_bytes", max_bytes), ("max_objects", max_objects), ("max_buckets", max_buckets))
                  if value is not ...}
        return self.catalog.set_quota(ctx.tenant, bucket, limits)

    @operator_only("GetQuota")
    def quota(self, tenant: TenantArg = None, bucket: str | None = None) -> dict[str, Any]:
        """The tenant's limits and usage with its buckets', or one bucket's.

        ``{"tenant", "bucket", "limits": {max_bytes, max_objects[, max_buckets]},
        "usage": {bytes, objects[, buckets]}[, "buckets": {name: {limits, usage}}]}``;
        usage counts every stored version and the parts of uploads in progress.
        """
        ctx = self._tenant(tenant)
        if bucket is not None:
            validate_bucket_name(bucket)
        return self.catalog.quota(ctx.tenant, bucket)
