"""Waiting for a free concurrency slot without polling and without a thundering herd.

Each provider has a :class:`SlotQueue`. A request that found every candidate full
registers one waiter on the queues of all the providers it is blocked on. A release wakes
only the oldest waiter of that provider's queue: waking every waiter had thousands of
tasks retry admission for a single slot. The woken waiter leaves every queue it was on
in the same step, under one lock shared by all queues, so releases on two of its queues
can never both spend their wake-up on it.

A wake-up stands for a free slot, so it must reach a caller that will try to take it:

* :meth:`SlotQueue.snapshot`, read before trying to admit, makes a release that lands
  between the refusal and the wait end the wait at once instead of being missed;
* a waiter whose caller is gone (cancelled, or its event loop closed) hands the wake-up
  to the next waiter of the queue that sent it;
* a waiter woken just as its timeout fires reports ``True``: its caller is still there
  and retries admission, so it takes the slot itself.

Threads wait on an event and tasks on a future settled through their own loop, so both
kinds of callers share one queue, and any thread may release.

Example:
    >>> queue = SlotQueue()
    >>> since = queue.snapshot()
    >>> queue.notify()                        # a release after the caller looked
    >>> wait_for_slot([(queue, since)], 1.0)  # returns at once: the release is not lost
    True
"""

from __future__ import annotations

import asyncio
import collections
import math
import threading
from collections.abc import Sequence

__all__ = ["SlotQueue", "Wake", "wait_for_slot", "wait_for_slot_async"]

_lock = threading.Lock()
"""One lock for all queues: a waiter joins and leaves several atomically; sections are tiny."""


class Wake:
    """A wake-up handed to a waiter: a release of ``queue``'s provider, the
    ``generation``-th. A waiter that cannot use it hands it on (:meth:`SlotQueue.pass_on`)
    to waiters that were already waiting then, never back to itself."""

    __slots__ = ("generation", "queue")

    def __init__(self, queue: SlotQueue, generation: int) -> None:
        self.queue = queue
        self.generation = generation

    def __repr__(self) -> str:
        return f"Wake({self.queue!r}, generation={self.generation})"


class _Waiter:
    __slots__ = ("event", "future", "generation", "queues", "woken_by")

    def __init__(
        self,
        event: threading.Event | None = None,
        future: asyncio.Future[bool] | None = None,
    ) -> None:
        self.event = event
        self.future = future
        self.queues: list[SlotQueue] = []
        self.woken_by: SlotQueue | None = None
        self.generation = 0

    def wake(self, queue: SlotQueue, generation: int) -> bool:
        """Leave every queue and wake the caller (``_lock`` held); False if it is gone."""
        for other in self.queues:
            other._waiters.pop(self, None)
        if self.future is not None:
            try:
                self.future.get_loop().call_soon_threadsafe(_settle, self.future, True)
            except RuntimeError:  # the loop is closed: no task is left to take the slot
                return False
        elif self.event is not None:
            self.event.set()
        self.woken_by = queue
        self.generation = generation
        return True


def _settle(future: asyncio.Future[bool], value: bool) -> None:
    if not future.done():
        future.set_result(value)


