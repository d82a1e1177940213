"""Whose address a gRPC call is counted and audited under: HAProxy's header only when HAProxy connected."""
from __future__ import annotations

import psutil

from serve_apps.grpc_call import caller_address


def _foreign_address() -> str:
    """An address that is none of this host's (TEST-NET-3, never assigned to an interface here)."""
    own = {address.address for addresses in psutil.net_if_addrs().values() for address in addresses}
    assert "203.0.113.7" not in own
    return "203.0.113.7"


def test_the_header_counts_when_the_local_haproxy_connected() -> None:
    assert caller_address("ipv4:127.0.0.1:40000", "198.51.100.4", True) == "198.51.100.4"
    assert caller_address("ipv6:[::1]:40000", "198.51.100.4", True) == "198.51.100.4"


def test_a_caller_on_the_replicas_own_port_cannot_claim_an_address() -> None:
    foreign = _foreign_address()
    assert caller_address(f"ipv4:{foreign}:40000", "198.51.100.4", True) == foreign


def test_without_hardened_haproxy_or_a_header_the_peer_is_the_caller() -> None:
    assert caller_address("ipv4:127.0.0.1:40000", "198.51.100.4", False) == "127.0.0.1"
    assert caller_address("ipv4:127.0.0.1:40000", None, True) == "127.0.0.1"
    assert caller_address("ipv4:127.0.0.1:40000", "x" * 200, True) == "x" * 64
