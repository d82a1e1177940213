"""What travels on the message bus: topics and messages.

A message has a topic (one of ``TOPICS``), a key (its message group: messages of
one key reach each subscriber in the order they were published) and a JSON
payload. Object and bucket events come from the catalog's outbox
(``dwray.core.catalog.outbox``); the others are published by the kernel and by
plugins (``actors.events_client.publish``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from dwray.config_events import TOPICS
from dwray.errors import InvalidArgument

__all__ = ["MAX_KEY_CHARS", "MAX_PAYLOAD_BYTES", "OUTBOX_TOPICS", "TOPICS", "Message", "check_topic"]

#: the topics whose events come from the catalog's outbox (in the transaction of the change)
OUTBOX_TOPICS = frozenset({"object.created", "object.removed", "bucket.created", "bucket.removed"})
#: a published payload's largest JSON encoding: the bus is for events, not data
MAX_PAYLOAD_BYTES = 64 * 1024
#: a message group's largest key: an object event's is ``tenant/bucket/key`` (63 + 1 + 63 + 1 + a key of
#: up to 1024 bytes of UTF-8, so at most 1024 characters)
MAX_KEY_CHARS = 63 + 1 + 63 + 1 + 1024


def check_topic(topic: str) -> str:
    """``topic`` if the bus knows it, else ``InvalidArgument`` naming it and the known ones."""
    if topic not in TOPICS:
        raise InvalidArgument(f"unknown event topic {topic!r}: the topics are {', '.join(sorted(TOPICS))}")
    return topic


@dataclass(frozen=True)
class Message:
    """One event: its topic, message group ``key``, JSON ``payload`` and when it was published."""

    topic: str
    key: str
    payload: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    id: str = ""

    def __post_init__(self) -> None:
        check_topic(self.topic)
        if not isinstance(self.key, str) or len(self.key) > MAX_KEY_CHARS:
            raise InvalidArgument(f"an event's key must be a string of at most {MAX_KEY_CHARS} characters")
        try:
            size = len(json.dumps(self.payload, sort_keys=True))
        except (TypeError, ValueError) as exc:
            raise InvalidArgument(f"the payload of a {self.topic} event is not JSON: {exc}") from None
        if size > MAX_PAYLOAD_BYTES:
            raise InvalidArgument(f"the payload of a {self.topic} event is {size} bytes of JSON, "
                                  f"over the {MAX_PAYLOAD_BYTES} the bus takes")

    def body(self) -> dict[str, Any]:
        """The JSON a subscriber receives."""
        return {"id": self.id, "topic": self.topic, "key": self.key, "time": self.time, "payload": self.payload}
