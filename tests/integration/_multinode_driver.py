"""Multi-node check, run in its own process by ``test_multinode.py``.

A driver can be connected to one Ray cluster only, and the test process is
already connected to the session's Ray, so this script is the driver of a
two-node ``ray.cluster_utils.Cluster`` on this machine (on loopback 127.0.0.2):

    node A (head)    num_cpus=1, resource {"node_a": 1}, label dwray-zone=zone-a
    node B (worker)  num_cpus=1, resource {"node_b": 1}, label dwray-zone=zone-b

The warehouse's plugin tree is placed from its config (``[plugins]``) with
each of the three placement options the bootstrap passes through:

    storage:local   node_id = node A's id
    catalog         resources = {"node_a": 0.01}
    kms:local       node_labels = {"dwray-zone": "zone-a"}
    stage (kind)    resources = {"node_b": 0.01}   (both frame stage workers)

Then a driver *task* pinned to node B (NodeAffinitySchedulingStrategy)
attaches with ``dwray.connect(start=False)``, puts and gets multi-frame
objects of a few MiB and small ones, so sealed frames cross from node B's
object store to the storage actor on node A and back. Every round trip must
be byte-identical.

Protocol: progress lines on stdout; the last line is ``RESULT <json>`` on
success. Any failure prints ``FAIL: <why>`` on stderr and exits 1.

Run: ``python tests/integration/_multinode_driver.py [WORKDIR]``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

FRAME_SIZE = 256 << 10  # several frames per MiB, and batches of 8 MiB span many frames
ZONE_LABEL = "dwray-zone"
# Loopback, but not 127.0.0.1: Ray rewrites "127.0.0.1"/"localhost" in an address to the machine's
# outward IP before connecting (ray-project/ray#59110), while a node started with node IP
# 127.0.0.1 listens on 127.0.0.1 only, so nothing could join it. 127.0.0.2 is loopback
# too (all of 127/8 is) and is left alone.
NODE_IP = "127.0.0.2"


def log(message: str) -> None:
    print(message, flush=True)


class Failure(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise Failure(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((NODE_IP, 0))
        return sock.getsockname()[1]


def node_processes(cluster: Any) -> list[Any]:
    """Every process of the cluster's nodes, and their children (the worker processes)."""
    import psutil

    found: dict[int, Any] = {}
    for node in cluster.list_all_nodes():
        for infos in node.all_processes.values():
            for info in infos:
                try:
                    proc = psutil.Process(info.process.pid)
                    found[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        found[child.pid] = child
                except psutil.NoSuchProcess:
                    pass
    return list(found.values())


def payloads() -> dict[str, bytes]:
    """Objects of several shapes: multi-batch incompressible, compressible, frame edges, tiny, empty."""
    seed = hashlib.sha256(b"dwray-multinode").digest()
    random_block = b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest() for i in range(1 << 15))
    incompressible = (random_block * 20)[: (19 << 20) + 12345]  # ~19 MiB: 3 batches of <= 8 MiB
    compressible = b"".join(f"row {i:08d},total,{i * 7 % 1000:04d}\n".encode() for i in range(110_000))
    return {
        "big/incompressible.bin": incompressible,
        "big/compressible.csv": compressible,  # ~3 MiB
        "edge/two-frames-exact.bin": incompressible[: 2 * FRAME_SIZE],
        "edge/frame-plus-one.bin": incompressible[: FRAME_SIZE + 1],
        "small/hello.txt": b"hello from node B\n",
        "small/one-byte": b"\x00",
        "small/empty": b"",
    }


