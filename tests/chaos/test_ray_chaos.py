"""kill -9 of plugin worker processes under a concurrent put load (DESIGN.md sections 3 and 4).

A plugin tree of its own (own Ray namespace, own data dir, 64 KiB frames and
128 KiB stage batches, so objects span frames and batches and the larger ones
go through upload sessions) takes puts from several writers at once: Ray tasks
that attach with ``dwray.connect()`` like any driver task, plus a thread of
this driver on a ``RayWarehouse``. Meanwhile the worker process of
``storage:local``, of a ``stage:frames:N`` and of ``catalog`` is killed with
SIGKILL, three rounds each. Each PID is found through Ray's state API
(``ray.util.state.list_actors``, filtered by actor id, name, namespace and
ALIVE) and cross-checked with the host's ``pid()`` and the supervisor's status
before it is killed; only PIDs located this way are killed.

Checked afterwards:

- every acknowledged put reads back byte-identical (MD5 and length), with the
  size and ETag it was acknowledged with;
- every unacknowledged put is absent, or present whole and equal to what its
  writer tried to store; the listing holds exactly the acknowledged keys plus
  those present unacknowledged ones; a failed put raised a dwray error;
- after ``sweep(grace_seconds=0)`` the storage holds exactly the blobs the
  catalog references and no temp file (a failed put leaves nothing behind for good);
- the supervisor restarted each killed child once per kill (new generation,
  new PID, restarts counted, a failure event naming the killed generation),
  restarted nothing else, did not escalate, and is ``ready()``;
- every writer, without reconnecting, was acknowledged again after the last kill;
- kill-to-recovery: the time from each kill to the next successful call to
  that plugin (through a ``PluginHandle`` that still held the killed
  generation) is printed, with its median and max per plugin kind, and
  attached with ``record_property``; each must be under ``RECOVERY_BOUND`` so
  a hang fails the test. Each kill waits for the child's spare host (the
  supervisor prepares one after every start) to be ready: the kill of a
  warehouse in its steady state, which a spare makes quick.

The memory cap and the never-returning handshake at start are covered with
real actors in ``tests/integration/test_supervisor_calls.py``
(``test_memory_cap_watchdog_stops_the_host_and_it_is_restarted``) and
``tests/integration/test_supervisor.py``
(``test_hanging_handshake_is_refused_naming_the_timeout``); this module adds
the one path they leave out: a handshake that never returns while the child is
being *restarted* (a child that is not required), which must kill each hung
host and escalate with the reason rather than hang the supervisor.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
import ray

from actors.attach import RayWarehouse
from actors.bootstrap import start_supervisor
from actors.handles import PluginHandle
from actors.remote_storage import RayFrameEngine
from actors.supervisor import create_supervisor
from dwray.client import connect
from dwray.config import DwrayConfig, PipelineConfig, RuntimeConfig, StorageConfig
from dwray.core.frames import ObjectIdentity, new_object_keys
from dwray.core.pipeline import ObjectCrypto
from dwray.core.supervision import SupervisorSpec
from dwray.errors import DwrayError, ObjectNotFound
from tests.helpers import wait_until

# The writer tasks' code travels by value: Ray workers need not be able to import this test module
# (they cannot when pytest runs from outside the repository).
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

TENANT = "default"
BUCKET = "chaos"
FRAME_SIZE = 64 << 10
# Stage batches of two frames: objects above 128 KiB stream through upload sessions.
BATCH_BYTES = 128 << 10
MAX_OBJECT = 320 << 10
STAGE_WORKERS = 2
TASK_WRITERS = 3  # Ray tasks; writer 0 is a thread of this driver
WRITERS = TASK_WRITERS + 1
MAX_PUTS = 1500  # per writer: the load stops by itself even if the stop file never comes
# Each writer paces itself, so that it runs through every kill however fast puts are (small ones
# are a single catalog commit) without writing more than the checks can read back in time.
PUT_INTERVAL = 0.05
LOAD_LIMIT = 150.0  # seconds: ditto
ROUNDS = 3
RECOVERY_BOUND = 60.0
SENTINEL = "sentinel/object"
# Over one frame, so it has a blob for the storage probe to stat (one frame would be kept inline).
SENTINEL_BODY = b"sentinel " * 16_000

# Sizes around the frame and batch edges, plus random ones up to MAX_OBJECT.
_EDGE_SIZES = (0, 1, 100, FRAME_SIZE - 1, FRAME_SIZE, FRAME_SIZE + 1, BATCH_BYTES, BATCH_BYTES + 1,
               2 * BATCH_BYTES + 3)


def key_of(writer: int, index: int) -> str:
    return f"w{writer}/obj-{index:05d}"


def content(writer: int, index: int) -> bytes:
    """The deterministic bytes writer ``writer`` puts as its ``index``-th object."""
    rng = random.Random(f"dwray-chaos:{writer}:{index}")
    size = rng.choice(_EDGE_SIZES) if rng.random() < 0.3 else rng.randrange(0, MAX_OBJECT)
    if rng.random() < 0.5:
        return rng.randbytes(size)  # incompressible
    unit = f"writer {writer} object {index} ".encode() + rng.randbytes(16)
    return (unit * (size // len(unit) + 1))[:size]  # compressible


def md5(data: bytes | memoryview) -> str:
    return hashlib.md5(data).hexdigest()


def write_load(warehouse: Any, writer: int, stop_file: str, deadline: float) -> list[dict[str, Any]]:
    """Put ``key_of(writer, i)`` for i = 0, 1, ... until the stop file, the deadline or ``MAX_PUTS``.

    Returns one record per put: acknowledged (``put`` returned) or not (it raised), and when.
    """
    warehouse.engine = RayFrameEngine(warehouse.engine.stages, batch_bytes=BATCH_BYTES)
    records: list[dict[str, Any]] = []
    for index in range(MAX_PUTS):
        if time.time() > deadline or os.path.exists(stop_file):
            break
        data = content(writer, index)
        record: dict[str, Any] = {"writer": writer, "index": index, "key": key_of(writer, index),
                                  "size": len(data), "md5": md5(data), "t0": time.time()}
        try:
            info = warehouse.put(BUCKET, record["key"], data)
        except Exception as exc:  # noqa: BLE001 - recorded; the test checks what it was
            record.update(acked=False, error=f"{type(exc).__name__}: {exc}"[:400],
                          dwray_error=isinstance(exc, DwrayError))
            time.sleep(0.05)  # the plugin is restarting: do not spin
        else:
            record.update(acked=True, error=None, dwray_error=None, etag=info.etag, acked_size=info.size)
        record["t1"] = time.time()
        records.append(record)
        time.sleep(max(0.0, PUT_INTERVAL - (record["t1"] - record["t0"])))
    return records


@ray.remote(num_cpus=0, max_retries=0)
def remote_writer(config: DwrayConfig, writer: int, stop_file: str, deadline: float) -> list[dict[str, Any]]:
    """A driver task: attaches to the running warehouse by name (``ray.is_initialized()`` here)."""
    warehouse = connect(config=config, start=False)
    try:
        return write_load(warehouse, writer, stop_file, deadline)
    finally:
        warehouse.close()


# -- the plugin tree ------------------------------------------------------------------------------


@dataclass
class Tree:
    config: DwrayConfig
    supervisor: Any
    namespace: str
    pid_sources: set[str] = field(default_factory=set)

    def status(self) -> dict[str, Any]:
        return ray.get(self.supervisor.status.remote(), timeout=30)

    def child(self, child_id: str) -> dict[str, Any]:
        return next(c for c in self.status()["children"] if c["id"] == child_id)

    def events(self) -> list[dict[str, Any]]:
        return ray.get(self.supervisor.events.remote(1000), timeout=30)

    def ready(self) -> tuple[bool, str]:
        return tuple(ray.get(self.supervisor.ready.remote(), timeout=30))  # type: ignore[return-value]

    def handle(self, child_id: str) -> PluginHandle:
        return PluginHandle(child_id, supervisor=self.supervisor, namespace=self.namespace,
                            supervisor_name=self.config.runtime.supervisor_name)

    def warehouse(self) -> RayWarehouse:
        return RayWarehouse(self.config, self.supervisor, owns_ray=False)


@pytest.fixture(scope="module")
def tree(ray_session: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    namespace = f"dwray-chaos-{uuid.uuid4().hex[:8]}"
    config = DwrayConfig(
        data_dir=tmp_path_factory.mktemp("ray-chaos") / "data",
        storage=StorageConfig(backend="local"),
        pipeline=PipelineConfig(frame_size=FRAME_SIZE),
        runtime=RuntimeConfig(namespace=namespace, ping_interval=0.2, max_restarts=20, restart_period=60.0,
                              stage_workers=STAGE_WORKERS))
    supervisor = start_supervisor(config)
    try:
        tree = Tree(config, supervisor, namespace)
        # The optional children (the event bus) start once the rest runs: the test's steady state has them.
        wait_until(lambda: all(c["state"] == "running" for c in tree.status()["children"]), 60.0,
                   "every child to run")
        yield tree
    finally:
        try:
            ray.get(supervisor.stop.remote(), timeout=60)
        finally:
            ray.kill(supervisor)


# -- finding and killing a plugin's worker process ---------------------------------------------------


def _pid_from_state_api(name: str, namespace: str, actor_id: str) -> tuple[int, str]:
    """The PID Ray's state records for the live actor ``actor_id`` (named ``name`` in ``namespace``).

    The state API is served by the head's dashboard process, which Ray 2.60
    starts even with ``include_dashboard=False`` (as tests/conftest.py asks),
    but which takes seconds to come up on a loaded 2-core machine, and whose
    fixed port (8265) may already belong to another Ray instance on a shared
    host. When it does not (yet) know this actor, the GCS actor table that it
    serves from is read directly. ``Tree.pid_sources`` says which answered.
    """
    from ray.util.state import list_actors
    from ray.util.state.exception import RayStateApiException

    try:
        rows = list_actors(address=ray.get_runtime_context().gcs_address, timeout=10,
                           filters=[("actor_id", "=", actor_id), ("name", "=", name),
                                    ("ray_namespace", "=", namespace), ("state", "=", "ALIVE")])
    except (RayStateApiException, ConnectionError):
        rows = []
    if rows:
        assert len(rows) == 1 and rows[0].actor_id == actor_id, rows
        return int(rows[0].pid), "ray.util.state.list_actors"
    from ray._private import state as gcs_state

    info = gcs_state.actors(actor_id=actor_id)
    assert info["Name"] == name and info["State"] == "ALIVE", info
    return int(info["Pid"]), "GCS actor table (ray._private.state.actors)"


def locate(tree: Tree, child_id: str) -> int:
    """The worker PID of ``child_id``'s running host: state API, cross-checked with pid() and status."""
    name = tree.child(child_id)["actor"]
    host = ray.get_actor(name, namespace=tree.namespace)
    pid, source = _pid_from_state_api(name, tree.namespace, host._actor_id.hex())
    tree.pid_sources.add(source)
    assert pid > 0
    assert ray.get(host.pid.remote(), timeout=30) == pid, f"{child_id}: state API and pid() disagree"
    assert tree.child(child_id)["pid"] == pid, f"{child_id}: state API and the supervisor disagree"
    return pid


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# -- probes: a cheap idempotent call per plugin kind, checked -------------------------------------------


