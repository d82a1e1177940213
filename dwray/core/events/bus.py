"""The message bus's engine: reads the catalog's outbox, takes published messages, delivers, retries.

Runs in the ``events`` child of the tree (``actors.event_bus``), and in one
process in tests, over any ``OutboxSource`` (the catalog, or its actor). Two
threads:

- the *reader* takes the outbox's events in order, fans each out to its
  subscriptions (``dwray.core.events.routing``) and stores them with the
  outbox cursor in one bus transaction, then trims the outbox up to it. A bus
  killed between the two steps finds the cursor on disk and trims again: no
  event lost, none queued twice. Under ``on_full = "block"`` a full queue stops
  the reader (the events wait in the catalog, on disk), so the backlog never
  grows the bus's memory;
- the *deliverer* sends each subscription's due messages, the oldest of each
  key first (``BusStore.due``), acknowledges the delivered and schedules the
  failed with full-jitter backoff; after ``max_attempts`` a message is a dead
  letter until ``replay``.

``publish`` (other topics) stores the message before it returns; on a full
queue it waits up to ``publish_wait`` seconds (``block``) and then raises
``Backpressure``, or dead-letters (``dead-letter``). Delivery is at least once:
a message delivered but not yet acknowledged when the bus dies is sent again.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from dwray.config_events import EventsConfig
from dwray.core.events.backoff import full_jitter
from dwray.core.events.bus_store import BusStore, QueuedMessage
from dwray.core.events.messages import Message
from dwray.core.events.routing import route, route_outbox
from dwray.core.events.webhooks import post_webhook
from dwray.errors import Backpressure, DwrayError, InvalidArgument, NotFound

__all__ = ["OUTBOX_CURSOR", "EventBus", "OutboxSource"]

log = logging.getLogger(__name__)

OUTBOX_CURSOR = "catalog-outbox"
#: how long an idle deliverer sleeps before it looks for due retries
IDLE_WAIT = 0.5


class OutboxSource(Protocol):
    """Where object and bucket events come from: the catalog (``dwray.core.catalog.outbox``)."""

    def outbox_page(self, after: int, limit: int) -> list[dict[str, Any]]: ...

    def outbox_trim(self, upto: int) -> int: ...

    def notification_rules(self, tenant: str, bucket: str) -> list[dict[str, Any]]: ...


ActorDelivery = Callable[[Mapping[str, Any], dict[str, Any], float], "str | None"]


class EventBus:
    """The bus over ``store``. ``secret(ref)`` gives a webhook's signing key; ``deliver_to_actor`` sends
    a body to an actor subscription (``None`` when delivered, else the error)."""

    def __init__(self, store: BusStore, events: EventsConfig, outbox: OutboxSource | None,
                 secret: Callable[[str], bytes], deliver_to_actor: ActorDelivery | None = None,
                 *, workers: int = 4) -> None:
        self._store = store
        self._events = events
        self._outbox = outbox
        self._secret = secret
        self._deliver_to_actor = deliver_to_actor
        self._webhook_topics = {name: list(hook.topics) for name, hook in events.webhooks.items()}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dwray-events-deliver")
        self._counts = {"delivered": 0, "failed": 0, "dead_lettered": 0, "outbox_read": 0, "published": 0,
                        "blocked": 0, "malformed": 0}
        self._last_error: str | None = None
        self._threads: list[threading.Thread] = []

    # Life ------------------------------------------------------------------------

    def start(self) -> None:
        loops = [self._deliver_loop] + ([self._read_loop] if self._outbox is not None else [])
        for loop in loops:
            thread = threading.Thread(target=loop, name=f"dwray-events-{loop.__name__.strip('_')}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def alive(self) -> bool:
        return all(thread.is_alive() for thread in self._threads)

    # Publishing ------------------------------------------------------------------

    def publish(self, topic: str, key: str, payload: dict[str, Any]) -> str:
        """Store ``payload`` on ``topic`` for every subscriber of it before returning the message's id."""
        message = Message(topic, key, payload, id=uuid.uuid4().hex)
        envelopes = route(message, self._webhook_topics, self._store.actor_subscriptions())
        if not envelopes:
            return message.id
        deadline = time.monotonic() + self._events.publish_wait
        while True:
            taken, dead = self._store.enqueue([(None, envelopes)], queue_max=self._events.queue_max,
                                              on_full=self._events.on_full)
            if taken:
                self._counts["published"] += 1
                self._counts["dead_lettered"] += dead
                self._wake.set()
                return message.id
            self._counts["blocked"] += 1
            if time.monotonic() >= deadline:
                raise Backpressure(f"a subscriber's queue of {topic} events is full "
                                   f"({self._events.queue_max} messages)", max(1, int(self._events.retry_base)))
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())) or 0.01)

    # Reading the outbox ----------------------------------------------------------

    def read_outbox_once(self) -> int:
        """Take one page of the outbox (as far as the queues allow); how many events were taken."""
        assert self._outbox is not None
        after = self._store.state(OUTBOX_CURSOR)
        page = self._outbox.outbox_page(after, self._events.batch)
        if not page:
            return 0
        actors = self._store.actor_subscriptions()
        rules: dict[tuple[str, str], list[dict[str, Any]]] = {}
        groups = []
        for event in page:
            where = (event["tenant"], event["bucket"])
            if where not in rules and event["topic"].startswith("object."):
                rules[where] = self._rules(*where)
            try:
                envelopes = route_outbox(event, rules.get(where, []), self._webhook_topics, actors,
                                         region=self._events.region)
            except InvalidArgument as exc:
                # One event that cannot be a message must not hold back every later one: it is skipped,
                # loudly (the log and status()'s "malformed" count), and the reader goes on.
                log.error("event bus: outbox event %d (%s) cannot be a message and is skipped: %s",
                          event["seq"], event.get("topic"), exc)
                self._counts["malformed"] += 1
                envelopes = []
            groups.append((event["seq"], envelopes))
        taken, dead = self._store.enqueue(groups, queue_max=self._events.queue_max, on_full=self._events.on_full,
                                          cursor=OUTBOX_CURSOR)
        self._counts["outbox_read"] += taken
        self._counts["dead_lettered"] += dead
        if taken < len(groups):
            self._counts["blocked"] += 1
        if taken:
            self._wake.set()
            self._outbox.outbox_trim(page[taken - 1]["seq"])
        return taken

    def _rules(self, tenant: str, bucket: str) -> list[dict[str, Any]]:
        assert self._outbox is not None
        try:
            return self._outbox.notification_rules(tenant, bucket)
        except NotFound:  # the bucket is gone since: its events reach topic subscribers only
            return []

    def _read_loop(self) -> None:
        while not self._stop.is_set():
            try:
                taken = self.read_outbox_once()
            except DwrayError as exc:  # the catalog is restarting, say: the events wait in its outbox
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("event bus: reading the catalog's outbox failed: %s", self._last_error)
                taken = 0
            if taken < self._events.batch:
                self._stop.wait(self._events.poll_interval)

    # Delivering ------------------------------------------------------------------

    def deliver_once(self) -> int:
        """Deliver what is due now, across subscriptions; how many messages were attempted."""
        attempted = 0
        for subscription in self._store.subscriptions_with_messages():
            due = self._store.due(subscription, self._events.batch)
            attempted += len(due)
            results = list(self._pool.map(self._deliver, due))
            self._store.ack([message.id for message, error in zip(due, results, strict=True) if error is None])
            for message, error in zip(due, results, strict=True):
                if error is None:
                    self._counts["delivered"] += 1
                    continue
                self._counts["failed"] += 1
                retry_at = time.time() + full_jitter(message.attempts + 1, self._events.retry_base,
                                                     self._events.retry_max)
                unknown = error.startswith("no subscription")
                if self._store.failed(message.id, error, retry_at, 1 if unknown else self._events.max_attempts):
                    self._counts["dead_lettered"] += 1
                    log.warning("event bus: message %d for %s is a dead letter: %s", message.id, subscription, error)
        return attempted

    def _deliver(self, message: QueuedMessage) -> str | None:
        kind, _, name = message.subscription.partition(":")
        try:
            if kind == "webhook":
                hook = self._events.webhooks.get(name)
                if hook is None:
                    return f"no subscription {message.subscription}: no such webhook in [events.webhooks]"
                return post_webhook(hook.url, self._secret(hook.secret), message.body,
                                    timeout=self._events.delivery_timeout,
                                    headers={"X-Dwray-Topic": message.topic, "X-Dwray-Delivery": str(message.id)})
            subscription = next((sub for sub in self._store.actor_subscriptions() if sub["name"] == name), None)
            if kind != "actor" or subscription is None or self._deliver_to_actor is None:
                return f"no subscription {message.subscription}"
            return self._deliver_to_actor(subscription, message.body, self._events.delivery_timeout)
        except Exception as exc:  # noqa: BLE001 - a failed delivery is retried, never the bus's end
            return f"{type(exc).__name__}: {exc}"

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            try:
                attempted = self.deliver_once()
            except DwrayError as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.warning("event bus: delivering failed: %s", self._last_error)
                attempted = 0
            if not attempted:
                self._wake.wait(IDLE_WAIT)
                self._wake.clear()

    # Operators -------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {"queues": self._store.depths(), "outbox_cursor": self._store.state(OUTBOX_CURSOR),
                "queue_max": self._events.queue_max, "on_full": self._events.on_full, **self._counts,
                "last_error": self._last_error}

    def dead_letters(self, subscription: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return [message.as_dict() for message in self._store.dead_letters(subscription, limit)]

    def replay(self, ids: Sequence[int] | None = None, subscription: str | None = None) -> int:
        count = self._store.replay(ids, subscription)
        self._wake.set()
        return count
