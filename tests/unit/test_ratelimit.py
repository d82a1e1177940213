"""Token buckets and the gateway's rate limiter, on a clock the tests move by hand."""
from __future__ import annotations

import pytest

from dwray.config import DwrayConfig, GatewayConfig, RateLimitConfig
from dwray.core.ratelimit import RateLimiter, TokenBucket
from dwray.errors import InvalidArgument


class Clock:
    """A clock that stands still until the test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_allows_a_burst_then_says_how_long_to_wait() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=clock)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    assert bucket.take() == pytest.approx(0.5)  # a refused take consumes nothing
    clock.advance(0.25)
    assert bucket.take() == pytest.approx(0.25)
    clock.advance(0.25)
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.5)


def test_bucket_refills_only_up_to_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10.0, burst=2.0, clock=clock)
    clock.advance(3600)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, pytest.approx(0.1)]


def test_bucket_takes_several_tokens_and_survives_a_clock_step_back() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1.0, burst=4.0, clock=clock)
    assert bucket.take(3) == 0.0
    assert bucket.take(2) == pytest.approx(1.0)
    clock.advance(-50)  # a clock that steps back must not drain or overflow the bucket
    assert bucket.take(1) == 0.0
    assert bucket.take(1) == pytest.approx(1.0)


def test_bucket_with_rate_zero_is_unlimited() -> None:
    bucket = TokenBucket(rate=0, burst=1, clock=Clock())
    assert all(bucket.take() == 0.0 for _ in range(10_000))


@pytest.mark.parametrize(("rate", "burst", "word"), [(-1, 1, "rate"), (float("inf"), 1, "rate"),
                                                     (1, 0, "burst"), (1, float("nan"), "burst"), ("1", 1, "rate")])
def test_bucket_refuses_bad_numbers(rate: object, burst: object, word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        TokenBucket(rate, burst)  # type: ignore[arg-type]


def test_bucket_refuses_more_than_its_burst() -> None:
    with pytest.raises(InvalidArgument, match="at most 2"):
        TokenBucket(1, 2, clock=Clock()).take(3)


def limiter(clock: Clock, **options: float) -> RateLimiter:
    settings = {"tenant_rate": 0.0, "tenant_burst": 1.0, "key_rate": 0.0, "key_burst": 1.0, **options}
    return RateLimiter(clock=clock, **settings)  # type: ignore[arg-type]


def test_limiter_with_no_rates_allows_everything() -> None:
    rl = limiter(Clock())
    assert rl.unlimited
    assert all(rl.check("t", "K") is None for _ in range(1000))
    assert len(rl) == 0  # nothing is kept for an unlimited limiter


def test_per_key_limit_is_separate_for_each_key() -> None:
    clock = Clock()
    rl = limiter(clock, key_rate=1.0, key_burst=2.0)
    assert rl.check("t", "A") is None and rl.check("t", "A") is None
    assert rl.check("t", "A") == pytest.approx(1.0)
    assert rl.check("t", "B") is None  # another key of the same tenant has its own bucket
    assert rl.check("t", None) is None  # no key: the key limit does not apply
    clock.advance(1.0)
    assert rl.check("t", "A") is None


def test_tenant_limit_covers_all_its_keys_and_not_other_tenants() -> None:
    rl = limiter(Clock(), tenant_rate=1.0, tenant_burst=3.0)
    assert [rl.check("t1", key) for key in ("A", "B", None)] == [None, None, None]
    assert rl.check("t1", "C") == pytest.approx(1.0)
    assert rl.check("t2", "D") is None


def test_a_request_refused_by_one_bucket_takes_nothing_from_the_other() -> None:
    clock = Clock()
    rl = limiter(clock, tenant_rate=1.0, tenant_burst=2.0, key_rate=1.0, key_burst=1.0)
    assert rl.check("t", "A") is None
    # A's bucket is empty: refused, and the tenant's second token stays.
    assert rl.check("t", "A") == pytest.approx(1.0)
    assert rl.check("t", "A") == pytest.approx(1.0)
    assert rl.check("t", "B") is None  # took the tenant's last token
    # Both empty now; the longer wait wins.
    clock.advance(0.5)
    assert rl.check("t", "C") == pytest.approx(0.5)
    assert rl.check("t", "A") == pytest.approx(0.5)


def test_share_scales_rate_and_burst_for_one_of_several_replicas() -> None:
    clock = Clock()
    rl = limiter(clock, key_rate=8.0, key_burst=8.0, share=0.25)
    assert [rl.check("t", "A") for _ in range(2)] == [None, None]
    assert rl.check("t", "A") == pytest.approx(0.5)  # 2 per second on this replica


def test_a_scaled_burst_never_drops_below_one_request() -> None:
    rl = limiter(Clock(), key_rate=1.0, key_burst=1.0, share=1 / 8)
    assert rl.check("t", "A") is None
    assert rl.check("t", "A") == pytest.approx(8.0)


def test_idle_buckets_are_evicted_least_recently_used_first() -> None:
    clock = Clock()
    rl = limiter(clock, key_rate=1.0, key_burst=1.0, max_entries=3)
    for key in ("A", "B", "C"):
        assert rl.check("t", key) is None
    assert rl.check("t", "A") is not None  # A is now the most recently used
    assert rl.check("t", "D") is None  # evicts B, the least recently used
    assert len(rl) == 3
    assert rl.check("t", "A") is not None  # A kept its (empty) bucket
    assert rl.check("t", "C") is not None
    assert rl.check("t", "B") is None  # B was forgotten: a fresh bucket
    for n in range(1000):
        rl.check("t", f"K{n}")
    assert len(rl) == 3


@pytest.mark.parametrize(("options", "word"), [({"share": 0}, "share"), ({"share": 1.5}, "share"),
                                               ({"max_entries": 0}, "max_entries"),
                                               ({"key_rate": -1}, "rate")])
def test_limiter_refuses_bad_settings(options: dict[str, float], word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        limiter(Clock(), **options)


def test_from_config_shares_the_configured_rates_among_replicas() -> None:
    clock = Clock()
    config = DwrayConfig(gateway=GatewayConfig(replicas=2, rate_limit=RateLimitConfig(
        tenant_rate=100.0, tenant_burst=100.0, key_rate=4.0, key_burst=4.0)))
    rl = RateLimiter.from_config(config, clock=clock)
    assert [rl.check("t", "A") for _ in range(2)] == [None, None]
    assert rl.check("t", "A") == pytest.approx(0.5)  # 4/s over 2 replicas: 2/s, burst 2
    alone = RateLimiter.from_config(config, replicas=1, clock=clock)
    assert all(alone.check("t", "A") is None for _ in range(4))
    assert alone.check("t", "A") == pytest.approx(0.25)
    unlimited = RateLimitConfig(tenant_rate=0, key_rate=0)  # 0 = unlimited (the defaults are not)
    assert RateLimiter.from_config(DwrayConfig(gateway=GatewayConfig(rate_limit=unlimited))).unlimited
    with pytest.raises(InvalidArgument, match="replicas"):
        RateLimiter.from_config(config, replicas=0)


def test_a_tenant_override_replaces_the_default_tenant_rate_for_that_tenant_only() -> None:
    from dwray.config import TenantRate

    clock = Clock()
    config = DwrayConfig(gateway=GatewayConfig(rate_limit=RateLimitConfig(
        tenant_rate=0, key_rate=0, tenants={"throttled": TenantRate(rate=1.0, burst=2.0)})))
    limiter = RateLimiter.from_config(config, clock=clock)
    assert limiter.check("throttled", "K1") is None
    assert limiter.check("throttled", "K1") is None
    wait = limiter.check("throttled", "K2")
    assert wait is not None and wait == pytest.approx(1.0)
    # Everyone else stays unlimited (this config's tenant rate is 0).
    assert all(limiter.check("other", "K3") is None for _ in range(1000))
    clock.advance(1.0)
    assert limiter.check("throttled", "K1") is None
