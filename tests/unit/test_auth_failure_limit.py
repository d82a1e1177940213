"""Unauthenticated and failing requests are limited per source address, before any lookup.

The limiter (``AuthFailureLimiter``) on a test clock, then the S3 request cycle
(``S3Api`` on a real local warehouse, a real SigV4 verifier, requests signed
by botocore) with a lookup function that counts its calls: once an address has
used up its failures, its requests get 503 SlowDown and reach no lookup.
"""
from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from starlette.requests import Request

from dwray.config import AuthFailureLimit, DwrayConfig, GatewayConfig
from dwray.core.ratelimit import AuthFailureLimiter, source_key
from dwray.core.warehouse import Warehouse
from dwray.errors import InvalidArgument
from dwray.s3.auth import SigningIdentity, SigV4Verifier
from serve_apps.metrics import GatewayMetrics
from serve_apps.s3_api import S3Api
from tests.conftest import make_config
from tests.unit.test_s3_auth import ACCESS_KEY, SECRET, BotoRecorder, Captured


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_gets_its_burst_of_failures_then_waits_for_the_rate() -> None:
    clock = Clock()
    limiter = AuthFailureLimiter(rate=2, burst=3, clock=clock)
    assert limiter.check("10.0.0.1") is None
    for _ in range(3):
        limiter.failed("10.0.0.1")
    assert limiter.check("10.0.0.1") == pytest.approx(0.5)
    assert limiter.check("10.0.0.2") is None  # another address is not affected
    clock.now += 0.5
    assert limiter.check("10.0.0.1") is None
    limiter.failed("10.0.0.1")
    assert limiter.check("10.0.0.1") == pytest.approx(0.5)
    limiter.failed("10.0.0.1")  # refused requests spend nothing more: the wait does not grow
    assert limiter.check("10.0.0.1") == pytest.approx(0.5)


def test_checking_never_spends() -> None:
    limiter = AuthFailureLimiter(rate=1, burst=1, clock=Clock())
    for _ in range(100):
        assert limiter.check("10.0.0.1") is None
    assert len(limiter) == 0  # an address that never failed holds no memory


def test_ipv6_addresses_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7" == source_key("192.0.2.7")
    assert source_key("not an address" * 20) == ("not an address" * 20)[:64]
    limiter = AuthFailureLimiter(rate=1, burst=2, clock=Clock())
    limiter.failed("2001:db8::1")
    limiter.failed("2001:db8::2")
    assert limiter.check("2001:db8::ffff") is not None


def test_rate_zero_is_unlimited_and_bad_settings_are_refused() -> None:
    limiter = AuthFailureLimiter(rate=0, burst=1, clock=Clock())
    for _ in range(10):
        limiter.failed("10.0.0.1")
    assert limiter.check("10.0.0.1") is None and len(limiter) == 0
    for options, word in (({"rate": -1, "burst": 1}, "rate"), ({"rate": 1, "burst": 0}, "burst"),
                          ({"rate": 1, "burst": 1, "share": 0}, "share"),
                          ({"rate": 1, "burst": 1, "max_entries": 0}, "max_entries")):
        with pytest.raises(InvalidArgument, match=word):
            AuthFailureLimiter(**options)  # type: ignore[arg-type]


def test_the_oldest_addresses_are_forgotten_first() -> None:
    limiter = AuthFailureLimiter(rate=1, burst=1, max_entries=2, clock=Clock())
    for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
        limiter.failed(address)
    assert len(limiter) == 2
    assert limiter.check("10.0.0.1") is None  # forgotten: a full bucket again
    assert limiter.check("10.0.0.3") is not None


def test_from_config_shares_the_limit_among_replicas() -> None:
    config = DwrayConfig(gateway=GatewayConfig(replicas=4, auth_failures=AuthFailureLimit(rate=8, burst=20)))
    clock = Clock()
    limiter = AuthFailureLimiter.from_config(config, clock=clock)
    for _ in range(5):  # 20 / 4 replicas
        limiter.failed("10.0.0.1")
    assert limiter.check("10.0.0.1") == pytest.approx(0.5)  # 8 / 4 = 2 per second
    assert "2/s burst 5" in repr(limiter)


# -- the S3 request cycle ---------------------------------------------------------------------


