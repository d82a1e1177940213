"""The message bus as a supervised child of the plugin tree (``events``, plugin ``service.events``).

A thin shell over ``dwray.core.events.bus.EventBus``: it opens the bus's file
(``DATA_DIR/events/bus.db``), reads the catalog's outbox through the catalog
child (``RemoteOutbox``), resolves webhook secrets in this actor (the config
carries references only), delivers to subscribed actors over Ray, follows
the supervisor's numbered events to publish ``plugin.state``, and follows the
audit log's kept checkpoints to publish ``audit.checkpoint_signed``.

Not ``required``: the warehouse serves without it, since object and bucket
events wait in the catalog's outbox until it is back; a restart (``kill -9``
included) resumes from the bus's file. Its public methods are what
``actors.events_client`` and ``dw events`` call.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayError

from dwray.config import DwrayConfig
from dwray.core.events import BusStore, check_topic
from dwray.core.events.bus import EventBus
from dwray.core.plugins import Manifest, Plugin
from dwray.errors import Backpressure, DwrayError, InvalidArgument
from dwray.secrets import SecretResolver

__all__ = ["SUPERVISOR_CURSOR", "EventBusPlugin", "RemoteOutbox"]

log = logging.getLogger(__name__)

SUPERVISOR_CURSOR = "supervisor-events"
AUDIT_CURSOR = "audit-checkpoints"  # the size of the last kept checkpoint published
_SCHEMA = {"type": "object", "properties": {"settings": {"type": "object"}, "path": {"type": "string", "minLength": 1}},
           "required": ["settings", "path"], "additionalProperties": False}


class RemoteOutbox:
    """The catalog child's outbox and notification rules (``CatalogService``), as an ``OutboxSource``."""

    def __init__(self, config: DwrayConfig, supervisor: Any) -> None:
        from actors.handles import (
            plugin_handle,  # the host imports us; handles import the host's helpers
        )

        self._catalog = plugin_handle(config, supervisor, "catalog")

    def outbox_page(self, after: int, limit: int) -> list[dict[str, Any]]:
        return [event.as_dict() for event in self._catalog.call("outbox_page", after, limit, idempotent=True)]

    def outbox_trim(self, upto: int) -> int:
        return self._catalog.call("outbox_trim", upto, idempotent=True)

    def notification_rules(self, tenant: str, bucket: str) -> list[dict[str, Any]]:
        return self._catalog.call("notification_rules", tenant, bucket, idempotent=True)


