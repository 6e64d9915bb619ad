"""Where live limiter, breaker and cool-down state lives: storage as domain operations.

The policies (``_limiter``, ``_breaker``, the cool-down gate) never read-modify-write
state themselves: they ask a store for one domain operation (take tokens, take a slot,
or both at once, acquire a breaker permit, report an outcome, set a cool-down), and each
backend carries it out natively and atomically. :class:`InMemoryStore` runs the pure
algorithms of ``_bucket`` and ``_breaker_algorithm`` under one lock held for
microseconds, never across a provider call or an ``await``; a shared backend runs each
operation as one server-side script, one round trip per decision. The operations an
attempt takes and gives back (tokens, slots, breaker, cool-down) also have async forms
(``a`` + name) on :class:`InMemoryStore`: the shape an I/O backend offers the async
driver. The router calls only the sync forms today, which for memory never block.

A policy asks once for its key (:meth:`StateStore.key`: ``<provider>:<what>`` under the
store's ``namespace``) and passes it to every operation; :meth:`forget` drops every key
of a provider that left the configuration.
"""

from __future__ import annotations

import math
import threading
from typing import Any, Protocol, runtime_checkable

from . import _breaker_algorithm as algo
from ._breaker_algorithm import BreakerRecord, BreakerTransition
from ._bucket import BucketState, level, peek_tokens, refund_tokens, take_tokens
from ._config import CircuitBreakerConfig

__all__ = ["InMemoryStore", "StateStore"]

Transitions = tuple[BreakerTransition, ...]


