"""Budgets: spend per period, as pure functions of ``(period_start, spent)``.

Periods follow one another from the first charge, ``period`` seconds each. A request is
charged its estimated cost when admitted (so concurrent requests cannot overspend
together) and corrected to its real cost when it ends; a correction for a period that
has rolled over changes nothing. A store runs these atomically (``_memory``); the gate
that uses them is :class:`~._token_gates.BudgetGate`.

Example:
    >>> state, wait = spend(None, now=0.0, period=60, limit=1.0, cost=0.75)
    >>> state, wait
    ((0.0, 0.75), 0.0)
    >>> spend(state, now=10.0, period=60, limit=1.0, cost=0.5)[1]  # spent until 60 s
    50.0
    >>> spend(state, now=61.0, period=60, limit=1.0, cost=0.5)
    ((60.0, 0.5), 0.0)
"""

from __future__ import annotations

import math

__all__ = ["BudgetState", "adjust", "spend", "spent"]

BudgetState = tuple[float, float]
"""``(period_start, spent)``."""


def _current(state: BudgetState | None, now: float, period: float) -> BudgetState:
    if state is None:
        return (now, 0.0)
    start = state[0]
    if now >= start + period:
        return (start + math.floor((now - start) / period) * period, 0.0)
    return state


def spend(
    state: BudgetState | None, now: float, period: float, limit: float, cost: float
) -> tuple[BudgetState, float]:
    """Charge ``cost`` if the period's budget holds it (a spent budget holds nothing,
    a budget of 0 never anything): ``(state, 0.0)``; else the state unchanged and the
    seconds until the period rolls over (``math.inf`` when ``cost > limit``)."""
    start, used = _current(state, now, period)
    if used < limit and used + cost <= limit:
        return (start, used + cost), 0.0
    wait = math.inf if cost > limit or limit <= 0 else start + period - now
    return (start, used), wait


def adjust(
    state: BudgetState | None, now: float, period: float, start: float, delta: float
) -> BudgetState:
    """Add ``delta`` to a charge made in the period that began at ``start``."""
    current = _current(state, now, period)
    if current[0] != start:
        return current
    return (start, max(0.0, current[1] + delta))


def spent(state: BudgetState | None, now: float, period: float) -> float:
    """Spent in the current period."""
    return _current(state, now, period)[1]
