"""``cluster/start-local-cluster.sh`` and ``stop-local-cluster.sh``, run as a user would.

The scripts start a second, two-node Ray on this machine next to the tests'
session Ray. So: the cluster gets ports of its own (a free range away from
the ephemeral ports), a temp dir of its own, and the client runs in a child
process (a driver connects to one cluster only). Afterwards every process the
start script recorded, or that names the cluster's folder, must be gone, its
ports free, and the session Ray untouched.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import ray

ROOT = Path(__file__).resolve().parents[2]
START = ROOT / "cluster" / "start-local-cluster.sh"
STOP = ROOT / "cluster" / "stop-local-cluster.sh"
CLIENT = Path(__file__).with_name("_cluster_client.py")
PROCS = ROOT / "cluster" / "local_cluster_procs.py"
PORT_SPAN = 16  # the scripts use PORT .. PORT+15
IP = "127.0.0.2"


def ports_free(base: int) -> bool:
    """No socket is bound to any port of the run (connections in TIME_WAIT do not count)."""
    for port in range(base, base + PORT_SPAN):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                return False
    return True


def listening(base: int) -> list[Any]:
    return [c for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and base <= c.laddr.port < base + PORT_SPAN]


def pick_base_port() -> int:
    """A free run of ports below the ephemeral range (where the OS hands out random ports)."""
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(200):
        base = random.randrange(20000, min(low, 32000) - PORT_SPAN, PORT_SPAN)
        if ports_free(base):
            return base
    raise RuntimeError("no free run of ports for the cluster")


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything pointing at another cluster or configuring dwray."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DWRAY_", "RAY_ADDRESS", "RAY_AUTH_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHON"] = sys.executable
    return {**env, **extra}


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


@pytest.fixture
def cluster_dir() -> Iterator[Path]:
    # Short, under /tmp: Ray's unix socket paths live below it (limit ~107 bytes).
    folder = Path(tempfile.mkdtemp(prefix="dwc", dir="/tmp"))
    yield folder
    # Whatever happened, nothing of this cluster outlives the test.
    subprocess.run([str(STOP), "--dir", str(folder), "--grace", "5"], env=clean_env(), timeout=120,
                   check=False, capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def test_start_connect_status_stop(ray_session: Any, cluster_dir: Path, tmp_path: Path) -> None:
    session_gcs = ray.get_runtime_context().gcs_address
    session_nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    base = pick_base_port()

    start = subprocess.run([str(START), "--port", str(base), "--dir", str(cluster_dir)], capture_output=True,
                           text=True, env=clean_env(), timeout=180, check=False)
    assert start.returncode == 0, f"start failed:\n{start.stdout}\n{start.stderr}"
    address = start.stdout.strip().splitlines()[-1]
    assert address == f"{IP}:{base}"
    client_env = read_env_file(cluster_dir / "cluster.env")
    assert client_env == {"RAY_ADDRESS": address, "RAY_AUTH_MODE": "token",
                          "RAY_AUTH_TOKEN_PATH": str(cluster_dir / "auth_token")}
    assert (cluster_dir / "auth_token").stat().st_mode & 0o777 == 0o600
    recorded = json.loads((cluster_dir / "pids").read_text())
    names = {entry["name"] for entry in recorded}
    assert {"gcs_server", "raylet"} <= names and sum(e["name"] == "raylet" for e in recorded) == 2
    started = [psutil.Process(e["pid"]) for e in recorded]
    assert all(p.is_running() for p in started)
    # The cluster listens on its own ports, not on the session's.
    assert session_gcs.rsplit(":", 1)[1] != str(base)
    assert {c.laddr.port for c in listening(base)} >= {base, base + 2, base + 10}  # GCS, both raylets

    # A driver in a child process: the embedded warehouse on that cluster, a round trip, dw status.
    config = tmp_path / "dwray.toml"
    config.write_text('[plugins."storage:local"]\nresources = { node_b = 0.01 }\n')
    env = clean_env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=client_env["RAY_AUTH_TOKEN_PATH"])
    client = subprocess.run([sys.executable, str(CLIENT), address, str(tmp_path / "data"), str(config)],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240, check=False)
    assert client.returncode == 0, f"client failed:\n{client.stdout[-4000:]}\n{client.stderr[-4000:]}"
    result = json.loads(next(line for line in client.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["address"] == address and len(result["nodes"]) == 2
    assert not set(result["nodes"]) & set(session_nodes)
    status = result["status"]
    assert status["ready"] is True and status["state"] == "running", status
    children = {c["id"]: c for c in status["children"]}
    assert set(children) == {"settings", "catalog", "identity", "kms:local", "storage:local", "stage:frames:0",
                             "stage:frames:1", "housekeeper", "scrubber", "audit", "events"}
    assert all(c["state"] == "running" and c["restarts"] == 0 for c in children.values())
    assert children["storage:local"]["node_id"] == result["node_b"]  # placed by the config, on node B
    assert {c["node_id"] for c in children.values()} <= set(result["nodes"])
    text = result["status_text"]
    assert "ready" in text and all(child in text for child in children)

    # Stop: everything the start script started is gone; the session Ray is not touched.
    ours = subprocess.run([sys.executable, str(PROCS), "list", str(cluster_dir)], capture_output=True,
                          text=True, env=clean_env(), timeout=60, check=False)
    pids_before_stop = {int(line.split()[0]) for line in ours.stdout.splitlines()}
    assert {p.pid for p in started} <= pids_before_stop
    stop = subprocess.run([str(STOP), "--dir", str(cluster_dir)], capture_output=True, text=True,
                          env=clean_env(), timeout=120, check=False)
    assert stop.returncode == 0, f"stop failed:\n{stop.stdout}\n{stop.stderr}"
    assert not [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for pid in pids_before_stop:
        try:
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, f"process {pid} survived the stop"
        except psutil.NoSuchProcess:
            pass
    left = subprocess.run([sys.executable, str(PROCS), "list", str(cluster_dir)], capture_output=True,
                          text=True, env=clean_env(), timeout=60, check=False)
    assert left.stdout.strip() == ""
    assert not (cluster_dir / "cluster.env").exists()
    assert not listening(base) and ports_free(base)
    assert ray.is_initialized() and ray.get_runtime_context().gcs_address == session_gcs
    assert sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]) == session_nodes
    assert ray.get(ray.remote(lambda: 42).remote(), timeout=60) == 42
