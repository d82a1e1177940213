"""Buckets: created, looked up, listed and deleted, each within its tenant."""
from __future__ import annotations

import secrets

from dwray.core.catalog import BucketRecord
from dwray.core.models import BucketInfo
from dwray.core.names import validate_bucket_name
from dwray.core.warehouse.access import bucket_rule, checked
from dwray.core.warehouse.base import TenantArg, WarehouseBase
from dwray.core.warehouse.tracing import traced
from dwray.errors import InvalidArgument

__all__ = ["Buckets", "bucket_info"]


def bucket_info(record: BucketRecord) -> BucketInfo:
    """A bucket as callers see it."""
    return BucketInfo(record.name, record.created, record.versioning, record.versioning_status)


class Buckets(WarehouseBase):
    """The bucket operations of the warehouse."""

    @traced("create_bucket")
    @checked(bucket_rule("s3:CreateBucket"))
    def create_bucket(self, bucket: str, *, versioning: bool = False, tenant: TenantArg = None) -> BucketInfo:
        """Create a bucket. Names are global, as in S3: ``BucketAlreadyOwnedByYou`` if this tenant has it,
        ``BucketAlreadyExists`` if another one does."""
        ctx = self._tenant(tenant)
        validate_bucket_name(bucket)
        record = self.catalog.create_bucket(ctx.tenant, bucket, secrets.token_hex(8), versioning=versioning)
        return bucket_info(record)

    @checked(bucket_rule("s3:ListBucket"))
    def head_bucket(self, bucket: str, *, tenant: TenantArg = None) -> BucketInfo:
        """``BucketNotFound`` unless the tenant has the bucket."""
        ctx = self._tenant(tenant)
        record = self.catalog.get_bucket(ctx.tenant, validate_bucket_name(bucket))
        return bucket_info(record)

    @checked(bucket_rule("s3:GetBucketLocation"))
    def bucket_location(self, bucket: str, *, tenant: TenantArg = None) -> BucketInfo:
        """``head_bucket`` for S3's GetBucketLocation, checked as that action (the gateway knows the region)."""
        return self.head_bucket(bucket, tenant=tenant)

    @checked(bucket_rule("s3:GetBucketVersioning"))
    def bucket_versioning(self, bucket: str, *, tenant: TenantArg = None) -> str | None:
        """S3's GetBucketVersioning: "Enabled", "Suspended", or ``None`` if versioning was never set."""
        return self.head_bucket(bucket, tenant=tenant).versioning_status

    @traced("set_bucket_versioning")
    @checked(bucket_rule("s3:PutBucketVersioning"))
    def set_bucket_versioning(self, bucket: str, status: str, *, tenant: TenantArg = None) -> BucketInfo:
        """S3's PutBucketVersioning: ``status`` "Enabled" keeps every version of every key from now on;
        "Suspended" keeps the versions there are, and new writes replace the key's null version."""
        ctx = self._tenant(tenant)
        if status not in ("Enabled", "Suspended"):
            raise InvalidArgument(f"versioning status must be 'Enabled' or 'Suspended', not {status!r}")
        record = self.catalog.set_versioning(ctx.tenant, validate_bucket_name(bucket), status == "Enabled")
        self._forget_bucket(ctx, bucket)
        return bucket_info(record)

    @checked(bucket_rule("s3:GetBucketAcl"))
    def bucket_acl(self, bucket: str, *, tenant: TenantArg = None) -> str:
        """The bucket's owner, who alone has access (S3's GetBucketAcl: the owner's FULL_CONTROL)."""
        ctx = self._tenant(tenant)
        return self.catalog.get_bucket(ctx.tenant, validate_bucket_name(bucket)).tenant

    @traced("put_bucket_acl")
    @checked(bucket_rule("s3:PutBucketAcl"))
    def put_bucket_acl(self, bucket: str, *, tenant: TenantArg = None) -> None:
        """S3's PutBucketAcl with the one ACL dwray has, ``private``: checks the bucket, changes nothing.
        Callers refuse any other ACL before calling (dwray never grants access by ACL)."""
        ctx = self._tenant(tenant)
        self.catalog.get_bucket(ctx.tenant, validate_bucket_name(bucket))

    @checked(lambda args: [("s3:ListAllMyBuckets", "*")], list_buckets=True)
    def list_buckets(self, *, tenant: TenantArg = None) -> list[BucketInfo]:
        """The tenant's buckets; for a key whose policy does not grant ``s3:ListAllMyBuckets``, only
        those its policy names (``AccessPolicy.visible_buckets``)."""
        ctx = self._tenant(tenant)
        records = self.catalog.list_buckets(ctx.tenant)
        if ctx.policy is not None:
            visible = set(ctx.policy.visible_buckets(record.name for record in records))
            records = [record for record in records if record.name in visible]
        return [bucket_info(r) for r in records]

    @traced("delete_bucket")
    @checked(bucket_rule("s3:DeleteBucket"))
    def delete_bucket(self, bucket: str, *, tenant: TenantArg = None) -> None:
        """Delete an empty bucket. ``BucketNotEmpty`` while it holds any object version."""
        ctx = self._tenant(tenant)
        self._forget_bucket(ctx, bucket)
        self.catalog.delete_bucket(ctx.tenant, validate_bucket_name(bucket))
