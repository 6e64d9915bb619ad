"""The routing plan stepped by hand: every gate and ending, with no I/O and no driver.

``Pipeline.run`` is a generator of typed steps (``_steps``); these tests play the driver
themselves: ``next`` for the first step, ``send`` a call's result (a message, or the
exception it raised, as a value), ``throw`` what interrupted a step.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk

from router_middleware import FakeClock, ResilientRouter
from router_middleware._context import RequestContext
from router_middleware._errors import (
    AllProvidersFailedError,
    IncompleteStreamError,
    NoProviderAvailableError,
)
from router_middleware._lease import Lease
from router_middleware._observe import Observer
from router_middleware._steps import Call, Deliver, Emit, Pause, Sleep, WaitForSlot
from router_middleware.testing import ScriptedChatModel, http_error

from .conftest import provider_config

STEP_TYPES = (Call, Deliver, Sleep, Pause, WaitForSlot, Emit)


class Recorder(Observer):
    def __init__(self) -> None:
        self.cooled: list[tuple[str, float]] = []
        self.retries: list[tuple[str, int, float]] = []
        self.transitions: list[tuple[str, str, str]] = []

    def cooled_down(self, provider: str, seconds: float) -> None:
        self.cooled.append((provider, seconds))

    def retried(self, provider: str, attempt: int, delay: float) -> None:
        self.retries.append((provider, attempt, delay))

    def breaker_changed(self, transition: Any) -> None:
        self.transitions.append(
            (transition.name, transition.from_state.value, transition.to_state.value)
        )


def make(
    clock: FakeClock,
    names: tuple[str, ...] = ("a", "b"),
    *,
    provider: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[ResilientRouter, Recorder]:
    recorder = Recorder()
    configs = [
        provider_config(name, priority=i, **(provider or {}))
        for i, name in enumerate(names, start=1)
    ]
    config.setdefault("strategy", "cost_priority_round_robin")
    config.setdefault("retry", {"attempts": 2, "initial_backoff_seconds": 0.01, "jitter": False})
    router = ResilientRouter(
        {n: ScriptedChatModel(clock=clock) for n in names},
        {"providers": configs, **config},
        clock=clock,
        observers=[recorder],
    )
    return router, recorder


def ctx(*, stream: bool = False) -> RequestContext:
    return RequestContext("m", "hi", {}, {}, stream=stream)


def skip_emits(plan: Any, step: Any, seen: list[Emit] | None = None) -> Any:
    """Answer every Emit with None until another step comes."""
    while isinstance(step, Emit):
        if seen is not None:
            seen.append(step)
        step = plan.send(None)
    return step


def finish(plan: Any, step: Any, message: Any = None, emits: list[Emit] | None = None) -> Lease:
    """From a Deliver: hand the answer over and run the plan to its end (only Emits may
    follow); returns the plan's value, the lease that answered."""
    assert isinstance(step, Deliver)
    step.lease.message = message if message is not None else step.result
    try:
        step = plan.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    while True:
        assert isinstance(step, Emit)
        if emits is not None:
            emits.append(step)
        try:
            step = plan.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def serve(plan: Any, text: str = "ok") -> Lease:
    """Drive a plan whose next step is a Call to a successful end."""
    step = skip_emits(plan, next(plan))
    assert isinstance(step, Call)
    step = skip_emits(plan, plan.send(AIMessage(text)))
    return finish(plan, step)


# -- cool-down gate -------------------------------------------------------------------------


def test_retry_after_cools_the_provider_down_and_the_next_request_skips_it() -> None:
    clock = FakeClock()
    router, recorder = make(clock)
    pipeline = router.pipeline
    plan = pipeline.run(ctx())
    step = next(plan)
    assert isinstance(step, Call)
    assert step.lease.provider.name == "a"
    # Retry-After 10 exceeds the 1 s backoff cap: fail over to b at once.
    step = skip_emits(plan, plan.send(http_error(429, retry_after=10)))
    assert recorder.cooled == [("a", 10.0)]
    assert isinstance(step, Call)
    assert step.lease.provider.name == "b"
    step = skip_emits(plan, plan.send(AIMessage("from b")))
    assert finish(plan, step).provider.name == "b"

    plan = pipeline.run(ctx())
    step = next(plan)
    assert isinstance(step, Call)
    assert step.lease.provider.name == "b"
    plan.close()
    assert router.provider("a").cooldown_left == pytest.approx(10.0)

    clock.advance(10.0)
    plan = pipeline.run(ctx())
    step = next(plan)
    assert isinstance(step, Call)
    assert step.lease.provider.name == "a"
    plan.close()


