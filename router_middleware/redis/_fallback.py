""":class:`FallbackStore`: shared state that keeps working when Redis is slow or gone.

Every operation goes to the shared store first, bounded by the client's timeout (retries
off). The first failure switches the router to a local stand-in, *degraded*: one log line
and one event, not one per request, and no request touches Redis again until a background
check (every ``recheck_seconds``, never on a request's path) finds it answering; then it
switches back, with one more line and event. So no request waits on Redis longer than
one timeout, and only the request that met the failure does.

What degraded means is ``on_error``:

* ``local``: limits run on this replica's memory, each shared limit (rate, burst,
  concurrency, token windows, budget) divided by ``expected_replicas``, so the replicas
  together stay near the shared limit; breakers and cool-downs run locally;
* ``open``: admit, limiting nothing (breakers and cool-downs still run locally);
* ``closed``: refuse every attempt that needs a shared limit, with
  :class:`~router_middleware._storage.StateUnavailable`.

A slot taken on one side is given back on that side: the shared lease by name, the local
count by count; a lease this replica can no longer release expires by itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from .._breaker_algorithm import BreakerRecord
from .._config import CircuitBreakerConfig
from .._memory import InMemoryStore
from .._ops import AdmitOp, Count, ReleaseSlot, SettleOp, Spend, TakeSlot, TakeWindows
from .._storage import StateUnavailable, Transitions
from ._health import Health
from ._store import RedisStore

__all__ = ["FallbackStore"]


T = TypeVar("T")


class FallbackStore:
    """A :class:`RedisStore` with a local stand-in for when it fails (see module doc).

    Example:
        >>> import redis
        >>> remote = RedisStore(redis.Redis(port=1, socket_connect_timeout=0.05))
        >>> store = FallbackStore(remote, on_error="local", replicas=2)
        >>> store.take_tokens(store.key("p:bucket"), 0.0, rate=4, burst=4, cost=1)
        0.0
        >>> store
        FallbackStore(redis, degraded (local (limits / 2)), degradations=1)
        >>> store.close()
    """

    remote = True

    def __init__(
        self,
        shared: RedisStore,
        *,
        on_error: str = "local",
        replicas: int = 1,
        recheck_seconds: float = 1.0,
        local: InMemoryStore | None = None,
        label: str | None = None,
    ) -> None:
        if on_error not in ("local", "open", "closed"):
            raise ValueError("on_error must be 'local', 'open' or 'closed'")
        self.shared = shared
        self.local = local if local is not None else InMemoryStore(shared.namespace)
        self.on_error = on_error
        self.replicas = replicas
        self.recheck_seconds = recheck_seconds
        self.namespace = shared.namespace
        self.label = label  # the URL as it may be shown: its password masked
        self.health = Health(shared.client.ping, recheck_seconds, self._mode())

    def key(self, name: str) -> str:
        return self.shared.key(name)

    # -- degrading and recovering ------------------------------------------------------------

    def add_release_listener(self, listener: Callable[[str], None]) -> None:
        """See :meth:`RedisStore.add_release_listener`."""
        self.shared.add_release_listener(listener)

    def add_state_listener(self, listener: Callable[[bool, str], None]) -> None:
        """Call ``listener(degraded, reason)`` when the store degrades or recovers."""
        self.health.add_listener(listener)

    @property
    def degraded(self) -> bool:
        return self.health.degraded

    def _shared(self, op: Callable[[], T]) -> T | None:
        """``op()`` on Redis; ``None`` once degraded (the caller goes local)."""
        if self.health.degraded:
            return None
        try:
            return op()
        except Exception as exc:
            self.health.failed(exc)
            return None

    def _did(self, op: Callable[[], None]) -> bool:
        """Whether ``op()`` was done on Redis (``False``: the caller does it locally)."""

        def done() -> bool:
            op()
            return True

        return self._shared(done) is not None

    def _mode(self) -> str:
        if self.on_error == "local":
            return f"local (limits / {self.replicas})" if self.replicas > 1 else "local"
        return self.on_error

    def _closed(self) -> None:
        if self.on_error == "closed":
            raise StateUnavailable("shared state unavailable (state.on_error=closed)")

    def _share(self, value: float) -> float:
        """This replica's share of a shared limit, while degraded."""
        return value / self.replicas

    def status(self) -> dict[str, Any]:
        """For ``router.metrics()["state"]``: where state lives and how that goes."""
        return {
            "backend": "redis",
            "url": self.label,
            "prefix": self.namespace,
            "degraded": self.degraded,
            "on_error": self.on_error,
            "degradations": self.health.degradations,
            "errors": self.health.errors,
            "leases_held": self.shared.held(),
        }

    # -- token buckets -----------------------------------------------------------------------

    def take_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        wait = self._shared(lambda: self.shared.take_tokens(key, now, rate, burst, cost))
        if wait is not None:
            return wait
        self._closed()
        if self.on_error == "open":
            return 0.0
        return self.local.take_tokens(key, now, *self._bucket(rate, burst, cost), cost)

    def _bucket(self, rate: float, burst: float, cost: float) -> tuple[float, float]:
        return self._share(rate), max(cost, self._share(burst))

    def refund_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> None:
        if self._did(lambda: self.shared.refund_tokens(key, now, rate, burst, cost)):
            return
        self.local.refund_tokens(key, now, *self._bucket(rate, burst, cost), cost)

    def peek_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        wait = self._shared(lambda: self.shared.peek_tokens(key, now, rate, burst, cost))
        if wait is not None:
            return wait
        return self.local.peek_tokens(key, now, *self._bucket(rate, burst, cost), cost)

    def tokens(self, key: str, now: float, rate: float, burst: float) -> float:
        level = self._shared(lambda: self.shared.tokens(key, now, rate, burst))
        if level is not None:
            return level
        return self.local.tokens(key, now, *self._bucket(rate, burst, 1.0))

    def cap_tokens(self, key: str, now: float, rate: float, burst: float, remaining: float) -> None:
        if self._did(lambda: self.shared.cap_tokens(key, now, rate, burst, remaining)):
            return
        share = self._bucket(rate, burst, 1.0)
        self.local.cap_tokens(key, now, *share, self._share(remaining))

    # -- concurrency slots -------------------------------------------------------------------

    def _cap(self, cap: int | None) -> int | None:
        return None if cap is None else max(1, math.floor(cap / self.replicas))

    def acquire_slot(self, key: str, cap: int | None) -> int:
        used = self._shared(lambda: self.shared.acquire_slot(key, cap))
        if used is not None:
            return used
        self._closed()
        return self.local.acquire_slot(key, None if self.on_error == "open" else self._cap(cap))

    def take_token_and_slot(
        self,
        bucket: str,
        slots: str,
        now: float,
        rate: float,
        burst: float,
        cost: float,
        cap: int | None,
    ) -> tuple[float, int]:
        taken = self._shared(
            lambda: self.shared.take_token_and_slot(bucket, slots, now, rate, burst, cost, cap)
        )
        if taken is not None:
            return taken
        self._closed()
        if self.on_error == "open":
            return 0.0, self.local.acquire_slot(slots, None)
        rate, burst = self._bucket(rate, burst, cost)
        return self.local.take_token_and_slot(bucket, slots, now, rate, burst, cost, self._cap(cap))

    def release_slot(self, key: str) -> None:
        # Given back where it was taken: the shared lease while this replica holds one
        # and Redis answers; otherwise the local count, or the lease left to expire.
        if self.shared.holds(key) and self._did(lambda: self.shared.release_slot(key)):
            return
        if self.local.slots_in_use(key):
            self.local.release_slot(key)
        else:
            self.shared.drop(key)

    def slot_free_in(self, key: str) -> float:
        """See :meth:`RedisStore.slot_free_in` (while degraded, only a release frees one)."""
        free_in = self._shared(lambda: self.shared.slot_free_in(key))
        return math.inf if free_in is None else free_in

    def slots_in_use(self, key: str) -> int:
        used = self._shared(lambda: self.shared.slots_in_use(key))
        return self.local.slots_in_use(key) if used is None else used

    # -- circuit breakers and cool-downs: local while degraded, whatever on_error says --------

    def breaker_acquire(
        self, key: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[int | None, Transitions]:
        got = self._shared(lambda: self.shared.breaker_acquire(key, now, cfg, name))
        return self.local.breaker_acquire(key, now, cfg, name) if got is None else got

    def breaker_report(
        self,
        key: str,
        now: float,
        cfg: CircuitBreakerConfig,
        name: str,
        generation: int,
        outcome: int,
    ) -> Transitions:
        moved = self._shared(
            lambda: self.shared.breaker_report(key, now, cfg, name, generation, outcome)
        )
        if moved is not None:
            return moved
        return self.local.breaker_report(key, now, cfg, name, generation, outcome)

    def breaker_command(
        self, key: str, command: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[BreakerRecord, Transitions]:
        got = self._shared(lambda: self.shared.breaker_command(key, command, now, cfg, name))
        return self.local.breaker_command(key, command, now, cfg, name) if got is None else got

    def breaker_record(self, key: str) -> BreakerRecord | None:
        if self.health.degraded:
            return self.local.breaker_record(key)
        try:
            return self.shared.breaker_record(key)
        except Exception as exc:  # as in _shared, where None means degraded
            self.health.failed(exc)
            return self.local.breaker_record(key)

    def set_cooldown(self, key: str, until: float) -> float:
        got = self._shared(lambda: self.shared.set_cooldown(key, until))
        return self.local.set_cooldown(key, until) if got is None else got

    def clear_cooldown(self, key: str) -> None:
        self.local.clear_cooldown(key)
        self._shared(lambda: self.shared.clear_cooldown(key))

    def cooldown_until(self, key: str) -> float:
        got = self._shared(lambda: self.shared.cooldown_until(key))
        return self.local.cooldown_until(key) if got is None else got

    # -- token windows and budgets -----------------------------------------------------------

    def _windows(self, charges: Sequence[tuple[str, float, float]]) -> list[Any]:
        return [(k, max(cost, self._share(limit)), cost) for k, limit, cost in charges]

    def take_windows(
        self, now: float, window: float, charges: Sequence[tuple[str, float, float]]
    ) -> tuple[float, int]:
        got = self._shared(lambda: self.shared.take_windows(now, window, charges))
        if got is not None:
            return got
        self._closed()
        if self.on_error == "open":
            return 0.0, -1
        return self.local.take_windows(now, window, self._windows(charges))

    def adjust_windows(
        self, now: float, window: float, slot: int, deltas: Sequence[tuple[str, float]]
    ) -> None:
        if not self._did(lambda: self.shared.adjust_windows(now, window, slot, deltas)):
            self.local.adjust_windows(now, window, slot, deltas)

    def cap_window(
        self, key: str, now: float, window: float, limit: float, remaining: float, reset: float
    ) -> None:
        if self._did(lambda: self.shared.cap_window(key, now, window, limit, remaining, reset)):
            return
        share = self._share(limit)
        self.local.cap_window(key, now, window, share, self._share(remaining), reset)

    def window_used(self, key: str, now: float, window: float) -> float:
        used = self._shared(lambda: self.shared.window_used(key, now, window))
        return self.local.window_used(key, now, window) if used is None else used

    def spend(
        self, key: str, now: float, period: float, limit: float, cost: float
    ) -> tuple[float, float]:
        got = self._shared(lambda: self.shared.spend(key, now, period, limit, cost))
        if got is not None:
            return got
        self._closed()
        if self.on_error == "open":
            return 0.0, math.nan  # a start no period has: its corrections change nothing
        return self.local.spend(key, now, period, max(cost, self._share(limit)), cost)

    def adjust_spend(self, key: str, now: float, period: float, start: float, delta: float) -> None:
        if not self._did(lambda: self.shared.adjust_spend(key, now, period, start, delta)):
            self.local.adjust_spend(key, now, period, start, delta)

    def spent(self, key: str, now: float, period: float) -> float:
        got = self._shared(lambda: self.shared.spent(key, now, period))
        return self.local.spent(key, now, period) if got is None else got

    # -- whole admissions and settles -------------------------------------------------------

    def admit(self, now: float, ops: Sequence[AdmitOp]) -> tuple[int, list[Any]]:
        got = self._shared(lambda: self.shared.admit(now, ops))
        if got is not None:
            return got
        self._closed()
        return self.local.admit(now, [self._local(op) for op in ops])

    def _local(self, op: AdmitOp) -> AdmitOp:
        """``op`` on this replica's own state: its share of a limit (``local``), or no
        limit (``open``)."""
        unlimited = self.on_error == "open"
        match op:
            case TakeSlot(_, _, rate, burst, cost, cap):
                if unlimited:
                    return op._replace(bucket=None, cap=None)
                rate, burst = self._bucket(rate, burst, cost)
                return op._replace(rate=rate, burst=burst, cap=self._cap(cap))
            case TakeWindows(window, charges):
                share = self._windows(charges)
                if unlimited:
                    share = [(k, math.inf, c) for k, _, c in charges]
                return TakeWindows(window, share)
            case Spend(_, _, limit, _):
                return op._replace(limit=math.inf if unlimited else self._share(limit))
        return op

    def settle(self, now: float, ops: Sequence[SettleOp]) -> list[Any]:
        # A slot goes back where it was taken: Redis for the leases held there.
        shared = {op.key for op in ops if type(op) is ReleaseSlot and self.shared.holds(op.key)}
        was_degraded = self.health.degraded
        answers = self._shared(lambda: self.shared.settle(now, ops))
        if answers is not None:
            for op in ops:
                if type(op) is ReleaseSlot and op.key not in shared:
                    self.local.release_slot(op.key)
            return answers
        if was_degraded:  # never sent: stop renewing those leases, they expire
            for key in shared:
                self.shared.drop(key)

        # Not here: the leases held on Redis, and the cluster's counters (a degraded
        # replica's attempts are missing from them; its own metrics() has them).
        def here(op: SettleOp) -> bool:
            return not (type(op) is ReleaseSlot and op.key in shared) and type(op) is not Count

        done = iter(self.local.settle(now, [op for op in ops if here(op)]))
        return [next(done) if here(op) else None for op in ops]

    def counts(self, key: str) -> dict[str, float]:
        """The cluster's counters (empty while degraded: this replica's are not them)."""
        counts = self._shared(lambda: self.shared.counts(key))
        return {} if counts is None else counts

    # -- lifecycle ---------------------------------------------------------------------------

    def forget(self, provider: str) -> int:
        return self.local.forget(provider) + self.shared.forget(provider)

    def close(self) -> None:
        """Stop the re-check and the shared store's threads."""
        self.health.close()
        self.shared.close()

    def __repr__(self) -> str:
        state = f"degraded ({self._mode()})" if self.degraded else "shared"
        return f"FallbackStore(redis, {state}, degradations={self.health.degradations})"
