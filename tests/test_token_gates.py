"""Token limits, context windows and budgets through the router (``_token_gates``), on a
fake clock, on the sync and async paths: charges at admission, settling from usage,
refusals with their reasons and exact waits, the provider's word on its quota."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from router_middleware import (
    FakeClock,
    LLMRequest,
    NoProviderAvailableError,
    ResilientRouter,
    RouterError,
)
from router_middleware._tokens import Calibration, approximate_tokens
from router_middleware.testing import ScriptedChatModel, http_error

PROMPT = "x" * 400  # 100 tokens by the default estimate, plus 3 for the message
ESTIMATE = approximate_tokens([HumanMessage(PROMPT)])
CHARGED = Calibration().apply(ESTIMATE)  # before the provider has reported usage


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Callable[..., Any]:
    def run(router: ResilientRouter, value: Any = PROMPT, **kwargs: Any) -> Any:
        if request.param == "sync":
            return router.invoke(value, **kwargs)
        return asyncio.run(router.ainvoke(value, **kwargs))

    return run


class Provider:
    """A handler that answers with the usage it is told, and counts its calls."""

    def __init__(
        self,
        usage: tuple[int, int] | None = None,
        *,
        cache_read: int = 0,
        fail: BaseException | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.usage, self.cache_read, self.fail, self.headers = usage, cache_read, fail, headers
        self.calls = 0
        self.max_tokens: list[int | None] = []

    def __call__(self, request: LLMRequest) -> AIMessage:
        self.calls += 1
        self.max_tokens.append(request.max_tokens)
        if self.fail is not None:
            raise self.fail
        message = AIMessage("ok", response_metadata={"headers": self.headers or {}})
        if self.usage is not None:
            tokens_in, tokens_out = self.usage
            message.usage_metadata = {
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
                "input_token_details": {"cache_read": self.cache_read},
            }
        return message


def router(
    clock: FakeClock,
    providers: dict[str, Any],
    configs: dict[str, dict[str, Any]],
    **extra: Any,
) -> ResilientRouter:
    entries = []
    for i, name in enumerate(providers, start=1):
        entry = {"name": name, "priority": i, "models": [{"name": "m"}], **configs.get(name, {})}
        entries.append(entry)
    config = {
        "strategy": "cost_priority_round_robin",
        "retry": {"attempts": 1},
        "providers": entries,
        **extra,
    }
    return ResilientRouter(providers, config, clock=clock)


def tpm(limit: int, **more: Any) -> dict[str, Any]:
    return {"rate_limit": {"tokens_per_minute": limit, **more}}


def _key(r: ResilientRouter, provider: str) -> str:
    """The store key of the provider's first token limit."""
    gate = r.providers[provider].tokens
    assert gate is not None
    return gate.provider_limits[0].key


def served_by(message: Any) -> str:
    return str(message.response_metadata["router"]["provider"])


# -- the charge, and its settling ------------------------------------------------------


