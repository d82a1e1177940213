"""Buckets: created, looked up, listed and deleted, each within its tenant."""
from __future__ import annotations

import secrets

from dwray.core.models import BucketInfo
from dwray.core.names import validate_bucket_name
from dwray.core.warehouse.access import bucket_rule, checked
from dwray.core.warehouse.base import TenantArg, WarehouseBase
from dwray.core.warehouse.tracing import traced

__all__ = ["Buckets"]


class Buckets(WarehouseBase):
    """The bucket operations of the warehouse."""

    @traced("create_bucket")
    @checked(bucket_rule("s3:CreateBucket"))
    def create_bucket(self, bucket: str, *, versioning: bool = False, tenant: TenantArg = None) -> BucketInfo:
        """Create a bucket. ``BucketAlreadyExists`` if this tenant has it."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        record = self.catalog.create_bucket(ctx.tenant, bucket, secrets.token_hex(8), versioning=versioning)
        return BucketInfo(record.name, record.created, record.versioning)

    @checked(bucket_rule("s3:ListBucket"))
    def head_bucket(self, bucket: str, *, tenant: TenantArg = None) -> BucketInfo:
        """``BucketNotFound`` unless the tenant has the bucket."""
        ctx = self._tenant(tenant)
        record = self.catalog.get_bucket(ctx.tenant, validate_bucket_name(bucket))
        return BucketInfo(record.name, record.created, record.versioning)

    @checked(bucket_rule("s3:GetBucketLocation"))
    def bucket_location(self, bucket: str, *, tenant: TenantArg = None) -> BucketInfo:
        """``head_bucket`` for S3's GetBucketLocation, checked as that action (the gateway knows the region)."""
        return self.head_bucket(bucket, tenant=tenant)

    @checked(bucket_rule("s3:GetBucketVersioning"))
    def bucket_versioning(self, bucket: str, *, tenant: TenantArg = None) -> bool:
        """Whether the bucket keeps versions (S3's GetBucketVersioning)."""
        return self.head_bucket(bucket, tenant=tenant).versioning

    @checked(lambda args: [("s3:ListAllMyBuckets", "*")], list_buckets=True)
    def list_buckets(self, *, tenant: TenantArg = None) -> list[BucketInfo]:
        """The tenant's buckets; for a key whose policy does not grant ``s3:ListAllMyBuckets``, only
        those its policy names (``AccessPolicy.visible_buckets``)."""
        ctx = self._tenant(tenant)
        records = self.catalog.list_buckets(ctx.tenant)
        if ctx.policy is not None:
            visible = set(ctx.policy.visible_buckets(record.name for record in records))
            records = [record for record in records if record.name in visible]
        return [BucketInfo(r.name, r.created, r.versioning) for r in records]

    @traced("delete_bucket")
    @checked(bucket_rule("s3:DeleteBucket"))
    def delete_bucket(self, bucket: str, *, tenant: TenantArg = None) -> None:
        """Delete an empty bucket. ``BucketNotEmpty`` while it holds any object version."""
        ctx = self._tenant(tenant)
        self._forget_bucket(ctx, bucket)
        self.catalog.delete_bucket(ctx.tenant, validate_bucket_name(bucket))
