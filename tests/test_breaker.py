from __future__ import annotations

import logging
import math
import pickle
import re
import threading
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from router_middleware._breaker import (
    BreakerState,
    BreakerTransition,
    CircuitBreaker,
    Permit,
)
from router_middleware._breaker_algorithm import INITIAL
from router_middleware._clock import FakeClock
from router_middleware._config import CircuitBreakerConfig
from router_middleware._memory import InMemoryStore

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Rig:
    """A breaker on a fake clock, recording every transition it emits."""

    def __init__(self, **config: Any) -> None:
        self.clock = FakeClock()
        self.store = InMemoryStore()
        self.events: list[BreakerTransition] = []
        self.breaker = CircuitBreaker(
            CircuitBreakerConfig(**config),
            clock=self.clock,
            name="p",
            store=self.store,
            listeners=[self.events.append],
        )

    @property
    def record(self) -> Any:
        return self.store.breaker_record(self.store.key("p:breaker"))

    def permit(self) -> Permit:
        permit = self.breaker.try_acquire()
        assert permit is not None
        return permit

    def fail(self, times: int = 1) -> None:
        for _ in range(times):
            self.breaker.on_failure(self.permit())

    def succeed(self, times: int = 1) -> None:
        for _ in range(times):
            self.breaker.on_success(self.permit())

    def trip(self) -> None:
        self.fail(self.breaker.config.threshold)
        assert self.breaker.state is OPEN

    def half_open(self) -> None:
        self.trip()
        self.clock.advance(self.breaker.config.reset_timeout_seconds)
        assert self.breaker.state is HALF_OPEN

    def edges(self) -> list[tuple[str, str, str]]:
        return [(e.from_state.value, e.to_state.value, e.reason) for e in self.events]


def test_opens_at_exactly_threshold_failures_within_the_window() -> None:
    rig = Rig(threshold=3, sampling_duration_seconds=10)
    rig.fail()
    rig.clock.advance(5)
    rig.fail()
    rig.clock.advance(4.999)
    assert rig.breaker.state is CLOSED
    assert rig.breaker.failures_in_window() == 2
    rig.fail()
    assert rig.breaker.state is OPEN
    assert rig.edges() == [("closed", "open", "3 failures in 10s")]
    assert rig.events[0].at == pytest.approx(9.999)
    assert rig.events[0].name == "p"
    assert (rig.breaker.trips, rig.breaker.transitions) == (1, 1)


def test_failures_spread_wider_than_the_window_never_open_it() -> None:
    rig = Rig(threshold=3, sampling_duration_seconds=10)
    for _ in range(50):
        rig.fail()
        rig.clock.advance(5)
    # A failure exactly one window old is forgotten: at most two are ever in the window.
    assert rig.breaker.state is CLOSED
    assert rig.breaker.failures_in_window() == 1
    assert rig.events == []


def test_failures_in_window_forgets_expired_failures() -> None:
    rig = Rig(threshold=5, sampling_duration_seconds=10)
    rig.fail(3)
    assert rig.breaker.failures_in_window() == 3
    rig.clock.advance(10)
    assert rig.breaker.failures_in_window() == 0
    rig.fail(4)
    assert rig.breaker.state is CLOSED


def test_open_rejects_and_reports_retry_after() -> None:
    rig = Rig(threshold=1, reset_timeout_seconds=30)
    assert rig.breaker.retry_after() == 0.0
    rig.fail()
    assert rig.breaker.try_acquire() is None
    assert rig.breaker.retry_after() == 30.0
    rig.clock.advance(12)
    assert rig.breaker.try_acquire() is None
    assert rig.breaker.retry_after() == 18.0


def test_half_opens_after_the_reset_timeout_and_not_a_tick_before() -> None:
    rig = Rig(threshold=1, reset_timeout_seconds=30)
    rig.fail()
    rig.clock.advance(30 - 1e-9)
    assert rig.breaker.state is OPEN
    assert rig.breaker.try_acquire() is None
    assert 0 < rig.breaker.retry_after() < 1e-6
    rig.clock.advance(1e-9)
    assert rig.breaker.state is HALF_OPEN
    assert rig.breaker.state is HALF_OPEN
    assert rig.breaker.retry_after() == 0.0
    # Emitted once, by the first read that saw it.
    assert rig.edges() == [
        ("closed", "open", "1 failures in 60s"),
        ("open", "half_open", "reset timeout elapsed"),
    ]