def test_a_request_is_charged_its_estimate_and_reserve_then_what_it_used(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider(usage=(ESTIMATE, 7))
    r = router(clock, {"a": a}, {"a": tpm(10_000)})
    call(r, max_tokens=500)
    assert a.max_tokens == [500]
    # Settled: the 500 reserved become the 7 used.
    assert r.providers["a"].token_headroom == 10_000 - ESTIMATE - 7


def test_when_the_window_is_full_the_next_provider_serves_with_the_reason(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a, b = Provider(), Provider()  # no usage reported: the charge stands
    r = router(clock, {"a": a, "b": b}, {"a": tpm(CHARGED + 1024)})
    assert served_by(call(r)) == "a"
    assert served_by(call(r)) == "b"
    assert (a.calls, b.calls) == (1, 1)
    assert r.providers["a"].metrics.rate_limited_requests == 1


def test_without_another_provider_the_request_waits_exactly_for_room(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider()
    r = router(clock, {"a": a}, {"a": tpm(2 * (CHARGED + 100))}, max_wait_seconds=120)
    clock.advance(0.5)
    call(r, max_tokens=100)
    call(r, max_tokens=100)
    clock.advance(10.0)
    call(r, max_tokens=100)  # the first charge (slot 0) leaves the window at 61 s
    assert clock.now() == pytest.approx(61.0)
    assert a.calls == 3


def test_a_request_larger_than_the_limit_fails_fast_naming_provider_limit_and_estimate(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider()
    r = router(clock, {"a": a}, {"a": tpm(500)}, max_wait_seconds=100)
    with pytest.raises(NoProviderAvailableError) as raised:
        call(r, max_tokens=1000)
    reason = raised.value.reasons["a"]
    assert "tokens_per_minute 500" in reason
    assert f"~{CHARGED + 1000:,} tokens" in reason
    assert (a.calls, clock.now()) == (0, 0.0)  # no call, no wait


def test_unused_output_refunded_and_an_input_shortfall_charged(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider(usage=(2 * ESTIMATE, 10))  # the provider counts twice the estimate
    r = router(clock, {"a": a}, {"a": tpm(100_000)})
    call(r, max_tokens=300)
    assert r.providers["a"].token_headroom == 100_000 - 2 * ESTIMATE - 10
    # Calibrated: the same prompt is now charged twice its estimate, so a window with room
    # for the estimate and the reserve, but not for twice the estimate, refuses it.
    assert r.providers["a"].calibration.apply(ESTIMATE) == 2 * ESTIMATE
    room = 2 * ESTIMATE + 300 - 1  # room for the estimate and the reserve, not for twice it
    fill = r.providers["a"].token_headroom - room
    r.store.take_windows(clock.now(), 60.0, [(_key(r, "a"), 100_000, fill)])
    with pytest.raises(NoProviderAvailableError, match="token limit"):
        call(r, max_tokens=300)
    clock.advance(61.0)  # the window empties
    call(r, max_tokens=300)
    assert r.providers["a"].token_headroom == 100_000 - 2 * ESTIMATE - 10


def test_input_and_output_limits_count_apart_and_cache_reads_not_as_input(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider(usage=(ESTIMATE, 20), cache_read=ESTIMATE - 5)
    limits = {"input_tokens_per_minute": 10_000, "output_tokens_per_minute": 5_000}
    r = router(clock, {"a": a}, {"a": {"rate_limit": {**limits, "tokens_per_minute": 50_000}}})
    call(r, max_tokens=1000)
    store, now, gate = r.store, clock.now(), r.providers["a"].tokens
    assert gate is not None
    used = {lim.label: store.window_used(lim.key, now, 60.0) for lim in gate.provider_limits}
    assert used == {
        "tokens_per_minute": ESTIMATE + 20,  # cache reads count toward the combined limit
        "input_tokens_per_minute": 5,  # ... not toward input tokens
        "output_tokens_per_minute": 20,
    }


def test_output_reserve_defaults_to_the_models_then_1024(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a, b = Provider(), Provider()
    limit = CHARGED + 200
    configs = {
        "a": {**tpm(limit), "models": [{"name": "m", "output_reserve_tokens": 200}]},
        "b": tpm(limit),  # 1024 by default: never fits
    }
    r = router(clock, {"a": a, "b": b}, configs)
    call(r)
    assert r.providers["a"].token_headroom == 0
    with pytest.raises(NoProviderAvailableError) as raised:
        call(r)
    assert f"~{CHARGED + 1024:,} tokens" in raised.value.reasons["b"]


def test_a_models_own_limit_applies_to_that_model_only(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider()
    models = [
        {"name": "m", "token_limits": {"tokens_per_minute": 10}},
        {"name": "other"},
    ]
    r = router(clock, {"a": a}, {"a": {"models": models}})
    with pytest.raises(NoProviderAvailableError) as raised:
        call(r, model="m")
    assert "tokens_per_minute of m 10" in raised.value.reasons["a"]
    assert call(r, model="other").content == "ok"


@pytest.mark.parametrize(
    ("error", "kept"),
    [
        (http_error(429), 0),  # the provider admitted nothing: all refunded
        (http_error(500), CHARGED),  # the input was sent: the output reserve refunded
    ],
)
def test_a_failure_gives_back_what_it_did_not_use(
    clock: FakeClock, call: Callable[..., Any], error: BaseException, kept: int
) -> None:
    a, b = Provider(fail=error), Provider()
    r = router(clock, {"a": a, "b": b}, {"a": tpm(100_000)})
    assert served_by(call(r, max_tokens=300)) == "b"
    assert r.providers["a"].token_headroom == 100_000 - kept


def test_a_cancelled_call_keeps_its_charge(clock: FakeClock) -> None:
    async def slow(request: LLMRequest) -> AIMessage:
        await asyncio.sleep(10)
        return AIMessage("late")

    r = router(clock, {"a": slow}, {"a": tpm(100_000)})

    async def main() -> None:
        task = asyncio.create_task(r.ainvoke(PROMPT, max_tokens=50))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # The provider may have run it all: nothing is refunded that it may have counted.
    assert r.providers["a"].token_headroom == 100_000 - CHARGED - 50


def test_usage_based_prefers_the_provider_with_more_token_headroom(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a, b = Provider(usage=(ESTIMATE, 10)), Provider(usage=(ESTIMATE, 10))
    r = router(
        clock, {"a": a, "b": b}, {"a": tpm(20_000), "b": tpm(50_000)}, strategy="usage_based"
    )
    for _ in range(3):
        assert served_by(call(r)) == "b"


# -- the provider's own word on its quota ------------------------------------------------


def test_rate_limit_headers_keep_the_local_window_from_assuming_more_room(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "6s"}
    a, b = Provider(usage=(ESTIMATE, 5), headers=headers), Provider()
    r = router(clock, {"a": a, "b": b}, {"a": tpm(1_000_000)})
    assert served_by(call(r)) == "a"
    assert r.providers["a"].token_headroom == 0  # a million locally; none, says the provider
    assert served_by(call(r)) == "b"
    clock.advance(6.0)
    a.headers = {}
    assert served_by(call(r)) == "a"  # room again once its reset has passed


def test_remaining_requests_cap_the_request_bucket(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider(headers={"x-ratelimit-remaining-requests": "0"})
    b = Provider()
    configs = {"a": {"rate_limit": {"requests_per_second": 1, "burst": 100}}}
    r = router(clock, {"a": a, "b": b}, configs)
    assert served_by(call(r)) == "a"
    assert served_by(call(r)) == "b"  # 99 tokens locally, 0 by the provider's count


# -- context windows -----------------------------------------------------------------------


def test_a_longer_window_serves_what_a_short_one_cannot_take(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    small, large = Provider(), Provider()
    configs = {
        "small": {"models": [{"name": "m", "max_input_tokens": ESTIMATE - 1}]},
        "large": {"models": [{"name": "m", "max_input_tokens": ESTIMATE}]},
    }
    r = router(clock, {"small": small, "large": large}, configs)
    assert served_by(call(r)) == "large"
    assert served_by(call(r, "short")) == "small"
    assert r.providers["small"].metrics.rate_limited_requests == 0  # not a rate limit


def test_max_tokens_above_a_models_output_limit_is_sent_elsewhere(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a, b = Provider(), Provider()
    configs = {"a": {"models": [{"name": "m", "max_output_tokens": 100}]}}
    r = router(clock, {"a": a, "b": b}, configs)
    assert served_by(call(r, max_tokens=101)) == "b"
    assert served_by(call(r, max_tokens=100)) == "a"
    with pytest.raises(NoProviderAvailableError) as raised:
        router(clock, {"a": Provider()}, configs).invoke(PROMPT, max_tokens=101)
    assert raised.value.reasons["a"] == "context window: max_tokens 101 > max_output_tokens 100"


def test_context_length_exceeded_teaches_that_such_an_input_does_not_fit(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider(fail=http_error(400, code="context_length_exceeded"))
    b = Provider()
    r = router(clock, {"a": a, "b": b}, {})
    assert served_by(call(r)) == "b"
    assert served_by(call(r)) == "b"
    assert a.calls == 1  # not asked again with as long an input
    assert r.metrics()["providers"]["a"]["context_refused_at"] == {"m": ESTIMATE}
    a.fail = None
    assert served_by(call(r, "short")) == "a"  # shorter inputs still go there


# -- budgets and cost ------------------------------------------------------------------------


PRICED = [{"name": "m", "cost_per_1k_input_tokens": 1.0, "cost_per_1k_output_tokens": 2.0}]


def test_each_answer_carries_its_cost_in_the_configured_currency(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a = Provider(usage=(1000, 500))
    r = router(clock, {"a": a}, {"a": {"models": PRICED}}, currency="EUR")
    cost = call(r).response_metadata["router"]["cost"]
    assert cost == {"input": 1.0, "output": 1.0, "total": 2.0, "currency": "EUR"}


@pytest.mark.parametrize("mode", ["stream", "astream"])
def test_a_streams_cost_rides_on_its_usage_chunk(clock: FakeClock, mode: str) -> None:
    from router_middleware.testing import ScriptedChatModel

    a = ScriptedChatModel(text="one two three", usage=(1000, 500), clock=clock)
    r = router(clock, {"a": a}, {"a": {"models": PRICED}})
    if mode == "stream":
        chunks = list(r.stream("hi"))
    else:

        async def collect() -> list[Any]:
            return [c async for c in r.astream("hi")]

        chunks = asyncio.run(collect())
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert "".join(str(c.content) for c in chunks) == "one two three"
    assert len(chunks) == len(list(a.stream("hi")))  # no chunk added: the last carries it
    assert total.response_metadata["router"]["provider"] == "a"
    assert total.response_metadata["router"]["cost"]["total"] == 2.0


def test_a_spent_budget_skips_the_provider_until_its_period_rolls_over(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    a, b = Provider(usage=(1000, 0)), Provider()
    budget = {"max_cost": 2.5, "period_seconds": 3600}
    configs = {"a": {"models": PRICED, "budget": budget}, "b": {"models": PRICED}}
    r = router(clock, {"a": a, "b": b}, configs)
    served = [served_by(call(r, "x" * 40, max_tokens=10)) for _ in range(4)]
    assert served == ["a", "a", "b", "b"]  # 1.0 each; the third would pass 2.5
    assert r.metrics()["providers"]["a"]["budget_spent"] == 2.0
    with pytest.raises(NoProviderAvailableError) as raised:
        router(clock, {"a": a}, {"a": {"models": PRICED, "budget": budget}}).invoke(
            "x" * 40, max_tokens=2000
        )
    assert "max_cost 2.5" in raised.value.reasons["a"]
    clock.advance(3600)
    assert served_by(call(r, "x" * 40, max_tokens=10)) == "a"


# -- estimation --------------------------------------------------------------------------------


def test_the_estimate_is_counted_once_per_request_and_only_when_needed(
    clock: FakeClock, call: Callable[..., Any]
) -> None:
    counted: list[int] = []

    def counter(messages: Any, tools: Any = None) -> int:
        counted.append(len(messages))
        return approximate_tokens(messages, tools)

    a = Provider(fail=http_error(503))
    plain = ResilientRouter({"p": Provider()}, token_counter=counter)
    call(plain)
    assert counted == []  # no limit needs it
    r = ResilientRouter(
        {"a": a, "b": Provider()},
        {
            "providers": [
                {"name": "a", "models": [{"name": "m"}], **tpm(10_000)},
                {"name": "b", "models": [{"name": "m"}], **tpm(10_000)},
            ],
            "retry": {"attempts": 2, "initial_backoff_seconds": 0},
        },
        clock=clock,
        token_counter=counter,
    )
    call(r)
    assert len(counted) == 1  # three admissions, one count


def test_a_large_input_is_counted_off_the_event_loop(clock: FakeClock) -> None:
    import threading

    threads: list[int] = []

    def counter(messages: Any, tools: Any = None) -> int:
        threads.append(threading.get_ident())
        return 10

    r = ResilientRouter(
        {"a": Provider()},
        {"providers": [{"name": "a", "models": [{"name": "m"}], **tpm(10_000)}]},
        clock=clock,
        token_counter=counter,
    )

    async def main() -> int:
        await r.ainvoke("y" * 100_001)
        await r.ainvoke("y" * 1_000)
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[0] != loop_thread  # counted in a worker thread
    assert threads[1] == loop_thread  # a small input is cheaper counted in place


def test_token_limits_come_from_the_environment(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__A__MODELS", '[{"name": "m"}]')
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__A__RATE_LIMIT__TOKENS_PER_MINUTE", "60000")
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__A__BUDGET__MAX_COST", "5")
    r = ResilientRouter.from_settings({"a": Provider()})
    gate = r.providers["a"].tokens
    assert gate is not None
    assert [lim.limit for lim in gate.provider_limits] == [60_000]
    assert r.providers["a"].budget is not None

    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__A__RATE_LIMIT__TOKENS_PER_MINUTE", "-5")
    from router_middleware import ConfigurationError

    with pytest.raises(ConfigurationError) as raised:
        ResilientRouter.from_settings({"a": Provider()})
    assert "LLM_ROUTER_PROVIDERS__A__RATE_LIMIT__TOKENS_PER_MINUTE" in str(raised.value)


def test_the_readmes_worked_example(clock: FakeClock) -> None:
    prompt = "z" * 4000
    seen: list[float | None] = []

    class Watching(Provider):
        def __call__(self, request: LLMRequest) -> AIMessage:
            seen.append(r.providers["a"].token_headroom)  # while the call runs
            return super().__call__(request)

    a = Watching(usage=(1100, 250))
    r = router(clock, {"a": a}, {"a": tpm(60_000)}, max_wait_seconds=100)
    assert approximate_tokens([HumanMessage(prompt)]) == 1004
    r.invoke(prompt, max_tokens=1000)
    assert seen == [60_000 - 1255 - 1000]
    assert r.providers["a"].token_headroom == 60_000 - 1350
    before = r.providers["a"].token_headroom
    a.usage = None  # the charge then stands: 1,100 + 1,000
    r.invoke(prompt, max_tokens=1000)
    assert before - r.providers["a"].token_headroom == 2100
    # Fill the window to 59,000 from slot 12 on: 3,000 of it in that slot.
    clock.advance(12.0 - clock.now())
    gate = r.providers["a"].tokens
    assert gate is not None
    key = gate.provider_limits[0].key
    r.store.adjust_windows(clock.now(), 60.0, 0, [(key, -3450)])  # the first two charges gone
    r.store.take_windows(clock.now(), 60.0, [(key, 60_000, 3000)])
    clock.advance(5.0)
    r.store.take_windows(clock.now(), 60.0, [(key, 60_000, 56_000)])
    r.invoke(prompt, max_tokens=1000)
    assert clock.now() == pytest.approx(73.0)


def test_a_refund_ends_a_wait_for_tokens_at_once_on_the_event_loop() -> None:
    """Found by the benchmarks: the waiter slept until the oldest charge left (61 s)."""
    from router_middleware.testing import LoopClock, ScriptedChatModel, VirtualLoop

    loop = VirtualLoop()
    clock = LoopClock(loop)
    model = ScriptedChatModel(latency=1.0, clock=clock, usage=(5, 10))
    r = router(clock, {"p": model}, {"p": tpm(1000)}, max_wait_seconds=120)  # type: ignore[arg-type]
    ended: dict[str, float] = {}

    async def one(name: str, delay: float, max_tokens: int) -> None:
        await asyncio.sleep(delay)
        await r.ainvoke("hi", max_tokens=max_tokens)
        ended[name] = loop.time()

    async def main() -> None:
        await asyncio.gather(one("a", 0.0, 900), one("b", 0.1, 500))

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert ended["a"] == pytest.approx(1.0)
    assert ended["b"] == pytest.approx(2.0)  # admitted when a's refund came, at 1 s


def test_a_refund_ends_a_wait_for_tokens_at_once_on_threads() -> None:
    import threading
    import time

    from router_middleware import SystemClock

    def slow(request: LLMRequest) -> AIMessage:
        time.sleep(0.2)
        usage = {"input_tokens": 5, "output_tokens": 10, "total_tokens": 15}
        return AIMessage("ok", usage_metadata=usage)  # type: ignore[arg-type]

    r = router(SystemClock(), {"p": slow}, {"p": tpm(1000)}, max_wait_seconds=30)  # type: ignore[arg-type]
    first = threading.Thread(target=r.invoke, args=("hi",), kwargs={"max_tokens": 900})
    first.start()
    time.sleep(0.05)
    started = time.monotonic()
    r.invoke("hi", max_tokens=500)
    first.join()
    assert time.monotonic() - started < 5  # not the 60 s until the first charge leaves


def test_a_timed_out_call_keeps_its_charge_and_cost(call: Callable[..., Any]) -> None:
    """Found by the simulator: the output was refunded while the provider went on."""
    from router_middleware.testing import Hang, ScriptedChatModel

    model = ScriptedChatModel(script=[Hang(1.0)])
    models = [{"name": "m", "cost_per_1k_output_tokens": 1.0}]
    r = ResilientRouter(
        {"p": model},
        {
            "providers": [
                {"name": "p", "models": models, **tpm(10_000), "budget": {"max_cost": 100}}
            ],
            "timeouts": {"attempt_seconds": 0.05},
            "retry": {"attempts": 1},
        },
    )
    with pytest.raises(RouterError):
        call(r, "hi", max_tokens=4000)
    model.release_hangs()
    p = r.providers["p"]
    charged = Calibration().apply(approximate_tokens([HumanMessage("hi")]))
    assert p.token_headroom == 10_000 - charged - 4000
    assert p.budget is not None
    assert p.budget.spent() == pytest.approx(4.0)


def _finish_times(
    usage: tuple[int, int],
    max_concurrent: int,
    plan: list[tuple[str, float, int]],
    *,
    calibrated: bool = False,
) -> tuple[dict[str, float], ScriptedChatModel]:
    """When each ``(name, start, max_tokens)`` request ended, on a virtual-time loop, over
    one provider with 1,000 tokens a minute whose calls take 1 s (``calibrated``: whose
    count of the prompt the router knows already)."""
    from router_middleware.testing import LoopClock, VirtualLoop

    loop = VirtualLoop()
    clock = LoopClock(loop)
    model = ScriptedChatModel(latency=1.0, clock=clock, usage=usage)
    limits = tpm(1000, max_concurrent=max_concurrent)
    r = router(clock, {"p": model}, {"p": limits}, max_wait_seconds=120)  # type: ignore[arg-type]
    if calibrated:
        r.providers["p"].calibration.observe(usage[0], usage[0])
    ended: dict[str, float] = {}

    async def one(name: str, delay: float, max_tokens: int) -> None:
        await asyncio.sleep(delay)
        await r.ainvoke("hi", max_tokens=max_tokens)
        ended[name] = loop.time()

    async def main() -> None:
        await asyncio.gather(*(one(*p) for p in plan))

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    return ended, model


def test_a_slots_wake_up_passes_on_when_the_woken_request_lacks_tokens() -> None:
    """Found by the benchmarks: A's release woke B, which the token limit refused; C,
    which fits, stayed asleep with the slot free until B's own call ended (62 s)."""
    plan = [("a", 0.0, 100), ("b", 0.1, 600), ("c", 0.2, 50)]
    ended, model = _finish_times((300, 10), 1, plan)
    assert ended["c"] == pytest.approx(2.0)
    # b (300 + 600) fits once both a's and c's charges (310 each) have left: 62 s.
    assert ended["b"] == pytest.approx(63.0)
    assert model.max_in_flight == 1


def test_every_settle_gives_each_waiter_that_fits_its_turn() -> None:
    """Found by the benchmarks: a request that had handed on one wake-up swallowed the
    next, and e, which fits once a settles, slept until another call ended."""
    plan = [("a", 0.0, 600), ("b", 0.1, 990), ("c", 0.2, 390), ("d", 0.3, 300), ("e", 1.1, 600)]
    ended, _ = _finish_times((5, 10), 4, plan, calibrated=True)
    assert ended["a"] == pytest.approx(1.0)
    assert ended["c"] == pytest.approx(1.2)
    assert ended["d"] == pytest.approx(2.0)
    assert ended["e"] == pytest.approx(2.2)
