"""The token bucket's algorithm: pure functions of ``(tokens, last_refill_time)``.

Storage backends run them atomically (``_storage``); :class:`~._limiter.TokenBucket` is
the policy object over a store. A refusal is never a bare "no": it carries the exact
seconds until the tokens will be there, or ``math.inf`` when they never can.
"""

from __future__ import annotations

import math

__all__ = ["BucketState", "level", "peek_tokens", "refund_tokens", "take_tokens"]

BucketState = tuple[float, float]
"""``(tokens, last_refill_time)`` of one token bucket."""


def _refilled(tokens: float, last: float, now: float, rate: float, burst: float) -> float:
    # Clamping elapsed time at zero keeps a caller that read the clock just before
    # another thread's update from refilling the same interval twice.
    return min(float(burst), tokens + max(0.0, now - last) * rate)


def take_tokens(
    state: BucketState | None, now: float, rate: float, burst: float, cost: float
) -> tuple[BucketState, float]:
    """Refill at ``rate`` tokens/s up to ``burst``, then take ``cost`` tokens if there.

    A missing state is a full bucket. Returns the new state and ``0.0`` when the tokens
    were taken; otherwise the state unchanged and the seconds until ``cost`` tokens will
    be there (``math.inf`` if ``cost > burst``).

    Example:
        >>> state, wait = take_tokens(None, now=0.0, rate=5, burst=1, cost=1)
        >>> state, wait
        ((0.0, 0.0), 0.0)
        >>> take_tokens(state, now=0.0, rate=5, burst=1, cost=1)[1]
        0.2
    """
    tokens, last = state if state is not None else (float(burst), now)
    available = _refilled(tokens, last, now, rate, burst)
    if available >= cost:
        return (available - cost, max(now, last)), 0.0
    if cost > burst:
        return (tokens, last), math.inf
    wait = last - now + (cost - tokens) / rate
    # Rounding can leave the refill a hair short at `now + wait`, the very instant a
    # caller that sleeps `wait` reads; step up to the first float that admits, so that
    # caller is never refused twice. Stepping `now + wait` too ends the loop even when
    # `wait` is far below the resolution of `now`.
    while _refilled(tokens, last, now + wait, rate, burst) < cost:
        wait = max(math.nextafter(wait, math.inf), math.nextafter(now + wait, math.inf) - now)
    return (tokens, last), wait


def refund_tokens(
    state: BucketState | None, now: float, rate: float, burst: float, cost: float
) -> BucketState:
    """Give back ``cost`` tokens taken for a call that never ran (never above ``burst``)."""
    if state is None:
        return (float(burst), now)
    tokens, last = state
    return (min(float(burst), _refilled(tokens, last, now, rate, burst) + cost), max(now, last))


def peek_tokens(
    state: BucketState | None, now: float, rate: float, burst: float, cost: float
) -> float:
    """What :func:`take_tokens` would answer now, taking nothing."""
    return take_tokens(state, now, rate, burst, cost)[1]


def level(state: BucketState | None, now: float, rate: float, burst: float) -> float:
    """Tokens available now."""
    if state is None:
        return float(burst)
    tokens, last = state
    return _refilled(tokens, last, now, rate, burst)
