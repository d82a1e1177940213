"""S3 bucket notifications: which events of a bucket go to which of the operator's webhooks.

The rules are kept by the catalog with the bucket (``dwray.core.catalog.outbox``)
and applied by the message bus when it reads the catalog's outbox, so a rule
covers the events read after it is set. A configuration names only webhooks of
``[events.webhooks]`` (``dwray.core.events.notifications``): a tenant cannot make
the server POST anywhere else.
"""
from __future__ import annotations

from typing import Any

from dwray.core.events.notifications import notification_xml, parse_notification_xml
from dwray.core.names import validate_bucket_name
from dwray.core.warehouse.access import bucket_rule, checked
from dwray.core.warehouse.base import TenantArg, WarehouseBase
from dwray.core.warehouse.tracing import traced

__all__ = ["Notifications"]


class Notifications(WarehouseBase):
    """Get, put and delete a bucket's notification configuration."""

    @checked(bucket_rule("s3:GetBucketNotification"))
    def bucket_notification(self, bucket: str, *, tenant: TenantArg = None) -> list[dict[str, Any]]:
        """The bucket's notification rules (``[]`` when none): S3's GetBucketNotificationConfiguration."""
        ctx = self._tenant(tenant)
        return self.catalog.notification_rules(ctx.tenant, validate_bucket_name(bucket))

    @traced("set_bucket_notification")
    @checked(bucket_rule("s3:PutBucketNotification"))
    def set_bucket_notification(self, bucket: str, configuration: bytes | str | list[dict[str, Any]], *,
                                tenant: TenantArg = None) -> list[dict[str, Any]]:
        """Replace the bucket's notification rules; return them as stored (S3's PutBucketNotificationConfiguration).

        ``configuration`` is a NotificationConfiguration XML document, or rules as
        ``bucket_notification`` returns them; either way each is checked (targets
        among ``[events.webhooks]``, S3 event names, prefix and suffix filters), and
        ``InvalidArgument`` names what is wrong. No rules removes the configuration.
        """
        ctx = self._tenant(tenant)
        # Only the webhooks open to this tenant: one the operator gave another tenant reads as unknown.
        webhooks = {name for name, hook in self.config.events.webhooks.items()
                    if not hook.tenants or ctx.tenant in hook.tenants}
        if isinstance(configuration, list):
            configuration = notification_xml(configuration)
        body = configuration.encode() if isinstance(configuration, str) else bytes(configuration)
        rules = parse_notification_xml(body, webhooks)
        self.catalog.set_notification_rules(ctx.tenant, validate_bucket_name(bucket), rules)
        return rules

    @traced("delete_bucket_notification")
    @checked(bucket_rule("s3:PutBucketNotification"))
    def delete_bucket_notification(self, bucket: str, *, tenant: TenantArg = None) -> None:
        """Remove the bucket's notification rules (none is no error)."""
        ctx = self._tenant(tenant)
        self.catalog.set_notification_rules(ctx.tenant, validate_bucket_name(bucket), [])
