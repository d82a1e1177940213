"""``dw up`` / ``dw down`` and ``serve run`` as a user runs them: separate processes, each with its own Ray.

These do not use the session's cluster: every start here is a new local Ray
(``--address local``), a fresh data dir and a free port.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from botocore.config import Config
from botocore.exceptions import ClientError

from dwray.core.gateway_files import GatewayFiles
from dwray.core.ports import free_port
from tests.helpers import wait_until
from tests.integration.gateway.clients import random_bytes

START_TIMEOUT = 180


def dw_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "DWRAY_"))}
    env["DWRAY_RUNTIME__NAMESPACE"] = f"dwray-up-{os.getpid()}"
    return env


class DwUp:
    """A ``dw up`` process and what it printed."""

    def __init__(self, data_dir: Path, port: int, *extra: str, config: Path | None = None) -> None:
        self.data_dir, self.port = data_dir, port
        self.endpoint = f"http://127.0.0.1:{port}"
        env = dw_env(data_dir)
        if config is not None:
            env["DWRAY_CONFIG"] = str(config)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dwray.cli", "up", "--data-dir", str(data_dir), "--port", str(port),
             "--address", "local", "--json", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
        line = self._first_line()
        self.info: dict[str, Any] = json.loads(line)

    def _first_line(self) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not result or not result[0].strip():
            self.kill()
            raise AssertionError(f"dw up printed nothing: {self.process.stderr.read()[-3000:]}")
        return result[0]

    def client(self, key_id: str, secret: str) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                            aws_secret_access_key=secret, config=Config(s3={"addressing_style": "path"}))

    def wait(self, timeout: float = 180) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)


def dashboard_actors(info: dict[str, Any]) -> list[dict[str, Any]]:
    """The live actors, as the Ray dashboard's state API (``/api/v0/actors``) lists them to its user."""
    headers = {}
    sign_in = info.get("dashboard_sign_in")
    if sign_in:  # Ray's token authentication: the dashboard wants the cluster's token
        assert sign_in.startswith("the token in /"), sign_in
        headers["Authorization"] = f"Bearer {Path(sign_in.removeprefix('the token in ')).read_text().strip()}"
    answer = requests.get(f"{info['dashboard']}/api/v0/actors", headers=headers, timeout=30,
                          params={"limit": 1000, "filter_keys": "state", "filter_predicates": "=",
                                  "filter_values": "ALIVE"})
    assert answer.status_code == 200, answer.text[:500]
    return answer.json()["data"]["result"]["result"]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_dw_up_prints_credentials_once_drains_on_sigterm_and_restarts_with_its_data(data_dir: Path) -> None:
    up = DwUp(data_dir, free_port())
    try:
        first = up.info["first_start"]
        assert up.info["endpoint"] == up.endpoint
        # The Ray dashboard is on, on loopback, and names every actor the warehouse and gateway run.
        assert up.info["dashboard"].startswith("http://127.0.0.1:"), up.info
        actors = dashboard_actors(up.info)
        assert [actor for actor in actors if not actor.get("name")] == []
        names = {actor["name"] for actor in actors}
        for expected in ("dwray:supervisor", "dwray:gateway", "SERVE_CONTROLLER_ACTOR"):
            assert expected in names, sorted(names)
        for child in ("catalog", "storage:local", "kms:local", "stage:frames:0", "audit", "identity"):
            assert any(name.startswith(f"dwray:{child}:") for name in names), (child, sorted(names))
        assert any(name.startswith("SERVE_REPLICA::dwray#gateway") for name in names), sorted(names)
        assert set(up.info["startup_seconds"]) == {"ray", "warehouse", "identity", "serve", "ready"}
        token_file = GatewayFiles(data_dir / "gateway").admin_token
        assert token_file.stat().st_mode & 0o777 == 0o600
        assert token_file.read_text().strip() == first["admin_token"]
        s3 = up.client(first["access_key_id"], first["secret_access_key"])
        s3.create_bucket(Bucket="drain")
        body = random_bytes(24 << 20, seed=5)
        s3.put_object(Bucket="drain", Key="big", Body=body)

        # A slow download is in flight when SIGTERM arrives.
        received = bytearray()
        download_error: list[BaseException] = []
        started = threading.Event()

        def slow_download() -> None:
            try:
                stream = s3.get_object(Bucket="drain", Key="big")["Body"]
                for chunk in stream.iter_chunks(1 << 20):
                    received.extend(chunk)
                    started.set()
                    time.sleep(0.15)
            except BaseException as error:  # noqa: BLE001 - reported by the assertion below
                download_error.append(error)

        downloader = threading.Thread(target=slow_download)
        downloader.start()
        assert started.wait(60)
        up.process.send_signal(signal.SIGTERM)

        # Readiness turns 503 first, and new requests are refused, while the download goes on.
        def not_ready() -> bool:
            answer = requests.get(f"{up.endpoint}/healthz/ready", timeout=5)
            return answer.status_code == 503 and "draining" in answer.json()["reasons"]

        wait_until(not_ready, timeout=10, what="/healthz/ready to turn 503")
        assert downloader.is_alive(), "the in-flight download must still be running while draining"
        refused = requests.get(f"{up.endpoint}/drain/big", timeout=5)
        assert refused.status_code == 503
        assert requests.get(f"{up.endpoint}/healthz/live", timeout=5).status_code == 200
        downloader.join(120)
        assert not download_error, download_error
        assert bytes(received) == body
        code, out, err = up.wait()
        assert code == 0, err[-3000:]
        assert json.loads(out.strip().splitlines()[-1]) == {"stopped": True, "drained": True}
        assert first["secret_access_key"] not in err and first["admin_token"] not in err
    finally:
        up.kill()

    # Started again on the same data dir, with two replicas and a config file: no new credentials, the
    # old ones and the data still work, /metrics covers both replicas, and SIGHUP reloads the file.
    config_file = data_dir.parent / "dwray.toml"
    config_file.write_text("[gateway.rate_limit]\ntenant_rate = 1000\n")
    again = DwUp(data_dir, free_port(), "--replicas", "2", "--no-dashboard", config=config_file)
    try:
        assert "first_start" not in again.info
        assert again.info["dashboard"] is None
        # The start replaced the dw-up@<host> token: the first one (printed, and in the file then) is revoked.
        renewed = (GatewayFiles(data_dir / "gateway").admin_token).read_text().strip()
        for token, status in ((first["admin_token"], 401), (renewed, 200)):
            assert requests.get(f"{again.endpoint}/admin/tenants", headers={"Authorization": f"Bearer {token}"},
                                timeout=60).status_code == status
        s3 = again.client(first["access_key_id"], first["secret_access_key"])
        assert s3.get_object(Bucket="drain", Key="big")["Body"].read() == body

        def both_replicas_report() -> bool:
            s3.list_buckets()
            text = requests.get(f"{again.endpoint}/metrics", timeout=30).text
            return "dwray_gateway_replicas 2.0" in text

        wait_until(both_replicas_report, timeout=30, what="/metrics to cover two replicas", interval=0.5)

        # SIGHUP: dw up reloads its file, and the tenant's new rate limit reaches both replicas live.
        config_file.write_text("[gateway.rate_limit]\ntenant_rate = 0.2\ntenant_burst = 2\n")
        again.process.send_signal(signal.SIGHUP)
        once = boto3.client("s3", endpoint_url=again.endpoint, region_name="us-east-1",
                            aws_access_key_id=first["access_key_id"], aws_secret_access_key=first["secret_access_key"],
                            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))

        def throttled() -> bool:
            try:
                for _ in range(10):  # 2 replicas, a burst of 2 each: some of these are refused
                    once.list_buckets()
            except ClientError as error:
                return error.response["Error"]["Code"] == "SlowDown"
            return False

        wait_until(throttled, timeout=30, what="SIGHUP's reload to throttle the tenant", interval=1.0)
        assert again.process.poll() is None  # reloaded, still serving
        state = json.loads((data_dir / "gateway" / "gateway.json").read_text())
        assert state["pid"] == again.process.pid and state["endpoint"] == again.endpoint
        down = subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(data_dir), "down", "--json"],
                              capture_output=True, text=True, timeout=240, env=dw_env(data_dir))
        assert down.returncode == 0, down.stderr
        assert json.loads(down.stdout) == {"stopped": again.process.pid}
        assert again.process.wait(30) == 0
        assert not (data_dir / "gateway" / "gateway.json").exists()
        nothing = subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(data_dir), "down"],
                                 capture_output=True, text=True, timeout=60, env=dw_env(data_dir))
        assert nothing.returncode == 1 and "no gateway runs" in nothing.stderr
    finally:
        again.kill()