class SlotQueue:
    """The requests waiting for a slot of one provider, oldest first.

    Example:
        >>> queue = SlotQueue()
        >>> since = queue.snapshot()
        >>> wait_for_slot([(queue, since)], 0.001)  # no release: times out
        False
        >>> queue.notify()
        >>> wait_for_slot([(queue, since)], 1.0)    # a release since the snapshot
        True
        >>> queue
        SlotQueue(waiting=0, releases=1)
    """

    __slots__ = ("_releases", "_waiters")

    def __init__(self) -> None:
        # Ordered for oldest-first; a mapping so a waiter leaves any position in O(1). Each
        # waiter maps to the release count it looked at: it may take wake-ups of later ones.
        self._waiters: collections.OrderedDict[_Waiter, int] = collections.OrderedDict()
        self._releases = 0

    def snapshot(self) -> int:
        """Read before trying to admit; a release after it ends the wait at once."""
        return self._releases

    @property
    def waiting(self) -> int:
        """Waiters registered now."""
        return len(self._waiters)

    def notify(self) -> None:
        """A slot was released: wake the oldest waiter, if any. Safe from any thread."""
        # Lock-free when nobody waits (every release takes this path). A joiner adds itself
        # before it reads the count, and this reads the waiters after bumping the count,
        # so either the joiner sees the bump and does not sleep, or this sees the joiner.
        self._releases += 1
        if self._waiters:
            with _lock:
                self._wake_oldest(self._releases)

    def pass_on(self, wake: Wake) -> None:
        """Hand on a wake-up its waiter could not use (it was refused for another reason)
        to the oldest waiter that was waiting at that release; none that joined later, so
        two waiters that cannot use it never wake each other without end."""
        if self._waiters:
            with _lock:
                self._wake_oldest(wake.generation)

    def _wake_oldest(self, generation: int) -> None:
        """Wake the oldest waiter still able to take the ``generation``-th release
        (``_lock`` held)."""
        for waiter, since in list(self._waiters.items()):
            if since < generation:
                del self._waiters[waiter]
                if waiter.wake(self, generation):
                    return

    def __repr__(self) -> str:
        return f"SlotQueue(waiting={len(self._waiters)}, releases={self._releases})"


def _join(blocked: Sequence[tuple[SlotQueue, int]], waiter: _Waiter) -> bool:
    """Register ``waiter``; False when a release already happened since the snapshots."""
    with _lock:
        for queue, since in blocked:
            if waiter not in queue._waiters:  # a queue listed twice is joined once
                queue._waiters[waiter] = since
                waiter.queues.append(queue)
        # Only after joining (see SlotQueue.notify): a release since the snapshot means
        # the caller must look again rather than sleep.
        if any(queue._releases != since for queue, since in blocked):
            for queue in waiter.queues:
                queue._waiters.pop(waiter, None)
            waiter.queues.clear()
            return False
        return True


def _leave(waiter: _Waiter, *, pass_on: bool) -> Wake | bool:
    """Unregister; the wake-up it had been handed (False: none), handed on if ``pass_on``."""
    with _lock:
        queue = waiter.woken_by
        if queue is None:
            for other in waiter.queues:
                other._waiters.pop(waiter, None)
            return False
        if pass_on:
            queue._wake_oldest(waiter.generation)
        return Wake(queue, waiter.generation)


def wait_for_slot(blocked: Sequence[tuple[SlotQueue, int]], timeout: float) -> Wake | bool:
    """Block until a slot of one of ``blocked`` is released or ``timeout`` passes.

    ``blocked`` pairs each queue with the :meth:`SlotQueue.snapshot` read before the
    refused admission; ``timeout`` may be ``math.inf``. Returns the :class:`Wake` handed
    to this caller, ``True`` when a release came between the snapshot and the wait (look
    again: no wake-up is held), ``False`` when the time ran out.
    """
    event = threading.Event()
    waiter = _Waiter(event=event)
    if not _join(blocked, waiter):
        return True
    try:
        event.wait(None if timeout >= threading.TIMEOUT_MAX else max(0.0, timeout))
    except BaseException:  # interrupted: this caller will not take the slot
        _leave(waiter, pass_on=True)
        raise
    return _leave(waiter, pass_on=False)


async def wait_for_slot_async(
    blocked: Sequence[tuple[SlotQueue, int]], timeout: float
) -> Wake | bool:
    """Suspend until a slot of one of ``blocked`` is released or ``timeout`` passes.

    As :func:`wait_for_slot`; a cancelled task hands a wake-up it got to the next waiter.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()
    waiter = _Waiter(future=future)
    if not _join(blocked, waiter):
        return True
    timer = None if timeout == math.inf else loop.call_later(timeout, _settle, future, False)
    try:
        await future
    except asyncio.CancelledError:
        # Only cancellation: a coroutine closed unresumed is being finalised, perhaps by the
        # garbage collector inside a locked section of this thread, and has left every
        # queue already (a queue keeps its future, hence its task, alive).
        _leave(waiter, pass_on=True)
        raise
    finally:
        if timer is not None:
            timer.cancel()
    return _leave(waiter, pass_on=False)
