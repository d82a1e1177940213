"""Rate limits are on by default (issue 10): a config that says nothing about them still bounds
each tenant (1000 requests/s, burst 2000) and each access key (500/s, burst 1000).

The limiter is built as the gateway builds it (``RateLimiter.from_config``, see
serve_apps/context.py), on a clock the test moves, so the burst edges are exact.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from dwray.config import DwrayConfig, GatewayConfig, RateLimitConfig, load_config
from dwray.core.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def passes(limiter: RateLimiter, tenant: str, keys: list[str | None], count: int) -> int:
    """How many of ``count`` requests at one instant, spread over ``keys``, get through."""
    return sum(limiter.check(tenant, keys[n % len(keys)]) is None for n in range(count))


def test_a_config_without_rate_settings_has_non_zero_tenant_and_key_limits(tmp_path: Path) -> None:
    empty = tmp_path / "dwray.toml"
    empty.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    limits = load_config(empty, env={}).gateway.rate_limit
    assert (limits.tenant_rate, limits.tenant_burst, limits.key_rate, limits.key_burst) == (1000, 2000, 500, 1000)
    assert limits == RateLimitConfig() and not RateLimiter.from_config(load_config(empty, env={})).unlimited


def test_one_key_past_its_default_burst_is_told_to_slow_down() -> None:
    clock = Clock()
    limiter = RateLimiter.from_config(DwrayConfig(), clock=clock)
    assert passes(limiter, "acme", ["AK1"], 1000) == 1000  # the key's burst
    wait = limiter.check("acme", "AK1")
    assert wait == pytest.approx(1 / 500)  # the key refills at 500/s
    # Another key of the same tenant still has its own burst.
    assert limiter.check("acme", "AK2") is None
    clock.now += 1.0
    assert passes(limiter, "acme", ["AK1"], 501) == 500


def test_a_tenant_past_its_default_burst_is_limited_across_all_its_keys() -> None:
    clock = Clock()
    limiter = RateLimiter.from_config(DwrayConfig(), clock=clock)
    keys: list[str | None] = [f"AK{n}" for n in range(8)]
    assert passes(limiter, "acme", keys, 2000) == 2000  # 250 per key: under each key's burst
    assert limiter.check("acme", "AK-fresh") == pytest.approx(1 / 1000)  # the tenant refills at 1000/s
    assert limiter.check("acme", None) is not None  # anonymous requests count against the tenant too
    # Another tenant is untouched.
    assert passes(limiter, "other", ["BK1"], 1000) == 1000


def test_the_defaults_are_shared_among_replicas() -> None:
    limiter = RateLimiter.from_config(DwrayConfig(gateway=GatewayConfig(replicas=4)), clock=Clock())
    assert passes(limiter, "acme", ["AK1"], 1000) == 250  # a quarter of the key's burst per replica


def test_zero_still_means_unlimited() -> None:
    config = DwrayConfig(gateway=GatewayConfig(rate_limit=RateLimitConfig(tenant_rate=0, key_rate=0)))
    limiter = RateLimiter.from_config(config, clock=Clock())
    assert limiter.unlimited and passes(limiter, "acme", ["AK1"], 5000) == 5000