def driver_task_body(namespace: str, bucket: str) -> dict[str, Any]:
    """Runs inside a Ray task on node B: attach to the warehouse and round-trip every payload."""
    import ray

    import dwray
    from actors.attach import RayWarehouse
    from dwray.config import DwrayConfig, RuntimeConfig

    node_id = ray.get_runtime_context().get_node_id()
    config = DwrayConfig(runtime=RuntimeConfig(namespace=namespace))
    wh = dwray.connect(config=config, start=False)
    if not isinstance(wh, RayWarehouse):
        raise TypeError(f"connect() returned {type(wh).__name__}, not a RayWarehouse")
    results: dict[str, Any] = {"task_node_id": node_id, "objects": {}, "pid": os.getpid(),
                               "warehouse": repr(wh)}
    try:
        wh.create_bucket(bucket)
        data = payloads()
        for key, payload in data.items():
            info = wh.put(bucket, key, payload, content_type="application/octet-stream")
            if info.size != len(payload) or info.etag != hashlib.md5(payload).hexdigest():
                raise AssertionError(f"put {key}: size/etag {info.size}/{info.etag} do not match the payload")
        # Read back after every write is committed (reads go storage on A -> stage on B -> here).
        for key, payload in data.items():
            got = wh.get(bucket, key)
            if got != payload:
                first = next((i for i, (a, b) in enumerate(zip(got, payload)) if a != b), min(len(got), len(payload)))
                raise AssertionError(f"get {key}: {len(got)} bytes back for {len(payload)} put; "
                                     f"first difference at byte {first}")
            results["objects"][key] = {"size": len(payload), "sha256": hashlib.sha256(got).hexdigest()}
        # Ranges that cross frame and batch boundaries.
        big = data["big/incompressible.bin"]
        for first, last in [(0, 0), (FRAME_SIZE - 3, FRAME_SIZE + 2), ((8 << 20) - 5, (8 << 20) + 5),
                            (len(big) - 10, len(big) + 100), (123, (17 << 20) + 7)]:
            got = wh.get(bucket, "big/incompressible.bin", range=(first, last))
            if got != big[first:last + 1]:
                raise AssertionError(f"range ({first}, {last}) of big/incompressible.bin differs")
        listed = sorted(o.key for o in wh.iter_objects(bucket))
        if listed != sorted(data):
            raise AssertionError(f"listing {listed} != {sorted(data)}")
        results["ranges_ok"] = True
        results["status"] = wh.status()
    finally:
        wh.close()
    return results


