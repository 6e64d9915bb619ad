from __future__ import annotations

import asyncio
import math
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_middleware._clock import FakeClock
from router_middleware._config import RateLimitConfig
from router_middleware._limiter import (
    BucketState,
    ConcurrencyLimiter,
    ProviderLimiter,
    TokenBucket,
    take_tokens,
)
from router_middleware._memory import InMemoryStore
from router_middleware._waiting import SlotQueue, wait_for_slot, wait_for_slot_async

PROPERTY = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads very often, so unsynchronised counters would be caught racing."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(previous)


async def _yield_until(predicate: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if predicate():
            return
        await asyncio.sleep(0)
    pytest.fail("condition never became true")


# --- token bucket ----------------------------------------------------------------------


def test_bucket_starts_full() -> None:
    bucket = TokenBucket(5, 3, clock=FakeClock())
    assert bucket.tokens == 3.0
    assert [bucket.try_acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_acquire() > 0


def test_burst_then_exact_refill_timing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(5, 2, clock=clock)
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == 0.2
    clock.advance(0.1)
    assert bucket.try_acquire() == pytest.approx(0.1)
    clock.advance(0.1)
    assert bucket.try_acquire() == 0.0
    assert bucket.try_acquire() == pytest.approx(0.2)


def test_cost_above_one_takes_that_many_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2, 10, clock=clock)
    assert bucket.try_acquire(7) == 0.0
    assert bucket.tokens == 3.0
    assert bucket.try_acquire(5) == 1.0
    assert bucket.tokens == 3.0, "a refused acquire must take nothing"
    clock.advance(1.0)
    assert bucket.try_acquire(5) == 0.0
    assert bucket.tokens == 0.0


def test_wait_time_is_exact_and_takes_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4, 1, clock=clock)
    assert bucket.wait_time() == 0.0
    assert bucket.tokens == 1.0
    bucket.try_acquire()
    clock.advance(0.05)
    assert bucket.wait_time() == pytest.approx(0.2)
    assert bucket.wait_time() == bucket.try_acquire()
    clock.advance(bucket.wait_time())
    assert bucket.wait_time() == 0.0
    assert bucket.try_acquire() == 0.0


def test_never_exceeds_burst_after_long_idle() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 4, clock=clock)
    bucket.try_acquire(4)
    clock.advance(1e6)
    assert bucket.tokens == 4.0
    assert [bucket.try_acquire() for _ in range(5)].count(0.0) == 4


def test_buckets_on_one_store_and_key_share_tokens() -> None:
    clock, store = FakeClock(), InMemoryStore()
    first = TokenBucket(1, 2, clock=clock, store=store, key="k")
    second = TokenBucket(1, 2, clock=clock, store=store, key="k")
    assert first.try_acquire() == 0.0
    assert second.try_acquire() == 0.0
    assert first.try_acquire() == 1.0
    assert TokenBucket(1, 2, clock=clock, store=store, key="other").try_acquire() == 0.0


def test_cost_above_burst_is_rejected_naming_both() -> None:
    bucket = TokenBucket(1, 2, clock=FakeClock())
    with pytest.raises(ValueError, match=r"cost 2\.5 exceeds burst 2"):
        bucket.try_acquire(2.5)
    with pytest.raises(ValueError, match=r"cost 2\.5 exceeds burst 2"):
        bucket.wait_time(2.5)
    with pytest.raises(ValueError, match=">= 0"):
        bucket.try_acquire(-1)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (1, 0)])
def test_invalid_bucket_parameters_are_rejected(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match=r"rate|burst"):
        TokenBucket(rate, burst, clock=FakeClock())


def test_take_tokens_is_pure_and_reports_inf_for_impossible_cost() -> None:
    state: BucketState = (0.5, 10.0)
    assert take_tokens(state, 10.0, 1.0, 2, 1.0) == (state, 0.5)
    assert take_tokens(state, 10.0, 1.0, 2, 3.0) == (state, math.inf)
    assert take_tokens(state, 11.0, 1.0, 2, 1.0) == ((0.5, 11.0), 0.0)