def test_try_acquire_alone_applies_the_lazy_half_open() -> None:
    rig = Rig(threshold=1, reset_timeout_seconds=5)
    rig.fail()
    rig.clock.advance(5)
    assert rig.breaker.try_acquire() is not None
    assert [e.to_state for e in rig.events] == [OPEN, HALF_OPEN]


@pytest.mark.parametrize("limit", [1, 3])
def test_half_open_admits_at_most_half_open_max_calls_trials(limit: int) -> None:
    rig = Rig(threshold=1, half_open_max_calls=limit)
    rig.half_open()
    trials = [rig.breaker.try_acquire() for _ in range(limit)]
    assert all(t is not None for t in trials)
    assert rig.breaker.try_acquire() is None
    assert rig.record.in_flight == limit


def test_trial_success_closes_and_clears_the_window() -> None:
    rig = Rig(threshold=2)
    rig.half_open()
    rig.breaker.on_success(rig.permit())
    assert rig.breaker.state is CLOSED
    assert rig.edges()[-1] == ("half_open", "closed", "trial succeeded")
    assert rig.breaker.failures_in_window() == 0
    rig.fail()
    assert rig.breaker.state is CLOSED


def test_trial_failure_reopens_and_restarts_the_timeout() -> None:
    rig = Rig(threshold=1, reset_timeout_seconds=30)
    rig.half_open()
    rig.clock.advance(7)
    rig.breaker.on_failure(rig.permit())
    assert rig.breaker.state is OPEN
    assert rig.edges()[-1] == ("half_open", "open", "trial failed")
    assert rig.breaker.retry_after() == 30.0
    assert rig.breaker.trips == 2
    rig.clock.advance(29)
    assert rig.breaker.state is OPEN
    rig.clock.advance(1)
    assert rig.breaker.state is HALF_OPEN


def test_ignore_releases_a_half_open_slot_and_changes_nothing_else() -> None:
    rig = Rig(threshold=1)
    rig.half_open()
    trial = rig.permit()
    assert rig.breaker.try_acquire() is None
    before = len(rig.events)
    rig.breaker.on_ignore(trial)
    assert rig.breaker.state is HALF_OPEN
    assert len(rig.events) == before
    assert rig.breaker.try_acquire() is not None


def test_ignore_in_closed_state_counts_nothing() -> None:
    rig = Rig(threshold=2, failure_rate_threshold=0.5, minimum_calls=1)
    permit = rig.permit()
    before = rig.record
    for _ in range(10):
        rig.breaker.on_ignore(permit)
    assert rig.record is before
    assert rig.breaker.failures_in_window() == 0


def test_late_failure_from_before_the_trip_does_not_reopen_a_half_open_breaker() -> None:
    rig = Rig(threshold=2)
    late = rig.permit()
    rig.trip()
    rig.clock.advance(30)
    assert rig.breaker.state is HALF_OPEN
    rig.breaker.on_failure(late)
    assert rig.breaker.state is HALF_OPEN
    assert rig.breaker.try_acquire() is not None


def test_late_success_from_before_the_trip_does_not_close_it() -> None:
    rig = Rig(threshold=2)
    late = rig.permit()
    rig.trip()
    rig.breaker.on_success(late)
    assert rig.breaker.state is OPEN
    rig.clock.advance(30)
    rig.breaker.on_success(late)
    assert rig.breaker.state is HALF_OPEN


def test_late_failure_does_not_count_in_the_new_closed_window() -> None:
    rig = Rig(threshold=2)
    late = [rig.permit() for _ in range(3)]
    rig.half_open()
    rig.breaker.on_success(rig.permit())
    for permit in late:
        rig.breaker.on_failure(permit)
    assert rig.breaker.state is CLOSED
    assert rig.breaker.failures_in_window() == 0


