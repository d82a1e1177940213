"""Config section ``[events]``: the message bus, its queues and the webhook targets operators allow."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from dwray.config_base import Section
from dwray.secret_ref import SecretRefField

__all__ = ["EventsConfig", "WebhookTarget"]


class WebhookTarget(Section):
    """A webhook that subscriptions and bucket notifications may name (by its key in ``[events.webhooks]``)."""

    url: str
    secret: SecretRefField = Field(description="HMAC-SHA256 key (a secret reference)")
    topics: list[str] = Field(default_factory=list, description="topics this webhook subscribes to directly")


class EventsConfig(Section):
    enabled: bool = True
    queue_max: int = Field(10_000, ge=1, description="undelivered messages per subscription")
    on_full: Literal["block", "dead-letter"] = "block"
    webhooks: dict[str, WebhookTarget] = Field(default_factory=dict)
