"""A free TCP port on loopback, for the servers dwray starts itself (gateway, HAProxy's side ports, SeaweedFS).

Ports come from below the kernel's ephemeral range and above Ray's worker
ports (10002-19999 by default). A port the OS picks (bind to port 0) lies in
the ephemeral range, where any outgoing connection or Ray process may take it
between the pick and the server's bind, seconds later: seen as HAProxy failing
with "Address already in use" on a busy machine. Below that range nothing
takes a port unless asked for it by number.
"""
from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

__all__ = ["free_port"]

_LOWEST = 20_000  # above Ray's default worker ports
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()  # handed out by this process, maybe not yet bound by their server
_lock = threading.Lock()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; other systems start higher


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A loopback port nothing listens on now and that nothing takes unless asked for it by number."""
    highest = _ephemeral_start() - 1
    with _lock:
        if highest - _LOWEST >= 1_000:
            for _ in range(500):
                port = random.randint(_LOWEST, highest)
                if port not in _given and _bindable(port):
                    _given.add(port)
                    return port
        # No room below the ephemeral range (or all of it in use): let the OS choose.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])
