from __future__ import annotations

import asyncio
import math
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from router_middleware._limiter import ConcurrencyLimiter
from router_middleware._waiting import SlotQueue, Wake, wait_for_slot, wait_for_slot_async

SHORT = 0.05
"""Longest real wait in this file: a wait that must time out."""


def _wait_until(read: Callable[[], object], expected: object = True) -> None:
    deadline = time.monotonic() + 2.0
    while read() != expected:
        assert time.monotonic() < deadline, f"never reached {expected!r}"
        time.sleep(0.0005)


async def _yield_until(read: Callable[[], object], expected: object = True) -> None:
    for _ in range(10_000):
        if read() == expected:
            return
        await asyncio.sleep(0)
    pytest.fail(f"never reached {expected!r}")


def _in_thread(target: Callable[[], bool]) -> tuple[threading.Thread, list[bool]]:
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(target()), daemon=True)
    thread.start()
    return thread, results


# --- the snapshot ----------------------------------------------------------------------


def test_a_release_after_the_snapshot_ends_a_thread_wait_at_once() -> None:
    queue, other = SlotQueue(), SlotQueue()
    since, other_since = queue.snapshot(), other.snapshot()
    queue.notify()  # released between the refused admission and the wait
    assert wait_for_slot([(other, other_since), (queue, since)], SHORT) is True
    assert queue.waiting == other.waiting == 0


async def test_a_release_after_the_snapshot_ends_a_task_wait_at_once() -> None:
    queue = SlotQueue()
    since = queue.snapshot()
    queue.notify()
    started = time.monotonic()
    assert await wait_for_slot_async([(queue, since)], SHORT) is True
    assert time.monotonic() - started < SHORT
    assert queue.waiting == 0


async def test_a_release_before_the_snapshot_does_not_count() -> None:
    queue = SlotQueue()
    queue.notify()
    since = queue.snapshot()
    assert wait_for_slot([(queue, since)], 0.001) is False
    assert await wait_for_slot_async([(queue, since)], 0.001) is False


# --- one release, one waiter -----------------------------------------------------------


async def test_one_notify_wakes_only_the_oldest_task() -> None:
    queue = SlotQueue()
    waiters = []
    for count in (1, 2, 3):
        waiters.append(asyncio.create_task(wait_for_slot_async([(queue, 0)], SHORT)))
        await _yield_until(lambda: queue.waiting, count)
    queue.notify()
    assert queue.waiting == 2
    assert [bool(r) for r in await asyncio.gather(*waiters)] == [True, False, False]
    assert queue.waiting == 0


def test_each_notify_wakes_one_thread_oldest_first() -> None:
    queue = SlotQueue()
    woken: list[int] = []

    def wait(index: int) -> None:
        if wait_for_slot([(queue, 0)], math.inf):
            woken.append(index)

    threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(3)]
    for count, thread in enumerate(threads, start=1):
        thread.start()
        _wait_until(lambda: queue.waiting, count)
    for released in (1, 2, 3):
        queue.notify()
        _wait_until(lambda: len(woken), released)
        time.sleep(0.005)  # time for a wrongly woken second thread to show up
        assert len(woken) == released
    for thread in threads:
        thread.join(1.0)
    assert woken == [0, 1, 2]
    assert queue.waiting == 0


async def test_a_waiter_on_two_queues_is_woken_once_and_leaves_both() -> None:
    first, second = SlotQueue(), SlotQueue()
    both = asyncio.create_task(wait_for_slot_async([(first, 0), (second, 0)], math.inf))
    await _yield_until(lambda: first.waiting == second.waiting == 1)
    only_second = asyncio.create_task(wait_for_slot_async([(second, 0)], SHORT))
    await _yield_until(lambda: second.waiting == 2)

    first.notify()
    assert (first.waiting, second.waiting) == (0, 1)
    second.notify()  # must reach the next waiter, not the one already woken
    assert bool(await asyncio.wait_for(both, 1.0))
    assert bool(await only_second)
    assert first.waiting == second.waiting == 0


def test_a_queue_listed_twice_registers_the_waiter_once() -> None:
    queue = SlotQueue()
    thread, results = _in_thread(lambda: wait_for_slot([(queue, 0), (queue, 0)], math.inf))
    _wait_until(lambda: queue.waiting > 0)
    assert queue.waiting == 1
    queue.notify()
    thread.join(1.0)
    assert [bool(r) for r in results] == [True]
    assert queue.waiting == 0


# --- threads and event loops -----------------------------------------------------------


async def test_a_notify_from_a_thread_wakes_a_task() -> None:
    queue = SlotQueue()
    waiter = asyncio.create_task(wait_for_slot_async([(queue, 0)], math.inf))
    await _yield_until(lambda: queue.waiting == 1)
    threading.Thread(target=queue.notify).start()
    assert bool(await asyncio.wait_for(waiter, 1.0))
    assert queue.waiting == 0


