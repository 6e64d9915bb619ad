"""Per-provider admission: a token bucket for the request rate, a cap on calls in flight.

The bucket algorithm is the pure function :func:`~._bucket.take_tokens`;
:class:`TokenBucket` and :class:`ConcurrencyLimiter` are policies over a
:class:`~router_middleware._storage.StateStore`'s domain operations, so the in-memory
store and a shared one run the same limits. A refusal is never a bare "no": it carries
the exact seconds until the request would be admitted, or ``math.inf`` when only a
release can help, which :class:`ProviderLimiter` announces through ``on_release``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ._bucket import BucketState, take_tokens
from ._clock import Clock
from ._config import RateLimitConfig
from ._memory import InMemoryStore
from ._ops import TakeSlot
from ._storage import StateStore

__all__ = [
    "BucketState",
    "ConcurrencyLimiter",
    "ProviderLimiter",
    "TokenBucket",
    "take_tokens",
]


class TokenBucket:
    """Admit ``rate`` requests per second on average, ``burst`` at once; starts full.

    Example:
        >>> from router_middleware._clock import FakeClock
        >>> clock = FakeClock()
        >>> bucket = TokenBucket(rate=5, burst=2, clock=clock)
        >>> bucket.try_acquire(), bucket.try_acquire(), bucket.try_acquire()
        (0.0, 0.0, 0.2)
        >>> clock.advance(0.2)
        >>> bucket.try_acquire()
        0.0
    """

    __slots__ = ("_clock", "_key", "_store", "burst", "rate")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        clock: Clock,
        store: StateStore | None = None,
        key: str = "bucket",
    ) -> None:
        if not 0 < rate < math.inf:
            raise ValueError(f"rate must be a finite number > 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._store: StateStore = store if store is not None else InMemoryStore()
        self._key = self._store.key(key)

    def try_acquire(self, cost: float = 1.0) -> float:
        """Take ``cost`` tokens: ``0.0`` if taken, else the exact seconds to wait.

        Raises:
            ValueError: ``cost`` is negative or exceeds ``burst`` (it could never pass).
        """
        self._check(cost)
        return self._store.take_tokens(self._key, self._clock.now(), self.rate, self.burst, cost)

    @property
    def store(self) -> StateStore:
        return self._store

    @property
    def key(self) -> str:
        """This bucket's key in its store."""
        return self._key

    def refund(self, cost: float = 1.0) -> None:
        """Give back ``cost`` tokens taken by a :meth:`try_acquire` whose call never ran."""
        self._check(cost)
        self._store.refund_tokens(self._key, self._clock.now(), self.rate, self.burst, cost)

    def wait_time(self, cost: float = 1.0) -> float:
        """What :meth:`try_acquire` would return now, without taking anything."""
        self._check(cost)
        return self._store.peek_tokens(self._key, self._clock.now(), self.rate, self.burst, cost)

    def cap(self, remaining: float) -> None:
        """Hold no more than ``remaining`` tokens (the provider says that many are left)."""
        self._store.cap_tokens(self._key, self._clock.now(), self.rate, self.burst, remaining)

    @property
    def tokens(self) -> float:
        """Tokens available now."""
        return self._store.tokens(self._key, self._clock.now(), self.rate, self.burst)

    def _check(self, cost: float) -> None:
        if cost > self.burst:
            raise ValueError(
                f"cost {cost!r} exceeds burst {self.burst}: such a request could never pass"
            )
        if not cost >= 0:
            raise ValueError(f"cost must be a number >= 0, got {cost!r}")

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst}, tokens={self.tokens:.2f})"


class ConcurrencyLimiter:
    """Cap the calls in flight; ``None`` counts them without a cap.

    The count lives in the store under ``key``, so limiters rebuilt by a config reload
    (or other replicas, on a shared store) keep counting the calls already in flight.

    Example:
        >>> limiter = ConcurrencyLimiter(1)
        >>> limiter.try_acquire(), limiter.try_acquire()
        (True, False)
        >>> limiter.release()
        >>> limiter
        ConcurrencyLimiter(in_flight=0/1, high_water=1)
    """

    __slots__ = ("_high_water", "_key", "_store", "max_concurrent")

    def __init__(
        self,
        max_concurrent: int | None = None,
        *,
        store: StateStore | None = None,
        key: str = "slots",
    ) -> None:
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1 or None, got {max_concurrent!r}")
        self.max_concurrent = max_concurrent
        self._store: StateStore = store if store is not None else InMemoryStore()
        self._key = self._store.key(key)
        self._high_water = 0

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        used = self._store.acquire_slot(self._key, self.max_concurrent)
        self.saw(used)
        return bool(used)

    def saw(self, used: int) -> None:
        """A slot was taken with ``used`` in use (0: none was): the high-water mark."""
        if used > self._high_water:  # racy across threads, and only a display figure
            self._high_water = used

    def release(self) -> None:
        """Give a slot back (exactly once per :meth:`try_acquire`: leases guarantee it)."""
        self._store.release_slot(self._key)

    @property
    def key(self) -> str:
        """This limiter's key in its store."""
        return self._key

    @property
    def store(self) -> StateStore:
        return self._store

    @property
    def in_flight(self) -> int:
        return self._store.slots_in_use(self._key)

    @property
    def high_water(self) -> int:
        """The most calls this limiter saw in flight at once."""
        return self._high_water

    @property
    def full(self) -> bool:
        return self.max_concurrent is not None and self.in_flight >= self.max_concurrent

    def __repr__(self) -> str:
        cap = "unlimited" if self.max_concurrent is None else self.max_concurrent
        return (
            f"ConcurrencyLimiter(in_flight={self.in_flight}/{cap}, high_water={self._high_water})"
        )


