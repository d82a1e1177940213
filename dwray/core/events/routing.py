"""Which subscriptions get a message, and in what form: the bus's fan-out, as pure functions.

Subscriptions are named ``webhook:NAME`` (a webhook of ``[events.webhooks]``:
the topics it lists, and the bucket notification rules that name it) and
``actor:NAME`` (an actor subscribed at run time). A topic subscriber gets the
message's ``Message.body()``; a bucket notification rule's webhook gets S3's
event JSON. Object events are keyed by tenant, bucket and object key, bucket
events by tenant and bucket, so each object's (and each bucket's) events arrive
in order.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dwray.core.events.bus_store import Envelope
from dwray.core.events.messages import OUTBOX_TOPICS, Message
from dwray.core.events.notifications import matches
from dwray.core.events.s3_records import s3_event

__all__ = ["actor_subscription", "outbox_message", "route", "route_outbox", "webhook_subscription"]


def webhook_subscription(name: str) -> str:
    return f"webhook:{name}"


def actor_subscription(name: str) -> str:
    return f"actor:{name}"


def route(message: Message, webhook_topics: Mapping[str, Sequence[str]],
          actors: Iterable[Mapping[str, Any]]) -> list[Envelope]:
    """The envelopes of ``message`` for every webhook (name -> topics) and actor subscription of its topic."""
    body = message.body()
    envelopes = [Envelope(webhook_subscription(name), message.topic, message.key, body)
                 for name, topics in sorted(webhook_topics.items()) if message.topic in topics]
    envelopes += [Envelope(actor_subscription(sub["name"]), message.topic, message.key, body)
                  for sub in actors if message.topic in sub["topics"]]
    return envelopes


def outbox_message(event: Mapping[str, Any]) -> Message:
    """The bus message of a catalog outbox event (``OutboxEvent.as_dict()``): an object or bucket change, or
    an event of another topic with its own key and payload."""
    if event["topic"] not in OUTBOX_TOPICS:
        return Message(event["topic"], event["key"], dict(event.get("payload") or {}), time=event["created"],
                       id=f"outbox-{event['seq']}")
    key = f"{event['tenant']}/{event['bucket']}" + (f"/{event['key']}" if event["key"] else "")
    payload = {name: event[name] for name in ("name", "tenant", "bucket", "key", "version_id", "size", "etag")}
    return Message(event["topic"], key, payload, time=event["created"], id=f"outbox-{event['seq']}")


def route_outbox(event: Mapping[str, Any], rules: Sequence[Mapping[str, Any]],
                 webhook_topics: Mapping[str, Sequence[str]], actors: Iterable[Mapping[str, Any]],
                 *, region: str = "us-east-1") -> list[Envelope]:
    """The envelopes of one outbox event: its topic's subscribers, then each matching notification rule
    of its bucket (``rules``) whose webhook still exists, with S3's event JSON."""
    message = outbox_message(event)
    envelopes = route(message, webhook_topics, actors)
    if event["topic"] in ("object.created", "object.removed"):
        envelopes += [Envelope(webhook_subscription(rule["webhook"]), message.topic, message.key,
                               s3_event(dict(event), rule["id"], region=region))
                      for rule in rules if rule["webhook"] in webhook_topics
                      and matches(dict(rule), event["name"], event["key"])]
    return envelopes
