"""A provider's own tokens-per-minute limit, enforced the way OpenAI enforces one.

Each request is charged, on arrival, its prompt plus the most it may answer (its
``max_tokens``, else the provider's output reserve), over a sliding window of 60 s; when
it ends, the charge is corrected to what it used. A request that would take the window
over the limit is refused, with the seconds until enough of the oldest charges have
left the window; one larger than the whole limit can never pass (``math.inf``).

The router keeps its own window of the same limit (``_token_gates``, in one-second
slots); this one is exact, keeping each charge with its arrival time: it is the
provider's log, which a report's "peak 60 s window" is read from, and what tells
whether the router kept within the limit.

Example:
    >>> meter = TokenMeter(limit=1000)
    >>> first, _ = meter.admit(0.0, prompt=300, output=500)
    >>> meter.admit(1.0, prompt=100, output=200)  # 800 + 300 > 1000: wait for the first
    (None, 59.0)
    >>> meter.settle(first, used=400, now=2.0)  # it answered 100 tokens of its 500
    >>> meter.admit(2.0, prompt=100, output=200)[1], meter.used(2.0), meter.peak
    (0.0, 700, (800, 0.0))
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["WINDOW_SECONDS", "Charge", "Refused", "TokenMeter"]

WINDOW_SECONDS = 60.0
"""Tokens per minute: the window is a minute."""


@dataclass
class Charge:
    """One request as the provider counted it; times are seconds from its epoch.

    ``reserved`` (prompt plus the most it may answer) counts against the window from
    ``at`` until the request ends; then ``used`` does (``None``: still running, or cut
    off before it ended, which keeps the reservation, as a provider bills a call it
    started).
    """

    at: float
    prompt: int
    reserved: int
    used: int | None = None
    ended: float | None = None

    @property
    def counted(self) -> int:
        """What counts against the window now."""
        return self.reserved if self.used is None else self.used


@dataclass(frozen=True)
class Refused:
    """A request the window could not hold: when, its cost, what the window held."""

    at: float
    cost: int
    held: int


class TokenMeter:
    """The charges of the last ``window`` seconds, against ``limit`` (``None``: count
    only, never refuse). Thread-safe. See the module docstring."""

    def __init__(self, limit: int | None, window: float = WINDOW_SECONDS) -> None:
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._live: deque[Charge] = deque()  # arrival order: the oldest leave first
        self._log: list[Charge] = []
        self._refused: list[Refused] = []
        self._peak: tuple[int, float | None] = (0, None)

    def admit(self, now: float, prompt: int, output: int) -> tuple[Charge | None, float]:
        """Charge ``prompt + output`` at ``now``: ``(charge, 0.0)``; or, when the window
        cannot hold it, ``(None, seconds until it can)``, ``math.inf`` if never."""
        cost = prompt + output
        with self._lock:
            used = self._advance(now)
            limit = self.limit
            if limit is not None and used + cost > limit:
                self._refused.append(Refused(now, cost, used))
                return None, self._wait(now, used + cost - limit, cost)
            charge = Charge(now, prompt, cost)
            self._live.append(charge)
            self._log.append(charge)
            self._note(used + cost, now)
            return charge, 0.0

    def settle(self, charge: Charge, used: int, now: float) -> None:
        """``charge``'s request ended at ``now`` having used ``used`` tokens."""
        with self._lock:
            grows = used > charge.counted
            charge.used, charge.ended = used, now
            if grows:  # more than reserved (never for answers capped at max_tokens)
                self._note(self._advance(now), now)

    def used(self, now: float) -> int:
        """Tokens the window holds at ``now``."""
        with self._lock:
            return self._advance(now)

    @property
    def peak(self) -> tuple[int, float | None]:
        """The most tokens the window held, and when (``None``: nothing charged yet)."""
        return self._peak

    @property
    def log(self) -> list[Charge]:
        """Every charge taken, in arrival order."""
        with self._lock:
            return list(self._log)

    @property
    def refused(self) -> list[Refused]:
        """Every request refused, in order."""
        with self._lock:
            return list(self._refused)

    # The window only grows when a charge arrives (or a settlement grows one), so the
    # peak is read there, not by sampling.
    def _note(self, used: int, now: float) -> None:
        if used > self._peak[0]:
            self._peak = (used, now)

    def _advance(self, now: float) -> int:
        live = self._live
        while live and live[0].at <= now - self.window:
            live.popleft()
        return sum(c.counted for c in live)

    def _wait(self, now: float, excess: int, cost: int) -> float:
        if self.limit is not None and cost > self.limit:
            return math.inf
        freed = 0
        for charge in self._live:
            freed += charge.counted
            if freed >= excess:
                return charge.at + self.window - now
        return self.window  # not reached: the live charges hold the whole excess