class ProviderLimiter:
    """Both limits of one provider, over one store, keyed by the provider's name.

    Example:
        >>> from router_middleware._clock import FakeClock
        >>> config = RateLimitConfig(requests_per_second=5, burst=1, max_concurrent=1)
        >>> limiter = ProviderLimiter(config, clock=FakeClock(), name="openai")
        >>> limiter.try_acquire(), limiter.try_acquire()
        (0.0, inf)
        >>> limiter.release()
        >>> limiter.try_acquire()
        0.2
        >>> limiter
        ProviderLimiter(name='openai', tokens=0.0/1, rate=5/s, in_flight=0/1)
    """

    __slots__ = ("_clock", "_on_release", "_store", "admission", "bucket", "concurrency", "name")

    def __init__(
        self,
        config: RateLimitConfig,
        *,
        clock: Clock,
        store: StateStore | None = None,
        name: str = "",
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        store = store if store is not None else InMemoryStore()
        self.bucket: TokenBucket | None = None
        if config.requests_per_second is not None:
            self.bucket = TokenBucket(
                config.requests_per_second,
                config.effective_burst,
                clock=clock,
                store=store,
                key=f"{name}:bucket",
            )
        self.concurrency = ConcurrencyLimiter(
            config.max_concurrent, store=store, key=f"{name}:slots"
        )
        self._on_release = on_release
        self._store, self._clock = store, clock
        # What an attempt takes (a token, when there is a bucket, and a slot, both or
        # neither), as one store operation: built once, it runs on every attempt.
        bucket, slots = self.bucket, self.concurrency
        self.admission = TakeSlot(
            None if bucket is None else bucket.key,
            slots.key,
            1.0 if bucket is None else bucket.rate,
            1 if bucket is None else bucket.burst,
            1.0,
            slots.max_concurrent,
        )

    def try_acquire(self) -> float:
        """``0.0`` when admitted (a token taken, a slot held); else nothing is held and
        this is the wait, ``math.inf`` when only a release can end it."""
        concurrency, bucket = self.concurrency, self.bucket
        if concurrency.full:
            return math.inf
        # The token first, then the slot: a caller refused for want of tokens never
        # holds a slot, even for an instant, so it cannot make others see "full".
        if bucket is not None:
            wait = bucket.try_acquire()
            if wait:
                return wait
        if concurrency.try_acquire():
            return 0.0
        # The last slot went to another caller between our look and our take.
        if bucket is not None:
            bucket.refund()
        return math.inf

    def take(self) -> float:
        """:attr:`admission` on its own: a token and a slot in one store operation (one
        lock, one round trip), or neither. ``0.0`` when taken; else the seconds until a
        token, or ``math.inf`` when the slots are full. Unlike :meth:`try_acquire`, the
        tokens are looked at first, whether or not the slots are full."""
        _, answers = self._store.admit(self._clock.now(), [self.admission])
        wait, used, _ = answers[0]
        self.concurrency.saw(used)
        return float(wait)

    def release(self) -> None:
        """Free the slot taken by an admitted :meth:`try_acquire`, then notify."""
        self.concurrency.release()
        if self._on_release is not None:
            self._on_release()

    def wait_time(self) -> float:
        """What :meth:`try_acquire` would return now, without taking anything."""
        if self.concurrency.full:
            return math.inf
        return 0.0 if self.bucket is None else self.bucket.wait_time()

    @property
    def in_flight(self) -> int:
        return self.concurrency.in_flight

    @property
    def high_water(self) -> int:
        return self.concurrency.high_water

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}"]
        if self.bucket is not None:
            parts.append(f"tokens={self.bucket.tokens:.1f}/{self.bucket.burst}")
            parts.append(f"rate={self.bucket.rate:g}/s")
        cap = self.concurrency.max_concurrent
        parts.append(f"in_flight={self.in_flight}" + (f"/{cap}" if cap is not None else ""))
        return f"ProviderLimiter({', '.join(parts)})"
