"""``dw`` data commands while ``dw up`` serves the same data dir: through the running warehouse, never beside it.

One ``dw up`` (its own local Ray, a fresh data dir, a free port) for the module;
every ``dw`` command is a separate process, as a user runs it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
from botocore.config import Config

from dwray.core.datadir_lock import DataDirLock
from dwray.core.gateway_files import GatewayFiles
from dwray.core.ports import free_port
from dwray.errors import DataDirInUse
from tests.helpers import wait_until
from tests.integration.gateway.test_dw_up import START_TIMEOUT, dw_env


@dataclass
class Served:
    """A running ``dw up`` and what happened the moment it turned ready."""

    process: subprocess.Popen
    data_dir: Path
    endpoint: str
    info: dict[str, Any]
    files_at_ready: set[str]
    key_create_at_ready: subprocess.CompletedProcess

    def dw(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dwray.cli", "--data-dir", str(self.data_dir), *args],
                              input=stdin, capture_output=True, timeout=180, env=dw_env(self.data_dir), check=False)

    def dw_json(self, *args: str, stdin: bytes | None = None) -> Any:
        result = self.dw(*args, "--json", stdin=stdin)
        assert result.returncode == 0, result.stderr.decode()[-3000:]
        return json.loads(result.stdout)

    def s3(self) -> Any:
        first = self.info["first_start"]
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=first["access_key_id"],
                            aws_secret_access_key=first["secret_access_key"],
                            config=Config(s3={"addressing_style": "path"}))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)


def _read_line(stream: Any, timeout: float) -> str:
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return line[0] if line else ""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``dw up``, watched from outside: the moment ``/healthz/ready`` turns 200, ``dw key create`` runs."""
    root = tmp_path_factory.mktemp("dw-data-commands")
    data_dir, port = root / "data", free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(root / "dw-up.stderr", "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "dwray.cli", "up", "--data-dir", str(data_dir), "--port", str(port),
             "--address", "local", "--json"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=dw_env(data_dir), start_new_session=True)
    served = None
    try:
        def ready() -> bool:
            assert process.poll() is None, (root / "dw-up.stderr").read_text()[-3000:]
            try:
                return requests.get(f"{endpoint}/healthz/ready", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(ready, timeout=START_TIMEOUT, what="dw up to become ready", interval=0.05)
        # What a dw command started right now can find (starting one takes a second).
        files_at_ready = {path.name for path in (data_dir / "gateway").iterdir()}
        if GatewayFiles(data_dir / "gateway").admin_token.exists():
            files_at_ready.add("admin-token")
        key_create = subprocess.run(
            [sys.executable, "-m", "dwray.cli", "--data-dir", str(data_dir), "key", "create", "--tenant", "default",
             "--json"], capture_output=True, timeout=120, env=dw_env(data_dir), check=False)
        line = _read_line(process.stdout, START_TIMEOUT)
        assert line.strip(), (root / "dw-up.stderr").read_text()[-3000:]
        served = Served(process, data_dir, endpoint, json.loads(line), files_at_ready, key_create)
        yield served
    finally:
        if served is not None:
            served.stop()
        elif process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)


def test_dw_commands_find_dw_up_as_soon_as_it_reports_ready(served: Served) -> None:
    assert {"gateway.json", "admin-token"} <= served.files_at_ready
    result = served.key_create_at_ready
    assert result.returncode == 0, result.stderr.decode()
    created = json.loads(result.stdout)
    assert set(created) == {"access_key_id", "secret_access_key", "scope"} and created["scope"] == "full"


def test_data_commands_go_through_the_running_warehouse(served: Served, tmp_path: Path) -> None:
    source = tmp_path / "report.csv"
    payload = os.urandom(3 << 20) + b"id,total\n" * 100
    source.write_bytes(payload)
    assert served.dw_json("mb", "shared")["name"] == "shared"
    put = served.dw_json("put", str(source), "shared/2026/report.csv", "--meta", "owner=ana")
    assert put["size"] == len(payload)
    served.dw("put", "-", "shared/stdin.bin", stdin=b"from stdin")
    # The gateway serves what the commands wrote: one warehouse, not two.
    s3 = served.s3()
    assert s3.get_object(Bucket="shared", Key="2026/report.csv")["Body"].read() == payload
    s3.put_object(Bucket="shared", Key="via-s3", Body=b"written through the gateway")

    assert "shared" in [b["name"] for b in served.dw_json("ls")]
    listed = served.dw_json("ls", "-r", "shared")
    assert [o["key"] for o in listed["objects"]] == ["2026/report.csv", "stdin.bin", "via-s3"]
    assert served.dw_json("head", "shared/2026/report.csv")["metadata"] == {"owner": "ana"}
    back = tmp_path / "back.csv"
    assert served.dw_json("get", "shared/2026/report.csv", str(back))["written"] == len(payload)
    assert back.read_bytes() == payload
    assert served.dw("get", "shared/via-s3").stdout == b"written through the gateway"
    served.dw_json("cp", "shared/stdin.bin", "shared/copied.bin")
    assert served.dw_json("rm", "shared/stdin.bin")["existed"] is True
    assert served.dw("get", "shared/copied.bin").stdout == b"from stdin"
    assert served.dw_json("keys", "rotate")["primary"] >= 2
    assert served.dw_json("sweep", "--grace", "3600")["deleted"] == 0
    assert s3.get_object(Bucket="shared", Key="copied.bin")["Body"].read() == b"from stdin"
    # Through its actors, as a driver: the data dir's lock never left dw up's warehouse.
    holder = DataDirLock(served.data_dir).holder()
    assert holder is not None and holder.ray is not None and holder.pid == served.process.pid


def test_an_in_process_warehouse_is_refused_naming_dw_up(served: Served) -> None:
    from dwray.core.warehouse import Warehouse

    with pytest.raises(DataDirInUse) as refused:
        Warehouse.load(served.data_dir)
    message = str(refused.value)
    assert message.startswith(f"data dir {served.data_dir} is in use by a Ray warehouse started by dw up "
                              f"(pid {served.process.pid} on ")
    assert f"in Ray namespace {dw_env(served.data_dir)['DWRAY_RUNTIME__NAMESPACE']!r}" in message


def test_once_dw_up_stops_the_commands_open_the_data_dir_themselves(served: Served) -> None:
    s3 = served.s3()
    s3.create_bucket(Bucket="kept")
    s3.put_object(Bucket="kept", Key="k", Body=b"kept through the stop")
    served.stop()
    assert served.process.returncode == 0
    assert DataDirLock(served.data_dir).holder() is None
    assert served.dw("get", "kept/k").stdout == b"kept through the stop"
