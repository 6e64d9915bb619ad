"""Bad input of every kind gets a clear typed error (or passes through untouched), and the
router keeps serving afterwards."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from router_middleware import (
    AllProvidersFailedError,
    ConfigurationError,
    FakeClock,
    InvalidInputError,
    InvalidProviderOutputError,
    LLMRequest,
    NoProviderForModelError,
    ResilientRouter,
    RouterConfig,
)
from router_middleware.testing import ScriptedChatModel, http_error

from .conftest import provider_config


@pytest.fixture
def router(clock: FakeClock) -> ResilientRouter:
    return ResilientRouter(
        {"a": ScriptedChatModel(text="A", clock=clock)},
        {"providers": [provider_config("a")]},
        clock=clock,
    )


def keeps_serving(router: ResilientRouter) -> None:
    assert router.invoke("still there?").content == "A"
    assert asyncio.run(router.ainvoke("still there?")).content == "A"
    assert all(p.limiter.in_flight == 0 for p in router.providers.values())


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (None, "not NoneType"),
        (42, "not int"),
        (b"bytes", "not bytes"),
        ({"question": "hi"}, "not dict"),
        ([], "empty message list"),
        ([1, 2], "message 0 is a int"),
        (["ok", None], "message 1 is a NoneType"),
    ],
)
@pytest.mark.parametrize("path", ["invoke", "ainvoke", "stream", "astream", "batch"])
def test_malformed_input(router: ResilientRouter, value: Any, says: str, path: str) -> None:
    with pytest.raises(InvalidInputError, match=says):
        route(router, path, value)
    assert router.providers["a"].metrics.total_requests == 0  # rejected before routing
    keeps_serving(router)


def route(router: ResilientRouter, path: str, value: Any) -> None:
    if path == "invoke":
        router.invoke(value)
    elif path == "ainvoke":
        asyncio.run(router.ainvoke(value))
    elif path == "stream":
        list(router.stream(value))
    elif path == "astream":

        async def consume() -> None:
            async for _ in router.astream(value):
                pass

        asyncio.run(consume())
    else:
        router.batch([value])


def test_huge_input_is_routed_without_copies(clock: FakeClock) -> None:
    seen: list[str] = []

    def handler(request: LLMRequest) -> str:
        seen.append(request.prompt)
        return "read it"

    router = ResilientRouter({"h": handler}, {"providers": [provider_config("h")]}, clock=clock)
    huge = "x" * 20_000_000
    assert router.invoke(huge).content == "read it"
    assert seen[0] is huge


@pytest.mark.parametrize("model", ["gpt-9", "", "M"])
def test_unknown_models(router: ResilientRouter, model: str) -> None:
    with pytest.raises(NoProviderForModelError, match=repr(model)):
        router.invoke("hi", model=model)
    keeps_serving(router)


@pytest.mark.parametrize("bad", [42, None, {"txt": "typo"}, ["a", "list"], object()])
def test_handler_returning_the_wrong_type(clock: FakeClock, bad: Any) -> None:
    router = ResilientRouter(
        {"h": lambda request: bad, "a": ScriptedChatModel(text="A", clock=clock)},
        {"providers": [provider_config("h", priority=1), provider_config("a", priority=2)]},
        clock=clock,
    )
    with pytest.raises(InvalidProviderOutputError, match="provider 'h'") as info:
        router.invoke("hi", model="m")
    assert info.value.provider == "h"
    router.disable("h")
    keeps_serving(router)


@pytest.mark.parametrize(
    "bug", [KeyError("k"), TypeError("t"), ZeroDivisionError(), AssertionError()]
)
def test_non_provider_exceptions_pass_through_untouched(clock: FakeClock, bug: Exception) -> None:
    model = ScriptedChatModel(script=[bug, bug], text="A", clock=clock)
    backup = ScriptedChatModel(text="B", clock=clock)
    router = ResilientRouter(
        {"a": model, "b": backup},
        {
            "strategy": "cost_priority_round_robin",
            "providers": [provider_config("a", priority=1), provider_config("b", priority=2)],
        },
        clock=clock,
    )
    with pytest.raises(type(bug)) as info:
        router.invoke("hi")
    assert info.value is bug
    with pytest.raises(type(bug)):
        asyncio.run(router.ainvoke("hi"))
    assert backup.calls == 0  # not failed over: a bug is not an outage
    assert router.providers["a"].breaker.failures_in_window() == 0
    assert router.invoke("hi").content == "A"  # and it keeps serving


def test_a_listener_that_raises_does_not_break_routing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    model = ScriptedChatModel(script=[http_error(500)], text="A", clock=clock)
    router = ResilientRouter(
        {"a": model},
        {
            "providers": [provider_config("a")],
            "retry": {"attempts": 2, "initial_backoff_seconds": 0},
            "circuit_breaker": {"threshold": 1},
        },
        clock=clock,
    )
    seen: list[str] = []

    def broken(transition: Any) -> None:
        raise RuntimeError("listener bug")

    router.add_listener(broken)
    router.add_listener(lambda t: seen.append(t.to_state.value))
    with (
        caplog.at_level(logging.ERROR, logger="router_middleware"),
        pytest.raises(AllProvidersFailedError) as info,
    ):
        router.invoke("hi")
    assert "listener bug" not in str(info.value)
    assert seen == ["open"]  # later listeners still ran
    assert "listener" in caplog.text
    clock.advance(30)
    assert router.invoke("hi").content == "A"


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"providers": [{"name": "a", "models": []}]}, "providers.0.models"),
        (
            {
                "providers": [
                    {
                        "name": "a",
                        "models": [{"name": "m"}],
                        "rate_limit": {"requests_per_second": -1},
                    }
                ]
            },
            "providers.0.rate_limit.requests_per_second",
        ),
        (
            {
                "providers": [
                    {
                        "name": "a",
                        "models": [{"name": "m"}],
                        "rate_limit": {"requests_per_second": float("nan")},
                    }
                ]
            },
            "requests_per_second",
        ),
        ({"strategy": "fastest"}, "strategy: unknown strategy; expected"),
        ({"providers": [{"name": "a", "models": [{"name": "m"}], "colour": "red"}]}, "colour"),
        ({"retry": {"attempts": 0}}, "retry.attempts"),
        ({"circuit_breaker": {"reset_timeout_seconds": float("inf")}}, "reset_timeout_seconds"),
    ],
)
def test_bad_config_names_the_field(config: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        RouterConfig.coerce(config)


def test_runnable_without_config_and_config_without_runnable(clock: FakeClock) -> None:
    with pytest.raises(ConfigurationError) as info:
        ResilientRouter(
            {"ghost": ScriptedChatModel(clock=clock)},
            {"providers": [provider_config("a")]},
            clock=clock,
        )
    assert info.value.problems == [
        "providers.a: configured, but no runnable or handler was given",
        "'ghost': a runnable or handler was given, but no provider config",
    ]
