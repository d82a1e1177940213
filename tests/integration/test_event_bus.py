"""The message bus on Ray: bucket notifications reach a webhook through a kill -9 of the bus, a slow webhook
makes backpressure (bounded queues), and dead letters are listed and replayed with ``dw events``.

One tree of its own (its own namespace) with three webhooks, each a real HTTP server on loopback that
verifies every signature: ``hook`` (bucket notifications), ``slow`` (answers after 0.3 s) and ``late``
(down until the test starts it, for dead letters). Queues hold at most 5 messages (``block``), so
backpressure shows with little load.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from dwray.config import RuntimeConfig
from dwray.config_events import EventsConfig
from tests.conftest import make_config
from tests.helpers import wait_until
from tests.integration.events_receiver import WebhookReceiver

SECRET = b"a-webhook-secret-for-tests"
QUEUE_MAX = 5
CHECKPOINT_EVERY = 8  # the audit log keeps a signed checkpoint for good every 8 entries


class BusTree:
    def __init__(self, warehouse: Any, receivers: dict[str, WebhookReceiver], config: Any) -> None:
        self.wh, self.receivers, self.config = warehouse, receivers, config

    def child(self, child_id: str) -> dict[str, Any]:
        return {c["id"]: c for c in self.wh.status()["children"]}[child_id]

    def bus_pid(self) -> int:
        return wait_until(lambda: self.child("events")["state"] == "running" and self.child("events")["pid"],
                          120, "the bus to run")

    def bus_status(self) -> dict[str, Any]:
        from actors.events_client import bus_handle

        return bus_handle(self.config, self.wh.supervisor).call("status")


@pytest.fixture(scope="module")
def tree(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BusTree]:
    import ray

    from actors.attach import RayWarehouse
    from actors.bootstrap import release_data_dir, start_supervisor

    root = tmp_path_factory.mktemp("event-bus")
    secret_file = root / "hook-secret"
    secret_file.write_bytes(SECRET)
    secret_file.chmod(0o600)
    receivers = {"hook": WebhookReceiver(SECRET), "slow": WebhookReceiver(SECRET, delay=0.3),
                 "monitor": WebhookReceiver(SECRET)}
    late_port = WebhookReceiver(SECRET)  # its port, then closed: "late" is down until a test starts it
    late_port.close()
    urls = {**{name: r.url for name, r in receivers.items()}, "late": late_port.url}
    ref = f"secret://file/{secret_file}"
    events = EventsConfig.model_validate({
        "queue_max": QUEUE_MAX, "on_full": "block", "poll_interval": 0.1, "retry_base": 0.1, "retry_max": 0.5,
        "max_attempts": 3, "delivery_timeout": 5,
        "webhooks": {"hook": {"url": urls["hook"], "secret": ref, "topics": ["bucket.created"]},
                     "slow": {"url": urls["slow"], "secret": ref},
                     "late": {"url": urls["late"], "secret": ref, "topics": ["key.rotated"]},
                     "monitor": {"url": urls["monitor"], "secret": ref, "topics": ["audit.checkpoint_signed"]}}})
    base = make_config(root / "data")
    config = base.model_copy(update={
        "runtime": RuntimeConfig(namespace=f"dwray-test-{uuid.uuid4().hex[:8]}", ping_interval=0.5,
                                 stage_placement="caller"),
        "events": events,
        "audit": base.audit.model_copy(update={"checkpoint_every": CHECKPOINT_EVERY})})
    supervisor = start_supervisor(config)
    warehouse = RayWarehouse(config, supervisor)
    receivers["late-port"] = late_port
    try:
        yield BusTree(warehouse, receivers, config)
    finally:
        warehouse.close()
        ray.get(supervisor.stop.remote())
        ray.kill(supervisor)
        release_data_dir(config)
        for receiver in receivers.values():
            receiver.close()


def notify(tree: BusTree, bucket: str, webhook: str, *events: str) -> None:
    tree.wh.create_bucket(bucket)
    tree.wh.set_bucket_notification(bucket, [{"id": f"{bucket}-rule", "kind": "Queue", "webhook": webhook,
                                              "events": list(events), "prefix": "", "suffix": ""}])


def test_every_notification_reaches_the_webhook_through_a_kill_9_of_the_bus(tree: BusTree) -> None:
    hook = tree.receivers["hook"]
    notify(tree, "nb-kill", "hook", "s3:ObjectCreated:*", "s3:ObjectRemoved:*")
    assert tree.wh.bucket_notification("nb-kill")[0]["webhook"] == "hook"
    generation = tree.child("events")["generation"]
    pid = tree.bus_pid()
    puts, deletes = 40, 20
    expected = {("ObjectCreated:Put", f"k{n:03d}") for n in range(puts)}
    expected |= {("ObjectRemoved:Delete", f"k{n:03d}") for n in range(deletes)}
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for n in range(puts):
                tree.wh.put("nb-kill", f"k{n:03d}", f"body {n}".encode())
            for n in range(deletes):
                tree.wh.delete("nb-kill", f"k{n:03d}")
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    writer = threading.Thread(target=load)
    writer.start()
    wait_until(lambda: len(hook.records()) >= 5, 60, "the first notifications")
    os.kill(pid, signal.SIGKILL)  # kill -9 of the bus while puts and deletes go on
    writer.join(timeout=180)
    assert not writer.is_alive() and not errors, errors  # the warehouse served throughout
    wait_until(lambda: tree.child("events")["generation"] > generation, 120, "the bus to be restarted")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    def received() -> set[tuple[str, str]]:
        return {(r["eventName"], r["s3"]["object"]["key"]) for r in hook.records()
                if r["s3"]["bucket"]["name"] == "nb-kill"}
    wait_until(lambda: received() >= expected, 180, "every notification after the restart")
    assert received() == expected  # nothing lost, nothing invented (duplicates allowed)
    assert hook.bad_signatures == 0
    records = [r for r in hook.records() if r["s3"]["bucket"]["name"] == "nb-kill"]
    assert {r["eventVersion"] for r in records} == {"2.1"} and {r["eventSource"] for r in records} == {"aws:s3"}
    # per key, the creation comes before the removal (ordered per message group)
    for n in range(deletes):
        names = [r["eventName"] for r in records if r["s3"]["object"]["key"] == f"k{n:03d}"]
        assert names.index("ObjectCreated:Put") < len(names) - names[::-1].index("ObjectRemoved:Delete") - 1
    # bucket.created reached the hook's topic subscription too
    assert any(m["payload"]["bucket"] == "nb-kill" for m in hook.messages("bucket.created"))


def test_a_slow_webhook_makes_backpressure_not_a_growing_queue(tree: BusTree) -> None:
    slow = tree.receivers["slow"]
    notify(tree, "nb-slow", "slow", "s3:ObjectCreated:Put")
    rss_before = psutil.Process(tree.bus_pid()).memory_info().rss
    count = 30
    for n in range(count):
        tree.wh.put("nb-slow", f"s{n:03d}", b"x")  # writes are never held up: their events wait on disk
    deepest = 0
    deadline = time.monotonic() + 120
    while len({r["s3"]["object"]["key"] for r in slow.records()}) < count and time.monotonic() < deadline:
        queued = tree.bus_status()["queues"].get("webhook:slow", {}).get("queued", 0)
        deepest = max(deepest, queued)
        time.sleep(0.1)
    assert {r["s3"]["object"]["key"] for r in slow.records()} == {f"s{n:03d}" for n in range(count)}
    assert 0 < deepest <= QUEUE_MAX  # bounded: the rest waited in the catalog's outbox
    status = tree.bus_status()
    assert status["blocked"] > 0  # the reader was held back by the full queue
    assert psutil.Process(tree.bus_pid()).memory_info().rss < rss_before + (64 << 20)


def dw(tree: BusTree, *args: str) -> Any:
    result = subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(tree.config.data_dir), "events",
                             *args, "--json"], capture_output=True, text=True, timeout=240, check=False,
                            env={**os.environ, "RAY_ADDRESS": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_dead_letters_are_listed_and_replayed_by_the_cli(tree: BusTree) -> None:
    from actors.events_client import publish

    late = tree.receivers["late-port"]
    ids = [publish(tree.config, "key.rotated", "tenant-a", {"n": n}, supervisor=tree.wh.supervisor)
           for n in range(3)]
    assert all(ids)
    wait_until(lambda: tree.bus_status()["queues"].get("webhook:late", {}).get("dead", 0) == 3, 60,
               "three dead letters for the webhook that is down")
    letters = dw(tree, "dead-letters", "--subscription", "webhook:late")
    assert [letter["body"]["payload"] for letter in letters] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert all(letter["attempts"] == 3 and "not reached" in letter["last_error"] for letter in letters)
    assert SECRET.decode() not in json.dumps(letters)
    receiver = WebhookReceiver(SECRET, port=late.port)  # the webhook is back
    tree.receivers["late"] = receiver
    assert dw(tree, "replay", "--id", str(letters[0]["id"])) == {"replayed": 1}
    wait_until(lambda: [m["payload"] for m in receiver.messages("key.rotated")] == [{"n": 0}], 60, "the replay")
    assert dw(tree, "replay", "--all") == {"replayed": 2}
    wait_until(lambda: len(receiver.messages("key.rotated")) == 3, 60, "every replayed letter")
    assert [m["payload"]["n"] for m in receiver.messages("key.rotated")] == [0, 1, 2]  # in order, one key
    assert dw(tree, "dead-letters") == []


def test_each_checkpoint_the_audit_log_keeps_is_published_signed(tree: BusTree) -> None:
    """``audit.checkpoint_signed``: an outside monitor gets every kept checkpoint and can check its signature."""
    from dwray.core.audit import AuditLocations
    from dwray.core.audit.checkpoints import CheckpointSigner, SignedCheckpoint, canonical_json

    monitor = tree.receivers["monitor"]
    tree.wh.create_bucket("audit-events")
    for n in range(2 * CHECKPOINT_EVERY):  # each put is an audit entry: two kept checkpoints at least
        tree.wh.put("audit-events", f"k{n}", b"x")
    assert monitor.wait_for(lambda: len(monitor.messages("audit.checkpoint_signed")) >= 2, 60), monitor.received
    public_key = CheckpointSigner(AuditLocations.of(tree.config).signing_key, create=False).public_key
    sizes = []
    for message in monitor.messages("audit.checkpoint_signed"):
        payload = dict(message["payload"])
        signed = SignedCheckpoint.from_json(canonical_json({
            "checkpoint": {name: payload[name] for name in ("log", "root", "size", "time")},
            "signature": payload["signature"], "key_id": payload["key_id"]}))
        assert signed.verify(public_key), payload
        assert message["key"] == payload["log"]  # one message group per log: in order
        sizes.append(payload["size"])
    assert all(size % CHECKPOINT_EVERY == 0 for size in sizes), sizes
    first_seen = list(dict.fromkeys(sizes))  # at least once: a redelivery may repeat one, never reorder
    assert first_seen == sorted(first_seen) and len(first_seen) >= 2, sizes
