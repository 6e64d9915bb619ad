"""Virtual time for asyncio: a real event loop whose clock jumps over idle waits.

When every task is waiting, the loop moves its clock straight to the next timer instead of
sleeping, so a minute of simulated traffic (latencies, backoffs, breaker timeouts,
``Retry-After``) runs in a fraction of a second, with the router's own code unchanged: its
clock is the loop's (:class:`LoopClock`). ``speed`` paces the jumps against wall time (10
means ten times faster than real time) for live displays; ``math.inf`` runs flat out.

Example:
    >>> import asyncio
    >>> async def nap() -> float:
    ...     await asyncio.sleep(3600)
    ...     return asyncio.get_running_loop().time()
    >>> run_virtual(nap())
    3600.0
"""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopClock", "VirtualLoop", "run_virtual"]

T = TypeVar("T")


class _PacedSelector(selectors.DefaultSelector):
    """Skips idle time: a wait for the next timer moves the virtual clock ``now`` to it
    at once, then sleeps only while ``now`` runs ahead of ``speed`` times real time."""

    def __init__(self, speed: float) -> None:
        super().__init__()
        self.now = 0.0
        self._real = 0.0 if math.isinf(speed) else 1.0 / speed
        self._began = time.perf_counter()

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if timeout is None or timeout <= 0:
            return super().select(timeout)
        before = self.now
        self.now += timeout
        # Pacing against the run's start, not per wait, keeps the many sub-millisecond
        # waits from each rounding up to the selector's millisecond resolution.
        ahead = self.now * self._real - (time.perf_counter() - self._began)
        events = super().select(ahead if ahead > 0.001 else 0)
        if events and ahead > 0:  # woken early by another thread: time moves as far as real
            paced = (time.perf_counter() - self._began) / self._real
            self.now = min(self.now, max(before, paced))
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time (see the module docstring)."""

    def __init__(self, speed: float = math.inf) -> None:
        self._paced = _PacedSelector(speed)
        super().__init__(self._paced)

    def time(self) -> float:
        return self._paced.now


class LoopClock:
    """A router clock that reads the running loop's time (virtual on a :class:`VirtualLoop`)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()

    def sleep(self, seconds: float) -> None:
        raise RuntimeError("virtual time runs on asyncio: blocking sleeps have no place in it")

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def __repr__(self) -> str:
        return f"LoopClock(now={self._loop.time():.3f})"


def run_virtual(main: Coroutine[Any, Any, T], speed: float = math.inf) -> T:
    """Run ``main`` to completion on a fresh :class:`VirtualLoop`."""
    loop = VirtualLoop(speed)
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()