@runtime_checkable
class StateStore(Protocol):
    """The domain operations the router's policies need, each atomic."""

    namespace: str

    def key(self, name: str) -> str:
        """The stored key of ``name`` (``<provider>:<what>``), namespaced."""
        ...

    def take_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        """Take ``cost`` tokens: ``0.0`` if taken, else the seconds until they will be there."""
        ...

    def refund_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> None:
        """Give back tokens taken for a call that never ran."""
        ...

    def peek_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        """What :meth:`take_tokens` would answer, taking nothing."""
        ...

    def tokens(self, key: str, now: float, rate: float, burst: float) -> float:
        """Tokens available now (for display)."""
        ...

    def acquire_slot(self, key: str, cap: int | None) -> int:
        """Take one of ``cap`` slots (``None``: count without a cap): the slots now in use,
        or 0 when full."""
        ...

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
        """:meth:`take_tokens` and :meth:`acquire_slot` as one operation, both or neither.

        Returns ``(0.0, slots now in use)`` when both were taken; otherwise nothing is
        taken and the first number says why: the seconds until the tokens will be there
        (they are looked at first), or ``math.inf`` when the slots are full.
        """
        ...

    def release_slot(self, key: str) -> None:
        """Give a slot back; a key that was forgotten meanwhile is left alone."""
        ...

    def slots_in_use(self, key: str) -> int: ...

    def breaker_acquire(
        self, key: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[int | None, Transitions]:
        """A permit's generation (``None``: rejected) and the transitions it caused."""
        ...

    def breaker_report(
        self,
        key: str,
        now: float,
        cfg: CircuitBreakerConfig,
        name: str,
        generation: int,
        outcome: int,
    ) -> Transitions:
        """Report one permit's outcome (``SUCCESS``, ``FAILURE`` or ``IGNORE``)."""
        ...

    def breaker_command(
        self, key: str, command: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[BreakerRecord, Transitions]:
        """``"observe"``, ``"reset"`` or ``"force_open"``: the record after it, and moves."""
        ...

    def breaker_record(self, key: str) -> BreakerRecord | None:
        """The stored record, read without a transaction (possibly stale: for fast paths)."""
        ...

    def set_cooldown(self, key: str, until: float) -> float:
        """Cool down until ``until`` (a later end wins); returns the end now in force."""
        ...

    def clear_cooldown(self, key: str) -> None: ...

    def cooldown_until(self, key: str) -> float:
        """The end of the cool-down in force; 0.0 when none was set."""
        ...

    def forget(self, provider: str) -> int:
        """Drop every key of ``provider``; returns how many were dropped."""
        ...


_COMMANDS = {"observe": algo.advance, "reset": algo.reset, "force_open": algo.force_open}


class InMemoryStore:
    """Process-local state, safe across threads and asyncio tasks.

    Example:
        >>> store = InMemoryStore()
        >>> bucket, slots = store.key("openai:bucket"), store.key("openai:slots")
        >>> bucket
        'router:openai:bucket'
        >>> store.take_tokens(bucket, 0.0, rate=1, burst=1, cost=1)
        0.0
        >>> store.take_tokens(bucket, 0.0, rate=1, burst=1, cost=1)
        1.0
        >>> store.acquire_slot(slots, cap=1), store.acquire_slot(slots, cap=1)
        (1, 0)
        >>> store
        InMemoryStore(namespace='router', keys=2)
        >>> store.forget("openai")
        2
    """

    __slots__ = ("_data", "_lock", "namespace")

    def __init__(self, namespace: str = "router") -> None:
        self.namespace = namespace
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def key(self, name: str) -> str:
        return f"{self.namespace}:{name}"

    # -- token buckets ---------------------------------------------------------------------

    def take_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        with self._lock:
            state, wait = take_tokens(self._data.get(key), now, rate, burst, cost)
            self._data[key] = state
        return wait

    def refund_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> None:
        with self._lock:
            self._data[key] = refund_tokens(self._data.get(key), now, rate, burst, cost)

    def peek_tokens(self, key: str, now: float, rate: float, burst: float, cost: float) -> float:
        state: BucketState | None = self._data.get(key)
        return peek_tokens(state, now, rate, burst, cost)

    def tokens(self, key: str, now: float, rate: float, burst: float) -> float:
        return level(self._data.get(key), now, rate, burst)

    # -- concurrency slots -----------------------------------------------------------------

    def acquire_slot(self, key: str, cap: int | None) -> int:
        with self._lock:
            used = self._data.get(key, 0)
            if cap is not None and used >= cap:
                return 0
            self._data[key] = used = used + 1
        return int(used)

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
        data = self._data
        with self._lock:
            state, wait = take_tokens(data.get(bucket), now, rate, burst, cost)
            if wait:
                return wait, 0
            used = data.get(slots, 0)
            if cap is not None and used >= cap:
                return math.inf, 0
            data[bucket] = state
            data[slots] = used = used + 1
        return 0.0, int(used)

    def release_slot(self, key: str) -> None:
        with self._lock:
            used = self._data.get(key)
            if used:
                self._data[key] = used - 1

    def slots_in_use(self, key: str) -> int:
        return int(self._data.get(key, 0))

    # -- circuit breakers ------------------------------------------------------------------

    def breaker_acquire(
        self, key: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[int | None, Transitions]:
        with self._lock:
            rec, result = algo.acquire(self._data.get(key), now, cfg, name)
            self._data[key] = rec
        return result

    def breaker_report(
        self,
        key: str,
        now: float,
        cfg: CircuitBreakerConfig,
        name: str,
        generation: int,
        outcome: int,
    ) -> Transitions:
        with self._lock:
            rec, moved = algo.report(self._data.get(key), now, cfg, name, generation, outcome)
            self._data[key] = rec
        return moved

    def breaker_command(
        self, key: str, command: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[BreakerRecord, Transitions]:
        fn = _COMMANDS[command]
        with self._lock:
            rec, moved = fn(self._data.get(key), now, cfg, name)
            self._data[key] = rec
        return rec, moved

    def breaker_record(self, key: str) -> BreakerRecord | None:
        rec: BreakerRecord | None = self._data.get(key)
        return rec

    # -- cool-downs ------------------------------------------------------------------------

    def set_cooldown(self, key: str, until: float) -> float:
        with self._lock:
            until = max(until, self._data.get(key, 0.0))
            self._data[key] = until
        return until

    def clear_cooldown(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def cooldown_until(self, key: str) -> float:
        return float(self._data.get(key, 0.0))

    # -- lifecycle -------------------------------------------------------------------------

    def forget(self, provider: str) -> int:
        prefix = self.key(f"{provider}:")
        with self._lock:
            gone = [k for k in self._data if k.startswith(prefix)]
            for k in gone:
                del self._data[k]
        return len(gone)

    def __len__(self) -> int:
        return len(self._data)

    # -- async forms: every operation is a few microseconds under a thread lock -----------

    async def atake_tokens(
        self, key: str, now: float, rate: float, burst: float, cost: float
    ) -> float:
        return self.take_tokens(key, now, rate, burst, cost)

    async def arefund_tokens(
        self, key: str, now: float, rate: float, burst: float, cost: float
    ) -> None:
        self.refund_tokens(key, now, rate, burst, cost)

    async def aacquire_slot(self, key: str, cap: int | None) -> int:
        return self.acquire_slot(key, cap)

    async def atake_token_and_slot(
        self,
        bucket: str,
        slots: str,
        now: float,
        rate: float,
        burst: float,
        cost: float,
        cap: int | None,
    ) -> tuple[float, int]:
        return self.take_token_and_slot(bucket, slots, now, rate, burst, cost, cap)

    async def arelease_slot(self, key: str) -> None:
        self.release_slot(key)

    async def abreaker_acquire(
        self, key: str, now: float, cfg: CircuitBreakerConfig, name: str
    ) -> tuple[int | None, Transitions]:
        return self.breaker_acquire(key, now, cfg, name)

    async def abreaker_report(
        self,
        key: str,
        now: float,
        cfg: CircuitBreakerConfig,
        name: str,
        generation: int,
        outcome: int,
    ) -> Transitions:
        return self.breaker_report(key, now, cfg, name, generation, outcome)

    async def aset_cooldown(self, key: str, until: float) -> float:
        return self.set_cooldown(key, until)

    async def acooldown_until(self, key: str) -> float:
        return self.cooldown_until(key)

    def __repr__(self) -> str:
        return f"InMemoryStore(namespace={self.namespace!r}, keys={len(self._data)})"