def test_a_stale_clock_reading_never_rewinds_the_refill_time() -> None:
    # A thread that read the clock before another's update must not refill that
    # interval a second time later.
    state, wait = take_tokens((2.0, 10.0), 9.0, 1.0, 5, 1.0)
    assert (state, wait) == ((1.0, 10.0), 0.0)
    assert take_tokens((0.0, 10.0), 9.0, 1.0, 5, 1.0)[1] == 2.0


def test_bucket_repr_shows_live_tokens() -> None:
    bucket = TokenBucket(5, 10, clock=FakeClock())
    bucket.try_acquire(3)
    assert repr(bucket) == "TokenBucket(rate=5/s, burst=10, tokens=7.00)"


# --- token bucket properties -----------------------------------------------------------


@st.composite
def _arrivals(draw: st.DrawFn) -> tuple[float, float, int, list[tuple[float, float]]]:
    """A clock start, a rate, a burst and sorted (time, cost) arrivals."""
    start = draw(st.sampled_from([0.0, 0.1, 1234.5678, 1e6 + 0.3]))
    rate = draw(st.floats(0.1, 1000))
    burst = draw(st.integers(1, 20))
    times = sorted(draw(st.lists(st.floats(0, 20), min_size=1, max_size=40)))
    costs = draw(st.lists(st.floats(0, burst), min_size=len(times), max_size=len(times)))
    return start, rate, burst, list(zip(times, costs, strict=True))


@PROPERTY
@given(_arrivals())
def test_admitted_tokens_in_any_window_stay_within_burst_plus_rate(
    case: tuple[float, float, int, list[tuple[float, float]]],
) -> None:
    start, rate, burst, arrivals = case
    clock = FakeClock(start)
    bucket = TokenBucket(rate, burst, clock=clock)
    admitted: list[tuple[float, float]] = []
    for at, cost in arrivals:
        clock.advance(max(0.0, start + at - clock.now()))
        if bucket.try_acquire(cost) == 0.0:
            admitted.append((clock.now(), cost))
    for i, (t0, _) in enumerate(admitted):
        for t1, _ in admitted[i:]:
            taken = sum(cost for at, cost in admitted if t0 <= at <= t1)
            assert taken <= burst + rate * (t1 - t0) + 1e-9


def _bucket_at(
    state: BucketState, now: float, rate: float, burst: int
) -> tuple[TokenBucket, FakeClock]:
    store, clock = InMemoryStore(), FakeClock(now)
    store._data[f"{store.namespace}:k"] = state  # a bucket in exactly this state
    return TokenBucket(rate, burst, clock=clock, store=store, key="k"), clock


@PROPERTY
@given(_arrivals())
def test_a_refusal_takes_nothing_and_its_wait_is_exact(
    case: tuple[float, float, int, list[tuple[float, float]]],
) -> None:
    start, rate, burst, arrivals = case
    clock, store = FakeClock(start), InMemoryStore()
    bucket = TokenBucket(rate, burst, clock=clock, store=store, key="k")
    for at, cost in arrivals:
        clock.advance(max(0.0, start + at - clock.now()))
        before = store._data.get(f"{store.namespace}:k")
        wait = bucket.try_acquire(cost)
        if wait == 0.0:
            continue
        assert store._data.get(f"{store.namespace}:k") == before
        assert 0 < wait < math.inf

        exact, exact_clock = _bucket_at(before, clock.now(), rate, burst)
        exact_clock.advance(wait)
        assert exact.try_acquire(cost) == 0.0

        if wait > 1e-6:
            early, early_clock = _bucket_at(before, clock.now(), rate, burst)
            early_clock.advance(wait - 1e-6)
            assert early.try_acquire(cost) > 0


# --- concurrency limiter ---------------------------------------------------------------