def test_a_notify_wakes_a_task_on_another_threads_loop() -> None:
    queue = SlotQueue()
    thread, results = _in_thread(
        lambda: asyncio.run(wait_for_slot_async([(queue, queue.snapshot())], math.inf))
    )
    _wait_until(lambda: queue.waiting == 1)
    queue.notify()
    thread.join(1.0)
    assert [bool(r) for r in results] == [True]
    assert queue.waiting == 0


def test_a_waiter_whose_loop_was_closed_passes_the_release_on() -> None:
    queue = SlotQueue()
    dead_loop = asyncio.new_event_loop()
    abandoned = dead_loop.create_task(wait_for_slot_async([(queue, 0)], 10.0))
    abandoned._log_destroy_pending = False  # type: ignore[attr-defined]  # abandoned on purpose
    dead_loop.run_until_complete(asyncio.sleep(0))
    dead_loop.close()
    assert queue.waiting == 1  # the oldest waiter can no longer take a slot

    thread, results = _in_thread(lambda: wait_for_slot([(queue, 0)], math.inf))
    _wait_until(lambda: queue.waiting == 2)
    queue.notify()
    thread.join(1.0)
    assert [bool(r) for r in results] == [True]
    assert queue.waiting == 0


# --- giving up -------------------------------------------------------------------------


@pytest.mark.parametrize("settled", [False, True], ids=["wake-pending", "wake-delivered"])
async def test_a_task_cancelled_after_being_chosen_passes_the_release_on(settled: bool) -> None:
    queue = SlotQueue()
    chosen = asyncio.create_task(wait_for_slot_async([(queue, 0)], math.inf))
    await _yield_until(lambda: queue.waiting == 1)
    following = asyncio.create_task(wait_for_slot_async([(queue, 0)], SHORT))
    await _yield_until(lambda: queue.waiting == 2)

    queue.notify()
    if settled:
        await asyncio.sleep(0)  # the wake-up reaches the future; the task is not yet resumed
    assert not chosen.done()
    chosen.cancel()
    with pytest.raises(asyncio.CancelledError):
        await chosen
    assert bool(await following)
    assert queue.waiting == 0


async def test_a_release_is_passed_on_only_in_the_queue_that_sent_it() -> None:
    sent, other = SlotQueue(), SlotQueue()
    chosen = asyncio.create_task(wait_for_slot_async([(sent, 0), (other, 0)], math.inf))
    await _yield_until(lambda: sent.waiting == other.waiting == 1)
    on_other = asyncio.create_task(wait_for_slot_async([(other, 0)], SHORT))
    on_sent = asyncio.create_task(wait_for_slot_async([(sent, 0)], SHORT))
    await _yield_until(lambda: sent.waiting == other.waiting == 2)

    sent.notify()
    chosen.cancel()
    with pytest.raises(asyncio.CancelledError):
        await chosen
    assert bool(await on_sent)
    assert await on_other is False, "no slot was released there"
    assert repr(other) == "SlotQueue(waiting=0, releases=0)"


async def test_a_cancelled_task_that_was_not_chosen_just_leaves() -> None:
    queue = SlotQueue()
    cancelled = asyncio.create_task(wait_for_slot_async([(queue, 0)], math.inf))
    await _yield_until(lambda: queue.waiting == 1)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert queue.waiting == 0
    later = asyncio.create_task(wait_for_slot_async([(queue, 0)], SHORT))
    await _yield_until(lambda: queue.waiting == 1)
    queue.notify()
    assert bool(await later)


async def test_a_task_chosen_as_its_timeout_fires_keeps_the_release() -> None:
    queue = SlotQueue()
    waiter = asyncio.create_task(wait_for_slot_async([(queue, 0)], 0.0))
    await _yield_until(lambda: queue.waiting == 1)
    frame = waiter.get_coro().cr_frame  # type: ignore[union-attr]
    assert frame is not None
    future: asyncio.Future[bool] = frame.f_locals["future"]
    await _yield_until(future.done)  # timed out; the task resumes on the next loop turn
    assert queue.waiting == 1
    queue.notify()
    assert bool(await waiter), "its caller is still there to take the slot"
    assert queue.waiting == 0


def test_a_thread_wait_times_out_with_false_and_leaves_no_entry() -> None:
    queue, other = SlotQueue(), SlotQueue()
    started = time.monotonic()
    assert wait_for_slot([(queue, 0), (other, 0)], 0.01) is False
    assert time.monotonic() - started >= 0.009
    assert queue.waiting == other.waiting == 0
    assert wait_for_slot([(queue, 0)], -1.0) is False
    assert queue.waiting == 0


