"""The token limits' algorithm: a sliding window of fixed slots, never over its limit.

A limit of ``L`` tokens per ``window`` seconds (a minute for ``tokens_per_minute``) is
kept as the charges of the last ``SLOTS + 1`` slots of ``window / SLOTS`` seconds each.
Invariants, stated before the code:

* a charge is admitted only when the charges counted with it stay within ``L``; the
  counted slots cover every interval of ``window`` seconds that ends now, so **no
  ``window``-second interval ever holds more than ``L`` admitted tokens** (a token
  bucket of size ``L`` would let ``2 L`` through in the first minute), whatever the
  demand; the price is at most one slot's share of throughput (``1 / (SLOTS + 1)``);
* a refusal carries the exact seconds until enough of the oldest slots have left;
  ``math.inf`` when the cost exceeds ``L`` (it can never pass);
* a charge is adjusted after the call in the slot it was taken in (usage known: unused
  output refunded, a shortfall added), and is forgotten with that slot;
* memory is fixed: ``SLOTS + 1`` numbers per limit, whatever the traffic.

The functions work on a :class:`WindowState` that a store holds and runs them on
atomically (``_storage``); they never read a clock.
"""

from __future__ import annotations

import math

__all__ = ["SLOTS", "WindowState", "adjust", "advance", "cap", "room", "take", "used"]

SLOTS = 60
"""Slots per window: a minute is counted in seconds."""

_M = SLOTS + 1


class WindowState:
    """Charges per slot (a ring indexed by slot number), the newest slot, their sum.

    Example:
        >>> state, wait, slot = take(None, now=0.5, window=60, limit=100, cost=80)
        >>> state
        WindowState(head=0, total=80)
        >>> take(state, now=1.0, window=60, limit=100, cost=30)[1]  # the 80 leave at 61 s
        60.0
    """

    __slots__ = ("cells", "head", "total")

    def __init__(self, head: int) -> None:
        self.head = head
        self.cells = [0.0] * _M
        self.total = 0.0

    def __repr__(self) -> str:
        return f"WindowState(head={self.head}, total={self.total:g})"


def _slot(now: float, window: float) -> int:
    return math.floor(now * SLOTS / window)


def advance(state: WindowState | None, now: float, window: float) -> WindowState:
    """The state with the slots that left the window emptied, as of ``now``."""
    index = _slot(now, window)
    if state is None:
        return WindowState(index)
    steps = index - state.head
    if steps <= 0:  # the same slot, or a clock read just before another thread's update
        return state
    cells = state.cells
    if steps >= _M:
        cells[:] = [0.0] * _M
    else:
        for k in range(state.head + 1, index + 1):
            cells[k % _M] = 0.0
    state.head = index
    state.total = math.fsum(cells)  # once a slot: no drift from many small adjustments
    return state


def room(state: WindowState, now: float, window: float, limit: float, cost: float) -> float:
    """``0.0`` if ``cost`` fits the advanced ``state`` now; else the seconds until it
    will, ``math.inf`` if ``cost > limit``."""
    excess = state.total + cost - limit
    if excess <= 0:
        return 0.0
    if cost > limit:
        return math.inf
    return _wait(state, now, window, excess)


def take(
    state: WindowState | None, now: float, window: float, limit: float, cost: float
) -> tuple[WindowState, float, int]:
    """Charge ``cost`` if the window has room: ``(state, 0.0, slot charged)``; else
    ``(state, seconds until it will have room, -1)``, ``math.inf`` if ``cost > limit``."""
    state = advance(state, now, window)
    wait = room(state, now, window, limit, cost)
    if wait:
        return state, wait, -1
    state.cells[state.head % _M] += cost
    state.total += cost
    return state, 0.0, state.head


def _wait(state: WindowState, now: float, window: float, excess: float) -> float:
    """Seconds until the oldest slots holding ``excess`` tokens have left the window."""
    freed = 0.0
    granule = window / SLOTS
    for j in range(state.head - SLOTS, state.head + 1):
        freed += state.cells[j % _M]
        if freed >= excess:
            leaves = j + _M  # the first slot number that no longer counts slot j
            wait = max(0.0, leaves * granule - now)
            # Rounding may put `now + wait` a hair before that slot: step up to the first
            # float that lands in it, so a caller sleeping `wait` is not refused twice.
            while _slot(now + wait, window) < leaves:
                wait = max(
                    math.nextafter(wait, math.inf), math.nextafter(now + wait, math.inf) - now
                )
            return wait
    # Only float rounding gets here (the cost fits the limit): try again a slot later.
    return granule


def adjust(
    state: WindowState | None, now: float, window: float, slot: int, delta: float
) -> WindowState:
    """Add ``delta`` (negative: a refund) to the charge taken in ``slot``; nothing once
    that slot has left the window. A slot never holds less than nothing."""
    state = advance(state, now, window)
    if state.head - SLOTS <= slot <= state.head:
        cells = state.cells
        before = cells[slot % _M]
        after = max(0.0, before + delta)
        cells[slot % _M] = after
        state.total += after - before
    return state


def cap(
    state: WindowState | None,
    now: float,
    window: float,
    limit: float,
    remaining: float,
    reset_seconds: float,
) -> WindowState:
    """The provider says only ``remaining`` tokens are left until ``reset_seconds`` from
    now: make the window's room no larger, with a charge that leaves the window at the
    first slot boundary after the reset (or with the oldest slot, if that is later)."""
    state = advance(state, now, window)
    phantom = limit - state.total - max(0.0, remaining)
    if phantom <= 0:
        return state
    granule = window / SLOTS
    slot = math.ceil((now + max(0.0, reset_seconds)) / granule) - _M
    slot = min(max(slot, state.head - SLOTS), state.head)
    state.cells[slot % _M] += phantom
    state.total += phantom
    return state


def used(state: WindowState | None, now: float, window: float) -> float:
    """Tokens counted against the limit now (read without changing ``state``)."""
    if state is None:
        return 0.0
    steps = _slot(now, window) - state.head
    if steps <= 0:
        return state.total
    if steps >= _M:
        return 0.0
    gone = sum(state.cells[k % _M] for k in range(state.head - SLOTS, state.head - SLOTS + steps))
    return max(0.0, state.total - gone)