class EventBusPlugin(Plugin):
    """Topics, subscriptions, durable bounded queues, webhook and actor delivery, dead letters."""

    manifest = Manifest(name="service.events", kind="service", version="1.0.0", capabilities=("events",),
                        config_schema=_SCHEMA)

    def __init__(self, settings: dict[str, Any], path: str) -> None:
        self._config = DwrayConfig.model_validate(settings)
        self.secret_resolver = SecretResolver(self._config)
        runtime = self._config.runtime
        self._supervisor = ray.get_actor(runtime.supervisor_name, namespace=runtime.namespace)
        self._store = BusStore(Path(path))
        self._bus = EventBus(self._store, self._config.events, RemoteOutbox(self._config, self._supervisor),
                             self._webhook_secret, self._deliver_to_actor)
        self._stop = threading.Event()
        self._bus.start()
        self._follower = threading.Thread(target=self._follow_supervisor, name="dwray-events-supervisor",
                                          daemon=True)
        self._follower.start()
        self._audit = None
        if self._config.audit.enabled:
            from actors.handles import plugin_handle  # as in RemoteOutbox

            self._audit = plugin_handle(self._config, self._supervisor, "audit")
        self._audit_follower = threading.Thread(target=self._follow_audit, name="dwray-events-audit", daemon=True)
        self._audit_follower.start()

    # What callers use ----------------------------------------------------------------

    def publish(self, topic: str, key: str, payload: dict[str, Any]) -> str:
        """Store a message of ``topic`` for its subscribers (durably, before returning its id)."""
        return self._bus.publish(topic, key, payload)

    def subscribe(self, name: str, topics: Sequence[str], actor: str, method: str,
                  namespace: str | None = None) -> None:
        """Deliver ``topics`` to ``actor.method(message)`` (a named Ray actor) from now on, as ``name``."""
        if not name or not actor or not method or method.startswith("_"):
            raise InvalidArgument("a subscription needs a name, an actor's name and a public method")
        if not topics:
            raise InvalidArgument(f"subscription {name!r} names no topic")
        for topic in topics:
            check_topic(topic)
        self._store.subscribe(name, list(topics), actor, method, namespace)

    def unsubscribe(self, name: str) -> bool:
        return self._store.unsubscribe(name)

    def subscriptions(self) -> dict[str, Any]:
        return {"webhooks": {name: list(hook.topics) for name, hook in self._config.events.webhooks.items()},
                "actors": self._store.actor_subscriptions()}

    def dead_letters(self, subscription: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if limit < 1:
            raise InvalidArgument(f"limit must be 1 or more, not {limit}")
        return self._bus.dead_letters(subscription, limit)

    def replay(self, ids: Sequence[int] | None = None, subscription: str | None = None) -> int:
        return self._bus.replay(list(ids) if ids else None, subscription)

    def status(self) -> dict[str, Any]:
        return self._bus.status()

    def health(self) -> dict[str, Any]:
        alive = self._bus.alive() and self._follower.is_alive() and self._audit_follower.is_alive()
        return {"ok": alive} if alive else {"ok": False, "reason": "a bus thread stopped"}

    def close(self) -> None:
        self._stop.set()
        self._bus.stop()
        self._follower.join(timeout=5)
        self._audit_follower.join(timeout=5)
        self._store.close()

    # Inside ----------------------------------------------------------------------------

    def _webhook_secret(self, ref: str) -> bytes:
        assert self.secret_resolver is not None
        return self.secret_resolver.get(ref).reveal_bytes()

    def _deliver_to_actor(self, subscription: Mapping[str, Any], body: dict[str, Any], timeout: float) -> str | None:
        namespace = subscription.get("namespace") or self._config.runtime.namespace
        try:
            actor = ray.get_actor(subscription["actor"], namespace=namespace)
            ray.get(getattr(actor, subscription["method"]).remote(body), timeout=timeout)
        except ValueError:
            return f"no actor {subscription['actor']!r} in namespace {namespace!r}"
        except GetTimeoutError:
            return f"actor {subscription['actor']!r} took over {timeout} s"
        except RayError as exc:
            return f"actor {subscription['actor']!r} failed: {type(exc).__name__}"
        return None

    def _follow_supervisor(self) -> None:
        """Publish the supervisor's new events (starts, failures, restarts) as ``plugin.state``."""
        interval = max(self._config.events.poll_interval, 0.5)
        while not self._stop.wait(interval):
            try:
                events = ray.get(self._supervisor.events.remote(200), timeout=30)
            except (RayError, GetTimeoutError) as exc:
                log.debug("event bus: the supervisor's events are unavailable: %s", exc)
                continue
            seen = self._store.state(SUPERVISOR_CURSOR)
            if events and events[-1]["seq"] < seen:
                seen = 0  # a new supervisor numbers from 1 again
            for event in events:
                if event["seq"] <= seen:
                    continue
                try:
                    payload = json.loads(json.dumps(event, default=str))
                    self._bus.publish("plugin.state", event.get("child") or "", payload)
                except (Backpressure, DwrayError) as exc:
                    log.warning("event bus: plugin.state not published, will retry: %s", exc)
                    break
                self._store.set_state(SUPERVISOR_CURSOR, event["seq"])

    def _follow_audit(self) -> None:
        """Publish each checkpoint the audit log keeps for good as ``audit.checkpoint_signed`` (keyed by
        the log's id): an outside monitor can fetch and check it as soon as it is signed."""
        if self._audit is None:
            return
        interval = max(self._config.events.poll_interval, 0.5)
        while not self._stop.wait(interval):
            seen = self._store.state(AUDIT_CURSOR)
            try:
                checkpoints = self._audit.call("checkpoints_since", seen, 100, idempotent=True)
            except DwrayError as exc:
                log.debug("event bus: the audit log's checkpoints are unavailable: %s", exc)
                continue
            for checkpoint in checkpoints:
                try:
                    self._bus.publish("audit.checkpoint_signed", str(checkpoint.get("log", "")), checkpoint)
                except (Backpressure, DwrayError) as exc:
                    log.warning("event bus: audit.checkpoint_signed not published, will retry: %s", exc)
                    break
                self._store.set_state(AUDIT_CURSOR, int(checkpoint["size"]))
