"""Admission gates: each guards one resource of a provider behind one small interface.

A provider's gates run in order for every attempt: the cool-down, the circuit breaker,
the rate limits (the request bucket and the concurrency cap). Each names the store
operation that takes what it guards for the attempt's :class:`~._lease.Lease`; the
store runs them all as one (``_ops``: one lock in memory, one round trip to Redis),
stopping at the first refusal and giving back what the earlier ones took. The gate
that refused says why, how long until it could admit, and on which slot queue a
release would end the wait (a :class:`Refusal`). When the attempt settles, each gate
names what gives back or records the outcome, again run as one operation in gate
order, so the breaker has heard a verdict before the slot is released. A gate that holds
a resource for as long as the provider call really runs (the concurrency slot) says so
with ``holds_call``: the lease settles it only once the call has ended, even when the
router gave up on the call earlier.

Adding a limit (tokens per minute, a budget, a context window) is one new gate class.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from ._breaker import CircuitBreaker
from ._breaker_algorithm import FAILURE, IGNORE, SUCCESS
from ._clock import Clock
from ._limiter import ProviderLimiter
from ._ops import (
    AcquirePermit,
    AdmitOp,
    CheckCooldown,
    Count,
    ReleaseSlot,
    ReportPermit,
    SetCooldown,
    SettleOp,
)
from ._storage import StateStore
from ._tokens import usage_of
from ._waiting import SlotQueue

if TYPE_CHECKING:
    from ._lease import Lease

__all__ = ["BreakerGate", "CooldownGate", "CountGate", "Gate", "LimiterGate", "Refusal"]


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
    """One admission check of a provider; subclasses override what they need.

    Admission asks each gate in order for its :meth:`plan`: a store operation (``_ops``),
    a :class:`Refusal` decided here (nothing is taken), or ``None``. The store runs the
    operations as one, and each gate reads its answer (:meth:`took`). Settling asks each
    for what gives back or records the outcome (:meth:`release`), run as one operation,
    and hands back the answer (:meth:`released`).
    """

    __slots__ = ()

    holds_call: ClassVar[bool] = False
    """Exit only once the provider call has really ended (see module docstring)."""

    def plan(self, lease: Lease) -> AdmitOp | Refusal | None:
        """What to ask the store for ``lease``, or a refusal decided without it."""
        return None

    def took(self, lease: Lease, answer: Any) -> Refusal | None:
        """The store's answer to :meth:`plan`'s operation: keep what was taken on the
        lease, or say why it refused (the store then gave everything back)."""
        return None

    def release(self, lease: Lease) -> SettleOp | None:
        """The attempt settled (``lease.outcome``, ``lease.verdict``): what to give back
        or record."""
        return None

    def released(self, lease: Lease, answer: Any) -> None:
        """The answer to :meth:`release`'s operation."""


class CooldownGate(Gate):
    """Skip a provider that asked for time (``Retry-After``) until that time has passed.

    A cool-down is capped at ``max_seconds``: one 429 dated years ahead must not park a
    provider for years.
    """

    __slots__ = ("_check", "_clock", "_key", "_store", "max_seconds")

    def __init__(self, name: str, store: StateStore, clock: Clock, max_seconds: float) -> None:
        self._key = store.key(f"{name}:cooldown")
        self._check = CheckCooldown(self._key)
        self._store = store
        self._clock = clock
        self.max_seconds = max_seconds

    def plan(self, lease: Lease) -> AdmitOp:
        return self._check

    def took(self, lease: Lease, answer: float) -> Refusal | None:
        return Refusal("cooling down (Retry-After)", answer) if answer > 0 else None

    def release(self, lease: Lease) -> SettleOp | None:
        verdict = lease.verdict
        if verdict is not None and verdict.retry_after:
            lease.cooldown = seconds = min(verdict.retry_after, self.max_seconds)
            return SetCooldown(self._key, seconds)
        return None

    def until(self) -> float:
        """Clock time the cool-down in force ends (in the past when none is)."""
        return self._store.cooldown_until(self._key)

    def clear(self) -> None:
        self._store.clear_cooldown(self._key)


