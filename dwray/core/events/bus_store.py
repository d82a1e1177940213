"""The message bus's own durable state: a bounded queue per subscription, dead letters and cursors.

SQLite with the catalog's settings (``dwray.core.sqlite_store``: WAL,
``synchronous=FULL``, 0600 files): a message is on disk before the bus says it
took it, and a bus killed with ``kill -9`` resumes where its file says. Memory
stays bounded whatever the backlog: the bus holds only the batch it delivers.

- ``queue``: one row per (subscription, message). A subscription's *live*
  rows (not dead) are at most ``queue_max``; a message that finds the queue
  full either waits (policy ``block``: ``enqueue`` takes nothing more, and the
  publisher, or the outbox reader, tries again later) or goes straight to the
  dead letters (policy ``dead-letter``), never silently dropped.
- Order per key: ``due`` offers only the oldest live row of each key of a
  subscription, so one key's messages are delivered one after another in the
  order they came; other keys are not held up by a slow one.
- Retries: a failed delivery is due again at ``next_at``; after
  ``max_attempts`` it is a dead letter (``dead = 1``), kept with its last error
  until ``replay`` puts it back in its queue.
- ``state``: named integers (the catalog outbox's cursor), written in the same
  transaction as the messages they account for.
- ``subscriptions``: the actor subscriptions callers registered at run time
  (webhook subscriptions come from the config).
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dwray.core.sqlite_store import SqliteStore
from dwray.errors import InvalidArgument

__all__ = ["BUS_MIGRATIONS", "BusStore", "Envelope", "QueuedMessage"]

BUS_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE state (
        name  TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE queue (
        seq          INTEGER PRIMARY KEY AUTOINCREMENT,
        subscription TEXT NOT NULL,
        topic        TEXT NOT NULL,
        key          TEXT NOT NULL,
        body         TEXT NOT NULL,
        created      REAL NOT NULL,
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_at      REAL NOT NULL DEFAULT 0,
        dead         INTEGER NOT NULL DEFAULT 0,
        last_error   TEXT
    );
    CREATE INDEX queue_heads ON queue (subscription, dead, key, seq);
    CREATE TABLE subscriptions (
        name      TEXT PRIMARY KEY,
        topics    TEXT NOT NULL,
        actor     TEXT NOT NULL,
        namespace TEXT,
        method    TEXT NOT NULL,
        created   REAL NOT NULL
    );
    """,
)


@dataclass(frozen=True)
class Envelope:
    """A message bound for one subscription: its topic, key (message group) and JSON body."""

    subscription: str
    topic: str
    key: str
    body: dict[str, Any]


@dataclass(frozen=True)
class QueuedMessage:
    """A queued (or dead) message as the bus and ``dw events dead-letters`` see it."""

    id: int
    subscription: str
    topic: str
    key: str
    body: dict[str, Any]
    created: float
    attempts: int
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "subscription": self.subscription, "topic": self.topic, "key": self.key,
                "created": self.created, "attempts": self.attempts, "last_error": self.last_error,
                "body": self.body}


_COLUMNS = "seq, subscription, topic, key, body, created, attempts, last_error"


def _message(row: Sequence[Any]) -> QueuedMessage:
    return QueuedMessage(row[0], row[1], row[2], row[3], json.loads(row[4]), row[5], row[6], row[7])


