"""Defects of the previous version, each pinned by a test on every entry point.

Numbers refer to the defect list the reshaped core was written against. Each test runs
on ``invoke``, ``ainvoke``, ``stream`` and ``astream`` where the defect concerns them.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableLambda

from router_middleware import (
    AllProvidersFailedError,
    FakeClock,
    InvalidInputError,
    InvalidProviderOutputError,
    ResilientRouter,
    RouterError,
)
from router_middleware.testing import (
    Fail,
    HTTPStatusError,
    ScriptedChatModel,
    StreamBreak,
    http_error,
)

from .conftest import provider_config

MODES = ["invoke", "ainvoke", "stream", "astream"]
STREAM_MODES = ["stream", "astream"]
OUTCOMES = ("successful_requests", "failed_requests", "throttled", "rate_limited_requests")
OUTCOMES += ("cancelled",)


class Events(BaseCallbackHandler):
    """Collects the custom events of every run it is attached to."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:
        self.events.append((name, data))

    def named(self, name: str) -> list[Any]:
        return [data for n, data in self.events if n == name]


def _merge(chunks: list[Any]) -> Any:
    assert chunks, "the stream yielded nothing"
    final = chunks[0]
    for chunk in chunks[1:]:
        final = final + chunk
    return final


def run(router: ResilientRouter, mode: str, value: Any = "hi", **kwargs: Any) -> Any:
    """One request through ``mode``; a stream's chunks are merged into one message."""
    if mode == "invoke":
        return router.invoke(value, **kwargs)
    if mode == "ainvoke":
        return asyncio.run(router.ainvoke(value, **kwargs))
    if mode == "stream":
        return _merge(list(router.stream(value, **kwargs)))
    return asyncio.run(arun(router, mode, value, **kwargs))


async def arun(router: ResilientRouter, mode: str, value: Any = "hi", **kwargs: Any) -> Any:
    if mode == "ainvoke":
        return await router.ainvoke(value, **kwargs)
    if mode == "astream":
        return _merge([chunk async for chunk in router.astream(value, **kwargs)])
    raise AssertionError(mode)


def served_by(message: Any) -> str:
    return str(message.response_metadata["router"]["provider"])


def accounting_holds(router: ResilientRouter) -> None:
    for name, snap in router.metrics()["providers"].items():
        assert sum(snap[k] for k in OUTCOMES) == snap["total_requests"], (name, snap)


def two_providers(
    clock: FakeClock,
    a: Any,
    b: Any,
    a_extra: dict[str, Any] | None = None,
    **config: Any,
) -> ResilientRouter:
    config.setdefault("strategy", "cost_priority_round_robin")
    config.setdefault("retry", {"attempts": 3, "initial_backoff_seconds": 0.5, "jitter": False})
    providers = [
        provider_config("a", priority=1, **(a_extra or {})),
        provider_config("b", priority=2),
    ]
    return ResilientRouter({"a": a, "b": b}, {"providers": providers, **config}, clock=clock)


# -- (7) a breaker that opens on attempt 1 means fail over now, not back off ----------------


@pytest.mark.parametrize("mode", MODES)
def test_breaker_opened_by_attempt_one_fails_over_without_a_retry(mode: str) -> None:
    clock = FakeClock()
    a = ScriptedChatModel(script=[Fail(http_error(503))], clock=clock)
    b = ScriptedChatModel(text="from b", clock=clock)
    router = two_providers(clock, a, b, {"circuit_breaker": {"threshold": 1}})
    events = Events()
    message = run(router, mode, config={"callbacks": [events]})
    assert served_by(message) == "b"
    assert message.content == "from b"
    assert clock.slept == []  # no backoff was slept
    assert a.calls == 1
    metrics = router.provider("a").metrics
    assert metrics.retries == 0
    assert metrics.fallbacks == 1
    assert router.provider("a").circuit_breaker_state == "open"
    assert events.named("router_retry") == []
    assert [e["provider"] for e in events.named("router_failover")] == ["a"]
    assert events.named("router_breaker_change") == [
        {"provider": "a", "from": "closed", "to": "open"}
    ]
    trail = message.response_metadata["router"]["attempts"]
    assert [t["provider"] for t in trail] == ["a", "b"]


