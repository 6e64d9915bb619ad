"""When to try the same provider again, and after how long.

The delays come from ``backoff``'s wait generator, computed once per policy rather than
per request; :func:`plan_retry` is the single decision the router makes after a failed
attempt: a delay before retrying the same provider, or ``None`` to fail over now.

Example:
    >>> from router_middleware._classify import Classification, ErrorKind
    >>> policy = BackoffPolicy(RetryConfig(attempts=3, jitter=False))
    >>> plan_retry(Classification(ErrorKind.TRANSIENT), 1, policy, remaining=None)
    0.1
    >>> plan_retry(Classification(ErrorKind.TIMEOUT), 1, policy, remaining=None) is None
    True
"""

from __future__ import annotations

import itertools
import random

import backoff

from ._classify import Classification
from ._config import RetryConfig

__all__ = ["BackoffPolicy", "plan_retry", "rate_limit_delay"]

# Jitter on top of a server-given Retry-After: enough to spread clients that were
# all told the same instant, never so much that a short wait doubles.
_RATE_LIMIT_JITTER_FRACTION = 0.1
_RATE_LIMIT_JITTER_CAP_SECONDS = 1.0


class BackoffPolicy:
    """Exponential backoff with optional full jitter for one provider's retries.

    The un-jittered schedule is ``initial * multiplier ** (n - 1)`` capped at the max,
    taken from :func:`backoff.expo`. ``delay(n)`` is the wait before retry ``n``
    (retry 1 precedes the second try).

    Example:
        >>> policy = BackoffPolicy(RetryConfig(attempts=6, jitter=False))
        >>> [policy.delay(n) for n in range(1, 6)]
        [0.1, 0.2, 0.4, 0.8, 1.0]
        >>> policy
        BackoffPolicy(tries=6, schedule=(0.1, 0.2, 0.4, 0.8, 1.0), max_delay=1.0, jitter=False)
    """

    __slots__ = ("_jitter", "_max_delay", "_rng", "_schedule", "_tries")

    def __init__(self, config: RetryConfig, *, rng: random.Random | None = None) -> None:
        self._tries = config.tries
        self._max_delay = config.max_backoff_seconds
        self._jitter = config.jitter
        self._rng = rng if rng is not None else random.Random()
        # One entry even without retries, so delay(1) means the same thing everywhere.
        self._schedule = _schedule(config, max(1, self._tries - 1))

    @property
    def tries(self) -> int:
        """Total tries on one provider, the first included."""
        return self._tries

    @property
    def max_delay(self) -> float:
        """The cap on any backoff delay (``max_backoff_seconds``)."""
        return self._max_delay

    def delay(self, retry_number: int) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based).

        Raises:
            ValueError: if ``retry_number`` is below 1.
        """
        if retry_number < 1:
            raise ValueError(f"retry_number must be >= 1, got {retry_number}")
        schedule = self._schedule
        # The schedule stops where it stops growing; later retries wait its last value.
        capped = schedule[retry_number - 1] if retry_number <= len(schedule) else schedule[-1]
        if not self._jitter:
            return capped
        # backoff.full_jitter draws from the global ``random`` module; this is the same
        # formula on our own generator so callers (and tests) can seed it.
        return self._rng.uniform(0.0, capped)

    def __repr__(self) -> str:
        return (
            f"BackoffPolicy(tries={self._tries}, schedule={self._schedule}, "
            f"max_delay={self._max_delay}, jitter={self._jitter})"
        )


def _schedule(config: RetryConfig, retries: int) -> tuple[float, ...]:
    # Stop at the first value that will repeat forever (the cap, or a constant series
    # from multiplier 1 or initial 0): thousands of attempts keep a short tuple, and
    # base ** n is never evaluated where it could overflow.
    cap = config.max_backoff_seconds
    waits = backoff.expo(
        base=config.multiplier, factor=config.initial_backoff_seconds, max_value=cap
    )
    next(waits)  # wait generators are primed before their first value
    schedule: list[float] = []
    for wait in itertools.islice(waits, retries):
        if schedule and wait == schedule[-1]:
            break
        schedule.append(float(wait))
        if wait >= cap:
            break
    return tuple(schedule)


def rate_limit_delay(retry_after: float, rng: random.Random | None = None) -> float:
    """Wait out a server-given ``Retry-After``: never earlier, at most a little later.

    Adds up to 10% (at most 1 s) above ``retry_after`` so clients told the same
    instant do not all come back at once.

    Example:
        >>> 2.0 <= rate_limit_delay(2.0, random.Random(0)) <= 2.2
        True
    """
    base = max(0.0, retry_after)
    spread = min(base * _RATE_LIMIT_JITTER_FRACTION, _RATE_LIMIT_JITTER_CAP_SECONDS)
    draw = rng.random() if rng is not None else random.random()
    return base + spread * draw


def plan_retry(
    classification: Classification,
    retry_number: int,
    policy: BackoffPolicy,
    *,
    remaining: float | None,
) -> float | None:
    """Seconds to wait before retrying the same provider, or ``None`` to fail over now.

    Args:
        classification: what the failed attempt was.
        retry_number: the retry being considered (1 after the first failure); it is
            also the number of tries already made on this provider.
        policy: the provider's backoff policy.
        remaining: seconds left before the request's deadline, or ``None`` for none.

    A ``Retry-After`` (on a 429, or on a 503 that sends one) is honoured: never sooner
    than asked, and when it exceeds ``policy.max_delay`` the request fails over at once;
    so does any retry whose wait would reach the deadline.
    """
    if not classification.policy.retry or retry_number >= policy.tries:
        return None
    retry_after = classification.retry_after
    if retry_after is not None:
        if retry_after > policy.max_delay:
            return None
        delay = rate_limit_delay(retry_after, policy._rng)
    else:
        delay = policy.delay(retry_number)
    if remaining is not None and delay >= remaining:
        return None
    return delay
