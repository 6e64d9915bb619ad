"""Waiting for a free concurrency slot without polling and without a thundering herd.

Each provider has a :class:`SlotQueue`. A request that found every candidate full
registers one waiter on the queues of the providers it is blocked on; each release wakes
the oldest waiter of that provider's queue only, and that waiter leaves every queue it
was on. A waiter that was chosen but gives up (timeout, cancellation) passes the wake-up
on, so a freed slot is never left unclaimed while someone waits for it.

Threads wait on an event, tasks on a future resolved through their own loop, so the two
kinds of callers share one queue.

Example:
    >>> queue = SlotQueue()
    >>> since = queue.snapshot()
    >>> queue.notify()                      # a release after the caller looked
    >>> wait_for_slot([(queue, since)], 1.0)  # returns at once: the release is not lost
    True
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import threading
from collections.abc import Sequence

__all__ = ["SlotQueue", "wait_for_slot", "wait_for_slot_async"]

_lock = threading.Lock()
"""One lock for all queues: a waiter joins several atomically; sections are tiny."""


class _Waiter:
    __slots__ = ("event", "fired", "future", "loop", "queues")

    def __init__(self) -> None:
        self.fired = False
        self.queues: list[SlotQueue] = []
        self.event: threading.Event | None = None
        self.future: asyncio.Future[bool] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def fire(self) -> None:
        """Wake this waiter (called with ``_lock`` held)."""
        self.fired = True
        for queue in self.queues:
            with contextlib.suppress(ValueError):
                queue._waiters.remove(self)
        if self.event is not None:
            self.event.set()
        elif self.future is not None and self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody to wake
                self.loop.call_soon_threadsafe(_settle, self.future, True)


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class SlotQueue:
    """The waiters for one provider's concurrency slots, oldest first."""

    __slots__ = ("_generation", "_waiters")

    def __init__(self) -> None:
        self._waiters: collections.deque[_Waiter] = collections.deque()
        self._generation = 0

    def snapshot(self) -> int:
        """Read before trying to admit; a release after it wakes the wait at once."""
        return self._generation

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def notify(self) -> None:
        """A slot was released: wake the oldest waiter, if any."""
        # Under the lock, or a waiter joining between the bump and the check is never woken.
        with _lock:
            self._generation += 1
            if self._waiters:
                self._waiters.popleft().fire()

    def __repr__(self) -> str:
        return f"SlotQueue(waiting={len(self._waiters)}, releases={self._generation})"


def _join(blocked: Sequence[tuple[SlotQueue, int]], waiter: _Waiter) -> bool:
    """Register ``waiter``; False when a release already happened since the snapshots."""
    with _lock:
        if any(queue._generation != since for queue, since in blocked):
            return False
        for queue, _ in blocked:
            queue._waiters.append(waiter)
            waiter.queues.append(queue)
        return True


def _leave(waiter: _Waiter) -> bool:
    """Unregister; returns whether the waiter had been woken (and must pass it on)."""
    with _lock:
        if waiter.fired:
            return True
        for queue in waiter.queues:
            with contextlib.suppress(ValueError):
                queue._waiters.remove(waiter)
        return False


def _pass_on(waiter: _Waiter) -> None:
    for queue in waiter.queues:
        queue.notify()


def wait_for_slot(blocked: Sequence[tuple[SlotQueue, int]], timeout: float) -> bool:
    """Block until a slot of one of ``blocked`` is released (True) or ``timeout`` passes."""
    waiter = _Waiter()
    waiter.event = threading.Event()
    if not _join(blocked, waiter):
        return True
    woken = waiter.event.wait(None if timeout == math.inf else max(0.0, timeout))
    if not woken and _leave(waiter):
        # Chosen just as the timeout fired: this caller will not use the slot.
        _pass_on(waiter)
    return woken


async def wait_for_slot_async(blocked: Sequence[tuple[SlotQueue, int]], timeout: float) -> bool:
    """Suspend until a slot of one of ``blocked`` is released (True) or ``timeout`` passes."""
    loop = asyncio.get_running_loop()
    waiter = _Waiter()
    waiter.loop = loop
    waiter.future = loop.create_future()
    if not _join(blocked, waiter):
        return True
    timer = loop.call_later(timeout, _settle, waiter.future, False) if timeout != math.inf else None
    try:
        woken = await waiter.future
    except asyncio.CancelledError:
        if _leave(waiter):
            _pass_on(waiter)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    if not woken and _leave(waiter):
        # Chosen just as the timeout fired: this caller will not use the slot.
        _pass_on(waiter)
    return woken