def test_a_huge_retry_after_is_capped_by_max_cooldown_seconds() -> None:
    clock = FakeClock()
    router, recorder = make(clock, ("a",))
    assert router.router_config.max_cooldown_seconds == 300
    plan = router.pipeline.run(ctx())
    step = next(plan)
    assert isinstance(step, Call)
    with pytest.raises(AllProvidersFailedError):
        skip_emits(plan, plan.send(http_error(429, retry_after=10**9)))
    assert recorder.cooled == [("a", 300.0)]
    assert router.provider("a").cooldown_left == pytest.approx(300.0)

    # The only provider is cooling down: the plan gives up rather than wait 300 s.
    plan = router.pipeline.run(ctx())
    with pytest.raises(NoProviderAvailableError) as info:
        next(plan)
    assert "Retry-After" in info.value.reasons["a"]
    assert info.value.retry_after == pytest.approx(300.0)


def test_max_cooldown_seconds_is_configurable() -> None:
    clock = FakeClock()
    router, recorder = make(clock, ("a", "b"), max_cooldown_seconds=7)
    plan = router.pipeline.run(ctx())
    next(plan)
    step = skip_emits(plan, plan.send(http_error(503, retry_after=10**9)))
    assert isinstance(step, Call)
    assert step.lease.provider.name == "b"
    plan.close()
    assert recorder.cooled == [("a", 7.0)]


# -- breaker gate ---------------------------------------------------------------------------


