"""Request rate limits for the gateway: token buckets per tenant and per access key, and
per source address for requests that fail authentication.

Each gateway replica keeps its own buckets in memory and takes an equal share
of the configured rates (``share = 1 / replicas``), so the sum over replicas
holds without any shared state on the request path. A refused request gets
``503 SlowDown`` with ``Retry-After`` set from the delay ``check`` returns.

:class:`AuthFailureLimiter` guards what comes before authentication: every
unauthenticated or failing request (no or bad signature, unknown key, expired
URL, bad admin or metrics token) takes a token from its source address's
bucket, and while that bucket is empty every request from the address is
refused before any lookup reaches an actor. Guessing keys or tokens is thus
held to ``rate`` tries per second per address; clients that authenticate
never spend from it.

Hand-written rather than taken from a library: the rule is a dozen lines, and
the limiters on PyPI either sleep (we must answer at once with a delay) or keep
their state in Redis (we want none on the request path).
"""
from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from dwray.config import DwrayConfig
from dwray.errors import InvalidArgument

__all__ = ["AuthFailureLimiter", "RateLimiter", "TokenBucket", "source_key"]

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


def source_key(address: str) -> str:
    """The bucket a source address counts against: the address for IPv4, its /64 for IPv6.

    One IPv6 client typically holds a whole /64, so counting per address would
    give it 2**64 buckets. An address that does not parse (a Unix socket, a
    test client's name) counts as itself, cut to a bounded length.
    """
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


class AuthFailureLimiter:
    """Per source address: ``burst`` failed authentications, refilled at ``rate`` per second.

    ``check`` says whether an address may be served now (it takes nothing);
    ``failed`` spends one token for a request that failed authentication. A
    rate of 0 means unlimited. ``share`` and ``max_entries`` as for
    :class:`RateLimiter`: an evicted address starts again with a full bucket.
    """

    def __init__(self, *, rate: float, burst: float, share: float = 1.0, max_entries: int = 100_000,
                 clock: Clock = time.monotonic) -> None:
        if not (isinstance(share, int | float) and 0 < share <= 1):
            raise InvalidArgument(f"an auth failure limiter's share must be in (0, 1], not {share!r}")
        if not (isinstance(max_entries, int) and max_entries >= 1):
            raise InvalidArgument(f"an auth failure limiter's max_entries must be an int >= 1, not {max_entries!r}")
        TokenBucket(rate, burst, clock)  # fail now, on bad numbers
        self._limits = (rate * share, max(burst * share, 1.0))
        self.max_entries = max_entries
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: DwrayConfig, replicas: int | None = None, *,
                    clock: Clock = time.monotonic) -> AuthFailureLimiter:
        """The limiter of ``[gateway] auth_failures`` for one of ``replicas`` replicas."""
        replicas = config.gateway.replicas if replicas is None else replicas
        if not (isinstance(replicas, int) and replicas >= 1):
            raise InvalidArgument(f"replicas must be an int >= 1, not {replicas!r}")
        limits = config.gateway.auth_failures
        return cls(rate=limits.rate, burst=limits.burst, share=1.0 / replicas, clock=clock)

    def __repr__(self) -> str:
        return f"AuthFailureLimiter({self._limits[0]:g}/s burst {self._limits[1]:g}, entries={len(self._buckets)})"

    def __len__(self) -> int:
        return len(self._buckets)

    def check(self, address: str) -> float | None:
        """``None`` if ``address`` may be served now, else the seconds until it may try again."""
        if self._limits[0] == 0:
            return None
        key = source_key(address)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                return None  # never failed (or long forgotten): a full bucket
            self._buckets.move_to_end(key)
            wait = bucket.delay()
        return wait if wait > 0 else None

    def failed(self, address: str) -> None:
        """One request from ``address`` failed authentication: spend a token (none left: nothing more)."""
        if self._limits[0] == 0:
            return
        key = source_key(address)
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(*self._limits, self._clock)
                while len(self._buckets) > self.max_entries:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            bucket.take()