def run(workdir: Path) -> dict[str, Any]:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from actors.bootstrap import start_supervisor
    from dwray.config import (
        DwrayConfig,
        PipelineConfig,
        PluginOptions,
        RuntimeConfig,
        StorageConfig,
    )

    started = time.monotonic()
    namespace = f"dwray-mn-{uuid.uuid4().hex[:8]}"
    # No dashboard; its API server still binds a port, so give it a free one rather than 8265.
    node_args = {"node_ip_address": NODE_IP, "object_store_memory": 200 << 20, "include_dashboard": False,
                 "dashboard_port": free_port()}
    cluster = Cluster(initialize_head=True, head_node_args={
        **node_args, "num_cpus": 1, "resources": {"node_a": 1}, "labels": {ZONE_LABEL: "zone-a"}})
    supervisor = None
    try:
        worker = cluster.add_node(**node_args, num_cpus=1, resources={"node_b": 1}, labels={ZONE_LABEL: "zone-b"})
        cluster.wait_for_nodes()
        node_a, node_b = cluster.head_node.node_id, worker.node_id
        check(node_a != node_b, "the two nodes have the same id")
        log(f"cluster up at {cluster.address}: node A {node_a[:12]}, node B {node_b[:12]} "
            f"({time.monotonic() - started:.1f} s)")
        ray.init(address=cluster.address, namespace=namespace, configure_logging=False, log_to_driver=False)
        nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
        check(set(nodes) == {node_a, node_b}, f"expected nodes A and B alive, got {sorted(nodes)}")
        check(nodes[node_a]["Resources"].get("node_a") == 1 and nodes[node_b]["Resources"].get("node_b") == 1,
              "custom resources node_a/node_b are not on the nodes")

        config = DwrayConfig(
            data_dir=workdir / "data",
            storage=StorageConfig(backend="local"),
            pipeline=PipelineConfig(frame_size=FRAME_SIZE),
            runtime=RuntimeConfig(namespace=namespace, ping_interval=0.5),
            plugins={
                "storage:local": PluginOptions(node_id=node_a),
                "catalog": PluginOptions(resources={"node_a": 0.01}),
                "kms:local": PluginOptions(node_labels={ZONE_LABEL: "zone-a"}),
                "stage": PluginOptions(resources={"node_b": 0.01}),
            })
        supervisor = start_supervisor(config)
        log(f"warehouse started in namespace {namespace} ({time.monotonic() - started:.1f} s)")

        remote_body = ray.remote(num_cpus=1, max_retries=0)(driver_task_body)
        task = remote_body.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_b, soft=False))
        outcome = ray.get(task.remote(namespace, "multinode"), timeout=120)
        log(f"driver task finished on node {outcome['task_node_id'][:12]} ({time.monotonic() - started:.1f} s)")

        # Where everything ran: the task, and each plugin host (asked directly and via status()).
        check(outcome["task_node_id"] == node_b,
              f"the driver task ran on {outcome['task_node_id']}, not on node B {node_b}")
        expected = {"storage:local": node_a, "catalog": node_a, "kms:local": node_a,
                    "stage:frames:0": node_b, "stage:frames:1": node_b}
        status = ray.get(supervisor.status.remote(), timeout=30)
        check(status["state"] == "running", f"supervisor is {status['state']}: {status['reason']}")
        by_id = {c["id"]: c for c in status["children"]}
        placement: dict[str, dict[str, str]] = {}
        for child_id, node in expected.items():
            child = by_id[child_id]
            check(child["state"] == "running" and child["generation"] == 1 and child["restarts"] == 0,
                  f"{child_id} is {child['state']} at generation {child['generation']} "
                  f"with {child['restarts']} restarts (last failure: {child['last_failure']})")
            host, _ = ray.get(supervisor.handle.remote(child_id), timeout=30)
            asked = ray.get(host.node_id.remote(), timeout=30)
            placement[child_id] = {"status": child["node_id"], "host": asked}
            check(child["node_id"] == node and asked == node,
                  f"{child_id} should run on {'A' if node == node_a else 'B'} ({node}); "
                  f"status says {child['node_id']}, the host says {asked}")
        # The status seen from inside the task (through the attached client) agrees.
        task_view = {c["id"]: c["node_id"] for c in outcome["status"]["children"]}
        check(all(task_view[c] == n for c, n in expected.items()),
              f"the task's status() disagrees on placement: {task_view}")

        # Objects of one frame of at most inline_max_bytes are kept in their catalog rows, the others in blobs.
        inline_max = min(DwrayConfig().pipeline.inline_max_bytes, FRAME_SIZE)
        blobbed = [key for key, body in payloads().items() if len(body) > inline_max]
        blobs = [p for p in (workdir / "data" / "blobs").rglob("*") if p.is_file()]
        check(len(blobs) == len(blobbed), f"expected {len(blobbed)} blob files, found {len(blobs)}")
        plain = payloads()["small/hello.txt"]
        check(all(plain not in p.read_bytes() for p in [*blobs, workdir / "data" / "catalog.db"]),
              "plaintext found in a blob file or the catalog")

        return {
            "ok": True,
            "address": cluster.address,
            "node_a": node_a,
            "node_b": node_b,
            "task_node_id": outcome["task_node_id"],
            "placement": placement,
            "objects": outcome["objects"],
            "ranges_ok": outcome["ranges_ok"],
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        if supervisor is not None and ray.is_initialized():
            try:
                ray.get(supervisor.stop.remote(), timeout=60)
            except Exception as exc:  # noqa: BLE001 - the cluster goes down next anyway
                log(f"stopping the supervisor failed: {exc!r}")
        processes = node_processes(cluster)
        ray.shutdown()
        cluster.shutdown()
        import psutil

        _, alive = psutil.wait_procs(processes, timeout=15)
        if alive:
            # Raised only when nothing else is on its way out (it would hide the first failure).
            leftovers = f"{len(alive)} process(es) of the cluster outlived its shutdown: {alive}"
            if sys.exc_info()[0] is None:
                raise Failure(leftovers)
            log(leftovers)
        else:
            log(f"cluster shut down; its {len(processes)} processes are gone")


def main() -> int:
    workdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="dwmn"))
    workdir.mkdir(parents=True, exist_ok=True)
    # Ray writes the "latest cluster" address under its temp dir (/tmp/ray/ray_current_cluster by
    # default), where any ray.init() on this machine would find it: keep it, and the session
    # folders, in a private short folder (unix socket paths must stay under ~107 bytes).
    ray_tmp = Path(tempfile.mkdtemp(prefix="dwmn-ray", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(ray_tmp)
    os.environ.pop("RAY_ADDRESS", None)
    try:
        result = run(workdir)
    except Failure as exc:
        print(f"FAIL: {exc}", file=sys.stderr, flush=True)
        return 1
    except BaseException:  # noqa: BLE001 - any error is a failure with its traceback
        print(f"FAIL: unexpected error\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        return 1
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    log("RESULT " + json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
