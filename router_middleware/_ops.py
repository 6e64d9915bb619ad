"""What an attempt asks of the store when admitted and when settled: one small record per
gate, so a store carries out a whole admission, or a whole settle, as one operation.

Admission (:meth:`~._storage.StateStore.admit`) runs its operations in gate order and
stops at the first that refuses, giving back what the earlier ones took, all or none:
in memory under one lock, on Redis in one script (one round trip). Each answer is the
operation's own (documented on its class); the gate that asked reads it
(``Gate.took``). Settling (:meth:`~._storage.StateStore.settle`) runs every operation.

Example:
    >>> from router_middleware import InMemoryStore
    >>> store = InMemoryStore()
    >>> take = TakeSlot(store.key("p:bucket"), store.key("p:slots"), 1.0, 1, 1.0, 1)
    >>> store.admit(0.0, [CheckCooldown(store.key("p:cooldown")), take])
    (-1, [0.0, (0.0, 1, inf)])
    >>> store.admit(0.0, [take])  # the token is gone (and the slot too)
    (0, [(1.0, 0, inf)])
    >>> store.settle(0.0, [ReleaseSlot(store.key("p:slots"))])
    [None]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ._config import CircuitBreakerConfig

__all__ = [
    "AcquirePermit",
    "AdjustSpend",
    "AdjustWindows",
    "AdmitOp",
    "CheckCooldown",
    "Count",
    "ReleaseSlot",
    "ReportPermit",
    "SetCooldown",
    "SettleOp",
    "Spend",
    "TakeSlot",
    "TakeWindows",
]


# -- admission: each answer says whether it refused ----------------------------------------


class CheckCooldown(NamedTuple):
    """Answer: seconds of cool-down left (refused when > 0)."""

    key: str


class Spend(NamedTuple):
    """Charge ``cost`` to the budget. Answer: ``(wait, period start)`` (refused when
    ``wait``, ``math.inf`` when it can never hold it); undone by a refund."""

    key: str
    period: float
    limit: float
    cost: float


class AcquirePermit(NamedTuple):
    """A breaker permit. Answer: ``(generation or None, transitions, seconds until an open
    breaker half-opens)`` (refused when ``None``); undone by reporting it ignored."""

    key: str
    config: CircuitBreakerConfig
    name: str


class TakeWindows(NamedTuple):
    """Charge each ``(key, limit, cost)`` token window. Answer: ``(wait, slot)`` (refused
    when ``wait``); undone by refunding the slot."""

    window: float
    charges: Sequence[tuple[str, float, float]]


class TakeSlot(NamedTuple):
    """A request token (none without a ``bucket``) and a concurrency slot, both or
    neither; always the last. Answer: ``(wait, slots in use)``: refused when ``wait``,
    ``math.inf`` when the slots are full."""

    bucket: str | None
    slots: str
    rate: float
    burst: float
    cost: float
    cap: int | None


AdmitOp = CheckCooldown | Spend | AcquirePermit | TakeWindows | TakeSlot


# -- settling: every one runs ---------------------------------------------------------------


class SetCooldown(NamedTuple):
    """Cool down for ``seconds`` from now (a later end in force wins). Answer: the end."""

    key: str
    seconds: float


class AdjustSpend(NamedTuple):
    """Correct a budget charge made in the period that began at ``start``."""

    key: str
    period: float
    start: float
    delta: float


class ReportPermit(NamedTuple):
    """Report a permit's outcome. Answer: the breaker's transitions."""

    key: str
    config: CircuitBreakerConfig
    name: str
    generation: int
    outcome: int


class AdjustWindows(NamedTuple):
    """Add each ``(key, delta)`` to the charge taken in ``slot``."""

    window: float
    slot: int
    deltas: Sequence[tuple[str, float]]


class ReleaseSlot(NamedTuple):
    """Give a concurrency slot back."""

    key: str


class Count(NamedTuple):
    """Add each ``(field, amount)`` to the counters under ``key``: the deployment's metrics,
    kept by shared stores only."""

    key: str
    amounts: tuple[tuple[str, float], ...]


SettleOp = SetCooldown | AdjustSpend | ReportPermit | AdjustWindows | ReleaseSlot | Count