def test_breaker_opened_by_attempt_one_seen_through_astream_events() -> None:
    clock = FakeClock()
    a = ScriptedChatModel(script=[Fail(http_error(503))], clock=clock)
    b = ScriptedChatModel(text="from b", clock=clock)
    router = two_providers(clock, a, b, {"circuit_breaker": {"threshold": 1}})

    async def custom() -> list[str]:
        return [
            e["name"]
            async for e in router.astream_events("hi", version="v2")
            if e["event"] == "on_custom_event"
        ]

    names = asyncio.run(custom())
    assert names == ["router_breaker_change", "router_failover"]
    assert clock.slept == []
    assert router.provider("a").metrics.retries == 0


# -- (8) a Retry-After dated decades ahead parks a provider for max_cooldown_seconds -------

DATE_2099 = "Wed, 21 Oct 2099 07:28:00 GMT"


def _clear_by_reset(router: ResilientRouter) -> None:
    router.reset_breaker("a")


def _clear_by_toggle(router: ResilientRouter) -> None:
    router.disable("a")
    router.enable("a")


def _clear_by_reload(router: ResilientRouter) -> None:
    router.apply_config(router.router_config)


@pytest.mark.parametrize("clear", [_clear_by_reset, _clear_by_toggle, _clear_by_reload])
@pytest.mark.parametrize("mode", MODES)
def test_http_date_retry_after_is_capped_and_cleared_by_every_control(
    mode: str, clear: Callable[[ResilientRouter], None]
) -> None:
    clock = FakeClock()
    throttled = HTTPStatusError(429, {"retry-after": DATE_2099})
    a = ScriptedChatModel(script=[Fail(throttled)], text="from a", clock=clock)
    b = ScriptedChatModel(text="from b", clock=clock)
    router = two_providers(clock, a, b)

    assert served_by(run(router, mode)) == "b"
    snap = router.metrics()["providers"]["a"]
    cap = router.router_config.max_cooldown_seconds
    assert cap == 300
    assert 0 < snap["cooldown_seconds"] <= cap
    assert snap["cooldown_seconds"] == pytest.approx(cap)
    assert snap["cooldown_until"] == pytest.approx(time.time() + cap, abs=5)
    assert snap["throttled"] == 1

    # Still cooling down: a is skipped without a call.
    assert served_by(run(router, mode)) == "b"
    assert a.calls == 1

    clear(router)
    snap = router.metrics()["providers"]["a"]
    assert snap["cooldown_seconds"] == 0
    assert snap["cooldown_until"] is None
    message = run(router, mode)
    assert served_by(message) == "a"
    assert message.content == "from a"
    assert a.calls == 2


# -- (10) a custom event for every breaker transition --------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_breaker_transition_is_a_custom_event(mode: str) -> None:
    clock = FakeClock()
    a = ScriptedChatModel(
        script=[Fail(http_error(503)), Fail(http_error(503)), "back"], clock=clock
    )
    router = ResilientRouter(
        {"a": a},
        {
            "providers": [provider_config("a")],
            "circuit_breaker": {"threshold": 1, "reset_timeout_seconds": 10},
            "retry": {"attempts": 2, "initial_backoff_seconds": 0.01},
        },
        clock=clock,
    )
    heard: list[tuple[str, str]] = []
    router.add_listener(lambda t: heard.append((t.from_state.value, t.to_state.value)))
    events = Events()
    config = {"callbacks": [events]}

    with pytest.raises(AllProvidersFailedError):
        run(router, mode, config=config)  # closed -> open
    clock.advance(10)
    with pytest.raises(AllProvidersFailedError):
        run(router, mode, config=config)  # open -> half_open, the trial fails: -> open
    clock.advance(10)
    assert run(router, mode, config=config).content == "back"  # -> half_open -> closed

    expected = [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    changes = events.named("router_breaker_change")
    assert [(e["from"], e["to"]) for e in changes] == expected
    assert {e["provider"] for e in changes} == {"a"}
    assert heard == expected
    assert events.named("router_retry") == []


# -- (11) metrics -------------------------------------------------------------------------


class StallingClock(FakeClock):
    """A fake clock whose sleeps never end on their own: a backoff the caller abandons."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = threading.Event()
        self.asleeping: asyncio.Event | None = None

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.sleeping.set()
        raise KeyboardInterrupt  # the user pressed Ctrl-C during the backoff

    async def asleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.sleeping.set()
        if self.asleeping is not None:
            self.asleeping.set()
        await asyncio.Event().wait()


@pytest.mark.parametrize("mode", MODES)
def test_cancelled_during_backoff_still_counts_the_failed_attempt(mode: str) -> None:
    clock = StallingClock()
    a = ScriptedChatModel(script=[Fail(http_error(503))])
    b = ScriptedChatModel()
    router = two_providers(clock, a, b)

    if mode in ("invoke", "stream"):
        with pytest.raises(KeyboardInterrupt):
            run(router, mode)
    else:

        async def cancel_while_backing_off() -> None:
            clock.asleeping = asyncio.Event()
            task = asyncio.ensure_future(arun(router, mode))
            await asyncio.wait_for(clock.asleeping.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_while_backing_off())

    assert clock.slept == [0.5]
    m = router.provider("a").metrics
    assert m.total_requests == 1
    assert m.failed_requests == 1
    assert m.retries == 0
    assert router.provider("a").limiter.in_flight == 0
    assert b.calls == 0
    accounting_holds(router)


class GateClock(FakeClock):
    """The provider's latency is spent until ``gate`` opens (threads and tasks alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def sleep(self, seconds: float) -> None:
        assert self.gate.wait(10)

    async def asleep(self, seconds: float) -> None:
        deadline = time.monotonic() + 10
        while not self.gate.is_set():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.001)


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


