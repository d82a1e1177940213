"""The bus engine in one process: a real catalog outbox, a real bus file, a real webhook receiver."""
from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dwray.config_events import EventsConfig
from dwray.core.catalog import Catalog, ObjectRecord, Placement
from dwray.core.events import BusStore
from dwray.core.events.bus import OUTBOX_CURSOR, EventBus
from dwray.core.events.bus_store import Envelope
from dwray.errors import Backpressure, InvalidArgument
from tests.integration.events_receiver import WebhookReceiver

SECRET = b"hook-secret"
RULE = {"id": "all", "kind": "Queue", "webhook": "hook", "events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"],
        "prefix": "", "suffix": ""}


class CatalogOutbox:
    """The catalog as the bus's ``OutboxSource`` (what the catalog plugin answers over Ray)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def outbox_page(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [event.as_dict() for event in self.catalog.outbox_page(after, limit)]

    def outbox_trim(self, upto: int) -> int:
        return self.catalog.outbox_trim(upto)

    def notification_rules(self, tenant: str, bucket: str) -> list[dict[str, Any]]:
        return self.catalog.notification_rules(tenant, bucket)


def record(key: str, version: str) -> ObjectRecord:
    return ObjectRecord("t1", "bkt", key, version, True, False, 3, '"e"', "text/plain", created=1.0,
                        placement=Placement("local", f"t1/x/{version}", b"H", b"T", "tenant:t1", 1))


def catalog_with_objects(tmp_path: Path, count: int) -> Catalog:
    """A catalog whose bucket ``bkt`` notifies ``hook`` of everything, holding objects k0..k<count - 1>."""
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket("t1", "bkt", "id1")
    catalog.set_notification_rules("t1", "bkt", [RULE])
    for n in range(count):
        catalog.commit_object(record(f"k{n}", f"v{n}"))
    return catalog


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver(SECRET)
    yield server
    server.close()


def events_config(receiver: WebhookReceiver, **extra: Any) -> EventsConfig:
    return EventsConfig.model_validate({"webhooks": {"hook": {"url": receiver.url, "secret": "secret://env/HOOK",
                                                              "topics": ["key.rotated"]}},
                                        "poll_interval": 0.05, "retry_base": 0.05, "retry_max": 0.2, **extra})


def make_bus(tmp_path: Path, config: EventsConfig, catalog: Catalog | None) -> EventBus:
    return EventBus(BusStore(tmp_path / "events" / "bus.db"), config,
                    CatalogOutbox(catalog) if catalog is not None else None, lambda ref: SECRET)


def test_bus_file_is_private(tmp_path: Path) -> None:
    BusStore(tmp_path / "events" / "bus.db").close()
    assert stat.S_IMODE(os.stat(tmp_path / "events" / "bus.db").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "events").st_mode) == 0o700


def test_outbox_events_reach_the_webhook_signed_in_s3_format(tmp_path: Path, receiver: WebhookReceiver) -> None:
    catalog = catalog_with_objects(tmp_path, 20)
    catalog.delete_object("t1", "bkt", "k3", None, None)
    bus = make_bus(tmp_path, events_config(receiver), catalog)
    bus.start()
    try:
        assert receiver.wait_for(lambda: len(receiver.records()) == 21, timeout=30)
        assert bus.publish("key.rotated", "t1", {"tenant": "t1", "kek_version": 2})
        assert receiver.wait_for(lambda: receiver.messages("key.rotated"), timeout=30)
    finally:
        bus.stop()
    names = [(r["eventName"], r["s3"]["object"]["key"]) for r in receiver.records()]
    assert sorted(names) == sorted([("ObjectCreated:Put", f"k{n}") for n in range(20)]
                                   + [("ObjectRemoved:Delete", "k3")])
    # the removal of k3 came after its creation: one key's events keep their order
    assert names.index(("ObjectRemoved:Delete", "k3")) > names.index(("ObjectCreated:Put", "k3"))
    assert receiver.bad_signatures == 0
    assert receiver.messages("key.rotated")[0]["payload"] == {"tenant": "t1", "kek_version": 2}
    assert catalog.outbox_size() == 0  # trimmed once taken
    assert bus.status()["outbox_cursor"] == catalog._db.execute("SELECT seq FROM sqlite_sequence "
                                                                "WHERE name = 'event_outbox'").fetchone()[0]


def test_failed_deliveries_are_retried_then_dead_lettered_and_replayed(tmp_path: Path,
                                                                     receiver: WebhookReceiver) -> None:
    bus = make_bus(tmp_path, events_config(receiver, max_attempts=3), None)
    receiver.fail_next = 2  # two failures, then the third attempt gets through
    bus.publish("key.rotated", "t1", {"n": 1})
    deadline = time.monotonic() + 20
    while not receiver.messages() and time.monotonic() < deadline:
        bus.deliver_once()
        time.sleep(0.05)
    assert [m["payload"] for m in receiver.messages()] == [{"n": 1}]
    receiver.fail_next = 3
    bus.publish("key.rotated", "t1", {"n": 2})
    while not bus.dead_letters() and time.monotonic() < deadline:
        bus.deliver_once()
        time.sleep(0.05)
    [dead] = bus.dead_letters()
    assert dead["subscription"] == "webhook:hook" and dead["attempts"] == 3 and "answered 503" in dead["last_error"]
    assert "hook-secret" not in str(dead)
    assert bus.status()["queues"] == {"webhook:hook": {"queued": 0, "dead": 1}}
    assert bus.replay(subscription="webhook:nope") == 0
    assert bus.replay([dead["id"]]) == 1
    while len(receiver.messages()) < 2 and time.monotonic() < deadline:
        bus.deliver_once()
        time.sleep(0.05)
    assert [m["payload"] for m in receiver.messages()] == [{"n": 1}, {"n": 2}]
    assert bus.dead_letters() == []


def test_one_key_waits_for_its_failing_head_while_other_keys_go(tmp_path: Path, receiver: WebhookReceiver) -> None:
    store = BusStore(tmp_path / "bus.db")
    envelopes = [Envelope("webhook:hook", "key.rotated", key, {"n": n}) for n, key in enumerate("aabab")]
    assert store.enqueue([(None, [e]) for e in envelopes], queue_max=10, on_full="block") == (5, 0)
    heads = store.due("webhook:hook", 10)
    assert [(m.key, m.body["n"]) for m in heads] == [("a", 0), ("b", 2)]
    store.failed(heads[0].id, "boom", time.time() + 60, max_attempts=5)
    store.ack([heads[1].id])
    # a's head is not due for a minute: nothing of a goes; b's next one does
    assert [(m.key, m.body["n"]) for m in store.due("webhook:hook", 10)] == [("b", 4)]


def test_block_policy_bounds_the_queue_and_slows_the_publisher(tmp_path: Path, receiver: WebhookReceiver) -> None:
    bus = make_bus(tmp_path, events_config(receiver, queue_max=3, publish_wait=0.3), None)
    for n in range(3):
        bus.publish("key.rotated", "t1", {"n": n})
    started = time.monotonic()
    with pytest.raises(Backpressure, match="queue of key.rotated events is full"):
        bus.publish("key.rotated", "t1", {"n": 3})
    assert time.monotonic() - started >= 0.3
    assert bus.status()["queues"]["webhook:hook"] == {"queued": 3, "dead": 0}
    bus.deliver_once()  # the head of key t1 goes: room for one more
    bus.publish("key.rotated", "t1", {"n": 3})


def test_block_policy_stops_the_outbox_reader_until_there_is_room(tmp_path: Path,
                                                                   receiver: WebhookReceiver) -> None:
    catalog = catalog_with_objects(tmp_path, 10)
    bus = make_bus(tmp_path, events_config(receiver, queue_max=4), catalog)
    assert bus.read_outbox_once() == 5  # the bucket's creation (no subscriber) and four objects
    assert bus.read_outbox_once() == 0
    assert catalog.outbox_size() == 6  # the rest wait in the catalog, on disk
    assert bus.deliver_once() == 4
    assert bus.read_outbox_once() == 4
    assert bus.status()["queues"]["webhook:hook"]["queued"] == 4


def test_dead_letter_policy_moves_overflow_to_dead_letters(tmp_path: Path, receiver: WebhookReceiver) -> None:
    bus = make_bus(tmp_path, events_config(receiver, queue_max=2, on_full="dead-letter"), None)
    for n in range(5):
        bus.publish("key.rotated", f"t{n}", {"n": n})
    dead = bus.dead_letters()
    assert [d["body"]["payload"]["n"] for d in dead] == [2, 3, 4]
    assert all(d["last_error"] == "queue full (2 messages)" for d in dead)
    assert bus.status()["dead_lettered"] == 3


class DiesBeforeTrim(CatalogOutbox):
    def outbox_trim(self, upto: int) -> int:
        raise SystemExit("killed between queueing and trimming")


def test_a_new_bus_on_the_same_file_resumes_without_losing_or_requeueing(tmp_path: Path,
                                                                         receiver: WebhookReceiver) -> None:
    catalog = catalog_with_objects(tmp_path, 6)
    first = EventBus(BusStore(tmp_path / "events" / "bus.db"), events_config(receiver), DiesBeforeTrim(catalog),
                     lambda ref: SECRET)
    with pytest.raises(SystemExit):
        first.read_outbox_once()
    cursor = first.status()["outbox_cursor"]
    assert catalog.outbox_size() == 7  # taken by the bus, not yet trimmed
    second = make_bus(tmp_path, events_config(receiver), catalog)
    assert second.status()["outbox_cursor"] == cursor
    catalog.commit_object(record("k6", "v6"))
    assert second.read_outbox_once() == 1  # only the new event: the taken ones are not queued twice
    assert catalog.outbox_size() == 0  # and the old ones are trimmed with it
    assert second.status()["queues"]["webhook:hook"]["queued"] == 7
    assert BusStore(tmp_path / "events" / "bus.db").state(OUTBOX_CURSOR) > cursor


def test_unknown_subscriptions_and_policies_are_refused_or_dead_lettered(tmp_path: Path,
                                                                         receiver: WebhookReceiver) -> None:
    store = BusStore(tmp_path / "bus.db")
    with pytest.raises(InvalidArgument, match="on_full must be"):
        store.enqueue([], queue_max=1, on_full="drop")
    bus = EventBus(store, events_config(receiver), None, lambda ref: SECRET)
    store.enqueue([(None, [Envelope("webhook:gone", "key.rotated", "k", {})])], queue_max=5, on_full="block")
    bus.deliver_once()
    [dead] = bus.dead_letters()
    assert "no subscription webhook:gone" in dead["last_error"]


class PoisonedOutbox(CatalogOutbox):
    """The catalog's outbox with one event no message can be made of (a topic the bus does not know)."""

    def __init__(self, catalog: Catalog, poisoned_seq: int) -> None:
        super().__init__(catalog)
        self.poisoned_seq = poisoned_seq

    def outbox_page(self, after: int, limit: int) -> list[dict[str, Any]]:
        page = super().outbox_page(after, limit)
        return [{**event, "topic": "object.exploded"} if event["seq"] == self.poisoned_seq else event
                for event in page]


