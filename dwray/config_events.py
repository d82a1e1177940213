"""Config section ``[events]``: the message bus, its queues and the webhook targets operators allow."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from dwray.config_base import Section
from dwray.secret_ref import SecretRefField

__all__ = ["TOPICS", "EventsConfig", "WebhookTarget"]

#: the topics the message bus carries, and what each reports (``dwray.core.events.messages``)
TOPICS: dict[str, str] = {
    "object.created": "a new object version was committed",
    "object.removed": "an object version was removed or hidden by a delete marker",
    "bucket.created": "a bucket was created",
    "bucket.removed": "a bucket was deleted",
    "plugin.state": "a plugin of the tree started, failed, restarted or stopped",
    "config.reloaded": "a configuration reload was applied or refused",
    "key.rotated": "a tenant's key-encryption key was rotated",
    "quota.near_limit": "a tenant or bucket is near one of its hard quotas",
    "audit.checkpoint_signed": "the audit log signed a checkpoint",
}


class WebhookTarget(Section):
    """A webhook that subscriptions and bucket notifications may name (by its key in ``[events.webhooks]``)."""

    url: str
    secret: SecretRefField = Field(description="HMAC-SHA256 key (a secret reference)")
    topics: list[str] = Field(default_factory=list, description="topics this webhook subscribes to directly")
    tenants: list[str] = Field(default_factory=list,
                               description="tenants whose bucket notifications may name it; empty = every tenant")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("a webhook url must start with http:// or https://")
        return url

    @field_validator("topics")
    @classmethod
    def _known_topics(cls, topics: list[str]) -> list[str]:
        unknown = sorted(set(topics) - set(TOPICS))
        if unknown:
            raise ValueError(f"unknown topic(s) {', '.join(unknown)}: the topics are {', '.join(sorted(TOPICS))}")
        return topics


class EventsConfig(Section):
    enabled: bool = True
    queue_max: int = Field(10_000, ge=1, description="undelivered messages per subscription")
    on_full: Literal["block", "dead-letter"] = "block"
    webhooks: dict[str, WebhookTarget] = Field(default_factory=dict)
    max_attempts: int = Field(12, ge=1, description="deliveries of a message before it is a dead letter")
    retry_base: float = Field(0.5, gt=0, description="seconds: first retry's backoff ceiling (full jitter)")
    retry_max: float = Field(60.0, gt=0, description="seconds: the backoff's largest ceiling")
    delivery_timeout: float = Field(10.0, gt=0, description="seconds a webhook or actor has to take a message")
    poll_interval: float = Field(0.2, gt=0, description="seconds between looks at the catalog's outbox")
    batch: int = Field(100, ge=1, le=10_000, description="messages read or delivered per round")
    publish_wait: float = Field(10.0, ge=0, description="seconds publish() waits on a full queue ('block')")
    region: str = Field("us-east-1", description="awsRegion of bucket notification events")