class CountingLookup:
    """The identity lookup the verifier calls (the gateway's goes to the identity actor)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, access_key_id: str) -> SigningIdentity | None:
        self.calls += 1
        return SigningIdentity(ACCESS_KEY, SECRET, "acme") if access_key_id == ACCESS_KEY else None


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[S3Api, CountingLookup, Clock, GatewayMetrics]]:
    clock = Clock()
    lookup = CountingLookup()
    metrics = GatewayMetrics()
    executor = ThreadPoolExecutor(max_workers=4)
    with Warehouse(make_config(tmp_path / "data")) as wh:
        api = S3Api(wh, SigV4Verifier(lookup), executor=executor, metrics=metrics, max_object_size=1 << 20,
                    max_metadata_bytes=2048, auth_failures=AuthFailureLimiter(rate=1, burst=3, clock=clock),
                    forwarded_client=False)
        yield api, lookup, clock, metrics
    executor.shutdown()


def send(api: S3Api, req: Captured, client: str, extra: list[tuple[str, str]] = ()) -> Any:  # type: ignore[assignment]
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in [*req.headers, *extra]]
    scope = {"type": "http", "method": req.method, "path": unquote(req.raw_path), "raw_path": req.raw_path.encode(),
             "query_string": req.raw_query.encode(), "headers": headers, "client": (client, 40000),
             "server": ("127.0.0.1", 9000), "scheme": "http", "http_version": "1.1", "root_path": ""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    return asyncio.run(api.handle(Request(scope, receive)))


def signed_list_buckets(secret: str = SECRET, access_key: str = ACCESS_KEY) -> Captured:
    boto = BotoRecorder(access_key=access_key, secret=secret)
    return boto.last(boto.client.list_buckets)


def test_a_failing_address_is_refused_before_any_lookup(gateway: Any) -> None:
    api, lookup, clock, metrics = gateway
    good, bad = signed_list_buckets(), signed_list_buckets(secret="wrong")
    for _ in range(3):
        assert send(api, bad, "10.0.0.1").status_code == 403
    assert lookup.calls == 3
    for req in (bad, good):  # a correct signature from that address waits too: nothing is looked up
        refused = send(api, req, "10.0.0.1")
        assert refused.status_code == 503 and b"<Code>SlowDown</Code>" in refused.body
        assert refused.headers["Retry-After"] == "1"
    assert lookup.calls == 3
    assert send(api, good, "10.0.0.2").status_code == 200  # other addresses are served
    clock.now += 1.0
    assert send(api, good, "10.0.0.1").status_code == 200
    assert send(api, good, "10.0.0.1").status_code == 200  # success spends nothing
    assert b'dwray_rate_limited_total{scope="source"} 2.0' in metrics.exposition()


@pytest.mark.parametrize("kind", ["unsigned", "unknown key", "malformed path"])
def test_every_kind_of_unauthenticated_failure_counts(gateway: Any, kind: str) -> None:
    api, lookup, _, _ = gateway
    req = {"unsigned": Captured("GET", "/", "", [("host", "127.0.0.1:9000")], b""),
           "unknown key": signed_list_buckets(access_key="AKIDNOSUCHKEY0000000"),
           "malformed path": Captured("GET", "/bkt/a#b", "", [("host", "127.0.0.1:9000")], b"")}[kind]
    for _ in range(3):
        assert 400 <= send(api, req, "10.0.0.7").status_code < 500
    assert send(api, signed_list_buckets(), "10.0.0.7").status_code == 503


def test_the_forwarded_address_counts_only_behind_dwrays_haproxy(gateway: Any) -> None:
    api, _, _, _ = gateway
    bad = signed_list_buckets(secret="wrong")
    forwarded = [("x-dwray-client-address", "192.0.2.50")]
    for _ in range(3):
        send(api, bad, "127.0.0.1", forwarded)
    # Not behind dwray-haproxy: the header is a client's claim, ignored; the peer spent its failures.
    assert send(api, signed_list_buckets(), "127.0.0.1").status_code == 503
    api.forwarded_client = True
    assert send(api, signed_list_buckets(), "127.0.0.1", [("x-dwray-client-address", "192.0.2.51")]).status_code \
        == 200
    for _ in range(3):
        send(api, bad, "127.0.0.1", forwarded)
    assert send(api, signed_list_buckets(), "127.0.0.1", forwarded).status_code == 503
    assert send(api, signed_list_buckets(), "127.0.0.1", [("x-dwray-client-address", "192.0.2.51")]).status_code \
        == 200
