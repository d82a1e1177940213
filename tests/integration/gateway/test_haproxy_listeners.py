"""The session gateway's HAProxy, as the operating system sees it: what it listens on, and its files.

Ray Serve's own config binds HAProxy's stats page and Prometheus exporter to
every interface and makes its admin socket world-writable; the gateway starts
HAProxy through ``dwray-haproxy``, which binds both to loopback and closes the
socket, in a 0700 folder with a random name. These tests find the HAProxy
process started for the session's gateway and read its listening sockets with
psutil.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest
import requests

from tests.integration.gateway.conftest import GatewayUnderTest


def haproxy_folder() -> Path:
    return Path(os.environ["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"]).parent


def gateway_haproxy() -> list[psutil.Process]:
    """The HAProxy processes that read a config under this session's HAProxy folder."""
    folder = str(haproxy_folder())
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "haproxy" and any(arg.startswith(folder) for arg in cmdline):
            found.append(process)
    return found


@pytest.fixture
def haproxy(gateway: GatewayUnderTest) -> list[psutil.Process]:
    processes = gateway_haproxy()
    assert processes, f"no HAProxy runs with a config under {haproxy_folder()}"
    return processes


def listening(processes: list[psutil.Process]) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for p in processes for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN}


def test_every_haproxy_listener_is_on_loopback(gateway: GatewayUnderTest, haproxy: list[psutil.Process]) -> None:
    sockets = listening(haproxy)
    ports = {port for _, port in sockets}
    stats_port = int(os.environ["RAY_SERVE_HAPROXY_STATS_PORT"])
    metrics_port = int(os.environ["RAY_SERVE_HAPROXY_METRICS_PORT"])
    gateway_port = urlsplit(gateway.endpoint).port
    # The listeners are there (so the test is not passing on an empty set), each on 127.0.0.1 only.
    assert {gateway_port, stats_port, metrics_port} <= ports
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, sockets
    # The stats page still answers, from this host.
    assert requests.get(f"http://127.0.0.1:{stats_port}/stats", timeout=10).status_code == 200


def test_haproxy_files_are_private(haproxy: list[psutil.Process]) -> None:
    top = haproxy_folder()
    assert top.name.startswith("dwray-haproxy-") and len(top.name) > len("dwray-haproxy-") + 4  # random part
    assert stat.S_IMODE(top.stat().st_mode) == 0o700
    config = Path(next(arg for arg in haproxy[0].cmdline() if arg.endswith("haproxy.cfg")))
    node_folder = config.parent  # Serve's per-node folder inside ours: the admin socket's
    assert node_folder.parent == top
    assert stat.S_IMODE(node_folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    sockets = [path for path in node_folder.iterdir() if stat.S_ISSOCK(path.lstat().st_mode)]
    admin = [path for path in sockets if path.name == "admin.sock"]
    assert admin, sockets
    assert stat.S_IMODE(admin[0].lstat().st_mode) & 0o077 == 0
    text = config.read_text()
    assert " mode 600 " in text and "mode 666" not in text


def test_a_client_cannot_choose_the_address_it_is_limited_by(gateway: GatewayUnderTest, s3: Any,
                                                             bucket: str) -> None:
    """HAProxy replaces a client's own X-Dwray-Client-Address; the config says so and requests still work."""
    config = Path(next(arg for arg in gateway_haproxy()[0].cmdline() if arg.endswith("haproxy.cfg")))
    assert "http-request set-header x-dwray-client-address %[src]" in config.read_text()
    response = requests.put(f"{gateway.endpoint}/{bucket}/spoofed", data=b"x",
                            headers={"X-Dwray-Client-Address": "203.0.113.9"}, timeout=10)
    assert response.status_code == 403  # unsigned: refused, and counted against 127.0.0.1, not the header
    s3.put_object(Bucket=bucket, Key="after-spoof", Body=b"ok")
