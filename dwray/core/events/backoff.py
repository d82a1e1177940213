"""Retry delays with full jitter (the AWS architecture blog's "Exponential Backoff And Jitter").

Delay of retry ``n`` (n = 1 after the first failure) is uniform in
``[0, min(cap, base * 2 ** (n - 1))]``: retries of many failing messages spread
out instead of arriving at the receiver together. Tenacity's
``wait_random_exponential`` computes the same; the bus stores the moment of
the next try in its queue (a restart keeps the schedule), so it needs the
delay alone.
"""
from __future__ import annotations

import random

__all__ = ["full_jitter"]


def full_jitter(attempt: int, base: float, cap: float, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based)."""
    ceiling = min(cap, base * 2 ** max(0, min(attempt - 1, 62)))
    return (rng or random).uniform(0, ceiling)