def make_probe(tree: Tree, child_id: str) -> Callable[[], int]:
    """A checked idempotent call on ``child_id`` through one cached ``PluginHandle``; returns the generation."""
    handle = tree.handle(child_id)
    if child_id == "catalog":
        def call() -> None:
            assert handle.call("get_bucket", TENANT, BUCKET, idempotent=True, timeout=20).name == BUCKET
    elif child_id.startswith("storage:"):
        blob_id = tree.warehouse().catalog.get_object(TENANT, BUCKET, SENTINEL).placement.blob_id
        size = handle.call("stat_blob", blob_id, idempotent=True, timeout=20).size

        def call() -> None:
            assert handle.call("stat_blob", blob_id, idempotent=True, timeout=20).size == size
    else:
        keys = new_object_keys()
        crypto = ObjectCrypto(ObjectIdentity(TENANT, BUCKET, "probe", "v1"), keys.dek, keys.nonce_prefix,
                              FRAME_SIZE)
        plain = np.frombuffer(b"probe " * 100, dtype=np.uint8)

        def call() -> None:
            records, lengths = handle.call("seal_batch", crypto, 0, True, [plain], idempotent=True, timeout=20)
            opened = handle.call("open_batch", crypto, 0, 0, records, lengths, idempotent=True, timeout=20)
            assert bytes(opened[0]) == plain.tobytes()

    def probe() -> int:
        call()
        assert handle.generation is not None
        return handle.generation

    probe()  # the handle now caches the current generation, as a long-lived client's would
    return probe


