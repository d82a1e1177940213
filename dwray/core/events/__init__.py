"""The message bus's pure parts: messages, routing, the durable queue store, S3 notifications, signatures.

- ``messages``: topics and the ``Message`` model;
- ``bus_store``: the bus's SQLite file (bounded queues, dead letters, cursors);
- ``routing``: which subscription gets what (topic subscribers, bucket notification rules);
- ``notifications``: S3 NotificationConfiguration XML, validated against the operator's webhooks;
- ``s3_records``: S3's event JSON (``Records``, eventVersion 2.1);
- ``signing``: the webhooks' HMAC-SHA256 signatures;
- ``backoff``: full-jitter retry delays.

The actor that runs them is ``actors.event_bus``; the outbox it reads is the
catalog's (``dwray.core.catalog.outbox``).
"""
from __future__ import annotations

from dwray.core.events.bus_store import BusStore, Envelope, QueuedMessage
from dwray.core.events.messages import OUTBOX_TOPICS, TOPICS, Message, check_topic

__all__ = ["OUTBOX_TOPICS", "TOPICS", "BusStore", "Envelope", "Message", "QueuedMessage", "check_topic"]