async def _auntil(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.001)


@pytest.mark.parametrize("mode", MODES)
def test_waiting_for_a_slot_then_served_is_one_provider_request(mode: str) -> None:
    gate = GateClock()
    model = ScriptedChatModel(latency=1.0, clock=gate)
    router = ResilientRouter(
        {"a": model},
        {"providers": [provider_config("a", rate_limit={"max_concurrent": 1})]},
        clock=FakeClock(),
    )
    provider = router.provider("a")
    results: list[Any] = []

    if mode in ("invoke", "stream"):
        threads = [
            threading.Thread(target=lambda: results.append(run(router, mode))) for _ in range(2)
        ]
        threads[0].start()
        _until(lambda: model.in_flight == 1, "first call started")
        threads[1].start()
        _until(lambda: provider.slots.waiting == 1, "second request waiting for the slot")
        gate.gate.set()
        for t in threads:
            t.join(10)
    else:

        async def both() -> None:
            first = asyncio.ensure_future(arun(router, mode))
            await _auntil(lambda: model.in_flight == 1, "first call started")
            second = asyncio.ensure_future(arun(router, mode))
            await _auntil(lambda: provider.slots.waiting == 1, "second request waiting")
            gate.gate.set()
            results.extend(await asyncio.gather(first, second))

        asyncio.run(both())

    assert [served_by(r) for r in results] == ["a", "a"]
    assert model.calls == 2
    assert model.max_in_flight == 1
    snap = router.metrics()["providers"]["a"]
    assert snap["total_requests"] == 2
    assert snap["successful_requests"] == 2
    assert snap["rate_limited_requests"] == 0
    assert snap["in_flight"] == 0
    accounting_holds(router)


@pytest.mark.parametrize("mode", MODES)
def test_a_providers_own_429_is_throttled_not_failed(mode: str) -> None:
    clock = FakeClock()
    a = ScriptedChatModel(script=[Fail(http_error(429)), Fail(http_error(429))], clock=clock)
    b = ScriptedChatModel(text="from b", clock=clock)
    router = two_providers(
        clock, a, b, retry={"attempts": 2, "initial_backoff_seconds": 0.01, "jitter": False}
    )
    assert served_by(run(router, mode)) == "b"
    metrics = router.metrics()
    snap = metrics["providers"]["a"]
    assert snap["total_requests"] == 1
    assert snap["throttled"] == 1
    assert snap["failed_requests"] == 0
    assert snap["rate_limited_requests"] == 0
    assert snap["retries"] == 1
    assert metrics["totals"]["throttled"] == 1
    assert metrics["totals"]["successful_requests"] == 1
    accounting_holds(router)


# -- (12) input checked up front, output checked on the way back ---------------------------

MALFORMED = [
    pytest.param([("human",)], id="one-element-tuple"),
    pytest.param([{"role": "nonsense", "content": "x"}], id="unknown-role"),
    pytest.param([{"content": "no role"}], id="dict-without-role"),
    pytest.param([("human", "ok"), ("robot", "?")], id="unknown-role-in-tuple"),
]