class BusStore(SqliteStore):
    """The bus's SQLite file. Thread-safe (one connection under a lock, as every ``SqliteStore``)."""

    label: ClassVar[str] = "event bus"
    migrations: ClassVar[tuple[str, ...]] = BUS_MIGRATIONS

    # Taking messages ------------------------------------------------------------

    def enqueue(self, groups: Iterable[tuple[int | None, list[Envelope]]], *, queue_max: int, on_full: str,
                cursor: str | None = None) -> tuple[int, int]:
        """Queue groups of envelopes (each group: one source event fanned out to its subscriptions) in one
        transaction, in order, and set state ``cursor`` to the last taken group's number (if given).

        Returns (groups taken, envelopes dead-lettered because their queue was full). Under ``block``
        the first group with an envelope whose queue is full and every later one are not taken; under
        ``dead-letter`` such envelopes are stored as dead letters ("queue full").
        """
        if on_full not in ("block", "dead-letter"):
            raise InvalidArgument(f"on_full must be 'block' or 'dead-letter', not {on_full!r}")
        taken = dead = 0
        now = time.time()
        with self._write() as db:
            depth: dict[str, int] = {}
            last = None
            for number, envelopes in groups:
                for envelope in envelopes:
                    if envelope.subscription not in depth:
                        depth[envelope.subscription] = db.execute(
                            "SELECT COUNT(*) FROM queue WHERE subscription = ? AND dead = 0",
                            (envelope.subscription,)).fetchone()[0]
                full = [e for e in envelopes if depth[e.subscription] >= queue_max]
                if full and on_full == "block":
                    break
                for envelope in envelopes:
                    is_dead = envelope in full
                    db.execute("INSERT INTO queue (subscription, topic, key, body, created, dead, last_error) "
                               "VALUES (?, ?, ?, ?, ?, ?, ?)",
                               (envelope.subscription, envelope.topic, envelope.key,
                                json.dumps(envelope.body, sort_keys=True), now, int(is_dead),
                                f"queue full ({queue_max} messages)" if is_dead else None))
                    if is_dead:
                        dead += 1
                    else:
                        depth[envelope.subscription] += 1
                taken += 1
                last = number
            if cursor is not None and last is not None:
                db.execute("INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                           "SET value = excluded.value", (cursor, int(last)))
        return taken, dead

    def set_state(self, name: str, value: int) -> None:
        with self._write() as db:
            db.execute("INSERT INTO state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
                       "SET value = excluded.value", (name, int(value)))

    def state(self, name: str, default: int = 0) -> int:
        rows = self._read("SELECT value FROM state WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else default

    # Delivering -----------------------------------------------------------------

    def due(self, subscription: str, limit: int, *, now: float | None = None) -> list[QueuedMessage]:
        """Up to ``limit`` messages to deliver now: the oldest live message of each key, if it is due."""
        return [_message(row) for row in self._read(
            f"SELECT {_COLUMNS} FROM queue q WHERE subscription = ? AND dead = 0 AND next_at <= ? AND seq = "
            "(SELECT MIN(seq) FROM queue WHERE subscription = q.subscription AND dead = 0 AND key = q.key) "
            "ORDER BY seq LIMIT ?", (subscription, time.time() if now is None else now, max(1, int(limit))))]

    def subscriptions_with_messages(self) -> list[str]:
        return [row[0] for row in self._read("SELECT DISTINCT subscription FROM queue WHERE dead = 0")]

    def ack(self, ids: Iterable[int]) -> None:
        """Delivered: remove them."""
        ids = [int(i) for i in ids]
        if ids:
            with self._write() as db:
                db.executemany("DELETE FROM queue WHERE seq = ?", [(i,) for i in ids])

    def failed(self, message_id: int, error: str, retry_at: float, max_attempts: int) -> bool:
        """A delivery failed: due again at ``retry_at``, or dead after ``max_attempts``. True if now dead."""
        with self._write() as db:
            row = db.execute("SELECT attempts FROM queue WHERE seq = ?", (int(message_id),)).fetchone()
            if row is None:
                return False
            dead = row[0] + 1 >= max_attempts
            db.execute("UPDATE queue SET attempts = attempts + 1, next_at = ?, dead = ?, last_error = ? "
                       "WHERE seq = ?", (retry_at, int(dead), error[:500], int(message_id)))
        return dead

    # Dead letters and queues ----------------------------------------------------------

    def dead_letters(self, subscription: str | None = None, limit: int = 100) -> list[QueuedMessage]:
        where, params = ("AND subscription = ?", (subscription,)) if subscription else ("", ())
        return [_message(row) for row in self._read(
            f"SELECT {_COLUMNS} FROM queue WHERE dead = 1 {where} ORDER BY seq LIMIT ?", (*params, int(limit)))]

    def replay(self, ids: Sequence[int] | None = None, subscription: str | None = None) -> int:
        """Put dead letters back in their queues (all, these ``ids``, or one subscription's); how many.

        A replay is an operator's decision: it may take a queue over ``queue_max`` for a while.
        """
        clauses, params = ["dead = 1"], []
        if ids:
            clauses.append(f"seq IN ({', '.join('?' * len(ids))})")
            params += [int(i) for i in ids]
        if subscription:
            clauses.append("subscription = ?")
            params.append(subscription)
        with self._write() as db:
            return db.execute(f"UPDATE queue SET dead = 0, attempts = 0, next_at = 0, last_error = NULL "
                              f"WHERE {' AND '.join(clauses)}", params).rowcount

    def depths(self) -> dict[str, dict[str, int]]:
        """Per subscription: live (``queued``) and ``dead`` messages."""
        found: dict[str, dict[str, int]] = {}
        for subscription, dead, count in self._read(
                "SELECT subscription, dead, COUNT(*) FROM queue GROUP BY subscription, dead"):
            found.setdefault(subscription, {"queued": 0, "dead": 0})["dead" if dead else "queued"] = count
        return found

    # Actor subscriptions ----------------------------------------------------------------

    def subscribe(self, name: str, topics: Sequence[str], actor: str, method: str, namespace: str | None) -> None:
        with self._write() as db:
            db.execute("INSERT INTO subscriptions VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                       "topics = excluded.topics, actor = excluded.actor, namespace = excluded.namespace, "
                       "method = excluded.method", (name, json.dumps(sorted(topics)), actor, namespace, method,
                                                    time.time()))

    def unsubscribe(self, name: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM subscriptions WHERE name = ?", (name,)).rowcount > 0

    def actor_subscriptions(self) -> list[dict[str, Any]]:
        return [{"name": name, "topics": json.loads(topics), "actor": actor, "namespace": namespace,
                 "method": method} for name, topics, actor, namespace, method in self._read(
                    "SELECT name, topics, actor, namespace, method FROM subscriptions ORDER BY name")]