def test_open_breaker_yields_no_call_and_half_open_admits_one_trial() -> None:
    clock = FakeClock()
    router, recorder = make(
        clock,
        ("a",),
        circuit_breaker={"threshold": 2, "reset_timeout_seconds": 10},
        retry={"attempts": 1},
    )
    pipeline = router.pipeline
    for _ in range(2):
        plan = pipeline.run(ctx())
        step = next(plan)
        assert isinstance(step, Call)
        assert step.lease.provider.name == "a"
        emits: list[Emit] = []
        with pytest.raises(AllProvidersFailedError):
            skip_emits(plan, plan.send(http_error(503)), emits)
    changes = [e.data for e in emits if e.name == "router_breaker_change"]
    assert changes == [{"provider": "a", "from": "closed", "to": "open"}]
    assert router.provider("a").circuit_breaker_state == "open"

    # Open: no Call at all, and the reason says why.
    plan = pipeline.run(ctx())
    with pytest.raises(NoProviderAvailableError) as info:
        next(plan)  # refused at once: no Call, no Pause (the reset is beyond max_wait)
    assert "circuit open" in info.value.reasons["a"]

    # Half-open: one trial is admitted; a second request meanwhile must wait.
    clock.advance(10)
    trial = pipeline.run(ctx())
    emits = []
    step = skip_emits(trial, next(trial), emits)
    assert [e.data["to"] for e in emits] == ["half_open"]
    assert isinstance(step, Call)
    assert step.lease.provider.name == "a"
    other = pipeline.run(ctx())
    waiting = next(other)
    assert isinstance(waiting, WaitForSlot)
    step = skip_emits(trial, trial.send(AIMessage("back")))
    emits = []
    assert finish(trial, step, emits=emits).outcome == "succeeded"
    assert [(e.data["from"], e.data["to"]) for e in emits] == [("half_open", "closed")]
    # The trial's end is a release: the waiter is admitted once it looks again.
    step = skip_emits(other, other.send(True))
    assert isinstance(step, Call)
    assert step.lease.provider.name == "a"
    other.close()
    assert [t[1:] for t in recorder.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_open_breaker_provider_is_never_called_while_others_are_tried() -> None:
    clock = FakeClock()
    router, _ = make(
        clock,
        ("a", "b"),
        circuit_breaker={"threshold": 1, "reset_timeout_seconds": 60},
        retry={"attempts": 2, "initial_backoff_seconds": 0.01, "jitter": False},
    )
    router.provider("a").breaker.force_open()
    calls: list[str] = []
    plan = router.pipeline.run(ctx())

    def play() -> None:
        step = next(plan)
        while True:
            if isinstance(step, Call):
                calls.append(step.lease.provider.name)
                step = plan.send(http_error(503))
            else:
                step = plan.send(None)

    with pytest.raises(AllProvidersFailedError) as info:
        play()
    assert calls == ["b"]  # b's breaker (threshold 1) opened too: no retry, no call to a
    assert set(info.value.errors) == {"b"}
    assert "circuit open" in info.value.skipped["a"]


# -- bucket gate ----------------------------------------------------------------------------


def test_empty_bucket_pauses_for_the_exact_refill_then_calls() -> None:
    clock = FakeClock()
    router, _ = make(clock, ("a",), provider={"rate_limit": {"requests_per_second": 1, "burst": 1}})
    serve(router.pipeline.run(ctx()))
    clock.advance(0.25)
    plan = router.pipeline.run(ctx())
    step = next(plan)
    assert isinstance(step, Pause)
    assert step.seconds == pytest.approx(0.75)
    clock.advance(step.seconds)
    step = plan.send(None)
    assert isinstance(step, Call)
    assert step.lease.provider.name == "a"
    step = plan.send(AIMessage("ok"))
    assert finish(plan, step).outcome == "succeeded"
    assert router.provider("a").metrics.rate_limited_requests == 0


# -- concurrency gate -----------------------------------------------------------------------


def test_full_provider_yields_wait_for_slot_until_the_holder_finishes() -> None:
    clock = FakeClock()
    router, _ = make(clock, ("a",), provider={"rate_limit": {"max_concurrent": 1}})
    provider = router.provider("a")
    first = router.pipeline.run(ctx())
    call = next(first)
    assert isinstance(call, Call)
    assert provider.limiter.in_flight == 1

    second = router.pipeline.run(ctx())
    wait = next(second)
    assert isinstance(wait, WaitForSlot)
    assert [q for q, _ in wait.blocked] == [provider.slots]
    assert 0 < wait.seconds <= router.router_config.max_wait_seconds
    ((queue, since),) = wait.blocked

    deliver = first.send(AIMessage("first"))
    assert isinstance(deliver, Deliver)
    assert provider.limiter.in_flight == 1  # held until delivery has ended
    assert queue.snapshot() == since
    finish(first, deliver)
    assert provider.limiter.in_flight == 0
    assert queue.snapshot() != since  # the release is seen by the waiter

    call = second.send(True)
    assert isinstance(call, Call)
    assert call.lease.provider is provider
    assert provider.limiter.in_flight == 1
    finish(second, second.send(AIMessage("second")))
    assert provider.limiter.in_flight == 0
    assert provider.metrics.total_requests == 2
    assert provider.metrics.rate_limited_requests == 0


# -- delivery -------------------------------------------------------------------------------


def test_deliver_then_none_finishes_with_a_succeeded_lease() -> None:
    clock = FakeClock()
    router, _ = make(clock, ("a",))
    plan = router.pipeline.run(ctx())
    call = next(plan)
    assert isinstance(call, Call)
    answer = AIMessage("hello")
    deliver = plan.send(answer)
    assert isinstance(deliver, Deliver)
    assert deliver.result is answer
    assert deliver.lease is call.lease
    assert deliver.trail == [{"provider": "a", "model": "m", "error": None}]
    assert deliver.lease.outcome is None  # not settled before delivery ends
    lease = finish(plan, deliver)
    assert lease is call.lease
    assert lease.outcome == "succeeded"
    assert lease.message is answer
    assert router.provider("a").metrics.successful_requests == 1


def test_stream_broken_after_first_chunk_settles_failed_and_raises() -> None:
    clock = FakeClock()
    router, _ = make(clock, ("a", "b"))
    provider = router.provider("a")
    plan = router.pipeline.run(ctx(stream=True))
    call = next(plan)
    assert isinstance(call, Call)
    assert call.lease.provider is provider
    deliver = plan.send((AIMessageChunk(content="par"), None))
    assert isinstance(deliver, Deliver)
    assert deliver.lease.first_chunk is not None
    deliver.lease.message = AIMessageChunk(content="par")
    broken = ConnectionResetError("reset")
    with pytest.raises(IncompleteStreamError) as info:
        plan.send(broken)
    assert info.value.__cause__ is broken
    assert deliver.lease.outcome == "failed"
    assert provider.limiter.in_flight == 0
    assert provider.metrics.failed_requests == 1
    assert router.provider("b").metrics.total_requests == 0  # no failover mid-stream


# -- retry ----------------------------------------------------------------------------------


def test_503_emits_retry_sleeps_then_calls_the_same_provider_again() -> None:
    clock = FakeClock()
    router, recorder = make(clock)
    plan = router.pipeline.run(ctx())
    call = next(plan)
    assert isinstance(call, Call)
    assert call.lease.attempt == 1
    step = plan.send(http_error(503))
    assert isinstance(step, Emit)
    assert step.name == "router_retry"
    assert step.data == {"provider": "a", "attempt": 1, "delay": 0.01, "error": "HTTPStatusError"}
    step = plan.send(None)
    assert isinstance(step, Sleep)
    assert step.seconds == pytest.approx(0.01)
    assert router.provider("a").limiter.in_flight == 0  # no slot held while backing off
    clock.advance(step.seconds)
    step = plan.send(None)
    assert isinstance(step, Call)
    assert step.lease.provider.name == "a"
    assert step.lease.attempt == 2
    assert step.lease is not call.lease
    lease = finish(plan, plan.send(AIMessage("second time")))
    assert lease.outcome == "succeeded"
    assert recorder.retries == [("a", 1, 0.01)]
    m = router.provider("a").metrics
    assert (m.total_requests, m.successful_requests, m.retries) == (1, 1, 1)


def test_cancellation_at_the_backoff_propagates_and_counts_the_failed_attempt() -> None:
    clock = FakeClock()
    router, _ = make(clock)
    provider = router.provider("a")
    plan = router.pipeline.run(ctx())
    next(plan)
    step = skip_emits(plan, plan.send(http_error(503)))
    assert isinstance(step, Sleep)
    with pytest.raises(asyncio.CancelledError):
        plan.throw(asyncio.CancelledError())
    m = provider.metrics
    assert m.total_requests == 1
    assert m.failed_requests == 1
    assert provider.limiter.in_flight == 0
    assert router.provider("b").metrics.total_requests == 0
    # The plan is over: nothing more is yielded.
    with pytest.raises(StopIteration):
        next(plan)


# -- every step is a typed step -------------------------------------------------------------


def test_nothing_but_typed_steps_over_a_long_scripted_run() -> None:
    clock = FakeClock()
    rng = random.Random(7)
    router, _ = make(
        clock,
        ("a", "b", "c"),
        provider={"rate_limit": {"requests_per_second": 20, "burst": 2, "max_concurrent": 1}},
        circuit_breaker={"threshold": 3, "reset_timeout_seconds": 0.5},
        retry={"attempts": 3, "initial_backoff_seconds": 0.01, "jitter": True},
        max_wait_seconds=1.0,
    )
    seen: dict[type, int] = {}
    outcomes: dict[str, int] = {}
    results = [lambda: AIMessage("ok")] * 12 + [
        lambda: http_error(503),
        lambda: http_error(429, retry_after=0.2),
        lambda: http_error(429, retry_after=1.5),
        lambda: TimeoutError("slow"),
        lambda: ConnectionError("reset"),
    ]
    held: list[Any] = []  # plans parked at a Call, to make others wait for a slot
    for i in range(400):
        plan = router.pipeline.run(ctx())
        try:
            step = next(plan)
            while True:
                assert type(step) in STEP_TYPES, step
                seen[type(step)] = seen.get(type(step), 0) + 1
                if isinstance(step, Call):
                    if i % 17 == 0 and len(held) < 2:
                        held.append((plan, step))
                        plan = None
                        break
                    step = plan.send(rng.choice(results)())
                elif isinstance(step, Deliver):
                    step.lease.message = step.result
                    step = plan.send(None)
                elif isinstance(step, (Sleep, Pause)):
                    clock.advance(step.seconds)
                    step = plan.send(None)
                elif isinstance(step, WaitForSlot):
                    if held:
                        parked, _call = held.pop(0)
                        _finish_any(parked, parked.send(AIMessage("late")))
                        step = plan.send(True)
                    else:
                        clock.advance(step.seconds)
                        step = plan.send(False)
                else:
                    step = plan.send(None)
        except StopIteration as stop:
            served = stop.value
            outcomes["served"] = outcomes.get("served", 0) + isinstance(served, Lease)
        except (AllProvidersFailedError, NoProviderAvailableError) as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
        clock.advance(rng.random() * 0.05)
    for parked, _ in held:
        _finish_any(parked, parked.send(AIMessage("late")))
    assert set(seen) == set(STEP_TYPES), seen
    assert outcomes.get("served", 0) > 100
    for name in ("a", "b", "c"):
        p = router.provider(name)
        assert p.limiter.in_flight == 0
        s = p.metrics.snapshot()
        parts = ("successful_requests", "failed_requests", "throttled")
        parts += ("rate_limited_requests", "cancelled")
        assert sum(s[k] for k in parts) == s["total_requests"]


def _finish_any(plan: Any, step: Any) -> None:
    """Run a parked plan to its end whatever its steps."""
    try:
        while True:
            assert type(step) in STEP_TYPES
            if isinstance(step, Deliver):
                step.lease.message = step.result
                step = plan.send(None)
            elif isinstance(step, Call):
                step = plan.send(AIMessage("ok"))
            elif isinstance(step, WaitForSlot):
                step = plan.send(False)
            else:
                step = plan.send(None)
    except (StopIteration, AllProvidersFailedError, NoProviderAvailableError):
        pass