@dataclass
class Kill:
    child: str
    pid: int
    generation: int
    at: float  # time.time() of the kill
    writers_running: int
    recovered_after: float = 0.0  # seconds from the kill to the next successful call
    restarted_after: float = 0.0  # seconds from the kill to the supervisor's "started" event
    new_generation: int = 0
    failed_attempts: list[str] = field(default_factory=list)


def kill_and_recover(tree: Tree, child_id: str, probe: Callable[[], int], writers_running: int) -> Kill:
    # Each kill hits a warehouse in its steady state: the child's spare host (started after its
    # last restart) is ready. Kills faster than spares start are the kill storm's subject
    # (tests/integration/gateway/test_kill_storm.py).
    before = wait_until(lambda: (lambda c: c if c["standby"] else None)(tree.child(child_id)), 60.0,
                        f"{child_id}'s spare host to be ready")
    assert before["state"] == "running", before
    pid = locate(tree, child_id)
    kill = Kill(child_id, pid, before["generation"], time.time(), writers_running)
    began = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: dead(pid), 10.0, f"pid {pid} ({child_id}) to die")
    while True:
        try:
            kill.new_generation = probe()
            kill.recovered_after = time.monotonic() - began
            break
        except DwrayError as exc:  # e.g. still restarting after the handle's own wait
            kill.failed_attempts.append(f"{type(exc).__name__}: {exc}")
            assert time.monotonic() - began < RECOVERY_BOUND, \
                f"{child_id} did not recover within {RECOVERY_BOUND} s of kill -9: {kill.failed_attempts}"
            time.sleep(0.05)
    assert kill.new_generation > kill.generation, kill
    assert kill.recovered_after < RECOVERY_BOUND, kill
    return kill


