"""Where live limiter, breaker and cool-down state lives: storage as domain operations.

The policies (``_limiter``, ``_breaker``, the cool-down gate) never read-modify-write
state themselves: they ask a store for one domain operation (take tokens, take a slot,
or both at once, acquire a breaker permit, report an outcome, set a cool-down), and each
backend carries it out natively and atomically. :class:`InMemoryStore` runs the pure
algorithms of ``_bucket`` and ``_breaker_algorithm`` under one lock held for
microseconds, never across a provider call or an ``await``; a shared backend runs each
operation as one server-side script, one round trip per decision. A whole admission and
a whole settle are one operation each (:meth:`StateStore.admit`, :meth:`StateStore.settle`
over the records of ``_ops``); the async driver runs a shared store's off the event loop.

A policy asks once for its key (:meth:`StateStore.key`: ``<provider>:<what>`` under the
store's ``namespace``) and passes it to every operation; :meth:`forget` drops every key
of a provider that left the configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ._breaker_algorithm import BreakerRecord, BreakerTransition
from ._config import CircuitBreakerConfig
from ._ops import AdmitOp, SettleOp

__all__ = ["StateStore", "StateUnavailable", "Transitions"]

Transitions = tuple[BreakerTransition, ...]


class StateUnavailable(Exception):
    """A shared store cannot decide (Redis failed, and ``state.on_error`` is ``closed``):
    the gate that asked refuses the attempt."""


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

    def cap_tokens(self, key: str, now: float, rate: float, burst: float, remaining: float) -> None:
        """The provider says only ``remaining`` requests are left: hold no more tokens."""
        ...

    # -- token windows and budgets (``_window``, ``_budget``) --------------------------------

    def take_windows(
        self, now: float, window: float, charges: Sequence[tuple[str, float, float]]
    ) -> tuple[float, int]:
        """Charge each ``(key, limit, cost)`` window, all or none: ``(0.0, slot)`` when
        charged; else nothing is charged and the first number is the longest wait."""
        ...

    def adjust_windows(
        self, now: float, window: float, slot: int, deltas: Sequence[tuple[str, float]]
    ) -> None:
        """Add each ``(key, delta)`` to the charge taken in ``slot`` (a refund if < 0)."""
        ...

    def cap_window(
        self, key: str, now: float, window: float, limit: float, remaining: float, reset: float
    ) -> None:
        """The provider says only ``remaining`` is left for ``reset`` seconds."""
        ...

    def window_used(self, key: str, now: float, window: float) -> float:
        """Tokens counted against the window's limit now."""
        ...

    def spend(
        self, key: str, now: float, period: float, limit: float, cost: float
    ) -> tuple[float, float]:
        """Charge ``cost`` to the budget: ``(0.0, period start)``, or ``(wait, start)``
        with nothing charged, the wait until the period rolls over."""
        ...

    def adjust_spend(self, key: str, now: float, period: float, start: float, delta: float) -> None:
        """Correct a charge made in the period that began at ``start`` (none once over)."""
        ...

    def spent(self, key: str, now: float, period: float) -> float:
        """Spent in the current period."""
        ...

    # -- whole admissions and settles (``_ops``) -------------------------------------------

    def admit(self, now: float, ops: Sequence[AdmitOp]) -> tuple[int, list[Any]]:
        """Run ``ops`` in order as one operation, all or none: ``(-1, answers)`` when all
        were taken; else the index of the first that refused and the answers up to it,
        everything the earlier ones took given back."""
        ...

    def settle(self, now: float, ops: Sequence[SettleOp]) -> list[Any]:
        """Run every one of ``ops`` in order as one operation: their answers."""
        ...

    def forget(self, provider: str) -> int:
        """Drop every key of ``provider``; returns how many were dropped."""
        ...
