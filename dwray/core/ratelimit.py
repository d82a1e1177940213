"""Request rate limits for the gateway: token buckets per tenant and per access key.

Each gateway replica keeps its own buckets in memory and takes an equal share
of the configured rates (``share = 1 / replicas``), so the sum over replicas
holds without any shared state on the request path. A refused request gets
``503 SlowDown`` with ``Retry-After`` set from the delay ``check`` returns.

Hand-written rather than taken from a library: the rule is a dozen lines, and
the limiters on PyPI either sleep (we must answer at once with a delay) or keep
their state in Redis (we want none on the request path).
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from dwray.config import DwrayConfig
from dwray.errors import InvalidArgument

__all__ = ["RateLimiter", "TokenBucket"]

Clock = Callable[[], float]


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; a rate of 0 means unlimited.

    Not thread-safe on its own: ``RateLimiter`` serialises access.
    """

    __slots__ = ("_clock", "_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, clock: Clock = time.monotonic) -> None:
        if not (isinstance(rate, int | float) and math.isfinite(rate) and rate >= 0):
            raise InvalidArgument(f"a token bucket's rate must be a finite number >= 0, not {rate!r}")
        if not (isinstance(burst, int | float) and math.isfinite(burst) and burst > 0):
            raise InvalidArgument(f"a token bucket's burst must be a finite number > 0, not {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}, burst={self.burst:g})"

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def _refill(self) -> None:
        now = self._clock()
        # max(0, ...): a clock that steps back must not drain the bucket.
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self, n: float = 1.0) -> float:
        """Seconds until ``n`` tokens are available (0.0 if they are now), taking none."""
        if self.unlimited:
            return 0.0
        if n > self.burst:
            raise InvalidArgument(f"cannot take {n:g} tokens from a bucket that holds at most {self.burst:g}")
        self._refill()
        return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate

    def take(self, n: float = 1.0) -> float:
        """Take ``n`` tokens and return 0.0, or take none and return the seconds to wait."""
        wait = self.delay(n)
        if wait == 0.0 and not self.unlimited:
            self._tokens -= n
        return wait


class RateLimiter:
    """Per-tenant and per-access-key token buckets, bounded in memory.

    ``share`` (0 < share <= 1) scales rates and bursts for one of several
    replicas; a scaled burst never drops below one request, or nothing could
    ever pass. Beyond ``max_entries`` buckets the least recently used go: a
    principal that comes back starts with a full bucket, which for an idle one
    is what it would have had anyway.
    """

    def __init__(self, *, tenant_rate: float, tenant_burst: float, key_rate: float, key_burst: float,
                 share: float = 1.0, max_entries: int = 100_000, clock: Clock = time.monotonic,
                 tenant_overrides: Mapping[str, tuple[float, float]] | None = None) -> None:
        if not (isinstance(share, int | float) and 0 < share <= 1):
            raise InvalidArgument(f"a rate limiter's share must be in (0, 1], not {share!r}")
        if not (isinstance(max_entries, int) and max_entries >= 1):
            raise InvalidArgument(f"a rate limiter's max_entries must be an int >= 1, not {max_entries!r}")
        self._tenant = (tenant_rate * share, max(tenant_burst * share, 1.0))
        self._key = (key_rate * share, max(key_burst * share, 1.0))
        self._overrides = {name: (rate * share, max(burst * share, 1.0))
                           for name, (rate, burst) in (tenant_overrides or {}).items()}
        for limits in self._overrides.values():
            TokenBucket(*limits, clock)
        # Fail now, on bad numbers, rather than on the first request.
        TokenBucket(*self._tenant, clock)
        TokenBucket(*self._key, clock)
        self.max_entries = max_entries
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: DwrayConfig, replicas: int | None = None, *,
                    clock: Clock = time.monotonic) -> RateLimiter:
        """The limiter for one of ``replicas`` gateway replicas (default: ``config.gateway.replicas``)."""
        replicas = config.gateway.replicas if replicas is None else replicas
        if not (isinstance(replicas, int) and replicas >= 1):
            raise InvalidArgument(f"replicas must be an int >= 1, not {replicas!r}")
        limits = config.gateway.rate_limit
        return cls(tenant_rate=limits.tenant_rate, tenant_burst=limits.tenant_burst, key_rate=limits.key_rate,
                   key_burst=limits.key_burst, share=1.0 / replicas, clock=clock,
                   tenant_overrides={name: (rate.rate, rate.burst) for name, rate in limits.tenants.items()})

    def __repr__(self) -> str:
        return (f"RateLimiter(tenant={self._tenant[0]:g}/s burst {self._tenant[1]:g}, "
                f"key={self._key[0]:g}/s burst {self._key[1]:g}, entries={len(self._buckets)})")

    def __len__(self) -> int:
        return len(self._buckets)

    @property
    def unlimited(self) -> bool:
        return self._tenant[0] == 0 and self._key[0] == 0 and not any(rate for rate, _ in self._overrides.values())

    def check(self, tenant: str, access_key_id: str | None) -> float | None:
        """``None`` if the request may go (a token is then taken from each bucket), else the
        seconds after which it may be retried (nothing is taken).

        An anonymous request (``access_key_id`` None) is limited by its tenant only.
        """
        if self.unlimited:
            return None
        with self._lock:
            buckets = []
            tenant_limits = self._overrides.get(tenant, self._tenant)
            if tenant_limits[0]:
                buckets.append(self._bucket(("tenant", tenant), tenant_limits))
            if self._key[0] and access_key_id is not None:
                buckets.append(self._bucket(("key", access_key_id), self._key))
            wait = max((bucket.delay() for bucket in buckets), default=0.0)
            if wait > 0:
                return wait
            for bucket in buckets:
                bucket.take()
            return None

    def _bucket(self, name: tuple[str, str], limits: tuple[float, float]) -> TokenBucket:
        bucket = self._buckets.get(name)
        if bucket is not None:
            self._buckets.move_to_end(name)
            return bucket
        bucket = self._buckets[name] = TokenBucket(*limits, self._clock)
        while len(self._buckets) > self.max_entries:
            self._buckets.popitem(last=False)
        return bucket