def test_the_longest_keys_pass_and_a_bad_event_is_skipped_loudly_not_blocking_the_rest(
        tmp_path: Path, receiver: WebhookReceiver) -> None:
    """An object key of 1024 bytes under the longest tenant and bucket names is a message; an event that
    cannot be one is skipped (logged, counted as malformed) and every later event still goes out."""
    tenant, bucket = "t" * 63, "b" * 63
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_bucket(tenant, bucket, "id1")
    catalog.set_notification_rules(tenant, bucket, [RULE])
    longest = "k" * 1024  # S3's limit: 1024 bytes of UTF-8, so the message key is 1152 characters
    keys = ["first", longest, "poisoned", "last"]
    for n, key in enumerate(keys):
        catalog.commit_object(ObjectRecord(tenant, bucket, key, f"v{n}", True, False, 3, '"e"', "text/plain",
                                           created=1.0, placement=Placement("local", f"{tenant}/x/v{n}", b"H", b"T",
                                                                            f"tenant:{tenant}", 1)))
    poisoned = next(e["seq"] for e in CatalogOutbox(catalog).outbox_page(0, 10) if e["key"] == "poisoned")
    bus = EventBus(BusStore(tmp_path / "events" / "bus.db"), events_config(receiver), PoisonedOutbox(catalog, poisoned),
                   lambda ref: SECRET)
    bus.start()
    try:
        assert receiver.wait_for(lambda: len(receiver.records()) == 3, timeout=30), receiver.records()
    finally:
        bus.stop()
    from urllib.parse import quote_plus

    # (in order per key; different keys may arrive in any order)
    assert sorted(r["s3"]["object"]["key"] for r in receiver.records()) == \
        sorted(quote_plus(k) for k in ("first", longest, "last"))
    assert bus.status()["malformed"] == 1