def test_stale_trial_permit_neither_leaks_nor_frees_a_half_open_slot() -> None:
    rig = Rig(threshold=1, half_open_max_calls=1)
    rig.half_open()
    old_trial = rig.permit()
    rig.breaker.force_open()
    rig.clock.advance(30)
    new_trial = rig.breaker.try_acquire()  # the old trial's slot did not leak
    assert new_trial is not None
    rig.breaker.on_ignore(old_trial)  # ...and cannot free the new trial's slot
    rig.breaker.on_failure(old_trial)
    assert rig.breaker.state is HALF_OPEN
    assert rig.breaker.try_acquire() is None
    rig.breaker.on_success(new_trial)
    assert rig.breaker.state is CLOSED


def test_rate_rule_needs_minimum_calls() -> None:
    rig = Rig(threshold=100, failure_rate_threshold=0.5, minimum_calls=10)
    rig.fail(9)  # 100% failing, but too few calls to judge
    assert rig.breaker.state is CLOSED
    rig.fail()
    assert rig.breaker.state is OPEN
    assert rig.edges() == [("closed", "open", "10/10 calls failed in 60s")]


def test_rate_rule_opens_at_the_rate_and_not_below() -> None:
    rig = Rig(threshold=100, failure_rate_threshold=0.3, minimum_calls=10)
    rig.succeed(8)
    rig.fail(2)  # 2/10
    assert rig.breaker.state is CLOSED
    rig.fail()  # 3/11 < 0.3
    assert rig.breaker.state is CLOSED
    rig.succeed(1)
    rig.fail()  # 4/13 >= 0.3
    assert rig.breaker.state is OPEN
    assert rig.edges()[-1][2] == "4/13 calls failed in 60s"


def test_rate_rule_forgets_calls_older_than_the_window() -> None:
    rig = Rig(
        threshold=100, failure_rate_threshold=0.5, minimum_calls=4, sampling_duration_seconds=10
    )
    rig.fail(3)
    rig.clock.advance(10)
    rig.succeed(3)
    rig.fail(2)  # 2/5 in the window: the three old failures are gone
    assert rig.breaker.state is CLOSED
    rig.fail()  # 3/6
    assert rig.breaker.state is OPEN


def test_disabled_breaker_always_admits_and_never_changes_state() -> None:
    rig = Rig(enabled=False, threshold=1)
    for _ in range(10):
        rig.fail()
    rig.breaker.force_open()
    assert rig.breaker.state is CLOSED
    assert rig.breaker.try_acquire() is not None
    assert (rig.breaker.trips, rig.breaker.transitions, rig.breaker.retry_after()) == (0, 0, 0.0)
    assert rig.record is None
    assert rig.events == []
    assert repr(rig.breaker) == "CircuitBreaker(name='p', disabled)"


def test_permits_of_one_generation_are_reused() -> None:
    rig = Rig()
    assert rig.breaker.try_acquire() is rig.breaker.try_acquire()


def test_listeners_run_in_order_outside_the_lock_and_a_raising_one_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rig = Rig(threshold=1)
    calls: list[tuple[str, BreakerState]] = []

    def first(t: BreakerTransition) -> None:
        # Reading the breaker from a listener would deadlock if it ran under the lock.
        calls.append(("first", rig.breaker.state))

    def broken(t: BreakerTransition) -> None:
        raise RuntimeError("listener bug")

    def last(t: BreakerTransition) -> None:
        calls.append(("last", t.to_state))

    for fn in (first, broken, last):
        rig.breaker.add_listener(fn)
    with caplog.at_level(logging.ERROR, logger="router_middleware"):
        rig.fail()
    assert rig.breaker.state is OPEN
    assert calls == [("first", OPEN), ("last", OPEN)]
    [record] = caplog.records
    assert record.name == "router_middleware"
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)

    rig.breaker.remove_listener(first)
    rig.breaker.reset()
    assert calls[-1] == ("last", CLOSED)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="not in list"):
        rig.breaker.remove_listener(first)