async def test_a_task_wait_times_out_with_false_and_leaves_no_entry() -> None:
    queue = SlotQueue()
    assert await wait_for_slot_async([(queue, 0)], 0.01) is False
    assert queue.waiting == 0


async def test_an_unbounded_wait_ends_with_a_later_notify() -> None:
    queue = SlotQueue()
    thread, results = _in_thread(lambda: wait_for_slot([(queue, 0)], math.inf))
    task = asyncio.create_task(wait_for_slot_async([(queue, 0)], math.inf))
    await _yield_until(lambda: queue.waiting == 2)
    await asyncio.sleep(0.01)
    assert results == []
    assert not task.done()
    queue.notify()
    queue.notify()
    assert bool(await asyncio.wait_for(task, 1.0))
    thread.join(1.0)
    assert [bool(r) for r in results] == [True]


def test_repr_shows_waiters_and_releases() -> None:
    queue = SlotQueue()
    thread, _ = _in_thread(lambda: wait_for_slot([(queue, 0)], math.inf))
    _wait_until(lambda: queue.waiting == 1)
    assert repr(queue) == "SlotQueue(waiting=1, releases=0)"
    queue.notify()
    thread.join(1.0)
    assert repr(queue) == "SlotQueue(waiting=0, releases=1)"


# --- stress ----------------------------------------------------------------------------


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads very often, so a race between release and wait would show."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(previous)


@pytest.mark.usefixtures("busy_switching")
def test_threads_and_tasks_contending_for_two_providers_are_all_woken() -> None:
    queues = [SlotQueue(), SlotQueue()]
    limiters = [ConcurrencyLimiter(1), ConcurrencyLimiter(2)]
    rounds = 150
    timed_out: list[str] = []
    completed: list[str] = []

    def try_admit(rng: random.Random) -> int | None:
        for index in rng.sample(range(2), 2):
            if limiters[index].try_acquire():
                return index
        return None

    def release(index: int) -> None:
        limiters[index].release()
        queues[index].notify()

    def worker(name: str) -> None:
        rng = random.Random(name)
        for _ in range(rounds):
            while True:
                blocked = [(q, q.snapshot()) for q in queues]
                index = try_admit(rng)
                if index is not None:
                    break
                if not wait_for_slot(blocked, 1.0):
                    timed_out.append(name)
            time.sleep(0)
            release(index)
        completed.append(name)

    async def task(name: str) -> None:
        rng = random.Random(name)
        for _ in range(rounds):
            while True:
                blocked = [(q, q.snapshot()) for q in queues]
                index = try_admit(rng)
                if index is not None:
                    break
                if not await wait_for_slot_async(blocked, 1.0):
                    timed_out.append(name)
            await asyncio.sleep(0)
            release(index)
        completed.append(name)

    async def tasks() -> None:
        await asyncio.gather(*(task(f"task{i}") for i in range(8)))

    threads = [threading.Thread(target=worker, args=(f"thread{i}",)) for i in range(8)]
    threads.append(threading.Thread(target=asyncio.run, args=(tasks(),)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10.0)
    assert not any(thread.is_alive() for thread in threads)
    assert len(completed) == 16
    assert timed_out == [], "a release was lost: a waiter slept through it"
    assert [limiter.in_flight for limiter in limiters] == [0, 0]
    assert limiters[0].high_water == 1
    assert limiters[1].high_water <= 2
    assert [queue.waiting for queue in queues] == [0, 0]


# --- a wake-up its waiter cannot use ---------------------------------------------------


async def test_a_wake_up_handed_on_reaches_those_waiting_at_that_release_only() -> None:
    """A woken request that another gate refuses (its tokens) hands the wake-up on; the
    waiters that joined after that release never get it, so two waiters that cannot use
    it cannot wake each other without end."""
    queue = SlotQueue()
    first = asyncio.create_task(wait_for_slot_async([(queue, 0)], SHORT))
    await _yield_until(lambda: queue.waiting, 1)
    second = asyncio.create_task(wait_for_slot_async([(queue, 0)], SHORT))
    await _yield_until(lambda: queue.waiting, 2)
    queue.notify()
    wake = await first
    assert isinstance(wake, Wake)
    assert (wake.queue, wake.generation) == (queue, 1)
    # The first waits again (it looked after the release), then hands the wake-up on.
    again = asyncio.create_task(wait_for_slot_async([(queue, queue.snapshot())], SHORT))
    await _yield_until(lambda: queue.waiting, 2)
    queue.pass_on(wake)
    handed = await second
    assert isinstance(handed, Wake)
    assert handed.generation == 1
    # The second cannot use it either: nobody left who was waiting at release 1.
    queue.pass_on(handed)
    assert queue.waiting == 1
    assert await again is False  # timed out: it was never woken by a wake-up it passed on