@pytest.mark.usefixtures("busy_switching")
def test_concurrency_cap_holds_under_threads() -> None:
    limiter = ConcurrencyLimiter(3)
    admitted = [0] * 8

    def hammer(index: int) -> None:
        for _ in range(2000):
            if limiter.try_acquire():
                admitted[index] += 1
                limiter.release()

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert 1 <= limiter.high_water <= 3
    assert limiter.in_flight == 0
    assert sum(admitted) > 0


async def test_concurrency_cap_holds_under_asyncio_tasks() -> None:
    limiter = ConcurrencyLimiter(5)

    async def call() -> None:
        await _yield_until(limiter.try_acquire)  # retried until a slot is taken
        try:
            await asyncio.sleep(0)
        finally:
            limiter.release()

    await asyncio.gather(*(call() for _ in range(200)))
    assert limiter.high_water == 5
    assert limiter.in_flight == 0


def test_a_release_without_a_slot_never_drops_below_zero() -> None:
    # Exactly-once release is the lease's job (test_lease); the store must still never
    # let a stray release open a slot that was never taken.
    limiter = ConcurrencyLimiter(1)
    limiter.release()
    assert limiter.in_flight == 0
    assert limiter.try_acquire()
    assert not limiter.try_acquire()


def test_unlimited_concurrency_still_counts() -> None:
    limiter = ConcurrencyLimiter(None)
    assert all(limiter.try_acquire() for _ in range(100))
    assert limiter.in_flight == limiter.high_water == 100
    assert not limiter.full
    assert repr(limiter) == "ConcurrencyLimiter(in_flight=100/unlimited, high_water=100)"


def test_zero_concurrency_cap_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_concurrent"):
        ConcurrencyLimiter(0)


# --- provider limiter ------------------------------------------------------------------


def _provider(
    clock: FakeClock | None = None,
    on_release: Callable[[], None] | None = None,
    **limits: float,
) -> ProviderLimiter:
    return ProviderLimiter(
        RateLimitConfig(**limits),
        clock=clock or FakeClock(),
        name="p",
        on_release=on_release,
    )


def test_concurrency_full_waits_forever_until_a_release() -> None:
    limiter = _provider(max_concurrent=2)
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == 0.0
    assert limiter.try_acquire() == math.inf
    assert limiter.wait_time() == math.inf
    assert limiter.in_flight == 2
    limiter.release()
    assert limiter.wait_time() == 0.0
    assert limiter.try_acquire() == 0.0


def test_out_of_tokens_holds_no_slot() -> None:
    clock = FakeClock()
    limiter = _provider(clock, requests_per_second=1, burst=1, max_concurrent=2)
    assert limiter.try_acquire() == 0.0
    limiter.release()
    assert limiter.try_acquire() == 1.0
    assert limiter.in_flight == 0
    clock.advance(1.0)
    assert limiter.try_acquire() == 0.0
    assert limiter.in_flight == 1


def test_out_of_tokens_never_touches_the_slot_nor_notifies() -> None:
    # Were a refused caller to hold a slot even briefly and notify on giving it back,
    # waiters on an empty bucket would wake each other in a loop until the refill.
    released: list[str] = []
    limiter = _provider(
        on_release=lambda: released.append("r"), requests_per_second=1, max_concurrent=1
    )
    limiter.try_acquire()
    limiter.release()
    released.clear()
    assert [limiter.try_acquire() for _ in range(3)] == [1.0] * 3
    assert released == []
    assert limiter.high_water == 1


def test_losing_the_slot_race_refunds_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    limiter = _provider(requests_per_second=1, burst=2, max_concurrent=1)
    assert limiter.bucket is not None
    # The cap looks free, the token is taken, then another caller takes the last slot.
    monkeypatch.setattr(ConcurrencyLimiter, "try_acquire", lambda self: False)
    assert limiter.try_acquire() == math.inf
    assert limiter.bucket.tokens == 2.0  # the token went back
    assert limiter.in_flight == 0