@pytest.mark.parametrize("value", MALFORMED)
@pytest.mark.parametrize("mode", MODES)
def test_malformed_messages_are_rejected_before_any_provider_call(mode: str, value: Any) -> None:
    clock = FakeClock()
    a = ScriptedChatModel(clock=clock)
    b = ScriptedChatModel(clock=clock)
    router = two_providers(clock, a, b)
    with pytest.raises(InvalidInputError):
        run(router, mode, value)
    assert a.calls == b.calls == 0
    assert router.metrics()["totals"]["total_requests"] == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_model_that_is_not_a_str_is_invalid_input(mode: str) -> None:
    clock = FakeClock()
    a = ScriptedChatModel(clock=clock)
    router = ResilientRouter({"a": a}, {"providers": [provider_config("a")]}, clock=clock)
    with pytest.raises(InvalidInputError):
        run(router, mode, model=["a"])
    assert a.calls == 0


@pytest.mark.parametrize("mode", MODES)
def test_a_provider_answering_none_is_a_typed_error_naming_it(mode: str) -> None:
    clock = FakeClock()
    router = ResilientRouter(
        {"nothing": RunnableLambda(lambda x: None)},
        {"providers": [provider_config("nothing")]},
        clock=clock,
    )
    with pytest.raises(InvalidProviderOutputError) as info:
        run(router, mode)
    assert isinstance(info.value, RouterError)
    assert info.value.provider == "nothing"
    assert "nothing" in str(info.value)
    assert router.provider("nothing").limiter.in_flight == 0


def test_reloads_to_new_provider_names_keep_the_store_bounded() -> None:
    clock = FakeClock()
    stable = ScriptedChatModel(text="stable", clock=clock)

    def config(i: int) -> dict[str, Any]:
        return {
            "strategy": "cost_priority_round_robin",
            "retry": {"attempts": 1},
            "circuit_breaker": {"threshold": 1, "reset_timeout_seconds": 1000},
            "providers": [
                provider_config(
                    f"p{i}",
                    priority=1,
                    rate_limit={"requests_per_second": 100, "max_concurrent": 4},
                ),
                provider_config("stable", priority=2),
            ],
        }

    router = ResilientRouter(
        {"p0": ScriptedChatModel(clock=clock), "stable": stable}, config(0), clock=clock
    )
    peak = 0
    for i in range(1, 3001):
        # Every new provider leaves state behind: a bucket, a slot count, an open
        # breaker and a cool-down (a 503 with Retry-After), before it is dropped.
        model = ScriptedChatModel(script=[Fail(http_error(503, retry_after=30))], clock=clock)
        router.apply_config(config(i), {f"p{i}": model})
        assert served_by(router.invoke("hi")) == "stable"
        assert model.calls == 1
        peak = max(peak, len(router.store))
    assert router.provider(f"p{3000}").circuit_breaker_state == "open"
    assert set(router.providers) == {"p3000", "stable"}
    assert set(router.provider_metrics) == {"p3000", "stable"}
    assert peak <= 4 * 2
    assert len(router.store) <= 4 * 2


# -- (13) a client that retries on its own is worth a warning ------------------------------


class _Answering(BaseChatModel):
    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage("x"))])

    @property
    def _llm_type(self) -> str:
        return "answering"


class OpenAILike(_Answering):
    """Like ChatOpenAI: ``None`` means the SDK's default of 2 retries."""

    max_retries: int | None = None


class AnthropicLike(_Answering):
    """Like ChatAnthropic: 2 retries by default."""

    max_retries: int = 2


def _router_warnings(name: str, model: Any) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ResilientRouter({name: model}, {"providers": [provider_config(name)]})
    return [w for w in caught if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(OpenAILike(), id="openai-like-unset"),
        pytest.param(OpenAILike(max_retries=3), id="openai-like-3"),
        pytest.param(AnthropicLike(), id="anthropic-like-default"),
        pytest.param(AnthropicLike().bind(stop=["\n"]), id="anthropic-like-bound"),
    ],
)
def test_a_self_retrying_client_draws_one_warning(model: Any) -> None:
    name = f"self-retry-{uuid.uuid4().hex[:8]}"
    caught = _router_warnings(name, model)
    assert len(caught) == 1
    text = str(caught[0].message)
    assert repr(name) in text
    assert "max_retries=0" in text
    assert _router_warnings(name, model) == []  # once per provider name


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(OpenAILike(max_retries=0), id="openai-like-0"),
        pytest.param(AnthropicLike(max_retries=0), id="anthropic-like-0"),
        pytest.param(ScriptedChatModel(), id="no-max-retries-field"),
    ],
)
def test_a_client_that_does_not_retry_draws_no_warning(model: Any) -> None:
    assert _router_warnings(f"quiet-{uuid.uuid4().hex[:8]}", model) == []