# -- the test ---------------------------------------------------------------------------------------------


def listed_keys(warehouse: RayWarehouse, prefix: str) -> list[str]:
    return [info.key for info in warehouse.iter_objects(BUCKET, prefix=prefix)]


def test_kill_9_of_storage_stage_and_catalog_under_concurrent_puts(
        tree: Tree, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    began = time.monotonic()
    driver_wh = tree.warehouse()
    driver_wh.create_bucket(BUCKET)
    driver_wh.put(BUCKET, SENTINEL, SENTINEL_BODY)
    stages = [f"stage:frames:{n}" for n in range(STAGE_WORKERS)]
    probes = {child: make_probe(tree, child) for child in ["storage:local", "catalog", *stages]}
    initial = {c["id"]: c for c in tree.status()["children"]}
    assert all(c["state"] == "running" and c["generation"] == 1 for c in initial.values()), initial

    # The load: three driver tasks attached with connect(), and one thread of this driver.
    stop_file = str(tmp_path / "stop")
    deadline = time.time() + LOAD_LIMIT
    refs = [remote_writer.remote(tree.config, writer, stop_file, deadline) for writer in range(1, WRITERS)]
    thread_records: list[dict[str, Any]] = []
    thread_error: list[BaseException] = []

    def driver_writer() -> None:
        try:
            thread_records.extend(write_load(tree.warehouse(), 0, stop_file, deadline))
        except BaseException as exc:  # noqa: BLE001 - reported below
            thread_error.append(exc)

    thread = threading.Thread(target=driver_writer, name="chaos-writer-0", daemon=True)
    thread.start()

    def writers_running() -> int:
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        return len(refs) - len(done) + int(thread.is_alive())

    kills: list[Kill] = []
    try:
        # Kill only once every writer is attached and acknowledged.
        def first_ack(writer: int) -> bool:
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            ray.get(done)  # a writer task that ended this early failed: say why
            assert thread.is_alive() and not thread_error, thread_error
            return bool(driver_wh.list(BUCKET, prefix=f"w{writer}/", max_keys=1).objects)

        for writer in range(WRITERS):
            wait_until(lambda w=writer: first_ack(w), 90.0, f"writer {writer}'s first acknowledged put",
                       interval=0.2)
        load_started = time.time()

        for round_ in range(ROUNDS):
            for child_id in ("storage:local", stages[round_ % STAGE_WORKERS], "catalog"):
                running = writers_running()
                assert running == WRITERS, f"a writer stopped before the kills were over ({running} running)"
                kills.append(kill_and_recover(tree, child_id, probes[child_id], running))
                time.sleep(0.5)  # let the writers through between kills
        last_recovery = time.time()

        # Every writer must be acknowledged again after the last kill, without reconnecting: by a put
        # begun after it. A writer has one put in flight at most, so with index L listed now, the put
        # L + 1 may have begun before, and L + 2 (once listed) began after.
        def last_index(writer: int) -> int:
            keys = listed_keys(driver_wh, f"w{writer}/")
            return int(keys[-1].rsplit("-", 1)[1]) if keys else -1

        marks = {w: last_index(w) for w in range(WRITERS)}
        for writer in range(WRITERS):
            wait_until(lambda w=writer: last_index(w) >= marks[w] + 2, 60.0,
                       f"writer {writer} to be acknowledged after the last kill", interval=0.2)
    finally:
        Path(stop_file).touch()  # the load stops now, also when a check above failed
    task_records = ray.get(refs, timeout=120)
    thread.join(timeout=120)
    assert not thread.is_alive() and not thread_error, thread_error
    records = thread_records + [r for batch in task_records for r in batch]
    load_seconds = time.time() - load_started

    # -- what was acknowledged is there, byte for byte; what was not is absent or whole --
    acked = [r for r in records if r["acked"]]
    failed = [r for r in records if not r["acked"]]
    assert len({r["key"] for r in records}) == len(records)
    not_dwray = [r["error"] for r in failed if not r["dwray_error"]]
    assert not not_dwray, f"puts failed with errors that are not dwray errors: {not_dwray[:5]}"
    for r in acked:
        assert (r["acked_size"], r["etag"]) == (r["size"], r["md5"]), r
    for writer in range(WRITERS):
        assert any(r["acked"] and r["writer"] == writer and r["t0"] > last_recovery for r in records), \
            f"writer {writer} was not acknowledged after the last kill"

    reader = tree.warehouse()

    def read(r: dict[str, Any]) -> tuple[str, str | None]:
        try:
            data = reader.get(BUCKET, r["key"])
        except ObjectNotFound:
            return r["key"], None
        return r["key"], md5(data) if len(data) == r["size"] else f"length {len(data)} != {r['size']}"

    with ThreadPoolExecutor(4) as pool:
        read_back = dict(pool.map(read, records))
    lost = [r["key"] for r in acked if read_back[r["key"]] != r["md5"]]
    assert not lost, f"{len(lost)} acknowledged puts do not read back byte-identical: {lost[:10]}"
    torn = [(r["key"], read_back[r["key"]], r["error"]) for r in failed
            if read_back[r["key"]] not in (None, r["md5"])]
    assert not torn, f"unacknowledged puts that are present but not whole: {torn[:10]}"
    present_unacked = {r["key"] for r in failed if read_back[r["key"]] is not None}

    listing = {info.key: info for info in reader.iter_objects(BUCKET)}
    expected_keys = {r["key"] for r in acked} | present_unacked | {SENTINEL}
    assert set(listing) == expected_keys, (sorted(set(listing) - expected_keys)[:10],
                                           sorted(expected_keys - set(listing))[:10])
    by_key = {r["key"]: r for r in records}
    for key, info in listing.items():
        if key != SENTINEL:
            assert (info.size, info.etag) == (by_key[key]["size"], by_key[key]["md5"]), (key, info)

    # -- nothing a failed put wrote stays behind once swept --
    report = reader.sweep(grace_seconds=0)
    referenced = reader.catalog.referenced_blobs(reader.backend_name)
    stored = set(reader.backend.list_blobs(""))
    assert stored == referenced, (report, sorted(stored - referenced)[:5], sorted(referenced - stored)[:5])
    temp_left = [str(p) for p in tree.config.blob_root.rglob(".tmp-*")]
    assert not temp_left, temp_left
    # One blob per listed object, but for the objects of one small frame, kept inline in their rows.
    inline_max = min(tree.config.pipeline.inline_max_bytes, FRAME_SIZE)
    assert len(referenced) == len([info for info in listing.values() if info.size > inline_max])
    assert reader.get(BUCKET, SENTINEL) == SENTINEL_BODY

    # -- the supervisor restarted each killed child, once per kill, and nothing else --
    status = tree.status()
    assert status["state"] == "running" and tree.ready() == (True, "ready"), status
    assert status["restarts_in_period"] <= status["max_restarts"]
    children = {c["id"]: c for c in status["children"]}
    events = tree.events()
    for child_id, child in children.items():
        mine = [k for k in kills if k.child == child_id]
        assert child["state"] == "running", child
        assert child["generation"] == 1 + len(mine) and child["restarts"] == len(mine), (child, mine)
        if not mine:
            assert child["pid"] == initial[child_id]["pid"], child
            continue
        assert child["pid"] not in {k.pid for k in mine} and "actor died" in child["last_failure"], child
        for kill in mine:
            failures = [e for e in events if e["kind"] == "failure" and e["child"] == child_id
                        and e["generation"] == kill.generation]
            assert len(failures) == 1, (kill, failures)
            assert failures[0]["time"] >= kill.at - 0.5, (kill, failures)
            started = [e for e in events if e["kind"] == "started" and e["child"] == child_id
                       and e["generation"] == kill.generation + 1]
            assert len(started) == 1 and started[0]["pid"] != kill.pid, (kill, started)
            kill.restarted_after = started[0]["time"] - kill.at
    assert not [e for e in events if e["kind"] in {"escalated", "refused", "start_failed"}]

    # -- kill-to-recovery --
    in_flight = [sum(1 for r in records if r["t0"] <= kill.at <= r["t1"]) for kill in kills]
    assert sum(in_flight) > 0, "no put was in flight at any kill"
    per_plugin: dict[str, list[float]] = {}
    for kill in kills:
        per_plugin.setdefault(kill.child, []).append(round(kill.recovered_after, 3))
    every = [kill.recovered_after for kill in kills]
    median = statistics.median(every)
    kinds: dict[str, list[float]] = {}
    for kill in kills:
        kinds.setdefault(kill.child.split(":", 1)[0], []).append(kill.recovered_after)
    per_kind = {kind: {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}
                for kind, times in kinds.items()}
    summary = {
        "kill_to_next_successful_call_s": per_plugin,
        "per_kind": per_kind,
        "median_s": round(median, 3),
        "max_s": round(max(every), 3),
        "restarts_by_standby": sum(1 for e in events if e["kind"] == "started" and e.get("standby")),
        "kill_to_supervisor_restart_s": {k: [round(x.restarted_after, 3) for x in kills if x.child == k]
                                         for k in per_plugin},
        "pid_sources": sorted(tree.pid_sources),
        "puts": {"acked": len(acked), "failed": len(failed), "failed_present_whole": len(present_unacked),
                 "bytes_acked": sum(r["size"] for r in acked)},
        "failure_kinds": sorted({r["error"].split(":")[0] for r in failed}),
        "puts_in_flight_at_each_kill": in_flight,
        "sweep": {"orphan_blobs_deleted": report.deleted, "temp_files_removed": report.temp_files},
        "load_seconds": round(load_seconds, 1),
        "test_seconds": round(time.monotonic() - began, 1),
    }
    print("\nray chaos:", json.dumps(summary, indent=1))
    for kill in kills:
        print(f"  kill -9 {kill.child:16} pid {kill.pid:7} gen {kill.generation}->{kill.new_generation}: "
              f"supervisor restarted it after {kill.restarted_after:.3f} s, next successful call after "
              f"{kill.recovered_after:.3f} s ({len(kill.failed_attempts)} failed probes)")
    record_property("kill_to_recovery_s", json.dumps(per_plugin))
    record_property("kill_to_recovery_median_s", round(median, 3))
    record_property("kill_to_recovery_per_kind", json.dumps(per_kind))
    record_property("ray_chaos_summary", json.dumps(summary))
    assert len(kills) == ROUNDS * 3 and all(k.writers_running == WRITERS for k in kills)
    assert len(acked) >= 20 * WRITERS, summary  # a real load, not a trickle
    assert max(every) < RECOVERY_BOUND, summary


# -- a handshake that never returns on a restart ------------------------------------------------------------


def test_handshake_hanging_on_restart_kills_each_hung_host_and_escalates(ray_session: Any) -> None:
    """A child that is not required and whose handshake never returns: each attempt's host is
    killed at handshake_timeout, the restarts count, and the intensity escalates with the reason,
    while the healthy sibling answered until then. (test_supervisor.py covers it at a required start.)"""
    namespace = f"dwray-chaos-hs-{uuid.uuid4().hex[:8]}"
    spec = SupervisorSpec(
        children=[{"id": "good", "plugin": "dwray.testing.plugins:Echo"},
                  {"id": "slow", "plugin": "dwray.testing.plugins:SlowHandshake", "required": False,
                   "handshake_timeout": 0.5}],
        max_restarts=2, period=60.0, ping_interval=0.2, ping_timeout=5.0, backoff_base=0.05, backoff_max=0.1,
        max_tree_restarts=0)
    supervisor = create_supervisor(spec, namespace=namespace)
    try:
        status = ray.get(supervisor.start.remote(), timeout=60)
        assert status["state"] == "running"
        assert PluginHandle("good", supervisor=supervisor, namespace=namespace).call("echo", 7) == 7
        wait_until(lambda: ray.get(supervisor.status.remote(), timeout=30)["state"] == "failed", 30.0,
                   "escalation (with no tree restart allowed: max_tree_restarts = 0)")
        ready, reason = ray.get(supervisor.ready.remote(), timeout=30)
        assert not ready
        assert reason.startswith("failed: gave up after 0 tree restart(s) (max_tree_restarts): more than 2 "
                                 "restarts within 60 s; last: child 'slow'"), reason
        assert "handshake did not return within 0.5 s (handshake_timeout)" in reason, reason
        events = ray.get(supervisor.events.remote(1000), timeout=30)
        failed = [e for e in events if e["kind"] == "start_failed" and e["child"] == "slow"]
        assert [e["generation"] for e in failed] == [1, 2, 3], failed
        assert all("handshake_timeout" in e["reason"] for e in failed)
        # Every hung host was killed: no actor of that name is left alive.
        wait_until(lambda: _gone("slow", namespace), 10.0, "the hung hosts to be killed")
        # Escalation stops every child (the healthy one too), in reverse start order.
        wait_until(lambda: [c["state"] for c in ray.get(supervisor.status.remote(), timeout=30)["children"]]
                   == ["stopped", "stopped"], 15.0, "every child stopped")
        stopped = [e["child"] for e in ray.get(supervisor.events.remote(1000), timeout=30)
                   if e["kind"] == "stopped"]
        assert stopped == ["good"], stopped  # the hung hosts were killed as they failed, not stopped
    finally:
        try:
            ray.get(supervisor.stop.remote(), timeout=60)
        finally:
            ray.kill(supervisor)


def _gone(child_id: str, namespace: str) -> bool:
    """No live host of ``child_id`` (named ``dwray:<child id>:<hex>``) is left in ``namespace``."""
    return not [a for a in ray.util.list_named_actors(all_namespaces=True)
                if a["namespace"] == namespace and a["name"].startswith(f"dwray:{child_id}:")]