def test_serve_run_of_the_serve_config_starts_a_working_gateway(tmp_path: Path) -> None:
    """``serve run cluster/serve_config.yaml`` (with the port and data dir changed) on a bare Ray."""
    from serve_apps.launch import ingress_env

    root = Path(__file__).resolve().parents[3]
    config = yaml.safe_load((root / "cluster" / "serve_config.yaml").read_text())
    port = free_port()
    data_dir = tmp_path / "data"
    config["http_options"]["port"] = port
    env_vars = config["applications"][0]["runtime_env"]["env_vars"]
    env_vars["DWRAY_DATA_DIR"] = str(data_dir)
    env_vars["DWRAY_RUNTIME__NAMESPACE"] = f"dwray-serve-run-{os.getpid()}"
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**dw_env(data_dir), **ingress_env()}
    process = subprocess.Popen(["serve", "run", "--address", "local", str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True, cwd=root)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return requests.get(f"{endpoint}/healthz/ready", timeout=5).status_code == 200
            except requests.RequestException:
                return process.poll() is not None
        wait_until(ready, timeout=START_TIMEOUT, what="serve run to become ready", interval=0.5)
        assert process.poll() is None
        token = (GatewayFiles(data_dir / "gateway").admin_token).read_text().strip()
        created = requests.post(f"{endpoint}/admin/keys", json={"tenant": "default"},
                                headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert created.status_code == 201, created.text
        key = created.json()
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                          config=Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket="served")
        s3.put_object(Bucket="served", Key="k", Body=b"via serve run")
        assert s3.get_object(Bucket="served", Key="k")["Body"].read() == b"via serve run"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(30)


def test_dw_up_is_refused_a_data_dir_another_process_has_open(data_dir: Path) -> None:
    """Said at once, before Ray starts, naming the holder."""
    from dwray.core.datadir_lock import DataDirLock, LockHolder

    with DataDirLock(data_dir).acquire(LockHolder.this_process("an in-process Warehouse")):
        refused = subprocess.run(
            [sys.executable, "-m", "dwray.cli", "up", "--data-dir", str(data_dir), "--port", str(free_port()),
             "--address", "local"], capture_output=True, text=True, timeout=60, env=dw_env(data_dir), check=False)
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith(
        f"error: data dir {data_dir} is in use by an in-process Warehouse (pid {os.getpid()} on ")
    assert not (data_dir / "gateway" / "gateway.json").exists()