# -- a classifier that raises leaves nothing held ------------------------------------------


class ClassifierBroke(Exception):
    pass


class Switchable:
    def __init__(self) -> None:
        self.broken = False
        self.seen: list[BaseException] = []

    def __call__(self, exc: BaseException) -> None:
        self.seen.append(exc)
        if self.broken:
            raise ClassifierBroke("classifier bug")


def _half_open_router(
    clock: FakeClock, second: Any
) -> tuple[ResilientRouter, ScriptedChatModel, Switchable]:
    classifier = Switchable()
    a = ScriptedChatModel(script=[Fail(http_error(503)), second, "back"], clock=clock)
    router = ResilientRouter(
        {"a": a},
        {
            "providers": [provider_config("a")],
            "circuit_breaker": {
                "threshold": 1,
                "reset_timeout_seconds": 10,
                "half_open_max_calls": 1,
            },
            "retry": {"attempts": 1},
            "max_wait_seconds": 0.2,
        },
        clock=clock,
        classifier=classifier,
    )
    return router, a, classifier


def _trial_permit_came_back(
    router: ResilientRouter, a: ScriptedChatModel, classifier: Switchable, mode: str
) -> None:
    provider = router.provider("a")
    assert provider.limiter.in_flight == 0
    assert provider.circuit_breaker_state == "half_open"
    classifier.broken = False
    message = run(router, mode)  # admitted as the (only) trial: the permit came back
    assert message.content == "back"
    assert a.calls == 3
    assert provider.circuit_breaker_state == "closed"
    assert provider.limiter.in_flight == 0
    accounting_holds(router)


@pytest.mark.parametrize("mode", MODES)
def test_a_raising_classifier_propagates_and_returns_the_trial_permit(mode: str) -> None:
    clock = FakeClock()
    router, a, classifier = _half_open_router(clock, Fail(http_error(503)))
    with pytest.raises(AllProvidersFailedError):
        run(router, mode)
    clock.advance(10)
    classifier.broken = True
    with pytest.raises(ClassifierBroke):
        run(router, mode)
    _trial_permit_came_back(router, a, classifier, mode)


@pytest.mark.parametrize("mode", STREAM_MODES)
def test_a_classifier_raising_after_the_first_chunk_returns_the_trial_permit(mode: str) -> None:
    clock = FakeClock()
    router, a, classifier = _half_open_router(
        clock, StreamBreak(after=1, error=ConnectionResetError("reset"))
    )
    with pytest.raises(AllProvidersFailedError):
        run(router, mode)
    clock.advance(10)
    classifier.broken = True
    got: list[Any] = []

    def consume() -> None:
        if mode == "stream":
            for chunk in router.stream("hi"):
                got.append(chunk)
        else:

            async def go() -> None:
                async for chunk in router.astream("hi"):
                    got.append(chunk)

            asyncio.run(go())

    with pytest.raises(ClassifierBroke):
        consume()
    assert len(got) == 1  # the first chunk reached the caller before the break
    assert isinstance(classifier.seen[-1], ConnectionResetError)
    _trial_permit_came_back(router, a, classifier, mode)


def test_a_raising_classifier_on_a_plain_failure_frees_the_slot() -> None:
    clock = FakeClock()
    classifier = Switchable()
    classifier.broken = True
    a = ScriptedChatModel(script=[Fail(http_error(503))], clock=clock)
    b = ScriptedChatModel(clock=clock)
    router = ResilientRouter(
        {"a": a, "b": b},
        {
            "strategy": "cost_priority_round_robin",
            "providers": [
                provider_config("a", priority=1, rate_limit={"max_concurrent": 1}),
                provider_config("b", priority=2),
            ],
        },
        clock=clock,
        classifier=classifier,
    )
    with pytest.raises(ClassifierBroke):
        router.invoke("hi")
    assert b.calls == 0  # the classifier's own error does not fail over
    assert router.provider("a").limiter.in_flight == 0
    classifier.broken = False
    assert served_by(router.invoke("hi")) == "a"
