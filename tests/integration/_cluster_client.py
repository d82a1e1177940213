"""A client of the cluster started by ``cluster/start-local-cluster.sh``, run by ``test_cluster_script.py``.

    python _cluster_client.py ADDRESS DATA_DIR CONFIG_TOML

Runs as a user would: ``dwray.connect(address=ADDRESS, data_dir=DATA_DIR,
config_path=CONFIG_TOML)`` starts the embedded warehouse on that cluster (the
config pins the storage plugin to the script's worker node with its
``node_b`` resource), then a put/get round trip, then ``dw status --address
ADDRESS --json`` (and the text form) in a child process while this driver
still owns the warehouse. The environment must carry the cluster's
``RAY_AUTH_MODE``/``RAY_AUTH_TOKEN_PATH`` (from its cluster.env).

Prints progress, then ``RESULT <json>``; on failure ``FAIL: <why>`` on
stderr and exit status 1.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def fail(message: str) -> None:
    raise AssertionError(message)


def run(address: str, data_dir: Path, config_path: Path) -> dict[str, Any]:
    import ray

    import dwray

    wh = dwray.connect(address=address, data_dir=data_dir, config_path=config_path)
    try:
        context = ray.get_runtime_context()
        if context.gcs_address != address:
            fail(f"connected to {context.gcs_address}, not to {address}")
        nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
        node_b = [node for node, info in nodes.items() if info["Resources"].get("node_b")]
        if len(nodes) != 2 or len(node_b) != 1:
            fail(f"expected the script's two nodes (one with node_b), got {nodes}")
        wh.create_bucket("cluster-script")
        payloads = {"big.bin": os.urandom(3 << 20) + b"tail", "small.txt": b"hello, cluster\n", "empty": b""}
        for key, data in payloads.items():
            wh.put("cluster-script", key, data)
        for key, data in payloads.items():
            if wh.get("cluster-script", key) != data:
                fail(f"get {key} did not return the bytes put")
        # Objects of one small frame are kept in their catalog rows; the others have a blob each.
        inline_max = min(wh.config.pipeline.inline_max_bytes, wh.config.pipeline.frame_size)
        blobbed = [key for key, data in payloads.items() if len(data) > inline_max]
        blobs = [p for p in (data_dir / "blobs").rglob("*") if p.is_file()]
        if len(blobs) != len(blobbed):
            fail(f"expected {len(blobbed)} blobs under {data_dir}, found {len(blobs)}")

        # The children the warehouse serves without (housekeeper, scrubber, event bus) start once the rest
        # runs ([runtime] defer_optional): the status below is of the whole tree, so wait for them.
        deadline = time.monotonic() + 60
        while any(child["state"] != "running" for child in wh.status()["children"]):
            if time.monotonic() > deadline:
                fail(f"the tree's children did not all start: {wh.status()['children']}")
            time.sleep(0.2)
        env = dict(os.environ)
        command = ["dw", "--config", str(config_path), "status", "--address", address]
        as_json = subprocess.run([*command, "--json"], capture_output=True, text=True, env=env, timeout=120,
                                 check=False)
        if as_json.returncode != 0:
            fail(f"dw status --json failed ({as_json.returncode}): {as_json.stdout} {as_json.stderr}")
        status = json.loads(as_json.stdout)
        text = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)
        if text.returncode != 0:
            fail(f"dw status failed ({text.returncode}): {text.stdout} {text.stderr}")
        return {
            "address": address,
            "nodes": sorted(nodes),
            "node_b": node_b[0],
            "objects": {k: hashlib.sha256(v).hexdigest() for k, v in payloads.items()},
            "status": status,
            "status_text": text.stdout,
            "warehouse": repr(wh),
        }
    finally:
        wh.close()
        ray.shutdown()


def main() -> int:
    address, data_dir, config_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    try:
        result = run(address, data_dir, config_path)
    except BaseException:  # noqa: BLE001 - every failure is reported the same way
        print(f"FAIL: {traceback.format_exc()}", file=sys.stderr, flush=True)
        return 1
    print("RESULT " + json.dumps(result, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