def test_reset_closes_and_clears_emitting_only_on_change() -> None:
    rig = Rig(threshold=3)
    rig.fail(2)
    rig.breaker.reset()
    assert rig.events == []
    assert rig.breaker.failures_in_window() == 0
    rig.trip()
    rig.breaker.reset()
    assert rig.breaker.state is CLOSED
    assert rig.edges()[-1] == ("open", "closed", "reset")
    assert rig.breaker.retry_after() == 0.0


def test_force_open_opens_and_restarts_the_timeout_when_already_open() -> None:
    rig = Rig(reset_timeout_seconds=30)
    rig.breaker.force_open()
    assert rig.breaker.state is OPEN
    assert rig.edges() == [("closed", "open", "forced open")]
    assert rig.breaker.trips == 1
    rig.clock.advance(20)
    rig.breaker.force_open()
    assert len(rig.events) == 1
    assert rig.breaker.retry_after() == 30.0
    rig.clock.advance(30)
    rig.breaker.force_open()  # due to half-open: that read is seen first
    assert [e.to_state for e in rig.events] == [OPEN, HALF_OPEN, OPEN]


def test_breakers_sharing_a_store_and_name_share_state() -> None:
    clock, store = FakeClock(), InMemoryStore()
    cfg = CircuitBreakerConfig(threshold=1)
    a = CircuitBreaker(cfg, clock=clock, name="p", store=store)
    b = CircuitBreaker(cfg, clock=clock, name="p", store=store)
    other = CircuitBreaker(cfg, clock=clock, name="q", store=store)
    permit = a.try_acquire()
    assert permit is not None
    a.on_failure(permit)
    assert b.state is OPEN
    assert other.state is CLOSED


def test_repr_shows_live_state() -> None:
    rig = Rig(threshold=5, reset_timeout_seconds=10)
    rig.fail(2)
    assert (
        repr(rig.breaker) == "CircuitBreaker(name='p', state=closed, failures=2/5 in 60s, trips=0)"
    )
    rig.fail(3)
    rig.clock.advance(10)
    assert repr(rig.breaker) == (
        "CircuitBreaker(name='p', state=half_open, failures=0/5 in 60s, trips=1)"
    )
    assert len(rig.events) == 1  # repr emits nothing


def test_memory_stays_bounded_whatever_the_traffic() -> None:
    rig = Rig(threshold=5, failure_rate_threshold=1.0, minimum_calls=1_000_000)
    breaker, clock = rig.breaker, rig.clock
    for i in range(100_000):
        permit = breaker.try_acquire()
        if permit is None:
            breaker.reset()
            permit = breaker.try_acquire()
            assert permit is not None
        if i % 3:
            breaker.on_failure(permit)
        else:
            breaker.on_success(permit)
        clock.advance(0.37)
        if i % 10_000 == 0:
            assert len(rig.record.failures) <= 5
            assert len(rig.record.buckets) <= 10
    assert breaker.trips > 1000
    assert len(pickle.dumps(rig.record)) < 1000


def test_concurrent_threads_keep_the_trial_limit() -> None:
    clock = FakeClock()
    store = InMemoryStore()
    events: list[BreakerTransition] = []
    lock = threading.Lock()

    def record(t: BreakerTransition) -> None:
        with lock:
            events.append(t)

    breaker = CircuitBreaker(
        CircuitBreakerConfig(threshold=3, half_open_max_calls=2, reset_timeout_seconds=1),
        clock=clock,
        name="p",
        store=store,
        listeners=[record],
    )
    over_limit = []

    def work(seed: int) -> None:
        for i in range(2000):
            permit = breaker.try_acquire()
            rec = store.breaker_record(store.key("p:breaker"))
            in_flight = rec.in_flight if rec is not None else 0  # nothing stored yet: closed
            if in_flight > 2:
                over_limit.append(in_flight)
            if permit is not None:
                if (i * seed) % 4 == 0:
                    breaker.on_success(permit)
                else:
                    breaker.on_failure(permit)
            if i % 50 == 0:
                clock.advance(0.5)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert over_limit == []
    assert breaker.transitions > 0
    assert breaker.trips == sum(1 for e in events if e.to_state is OPEN)


