"""The router end to end (invoke/ainvoke/batch): selection, failover, retries, limits, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.exceptions import ContextOverflowError, ModelRefusalError
from langchain_core.messages import AIMessage

from router_middleware import (
    AllProvidersFailedError,
    DeadlineExceededError,
    FakeClock,
    InvalidInputError,
    InvalidProviderOutputError,
    LLMRequest,
    NoProviderAvailableError,
    NoProviderForModelError,
    ResilientRouter,
    UnknownProviderError,
)
from router_middleware.testing import Fail, Reply, ScriptedChatModel, http_error

from .conftest import provider_config


def served_by(message: Any) -> str:
    return str(message.response_metadata["router"]["provider"])


@pytest.fixture(params=["sync", "async"])
def call(request: pytest.FixtureRequest) -> Any:
    """Run router.invoke or router.ainvoke: every behaviour must hold on both paths."""

    def run(router: ResilientRouter, value: Any = "hi", **kwargs: Any) -> Any:
        if request.param == "sync":
            return router.invoke(value, **kwargs)
        return asyncio.run(router.ainvoke(value, **kwargs))

    return run


def test_prefers_priority_and_records_metadata(make_router, scripted, call) -> None:
    a, b = scripted(text="A"), scripted(text="B")
    router = make_router({"a": a, "b": b})
    message = call(router)
    assert message.content == "A"
    cost = message.response_metadata["router"].pop("cost")  # test_token_gates prices it
    assert cost["currency"] == "USD"
    assert message.response_metadata["router"] == {
        "provider": "a",
        "model": "m",
        "attempts": [{"provider": "a", "model": "m", "error": None}],
    }
    assert (a.calls, b.calls) == (1, 0)


def test_retries_then_fails_over(make_router, scripted, clock: FakeClock, call) -> None:
    a = scripted(http_error(503), http_error(502))
    b = scripted(text="B")
    router = make_router({"a": a, "b": b}, retry={"attempts": 2, "initial_backoff_seconds": 0.1})
    message = call(router)
    assert served_by(message) == "b"
    assert a.calls == 2
    assert [t["error"] for t in message.response_metadata["router"]["attempts"]] == [
        "HTTPStatusError",
        "HTTPStatusError",
        None,
    ]
    # One backoff sleep between the two tries on a: full jitter within [0, 0.1].
    assert len(clock.slept) == 1
    assert 0 <= clock.slept[0] <= 0.1
    m = router.providers["a"].metrics
    assert (m.total_requests, m.failed_requests, m.retries, m.fallbacks) == (1, 1, 1, 1)
    assert router.providers["b"].metrics.successful_requests == 1


def test_rate_limit_retry_after_is_honoured_without_jitter_below(
    make_router, scripted, clock: FakeClock, call
) -> None:
    a = scripted(http_error(429, retry_after=0.5), "after 429")
    router = make_router(
        {"a": a}, retry={"attempts": 3, "initial_backoff_seconds": 0.1, "max_backoff_seconds": 1}
    )
    assert call(router).content == "after 429"
    assert clock.slept
    assert clock.slept[0] >= 0.5
    # A 429 is saturation, not breakage.
    assert router.providers["a"].breaker.failures_in_window() == 0


def test_retry_after_on_a_503_is_honoured_too(make_router, scripted, clock, call) -> None:
    a = scripted(http_error(503, retry_after=0.7), "after 503")
    router = make_router({"a": a}, retry={"attempts": 2, "max_backoff_seconds": 1})
    assert call(router).content == "after 503"
    assert clock.slept[0] >= 0.7  # not the (shorter) jittered backoff
    assert router.providers["a"].breaker.failures_in_window() == 1  # a 503 still counts


def test_long_retry_after_fails_over_at_once_and_cools_down(
    make_router, scripted, clock: FakeClock, call
) -> None:
    a = scripted(http_error(429, retry_after=30))
    b = scripted(text="B")
    router = make_router({"a": a, "b": b})
    assert served_by(call(router)) == "b"
    assert clock.slept == []
    # While cooling down, a is skipped without being called.
    assert served_by(call(router)) == "b"
    assert a.calls == 1
    assert router.providers["a"].metrics.rate_limited_requests == 1
    clock.advance(30)
    assert served_by(call(router)) == "a"


@pytest.mark.parametrize(
    ("error", "counts"),
    [
        (http_error(401), True),
        (http_error(404), True),
        (ContextOverflowError("too long"), False),
        (http_error(400, code="context_length_exceeded"), False),
    ],
)
def test_no_retry_errors_fail_over(make_router, scripted, call, error, counts) -> None:
    a, b = scripted(error), scripted(text="B")
    router = make_router({"a": a, "b": b})
    assert served_by(call(router)) == "b"
    assert a.calls == 1
    assert router.providers["a"].breaker.failures_in_window() == (1 if counts else 0)


def test_content_policy_refusal_propagates_untouched(make_router, scripted, call) -> None:
    refusal = ModelRefusalError("no")
    a, b = scripted(refusal), scripted(text="B")
    router = make_router({"a": a, "b": b})
    with pytest.raises(ModelRefusalError) as info:
        call(router)
    assert info.value is refusal
    assert b.calls == 0
    assert router.providers["a"].limiter.in_flight == 0


def test_bug_in_provider_propagates_untouched(make_router, scripted, call) -> None:
    bug = AttributeError("'NoneType' object has no attribute 'text'")
    router = make_router({"a": scripted(bug), "b": scripted(text="B")})
    with pytest.raises(AttributeError) as info:
        call(router)
    assert info.value is bug
    assert call(router).content == "ok"  # and the router keeps serving


def test_all_failed_keeps_every_error(make_router, scripted, call) -> None:
    ea, eb = http_error(500), http_error(503)
    router = make_router({"a": scripted(ea, ea), "b": scripted(eb, eb)})
    with pytest.raises(AllProvidersFailedError) as info:
        call(router, model="m")
    err = info.value
    assert err.errors == {"a": ea, "b": eb}
    assert err.__cause__ is eb
    assert err.attempts == 4
    assert "'m'" in str(err)
    assert "a: HTTPStatusError" in str(err)


def test_unknown_model_is_a_typed_error(make_router, scripted, call) -> None:
    router = make_router({"a": scripted()})
    with pytest.raises(NoProviderForModelError) as info:
        call(router, model="gpt-9")
    assert info.value.model == "gpt-9"
    assert info.value.available == ["m"]


def test_model_aware_selection(make_router, scripted, call) -> None:
    a, b = scripted(text="A"), scripted(text="B")
    router = make_router(
        {"a": a, "b": b},
        [provider_config("a", models=("small",)), provider_config("b", models=("big", "small"))],
    )
    assert served_by(call(router, model="big")) == "b"
    assert served_by(call(router, model="small")) in {"a", "b"}


def test_round_robin_spreads(make_router, scripted, call) -> None:
    router = make_router({n: scripted() for n in "abc"}, strategy="round_robin")
    assert [served_by(call(router)) for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_model_from_bind_config_and_default(make_router, scripted) -> None:
    router = make_router(
        {"a": scripted(), "b": scripted()},
        [provider_config("a", models=("x",)), provider_config("b", models=("y",))],
        default_model="y",
    )
    assert served_by(router.invoke("hi")) == "b"
    assert served_by(router.bind(model="x").invoke("hi")) == "a"
    assert served_by(router.invoke("hi", {"configurable": {"model": "x"}})) == "a"


def test_multi_model_provider_receives_the_chosen_model(clock: FakeClock) -> None:
    seen: list[str | None] = []

    def handler(request: LLMRequest) -> str:
        seen.append(request.model)
        return f"served {request.model}"

    router = ResilientRouter(
        {"h": handler}, {"providers": [provider_config("h", models=("m1", "m2"))]}, clock=clock
    )
    assert router.invoke("hi", model="m2").content == "served m2"
    assert router.invoke("hi").content == "served m1"  # no model: first listed
    assert seen == ["m2", "m1"]


def test_breaker_opens_and_skips_then_recovers(make_router, scripted, clock, call) -> None:
    a = scripted(*[http_error(500)] * 4, text="A")
    b = scripted(text="B")
    router = make_router(
        {"a": a, "b": b},
        retry={"attempts": 1},
        circuit_breaker={"threshold": 2, "reset_timeout_seconds": 10},
    )
    changes: list[tuple[str, str]] = []
    router.add_listener(lambda t: changes.append((t.from_state.value, t.to_state.value)))
    assert [served_by(call(router)) for _ in range(3)] == ["b", "b", "b"]
    assert a.calls == 2  # open after two failures: the third request skips a
    assert router.providers["a"].circuit_breaker_state == "open"
    assert router.providers["a"].metrics.circuit_breaker_trips == 1
    clock.advance(10)
    assert served_by(call(router)) == "b"  # the half-open trial fails: open again
    assert a.calls == 3
    clock.advance(10)
    a.script.clear()
    assert served_by(call(router)) == "a"  # trial succeeds: closed
    assert router.providers["a"].circuit_breaker_state == "closed"
    assert changes == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


def test_skips_provider_without_tokens(make_router, scripted, call) -> None:
    a, b = scripted(text="A"), scripted(text="B")
    router = make_router(
        {"a": a, "b": b},
        [
            provider_config("a", priority=1, rate_limit={"requests_per_second": 1, "burst": 1}),
            provider_config("b", priority=2),
        ],
    )
    assert [served_by(call(router)) for _ in range(2)] == ["a", "b"]
    assert router.providers["a"].metrics.rate_limited_requests == 1


def test_waits_the_computed_time_when_all_lack_tokens(make_router, scripted, clock, call) -> None:
    router = make_router(
        {"a": scripted()},
        [provider_config("a", rate_limit={"requests_per_second": 4, "burst": 1})],
        max_wait_seconds=1,
    )
    call(router)
    call(router)
    assert clock.slept == [pytest.approx(0.25)]  # one computed wait, no polling


def test_no_capacity_past_max_wait_is_typed(make_router, scripted, call) -> None:
    router = make_router(
        {"a": scripted()},
        [provider_config("a", rate_limit={"requests_per_second": 0.1, "burst": 1})],
        max_wait_seconds=1,
    )
    call(router)
    with pytest.raises(NoProviderAvailableError) as info:
        call(router)
    assert info.value.reasons == {"a": "rate limited for 10.000s"}
    assert info.value.retry_after == pytest.approx(10)


def test_attempt_cap_bounds_a_request(make_router, scripted, call) -> None:
    providers = {n: scripted(*[http_error(500)] * 3) for n in "abc"}
    router = make_router(providers, retry={"attempts": 3}, max_attempts=4)
    with pytest.raises(DeadlineExceededError) as info:
        call(router)
    assert info.value.attempts == 4
    assert "max_attempts 4" in str(info.value)


def test_deadline_bounds_a_request(make_router, scripted, call) -> None:
    slow = [Fail(http_error(500), latency=4)] * 3
    router = make_router(
        {"a": scripted(*slow), "b": scripted(*slow)}, retry={"attempts": 3}, deadline_seconds=10
    )
    with pytest.raises(DeadlineExceededError, match="deadline 10s"):
        call(router)


def test_bad_input_is_typed(make_router, scripted, call) -> None:
    router = make_router({"a": scripted()})
    for bad in (None, 42, []):
        with pytest.raises(InvalidInputError):
            call(router, bad)
    assert call(router).content == "ok"


def test_handler_returning_wrong_type(clock: FakeClock, call) -> None:
    router = ResilientRouter(
        {"h": lambda request: 42}, {"providers": [provider_config("h")]}, clock=clock
    )
    with pytest.raises(InvalidProviderOutputError, match=r"'h'.*int"):
        call(router)
    assert router.providers["h"].limiter.in_flight == 0


def test_runtime_controls(make_router, scripted, call) -> None:
    router = make_router({"a": scripted(text="A"), "b": scripted(text="B")})
    router.disable("a")
    assert served_by(call(router)) == "b"
    router.enable("a")
    assert served_by(call(router)) == "a"
    router.providers["a"].breaker.force_open()
    assert served_by(call(router)) == "b"
    router.reset_breaker("a")
    assert served_by(call(router)) == "a"
    with pytest.raises(UnknownProviderError, match="'zz'"):
        router.disable("zz")


def test_apply_config_keeps_state_of_remaining_providers(make_router, scripted, call) -> None:
    router = make_router({"a": scripted(), "b": scripted()})
    call(router)
    metrics_a = router.providers["a"].metrics
    router.providers["a"].breaker.force_open()
    router.apply_config(
        {"strategy": "round_robin", "providers": [provider_config("a", priority=5)]}
    )
    assert list(router.providers) == ["a"]
    assert router.providers["a"].metrics is metrics_a
    assert metrics_a.successful_requests == 1
    assert router.providers["a"].circuit_breaker_state == "open"


def test_metrics_snapshot_is_json(make_router, scripted, call) -> None:
    import json

    router = make_router({"a": scripted(http_error(500)), "b": scripted()}, retry={"attempts": 1})
    call(router)
    snap = json.loads(json.dumps(router.metrics()))
    assert snap["totals"]["total_requests"] == 2
    assert snap["providers"]["b"]["input_tokens"] == 3
    assert snap["providers"]["a"]["circuit_breaker_state"] == "closed"


def test_cost_from_usage(clock: FakeClock, scripted) -> None:
    router = ResilientRouter(
        {"a": scripted(usage=(1000, 500))},
        {
            "providers": [
                {
                    "name": "a",
                    "models": [
                        {
                            "name": "m",
                            "cost_per_1k_input_tokens": 0.01,
                            "cost_per_1k_output_tokens": 0.02,
                        }
                    ],
                }
            ]
        },
        clock=clock,
    )
    router.invoke("hi")
    assert router.providers["a"].metrics.cost == pytest.approx(0.01 + 0.01)


def test_batch_and_abatch(make_router, scripted) -> None:
    router = make_router({"a": scripted(), "b": scripted()}, strategy="round_robin")
    out = router.batch(["1", "2", "3", "4"])
    assert [m.content for m in out] == ["ok"] * 4
    assert sorted(served_by(m) for m in out) == ["a", "a", "b", "b"]
    out = asyncio.run(router.abatch(["1", "2"], model="m"))
    assert len(out) == 2


def test_batch_return_exceptions_keeps_order(make_router, scripted) -> None:
    router = make_router({"a": scripted()})
    out = router.batch(["ok", None], return_exceptions=True)  # type: ignore[list-item]
    assert isinstance(out[0], AIMessage)
    assert isinstance(out[1], InvalidInputError)


async def test_cancellation_releases_slot_and_counts_nothing(clock: FakeClock) -> None:
    from router_middleware.testing import Hang

    model = ScriptedChatModel(script=[Hang(5)], clock=clock)
    router = ResilientRouter(
        {"a": model},
        {
            "providers": [provider_config("a", rate_limit={"max_concurrent": 1})],
            "circuit_breaker": {"half_open_max_calls": 1},
        },
        clock=clock,
    )
    task = asyncio.create_task(router.ainvoke("hi"))
    await asyncio.sleep(0.01)
    assert router.providers["a"].limiter.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    p = router.providers["a"]
    assert p.limiter.in_flight == 0
    assert p.metrics.cancelled == 1
    assert p.breaker.failures_in_window() == 0
    assert (await router.ainvoke("again")).content == "ok"


async def test_async_attempt_timeout_fails_over(clock: FakeClock) -> None:
    from router_middleware.testing import Hang

    hang = ScriptedChatModel(script=[Hang(5)], clock=clock)
    router = ResilientRouter(
        {"slow": hang, "fast": ScriptedChatModel(text="fast", clock=clock)},
        {
            "providers": [provider_config("slow", priority=1), provider_config("fast", priority=2)],
            "strategy": "cost_priority_round_robin",
            "timeouts": {"attempt_seconds": 0.05},
        },
        clock=clock,
    )
    message = await router.ainvoke("hi")
    assert served_by(message) == "fast"
    assert hang.calls == 1  # a silent provider is not retried
    assert router.providers["slow"].metrics.timeouts == 1


def test_sync_attempt_timeout_fails_over(clock: FakeClock) -> None:
    from router_middleware.testing import Hang

    hang = ScriptedChatModel(script=[Hang(5)], clock=clock)
    router = ResilientRouter(
        {"slow": hang, "fast": ScriptedChatModel(text="fast", clock=clock)},
        {
            "providers": [
                provider_config("slow", priority=1, timeouts={"attempt_seconds": 0.05}),
                provider_config("fast", priority=2),
            ],
            "strategy": "cost_priority_round_robin",
        },
        clock=clock,
    )
    try:
        assert served_by(router.invoke("hi")) == "fast"
        assert router.providers["slow"].metrics.timeouts == 1
    finally:
        hang.release_hangs()


def test_execute_returns_seed_response(make_router, scripted) -> None:
    router = make_router({"a": scripted(Reply("answer"))})
    response = router.execute({"prompt": "Explain", "model": "m"})
    assert (response.text, response.provider, response.model) == ("answer", "a", "m")
    assert (response.input_tokens, response.output_tokens) == (3, 2)
    assert asyncio.run(router.aexecute(LLMRequest(prompt="x"))).provider == "a"


def test_warns_once_when_a_provider_retries_on_its_own(clock: FakeClock) -> None:
    class SelfRetrying(ScriptedChatModel):
        max_retries: int = 2

    configs = {"providers": [provider_config("selfish-a"), provider_config("selfish-b")]}
    with pytest.warns(RuntimeWarning, match=r"'selfish-a' retries on its own.*max_retries=0"):
        ResilientRouter(
            {"selfish-a": SelfRetrying(clock=clock), "selfish-b": ScriptedChatModel(clock=clock)},
            configs,
            clock=clock,
        )
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same provider again: no second warning
        ResilientRouter(
            {"selfish-a": SelfRetrying(clock=clock), "selfish-b": ScriptedChatModel(clock=clock)},
            configs,
            clock=clock,
        )
    with pytest.warns(RuntimeWarning, match="'wrapped'"):
        ResilientRouter(
            {"wrapped": ScriptedChatModel(clock=clock).with_retry()},
            {"providers": [provider_config("wrapped")]},
            clock=clock,
        )


def test_call_options_reach_handlers_through_the_request(clock: FakeClock, call) -> None:
    seen: list[LLMRequest] = []

    def handler(request: LLMRequest) -> str:
        seen.append(request)
        return "ok"

    router = ResilientRouter({"h": handler}, {"providers": [provider_config("h")]}, clock=clock)
    # A handler has no **kwargs: the options ride in its request instead of crashing it.
    assert call(router, "hi", stop=["\n"], max_tokens=5).content == "ok"
    assert (seen[0].max_tokens, seen[0].metadata) == (5, {"stop": ["\n"]})


def test_request_options_reach_chat_models_as_kwargs(clock: FakeClock) -> None:
    received: list[dict[str, Any]] = []

    class Recording(ScriptedChatModel):
        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any):
            received.append(kw)
            return super()._generate(messages, stop, run_manager, **kw)

    router = ResilientRouter(
        {"a": Recording(clock=clock)}, {"providers": [provider_config("a")]}, clock=clock
    )
    router.execute(LLMRequest(prompt="hi", max_tokens=7, temperature=0.1))
    assert received == [{"max_tokens": 7, "temperature": 0.1}]
