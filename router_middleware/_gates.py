"""Admission gates: each guards one resource of a provider behind one small interface.

A provider's gates run in order for every attempt: the cool-down, the circuit breaker,
the rate limits (the request bucket and the concurrency cap, in one store operation).
Each either takes what it guards for the attempt's :class:`~._lease.Lease` or refuses
with a :class:`Refusal` saying why, how long until it could admit, and on which slot
queue a release would end the wait; a refusal by a later gate gives back what the
earlier ones took (:meth:`Gate.undo`). When the attempt settles, each gate hears the
outcome (:meth:`Gate.exit`), in the same order, so the breaker has heard a verdict
before the slot is released. A gate that holds a resource for as long as the provider
call really runs (the concurrency slot) says so with ``holds_call``: the lease exits it
only once the call has ended, even when the router gave up on the call earlier.

Adding a limit (tokens per minute, a budget, a context window) is one new gate class.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

from ._breaker import CircuitBreaker
from ._clock import Clock
from ._limiter import ProviderLimiter
from ._storage import StateStore
from ._waiting import SlotQueue

if TYPE_CHECKING:
    from ._lease import Lease

__all__ = ["BreakerGate", "CooldownGate", "Gate", "LimiterGate", "Refusal"]


class Refusal:
    """Why a gate turned an attempt away, and when to look again.

    Attributes:
        reason: for ``NoProviderAvailableError.reasons``.
        wait: seconds until the gate could admit; ``math.inf`` when only a release can.
        queue: the slot queue whose release ends the wait, if one does.
        limited: the router's own limits refused (counted as rate limited); a breaker
            refusal is not.
    """

    __slots__ = ("limited", "queue", "reason", "wait")

    def __init__(
        self, reason: str, wait: float, *, queue: SlotQueue | None = None, limited: bool = True
    ) -> None:
        self.reason = reason
        self.wait = wait
        self.queue = queue
        self.limited = limited

    def __repr__(self) -> str:
        return f"Refusal({self.reason!r}, wait={self.wait:g})"


class Gate:
    """One admission check of a provider; subclasses override what they need."""

    __slots__ = ()

    holds_call: ClassVar[bool] = False
    """Exit only once the provider call has really ended (see module docstring)."""

    def enter(self, lease: Lease) -> Refusal | None:
        """Take what this gate guards for ``lease``, or refuse taking nothing."""
        return None

    def undo(self, lease: Lease) -> None:
        """A later gate refused: give back what :meth:`enter` took."""

    def exit(self, lease: Lease) -> None:
        """The attempt settled (``lease.outcome``, ``lease.verdict``): release or record."""


class CooldownGate(Gate):
    """Skip a provider that asked for time (``Retry-After``) until that time has passed.

    A cool-down is capped at ``max_seconds``: one 429 dated years ahead must not park a
    provider for years.
    """

    __slots__ = ("_clock", "_key", "_store", "max_seconds")

    def __init__(self, name: str, store: StateStore, clock: Clock, max_seconds: float) -> None:
        self._key = store.key(f"{name}:cooldown")
        self._store = store
        self._clock = clock
        self.max_seconds = max_seconds

    def enter(self, lease: Lease) -> Refusal | None:
        until = self._store.cooldown_until(self._key)
        if until:
            left = until - self._clock.now()
            if left > 0:
                return Refusal("cooling down (Retry-After)", left)
        return None

    def exit(self, lease: Lease) -> None:
        verdict = lease.verdict
        if verdict is not None and verdict.retry_after:
            seconds = min(verdict.retry_after, self.max_seconds)
            self._store.set_cooldown(self._key, self._clock.now() + seconds)
            lease.cooldown = seconds

    def until(self) -> float:
        """Clock time the cool-down in force ends (in the past when none is)."""
        return self._store.cooldown_until(self._key)

    def clear(self) -> None:
        self._store.clear_cooldown(self._key)


class BreakerGate(Gate):
    """The provider's circuit breaker: a permit per attempt, the verdict on settle."""

    __slots__ = ("breaker", "queue")

    def __init__(self, breaker: CircuitBreaker, queue: SlotQueue) -> None:
        self.breaker = breaker
        self.queue = queue

    def enter(self, lease: Lease) -> Refusal | None:
        permit, moved = self.breaker.acquire()
        if moved:
            lease.transitions.extend(moved)
        if permit is not None:
            lease.permit = permit
            return None
        after = self.breaker.retry_after()
        state = f"circuit {self.breaker.state.value}"
        if after > 0:
            return Refusal(state, after, limited=False)
        # Half-open with its trials under way: a trial's end releases a slot.
        return Refusal(state, math.inf, queue=self.queue, limited=False)

    def undo(self, lease: Lease) -> None:
        if lease.permit is not None:
            lease.transitions.extend(self.breaker.on_ignore(lease.permit))

    def exit(self, lease: Lease) -> None:
        permit = lease.permit
        if permit is None:
            return
        verdict = lease.verdict
        if lease.outcome == "succeeded":
            moved = self.breaker.on_success(permit)
        elif (
            verdict is not None and verdict.policy.counts_for_breaker and lease.outcome == "failed"
        ):
            moved = self.breaker.on_failure(permit)
        else:
            moved = self.breaker.on_ignore(permit)
        if moved:
            lease.transitions.extend(moved)


class LimiterGate(Gate):
    """The provider's rate limits: a request token and a concurrency slot per attempt,
    retries included, taken in one store operation (both or neither); the slot is held
    until the call has ended."""

    __slots__ = ("_free_in", "_take", "limiter", "queue")

    holds_call = True

    def __init__(self, limiter: ProviderLimiter, queue: SlotQueue) -> None:
        self.limiter = limiter
        self.queue = queue
        self._take = limiter.take  # bound once: this runs on every attempt
        # A shared store's slots also free when a lease expires (a replica died holding
        # it): no release announces that, so look again then.
        self._free_in = getattr(limiter.concurrency.store, "slot_free_in", None)

    def enter(self, lease: Lease) -> Refusal | None:
        wait = self._take()
        if not wait:
            return None
        if wait == math.inf:
            free_in = math.inf
            if self._free_in is not None:
                free_in = self._free_in(self.limiter.concurrency.key)
            return Refusal("at max concurrency", free_in, queue=self.queue)
        return Refusal(f"rate limited for {wait:.3f}s", wait)

    def undo(self, lease: Lease) -> None:
        limiter = self.limiter
        limiter.concurrency.release()
        self.queue.notify()
        if limiter.bucket is not None:
            limiter.bucket.refund()

    def exit(self, lease: Lease) -> None:
        self.limiter.concurrency.release()
        self.queue.notify()
