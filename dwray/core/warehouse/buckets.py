"""Buckets: created, looked up, listed and deleted, each within its tenant."""
from __future__ import annotations

import secrets

from dwray.core.models import BucketInfo
from dwray.core.names import validate_bucket_name
from dwray.core.warehouse.base import TenantArg, WarehouseBase
from dwray.core.warehouse.tracing import traced

__all__ = ["Buckets"]


class Buckets(WarehouseBase):
    """The bucket operations of the warehouse."""

    @traced("create_bucket")
    def create_bucket(self, bucket: str, *, versioning: bool = False, tenant: TenantArg = None) -> BucketInfo:
        """Create a bucket. ``BucketAlreadyExists`` if this tenant has it."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        record = self.catalog.create_bucket(ctx.tenant, bucket, secrets.token_hex(8), versioning=versioning)
        return BucketInfo(record.name, record.created, record.versioning)

    def head_bucket(self, bucket: str, *, tenant: TenantArg = None) -> BucketInfo:
        """``BucketNotFound`` unless the tenant has the bucket."""
        ctx = self._tenant(tenant)
        record = self.catalog.get_bucket(ctx.tenant, validate_bucket_name(bucket))
        return BucketInfo(record.name, record.created, record.versioning)

    def list_buckets(self, *, tenant: TenantArg = None) -> list[BucketInfo]:
        ctx = self._tenant(tenant)
        return [BucketInfo(r.name, r.created, r.versioning) for r in self.catalog.list_buckets(ctx.tenant)]

    @traced("delete_bucket")
    def delete_bucket(self, bucket: str, *, tenant: TenantArg = None) -> None:
        """Delete an empty bucket. ``BucketNotEmpty`` while it holds any object version."""
        ctx = self._tenant(tenant)
        self._forget_bucket(ctx, bucket)
        self.catalog.delete_bucket(ctx.tenant, validate_bucket_name(bucket))
