"""Publishing on the message bus from any process of a Ray warehouse (the kernel, plugins, the gateway).

``publish(config, topic, key, payload)`` hands the message to the ``events``
child, which stores it before answering: once ``publish`` returns, the message
will reach every subscriber of its topic (at least once). It raises what the
bus raises: ``InvalidArgument`` for an unknown topic or a payload that is not
small JSON, ``Backpressure`` when a subscriber's queue stayed full for
``[events] publish_wait`` seconds (policy ``block``), ``PluginUnavailable``
while the bus is down or restarting (the caller decides whether to retry).
With ``[events] enabled = false`` it does nothing and returns ``None``.

Object and bucket events are not published here: the catalog writes them to
its outbox in the transaction of the change (``dwray.core.catalog.outbox``).
"""
from __future__ import annotations

from typing import Any

from actors.handles import PluginHandle, plugin_handle
from dwray.config import DwrayConfig
from dwray.core.events.messages import Message
from dwray.errors import NotReady

__all__ = ["EVENTS_CHILD", "bus_handle", "publish"]

EVENTS_CHILD = "events"


def bus_handle(config: DwrayConfig, supervisor: Any | None = None) -> PluginHandle:
    """The handle of the ``events`` child of the warehouse ``config`` names (its supervisor found if not given)."""
    if supervisor is None:
        from actors.bootstrap import find_supervisor

        supervisor = find_supervisor(config)
        if supervisor is None:
            raise NotReady(f"no warehouse supervisor {config.runtime.supervisor_name!r} runs in Ray namespace "
                           f"{config.runtime.namespace!r}")
    return plugin_handle(config, supervisor, EVENTS_CHILD)


def publish(config: DwrayConfig, topic: str, key: str, payload: dict[str, Any], *,
            supervisor: Any | None = None, timeout: float | None = None) -> str | None:
    """Publish ``payload`` on ``topic`` (message group ``key``); the message's id once it is stored."""
    if not config.events.enabled:
        return None
    Message(topic, key, payload)  # refused here, before a round trip, if the bus would refuse it
    wait = config.events.publish_wait + 30 if timeout is None else timeout
    return bus_handle(config, supervisor).call("publish", topic, key, payload, timeout=wait)