def test_take_gets_a_token_and_a_slot_or_neither() -> None:
    clock = FakeClock()
    limiter = _provider(clock, requests_per_second=1, burst=2, max_concurrent=1)
    assert limiter.bucket is not None
    assert limiter.take() == 0.0
    assert (limiter.in_flight, limiter.high_water) == (1, 1)
    assert limiter.take() == math.inf  # the slots are full: the token stays
    assert limiter.bucket.tokens == 1.0
    limiter.release()
    assert limiter.take() == 0.0
    limiter.release()
    assert limiter.take() == 1.0  # out of tokens: no slot taken
    assert limiter.in_flight == 0
    clock.advance(1.0)
    assert limiter.take() == 0.0


def test_take_without_a_rate_takes_a_slot() -> None:
    limiter = _provider(max_concurrent=1)
    assert limiter.take() == 0.0
    assert limiter.take() == math.inf
    limiter.release()
    assert limiter.take() == 0.0
    assert limiter.high_water == 1


def test_refund_never_overfills_the_bucket() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=2, clock=clock)
    bucket.refund()
    assert bucket.tokens == 2.0
    bucket.try_acquire()
    bucket.try_acquire()
    clock.advance(0.5)
    bucket.refund()
    assert bucket.tokens == pytest.approx(1.5)


def test_on_release_is_called_after_the_slot_is_freed() -> None:
    seen: list[int] = []
    limiter: ProviderLimiter = _provider(
        on_release=lambda: seen.append(limiter.in_flight), max_concurrent=3
    )
    limiter.try_acquire()
    limiter.try_acquire()
    limiter.release()
    assert seen == [1]


def test_no_rate_means_no_bucket() -> None:
    assert _provider().bucket is None
    assert _provider(max_concurrent=1).bucket is None
    rated = _provider(requests_per_second=2.5)
    assert rated.bucket is not None
    assert rated.bucket.burst == 3


def test_unlimited_provider_always_admits() -> None:
    limiter = _provider()
    assert [limiter.try_acquire() for _ in range(50)] == [0.0] * 50
    assert limiter.in_flight == 50


def test_provider_repr_shows_live_state() -> None:
    clock = FakeClock()
    limiter = ProviderLimiter(
        RateLimitConfig(requests_per_second=5, burst=10, max_concurrent=5),
        clock=clock,
        name="openai",
    )
    for _ in range(8):
        limiter.try_acquire()
        limiter.release()
    limiter.try_acquire()
    limiter.try_acquire()
    clock.advance(0.04)
    assert repr(limiter) == "ProviderLimiter(name='openai', tokens=0.2/10, rate=5/s, in_flight=2/5)"
    assert repr(_provider()) == "ProviderLimiter(name='p', in_flight=0)"


@pytest.mark.usefixtures("busy_switching")
def test_threads_waiting_on_releases_never_exceed_the_cap() -> None:
    slots = SlotQueue()
    limiter = _provider(on_release=slots.notify, max_concurrent=2)

    completed = [0] * 8
    missed: list[int] = []

    def worker(index: int) -> None:
        for _ in range(50):
            while True:
                since = slots.snapshot()
                if limiter.try_acquire() == 0.0:
                    break
                if not wait_for_slot([(slots, since)], 1.0):
                    missed.append(index)
            time.sleep(0.0001)  # hold the slot, so the other threads contend for it
            completed[index] += 1
            limiter.release()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert completed == [50] * 8
    assert missed == []
    assert 1 <= limiter.high_water <= 2
    assert limiter.in_flight == 0


async def test_tasks_waiting_on_releases_never_exceed_the_cap() -> None:
    slots = SlotQueue()
    limiter = _provider(on_release=slots.notify, max_concurrent=3)

    async def call() -> None:
        while True:
            since = slots.snapshot()
            if limiter.try_acquire() == 0.0:
                break
            assert await wait_for_slot_async([(slots, since)], 1.0), "a release was missed"
        try:
            await asyncio.sleep(0)
        finally:
            limiter.release()

    await asyncio.gather(*(call() for _ in range(200)))
    assert limiter.high_water == 3
    assert limiter.in_flight == 0
    assert slots.waiting == 0