class BreakerGate(Gate):
    """The provider's circuit breaker: a permit per attempt, the verdict on settle."""

    __slots__ = ("_acquire", "breaker", "queue")

    def __init__(self, breaker: CircuitBreaker, queue: SlotQueue) -> None:
        self.breaker = breaker
        self.queue = queue
        self._acquire = AcquirePermit(breaker.key, breaker.config, breaker.name)

    def plan(self, lease: Lease) -> AdmitOp:
        return self._acquire

    def took(self, lease: Lease, answer: Any) -> Refusal | None:
        generation, moved, after = answer
        if moved:
            lease.transitions.extend(moved)
            self.breaker.emit(moved)
        if generation is not None:
            lease.permit = self.breaker.permit(generation)
            return None
        state = f"circuit {self.breaker.state.value}"
        if after > 0:
            return Refusal(state, after, limited=False)
        # Half-open with its trials under way: a trial's end releases a slot.
        return Refusal(state, math.inf, queue=self.queue, limited=False)

    def release(self, lease: Lease) -> SettleOp | None:
        permit = lease.permit
        if permit is None:
            return None
        verdict = lease.verdict
        if lease.outcome == "succeeded":
            outcome = SUCCESS
        elif (
            verdict is not None and verdict.policy.counts_for_breaker and lease.outcome == "failed"
        ):
            outcome = FAILURE
        else:
            outcome = IGNORE
        breaker = self.breaker
        return ReportPermit(breaker.key, breaker.config, breaker.name, permit.generation, outcome)

    def released(self, lease: Lease, answer: Any) -> None:
        if answer:
            lease.transitions.extend(answer)
            self.breaker.emit(answer)


class LimiterGate(Gate):
    """The provider's rate limits: a request token and a concurrency slot per attempt,
    retries included, taken in one store operation (both or neither); the slot is held
    until the call has ended."""

    __slots__ = ("_free_in", "_release", "_take", "limiter", "queue")

    holds_call = True

    def __init__(self, limiter: ProviderLimiter, queue: SlotQueue) -> None:
        self.limiter = limiter
        self.queue = queue
        slots = limiter.concurrency
        self._take = limiter.admission
        self._release = ReleaseSlot(slots.key)
        # A shared store's slots also free when a lease expires (a replica died holding
        # it): no release announces that, so look again then.
        self._free_in = getattr(slots.store, "slot_free_in", None)

    def plan(self, lease: Lease) -> AdmitOp:
        return self._take

    def took(self, lease: Lease, answer: tuple[float, int, float]) -> Refusal | None:
        wait, used, free_in = answer
        if used:
            self.limiter.concurrency.saw(used)
            return None
        if wait == math.inf:
            return Refusal("at max concurrency", free_in, queue=self.queue)
        return Refusal(f"rate limited for {wait:.3f}s", wait)

    def release(self, lease: Lease) -> SettleOp:
        return self._release

    def released(self, lease: Lease, answer: Any) -> None:
        self.queue.notify()


class CountGate(Gate):
    """The deployment's metrics: each attempt's outcome, tokens and cost added to the
    provider's counters in a shared store, in the same operation as the rest of its
    settle (no round trip of its own). Read with ``router.metrics(scope="cluster")``."""

    __slots__ = ("_price", "key")

    def __init__(self, name: str, store: StateStore, price: Any) -> None:
        self.key = store.key(f"{name}:metrics")
        self._price = price

    def release(self, lease: Lease) -> SettleOp:
        outcome = lease.outcome or "ignored"
        amounts: list[tuple[str, float]] = [("attempts", 1), (outcome, 1)]
        verdict = lease.verdict
        if outcome == "failed" and verdict is not None:
            amounts.append((f"failed:{verdict.kind.value}", 1))
        usage = usage_of(lease.message) if outcome == "succeeded" else None
        if usage is not None:
            cost = sum(self._price(lease.model, usage.input, usage.output))
            amounts += [("input_tokens", usage.input), ("output_tokens", usage.output)]
            if cost:
                amounts.append(("cost", cost))
        return Count(self.key, tuple(amounts))