# --- model-based test --------------------------------------------------------------

_EDGES = {
    (CLOSED, OPEN): {"count", "rate", "forced open"},
    (OPEN, HALF_OPEN): {"reset timeout elapsed"},
    (HALF_OPEN, OPEN): {"trial failed", "forced open"},
    (HALF_OPEN, CLOSED): {"trial succeeded", "reset"},
    (OPEN, CLOSED): {"reset"},
}


def _reason_kind(reason: str) -> str:
    if re.fullmatch(r"\d+/\d+ calls failed in [\d.]+s", reason):
        return "rate"
    if re.fullmatch(r"\d+ failures in [\d.]+s", reason):
        return "count"
    return reason


OUTCOMES = st.sampled_from(["success", "failure", "ignore"])


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker and a naive reference model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = InMemoryStore()
        self.events: list[BreakerTransition] = []
        self.expected: list[tuple[BreakerState, BreakerState, str]] = []
        self.held: list[tuple[Permit, int]] = []
        # The reference model: unbounded lists, recomputed from scratch.
        self.state = CLOSED
        self.gen = 0
        self.opened_at = 0.0
        self.in_flight = 0
        self.failures: list[float] = []
        self.calls: list[tuple[float, bool]] = []

    @initialize(
        threshold=st.integers(1, 4),
        sampling=st.sampled_from([1.25, 2.5, 5.0]),
        reset=st.sampled_from([0.5, 1.25, 2.5]),
        max_calls=st.integers(1, 3),
        rate=st.sampled_from([None, None, 0.5, 0.75, 1.0]),
        minimum_calls=st.integers(1, 6),
    )
    def setup(
        self,
        threshold: int,
        sampling: float,
        reset: float,
        max_calls: int,
        rate: float | None,
        minimum_calls: int,
    ) -> None:
        self.cfg = CircuitBreakerConfig(
            threshold=threshold,
            sampling_duration_seconds=sampling,
            reset_timeout_seconds=reset,
            half_open_max_calls=max_calls,
            failure_rate_threshold=rate,
            minimum_calls=minimum_calls,
        )
        self.breaker = CircuitBreaker(
            self.cfg, clock=self.clock, name="m", store=self.store, listeners=[self.events.append]
        )

    # -- the model ---------------------------------------------------------------------

    def _move(self, to: BreakerState, kind: str) -> None:
        self.expected.append((self.state, to, kind))
        if to is OPEN:
            self.opened_at = self.clock.now()
        self.state, self.gen, self.in_flight = to, self.gen + 1, 0
        self.failures, self.calls = [], []

    def _lazy(self) -> None:
        if (
            self.state is OPEN
            and self.clock.now() >= self.opened_at + self.cfg.reset_timeout_seconds
        ):
            self._move(HALF_OPEN, "reset timeout elapsed")

    def _model_window_failures(self) -> int:
        now = self.clock.now()
        return sum(1 for t in self.failures if now - t < self.cfg.sampling_duration_seconds)

    def _model_closed_outcome(self, failed: bool) -> None:
        now = self.clock.now()
        self.calls.append((now, failed))
        if not failed:
            return
        self.failures.append(now)
        if self._model_window_failures() >= self.cfg.threshold:
            self._move(OPEN, "count")
            return
        if self.cfg.failure_rate_threshold is None:
            return
        width = self.cfg.sampling_duration_seconds / 10
        current = math.floor(now / width)
        window = [f for t, f in self.calls if math.floor(t / width) > current - 10]
        rate = self.cfg.failure_rate_threshold
        if len(window) >= self.cfg.minimum_calls and sum(window) / len(window) >= rate:
            self._move(OPEN, "rate")

    # -- rules ---------------------------------------------------------------------

    @rule()
    def acquire(self) -> None:
        self._lazy()
        permit = self.breaker.try_acquire()
        admit = self.state is CLOSED or (
            self.state is HALF_OPEN and self.in_flight < self.cfg.half_open_max_calls
        )
        assert (permit is not None) == admit
        if permit is not None:
            self.in_flight += self.state is HALF_OPEN
            self.held.append((permit, self.gen))

    @rule(outcome=OUTCOMES)
    def call(self, outcome: str) -> None:
        """The common path: acquire, then report at once."""
        held = len(self.held)
        self.acquire()
        if len(self.held) > held:
            self.report(held, outcome)

    @precondition(lambda self: self.held)
    @rule(index=st.integers(0, 50), outcome=OUTCOMES)
    def report(self, index: int, outcome: str) -> None:
        permit, gen = self.held.pop(index % len(self.held))
        self._lazy()
        seen = len(self.events)
        {
            "success": self.breaker.on_success,
            "failure": self.breaker.on_failure,
            "ignore": self.breaker.on_ignore,
        }[outcome](permit)
        if gen != self.gen:
            # Stale: at most the lazy half-open the call itself observed, nothing else.
            assert all(e.to_state is HALF_OPEN for e in self.events[seen:])
            return
        if self.state is HALF_OPEN:
            if outcome == "ignore":
                self.in_flight -= 1
            else:
                self._move(
                    CLOSED if outcome == "success" else OPEN,
                    "trial succeeded" if outcome == "success" else "trial failed",
                )
        elif self.state is CLOSED and outcome != "ignore":
            self._model_closed_outcome(outcome == "failure")

    # Multiples of 1/8 s, like every duration above: exact float arithmetic throughout,
    # and steps that land exactly on window and timeout boundaries.
    @rule(seconds=st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.25, 2.5, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(which=st.sampled_from(["sampling", "reset"]))
    def advance_by_a_configured_duration(self, which: str) -> None:
        cfg = self.cfg
        self.clock.advance(
            cfg.sampling_duration_seconds if which == "sampling" else cfg.reset_timeout_seconds
        )

    @rule()
    def reset(self) -> None:
        self._lazy()
        self.breaker.reset()
        if self.state is CLOSED:
            self.failures, self.calls = [], []
        else:
            self._move(CLOSED, "reset")

    @rule()
    def force_open(self) -> None:
        self._lazy()
        self.breaker.force_open()
        if self.state is OPEN:
            self.opened_at = self.clock.now()
        else:
            self._move(OPEN, "forced open")

    # -- invariants ----------------------------------------------------------------

    @invariant()
    def matches_the_model(self) -> None:
        self._lazy()
        assert self.breaker.state is self.state
        # A breaker no call has reached has no record yet (a look creates none).
        rec = self.store.breaker_record(self.store.key("m:breaker")) or INITIAL
        assert rec.in_flight == self.in_flight
        live = sum(1 for _, gen in self.held if gen == self.gen)
        if self.state is HALF_OPEN:
            assert 0 <= rec.in_flight == live <= self.cfg.half_open_max_calls
        else:
            assert rec.in_flight == 0
        assert self.breaker.failures_in_window() == self._model_window_failures()
        expected_retry = (
            self.opened_at + self.cfg.reset_timeout_seconds - self.clock.now()
            if self.state is OPEN
            else 0.0
        )
        assert self.breaker.retry_after() == expected_retry >= 0
        got = [(e.from_state, e.to_state, _reason_kind(e.reason)) for e in self.events]
        assert got == self.expected

    @invariant()
    def transitions_form_a_valid_path(self) -> None:
        previous = CLOSED
        for event in self.events:
            assert event.from_state is previous
            assert _reason_kind(event.reason) in _EDGES[event.from_state, event.to_state]
            previous = event.to_state
        assert self.breaker.transitions == len(self.events) >= 0
        assert self.breaker.trips == sum(e.to_state is OPEN for e in self.events) >= 0
        assert all(b.at <= a.at for b, a in zip(self.events, self.events[1:], strict=False))


TestBreakerModel = BreakerMachine.TestCase
TestBreakerModel.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, derandomize=True
)
