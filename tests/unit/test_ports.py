"""free_port: ports outside the ranges the OS and Ray hand out by themselves, free, never given twice."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dwray.core.ports import free_port


def ephemeral_start() -> int:
    return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])


def test_ports_lie_between_rays_worker_ports_and_the_ephemeral_range() -> None:
    ports = [free_port() for _ in range(50)]
    assert all(20_000 <= port < ephemeral_start() for port in ports), ports
    assert len(set(ports)) == len(ports)


def test_a_port_given_out_can_be_listened_on() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def test_a_port_in_use_is_not_given_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        in_use = taken.getsockname()[1]
        # The random pick lands on the busy port first; the next pick must be another.
        picks = iter([in_use, 23_456])
        monkeypatch.setattr("dwray.core.ports.random.randint", lambda low, high: next(picks))
        monkeypatch.setattr("dwray.core.ports._LOWEST", 1_024)
        monkeypatch.setattr("dwray.core.ports._ephemeral_start", lambda: 65_536)
        assert free_port() == 23_456
