"""``dw events``: the message bus: its queues, dead letters and replay.

Through the running warehouse's bus (the ``events`` child) when a Ray warehouse
serves the data dir; else on the bus's file (``DATA_DIR/events/bus.db``) in
this process, under the data dir's lock: what is replayed then is delivered
when the warehouse next runs.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table

from dwray.cli.app import cli
from dwray.cli.output import emit, print_table, stdout
from dwray.cli.state import State, command
from dwray.errors import InvalidArgument

__all__ = ["events_group"]


@cli.group("events")
def events_group() -> None:
    """The message bus: queues, dead letters, replay."""


class _Bus:
    """The bus's operator methods, over Ray (a running warehouse) or on its file (none runs)."""

    def __init__(self, state: State) -> None:
        warehouse = state.warehouse
        self._handle = None
        self._store = None
        if getattr(warehouse, "supervisor", None) is not None:
            from actors.events_client import bus_handle

            self._handle = bus_handle(warehouse.config, warehouse.supervisor)
        else:
            from dwray.core.events import BusStore
            from dwray.core.events.bus import EventBus

            path = warehouse.config.data_dir / "events" / "bus.db"
            if not path.exists():
                raise InvalidArgument(f"the message bus has no file at {str(path)!r} yet: it has never run")
            self._store = BusStore(path)
            self._offline = EventBus(self._store, warehouse.config.events, None, lambda ref: b"")

    def call(self, method: str, *args: Any) -> Any:
        if self._handle is not None:
            return self._handle.call(method, *args)
        return getattr(self._offline, method)(*args)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


def _with_bus(state: State, method: str, *args: Any) -> Any:
    bus = _Bus(state)
    try:
        return bus.call(method, *args)
    finally:
        bus.close()


@command(events_group, "dead-letters")
@click.option("--subscription", default=None, help="only this subscription's (webhook:NAME or actor:NAME)")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
def dead_letters_command(state: State, as_json: bool, subscription: str | None, limit: int) -> None:
    """List dead letters: messages that exhausted their retries or found their queue full."""
    letters = _with_bus(state, "dead_letters", subscription, limit)

    def human() -> None:
        if not letters:
            stdout.print("no dead letters", highlight=False)
            return
        table = Table(title="dead letters")
        for column in ("id", "subscription", "topic", "key", "attempts", "last error"):
            table.add_column(column)
        for letter in letters:
            table.add_row(str(letter["id"]), letter["subscription"], letter["topic"], letter["key"][:80],
                          str(letter["attempts"]), letter["last_error"] or "")
        print_table(table)
    emit(as_json, letters, human)


@command(events_group, "replay")
@click.option("--id", "ids", multiple=True, type=int, help="a dead letter's id (repeatable)")
@click.option("--subscription", default=None, help="only this subscription's dead letters")
@click.option("--all", "everything", is_flag=True, help="every dead letter")
def replay_command(state: State, as_json: bool, ids: Sequence[int], subscription: str | None,
                   everything: bool) -> None:
    """Put dead letters back in their queues, to be delivered again."""
    if not (ids or subscription or everything):
        raise InvalidArgument("say what to replay: --id ID (repeatable), --subscription NAME, or --all")
    if everything and (ids or subscription):
        raise InvalidArgument("--all replays every dead letter: give it alone")
    count = _with_bus(state, "replay", list(ids) or None, subscription)
    emit(as_json, {"replayed": count}, lambda: stdout.print(f"{count} dead letter(s) queued again", highlight=False))


@command(events_group, "status")
def status_command(state: State, as_json: bool) -> None:
    """Each subscription's queued and dead messages, and what the bus has done."""
    status = _with_bus(state, "status")

    def human() -> None:
        table = Table(title=f"message bus (queue_max {status['queue_max']}, on_full {status['on_full']})")
        for column in ("subscription", "queued", "dead"):
            table.add_column(column)
        for name, depth in sorted(status["queues"].items()):
            table.add_row(name, str(depth["queued"]), str(depth["dead"]))
        print_table(table)
        counts = {k: v for k, v in status.items() if isinstance(v, int) and k not in ("queue_max",)}
        stdout.print(json.dumps(counts), highlight=False)
    emit(as_json, status, human)


@command(events_group, "publish")
@click.argument("topic")
@click.argument("key")
@click.argument("payload", default="{}")
def publish_command(state: State, as_json: bool, topic: str, key: str, payload: str) -> None:
    """Publish a message (PAYLOAD: a JSON object) on TOPIC to the running warehouse's bus."""
    try:
        body = json.loads(payload)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"PAYLOAD is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument("PAYLOAD must be a JSON object")
    message_id = _with_bus(state, "publish", topic, key, body)
    emit(as_json, {"id": message_id}, lambda: stdout.print(f"published {message_id}", highlight=False))
