"""The catalog's event outbox and bucket notification rules (schema migration 8).

The message bus must report every acknowledged change, even one made while the
bus was down or being restarted. So the change and its event are committed in
one SQLite transaction: triggers add bucket creations and removals and every new
version or delete marker to ``event_outbox``; the store adds the versions a
delete removes (``_outbox_removal_in``), since a trigger on ``DELETE`` cannot tell a
removal from the replacement an overwrite makes. The bus reads the outbox in
``seq`` order (``outbox_page``) and deletes what it has durably taken
(``outbox_trim``): an event is in the outbox or in the bus's own store, never in
neither.

Events of other topics that the catalog sees happen (a write taking a quota's
usage to ``NEAR_LIMIT`` of its limit) or that the kernel hands it
(``outbox_publish``: a key rotation) go the same way, with a JSON payload.

A bucket's notification rules (S3's NotificationConfiguration, as validated by
``dwray.core.events.notifications``) are JSON in ``bucket_notifications``; they
go with their bucket (a trigger).
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from dwray.core.catalog.records import ObjectRecord
from dwray.errors import CatalogError

__all__ = ["NEAR_LIMIT", "EventOutbox", "OutboxEvent", "publish_in"]


@dataclass(frozen=True)
class OutboxEvent:
    """One change the bus will report: its topic, S3 event name and what it changed."""

    seq: int
    topic: str
    name: str
    tenant: str
    bucket: str
    key: str
    version_id: str | None
    size: int
    etag: str
    created: float
    #: what an event of another topic than the object and bucket ones says (``outbox_publish``)
    payload: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = "seq, topic, name, tenant, bucket, key, version_id, size, etag, created, payload"
#: a quota's usage at or above this share of its limit is near it (``quota.near_limit``, once per crossing)
NEAR_LIMIT = 0.9


def publish_in(db: sqlite3.Connection, topic: str, key: str, payload: dict[str, Any]) -> None:
    """Add an event of ``topic`` with message group ``key`` to the outbox, in ``db``'s transaction."""
    db.execute("INSERT INTO event_outbox (topic, name, tenant, bucket, key, created, payload) "
               "VALUES (?, ?, ?, '', ?, ?, ?)", (topic, topic, str(payload.get("tenant", "")), key, time.time(),
                                                  json.dumps(payload, sort_keys=True)))


class EventOutbox:
    """The outbox and notification rules, as methods of the ``Catalog`` (a ``SqliteStore``)."""

    _db: sqlite3.Connection

    def outbox_page(self, after: int = 0, limit: int = 500) -> list[OutboxEvent]:
        """Up to ``limit`` outbox events with ``seq`` above ``after``, oldest first."""
        rows = self._read(f"SELECT {_COLUMNS} FROM event_outbox WHERE seq > ? ORDER BY seq LIMIT ?",  # type: ignore[attr-defined]
                          (int(after), max(1, int(limit))))
        return [OutboxEvent(*row[:10], json.loads(row[10])) for row in rows]

    def outbox_trim(self, upto: int) -> int:
        """Delete the outbox events up to ``seq`` ``upto`` (the bus has them); return how many went."""
        with self._write() as db:  # type: ignore[attr-defined]
            return db.execute("DELETE FROM event_outbox WHERE seq <= ?", (int(upto),)).rowcount

    def outbox_publish(self, topic: str, key: str, payload: dict[str, Any]) -> None:
        """Add a kernel event (``key.rotated``, say) to the outbox, for the bus to deliver at least once."""
        from dwray.core.events.messages import (
            Message,  # checks the topic and payload; the bus reads both
        )

        Message(topic, key, payload)
        with self._write() as db:  # type: ignore[attr-defined]
            publish_in(db, topic, key, payload)

    def outbox_size(self) -> int:
        """How many events wait in the outbox (for the bus's status)."""
        return int(self._read("SELECT COUNT(*) FROM event_outbox")[0][0])  # type: ignore[attr-defined]

    @staticmethod
    def _outbox_removal_in(db: sqlite3.Connection, record: ObjectRecord | None) -> None:
        """Add the removal of ``record`` (a version a delete took away) to the outbox, in ``db``'s transaction."""
        if record is None:
            return
        name = "ObjectRemoved:Delete" if not record.delete_marker else "ObjectRemoved:DeleteMarkerRemoved"
        db.execute("INSERT INTO event_outbox (topic, name, tenant, bucket, key, version_id, size, etag, created) "
                   "VALUES ('object.removed', ?, ?, ?, ?, ?, ?, ?, ?)",
                   (name, record.tenant, record.bucket, record.key, record.public_version_id,
                    0 if record.delete_marker else record.size, record.etag, time.time()))

    def notification_rules(self, tenant: str, bucket: str) -> list[dict[str, Any]]:
        """The bucket's notification rules (``[]`` when none); ``BucketNotFound`` if the tenant has no such bucket."""
        self.get_bucket(tenant, bucket)  # type: ignore[attr-defined]
        rows = self._read("SELECT rules FROM bucket_notifications WHERE tenant = ? AND bucket = ?",  # type: ignore[attr-defined]
                          (tenant, bucket))
        return json.loads(rows[0][0]) if rows else []

    def set_notification_rules(self, tenant: str, bucket: str, rules: list[dict[str, Any]]) -> None:
        """Replace the bucket's notification rules (``[]`` removes them)."""
        try:
            encoded = json.dumps(list(rules), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise CatalogError(f"notification rules are not JSON: {exc}") from None
        with self._write() as db:  # type: ignore[attr-defined]
            if not db.execute("SELECT 1 FROM buckets WHERE tenant = ? AND name = ?", (tenant, bucket)).fetchone():
                raise self._no_bucket(db, tenant, bucket)  # type: ignore[attr-defined]
            db.execute("DELETE FROM bucket_notifications WHERE tenant = ? AND bucket = ?", (tenant, bucket))
            if rules:
                db.execute("INSERT INTO bucket_notifications (tenant, bucket, rules) VALUES (?, ?, ?)",
                           (tenant, bucket, encoded))
