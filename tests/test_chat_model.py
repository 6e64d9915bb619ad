"""RouterChatModel: LangChain's standard chat-model unit suite, then the facade's promises.

The facade must route exactly like its router (failover, ``response_metadata["router"]``,
no LLM run of its own), send its call options to whichever provider serves, turn
``timeout``/``max_retries`` into the request's limits, and merge a conservative profile.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.language_models import BaseChatModel, FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.tools import tool
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler
from langchain_core.tracers.schemas import Run
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel

from router_middleware import (
    DeadlineExceededError,
    FakeClock,
    ResilientRouter,
    RouterChatModel,
    RouterError,
)
from router_middleware.testing import (
    CallTools,
    Fail,
    Hang,
    Reply,
    Structured,
    ToolCall,
    ToolCallingChatModel,
    http_error,
)

MODES = ["sync", "async"]
USAGE = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}  # one fake answer's


def two_providers(
    a: Any,
    b: Any,
    *,
    models: tuple[tuple[str, ...], tuple[str, ...]] = (("chat",), ("chat",)),
    clock: FakeClock | None = None,
    **config: Any,
) -> ResilientRouter:
    """A router over ``a`` (tried first) and ``b``, each serving its ``models``."""
    providers = [
        {"name": name, "priority": i, "models": [{"name": m} for m in served]}
        for i, (name, served) in enumerate(zip("ab", models, strict=True), start=1)
    ]
    config.setdefault("retry", {"attempts": 1})
    return ResilientRouter(
        {"a": a, "b": b},
        {"providers": providers, "strategy": "cost_priority_round_robin", **config},
        clock=clock or FakeClock(),
    )


def fake(*script: Any, clock: FakeClock | None = None, **fields: Any) -> ToolCallingChatModel:
    return ToolCallingChatModel(script=list(script), clock=clock or FakeClock(), **fields)


def outage(**chat: Any) -> tuple[RouterChatModel, ToolCallingChatModel, ToolCallingChatModel]:
    """A facade whose first provider answers 503 once; the second answers ``"from b"``."""
    clock = FakeClock()
    a, b = fake(http_error(503), clock=clock), fake(clock=clock, text="from b")
    return RouterChatModel(router=two_providers(a, b, clock=clock), **chat), a, b


def call(runnable: Runnable[Any, Any], mode: str, value: Any, config: Any = None, **kw: Any) -> Any:
    if mode == "sync":
        return runnable.invoke(value, config, **kw)
    return asyncio.run(runnable.ainvoke(value, config, **kw))


def attempt_runs(tracer: RunCollectorCallbackHandler) -> list[Run]:
    """The provider runs under the one root: the router's chain run."""
    (root,) = tracer.traced_runs
    assert (root.name, root.run_type) == ("ResilientRouter", "chain")
    return root.child_runs


FAILED_OVER = {
    "provider": "b",
    "model": "chat",
    "attempts": [
        {"provider": "a", "model": "chat", "error": "HTTPStatusError"},
        {"provider": "b", "model": "chat", "error": None},
    ],
    "cost": {"input": 0.0, "output": 0.0, "total": 0.0, "currency": "USD"},
}


class City(BaseModel):
    """A city."""

    name: str


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


ADD_CALL = {"name": "add", "args": {"a": 1, "b": 2}, "id": "call_1", "type": "tool_call"}


# -- the standard suite ----------------------------------------------------------------


class TestRouterChatModelStandard(ChatModelUnitTests):
    """Every test of the suite runs and passes. Two skip themselves: ``test_serdes``
    (the suite's own skip: ``RouterChatModel`` is not lc-serializable, its ``router``
    holds live providers, breakers and limiters) and ``test_init_from_env`` (the suite's
    own skip when ``init_from_env_params`` is empty: the facade reads no environment
    variable; the router's ``LLM_ROUTER_*`` settings are ``RouterSettings``' business)."""

    @property
    def chat_model_class(self) -> type[RouterChatModel]:
        return RouterChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        # A fresh router per model: the suite builds many, and must not share their state.
        clock = FakeClock()
        router = two_providers(
            fake(clock=clock),
            fake(clock=clock),
            models=(("chat", "chat-large"), ("chat", "chat-large")),
            clock=clock,
            default_model="chat",
        )
        return {"router": router, "model": "chat"}

    # Stated, not inferred: both fakes bind tools, honour tool_choice and give structured
    # output by every method, json_mode included, with usage metadata; a per-call
    # model= routes to that logical model, which both serve.
    has_tool_calling = True
    has_tool_choice = True
    has_structured_output = True
    supports_json_mode = True
    returns_usage_metadata = True
    supports_model_override = True
    model_override_value = "chat-large"


# -- a chat model that routes like its router ------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_is_a_chat_model_that_fails_over_like_its_router(mode: str) -> None:
    chat, a, b = outage()
    assert isinstance(chat, BaseChatModel)
    assert isinstance(chat.router.as_chat_model(), RouterChatModel)
    answer = call(chat, mode, "hi")
    assert type(answer) is AIMessage
    assert answer.content == "from b"
    assert answer.response_metadata["router"] == FAILED_OVER
    assert (a.calls, b.calls) == (1, 1)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
def test_no_llm_run_of_its_own_and_usage_counted_once(mode: str) -> None:
    chat, _, _ = outage()
    tracer = RunCollectorCallbackHandler()
    config: RunnableConfig = {"callbacks": [tracer]}
    with get_usage_metadata_callback() as usage:
        if mode == "stream":
            text = "".join(c.text for c in chat.stream("hi", config))
        elif mode == "astream":

            async def consume() -> str:
                return "".join([c.text async for c in chat.astream("hi", config)])

            text = asyncio.run(consume())
        else:
            text = call(chat, "sync" if mode == "invoke" else "async", "hi", config).text
    assert text == "from b"
    attempts = attempt_runs(tracer)
    assert [(r.name, r.run_type) for r in attempts] == [("ToolCallingChatModel", "llm")] * 2
    assert [r.error is None for r in attempts] == [False, True]
    assert usage.usage_metadata == {"fake-tools": USAGE}


@pytest.mark.parametrize("mode", MODES)
def test_generate_routes_on_the_legacy_path(mode: str) -> None:
    chat, _, _ = outage()
    messages: list[list[BaseMessage]] = [[HumanMessage("hi")]]
    result = chat.generate(messages) if mode == "sync" else asyncio.run(chat.agenerate(messages))
    ((generation,),) = result.generations
    assert isinstance(generation, ChatGeneration)
    assert generation.text == "from b"
    assert generation.message.response_metadata["router"] == FAILED_OVER


@pytest.mark.parametrize("mode", MODES)
def test_generate_counts_usage_once(mode: str) -> None:
    chat, _, _ = outage()
    messages: list[list[BaseMessage]] = [[HumanMessage("hi")]]
    with get_usage_metadata_callback() as usage:
        chat.generate(messages) if mode == "sync" else asyncio.run(chat.agenerate(messages))
    assert usage.usage_metadata == {"fake-tools": USAGE}


# -- call options and limits -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_call_options_reach_every_provider_tried_and_per_call_ones_win(mode: str) -> None:
    chat, a, b = outage(temperature=0.2, max_tokens=50, stop=["END"])
    tracer = RunCollectorCallbackHandler()
    call(chat, mode, "hi", {"callbacks": [tracer]})
    assert [r.kwargs for r in (*a.requests, *b.requests)] == [
        {"temperature": 0.2, "max_tokens": 50}
    ] * 2  # stop is a chat model's own argument, not one of its kwargs: see the runs
    assert [r.extra["invocation_params"]["stop"] for r in attempt_runs(tracer)] == [["END"]] * 2

    tracer = RunCollectorCallbackHandler()
    call(chat, mode, "hi", {"callbacks": [tracer]}, temperature=0.9, stop=["STOP"])
    assert a.requests[-1].kwargs == {"temperature": 0.9, "max_tokens": 50}
    (run,) = attempt_runs(tracer)  # a serves now: its one 503 is spent
    assert run.extra["invocation_params"]["stop"] == ["STOP"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("max_retries", [0, 1])
def test_max_retries_caps_the_provider_calls(mode: str, max_retries: int) -> None:
    clock = FakeClock()
    a, b = fake(*[http_error(503)] * 3, clock=clock), fake(clock=clock)
    router = two_providers(a, b, clock=clock, retry={"attempts": 3, "initial_backoff_seconds": 0})
    chat = RouterChatModel(router=router, max_retries=max_retries)
    with pytest.raises(DeadlineExceededError) as caught:
        call(chat, mode, "hi")
    assert isinstance(caught.value, RouterError)
    assert caught.value.limit == f"max_attempts {max_retries + 1}"
    assert caught.value.attempts == max_retries + 1
    assert (a.calls, b.calls) == (max_retries + 1, 0)


@pytest.mark.parametrize("mode", MODES)
def test_timeout_ends_the_request_after_a_slow_failure(mode: str) -> None:
    clock = FakeClock()  # the 5 s of latency cost no real time
    a, b = fake(Fail(http_error(503), latency=5), clock=clock), fake(clock=clock)
    chat = RouterChatModel(router=two_providers(a, b, clock=clock), timeout=1)
    with pytest.raises(DeadlineExceededError) as caught:
        call(chat, mode, "hi")
    assert caught.value.limit == "deadline 1s"
    assert (a.calls, b.calls) == (1, 0)  # no time was left to fail over


@pytest.mark.parametrize("mode", MODES)
def test_timeout_cuts_a_hanging_call_short(mode: str) -> None:
    # Real time, kept tiny. A sync call is preempted only with an attempt timeout set
    # (README: the call runs in a worker thread); async calls are cancelled regardless.
    a, b = ToolCallingChatModel(script=[Hang(5)]), ToolCallingChatModel()
    providers = [
        {"name": "a", "priority": 1, "models": [{"name": "chat"}]},
        {"name": "b", "priority": 2, "models": [{"name": "chat"}]},
    ]
    if mode == "sync":
        providers[0]["timeouts"] = {"attempt_seconds": 30}
    router = ResilientRouter(
        {"a": a, "b": b}, {"providers": providers, "strategy": "cost_priority_round_robin"}
    )
    chat = RouterChatModel(router=router, timeout=0.05)
    started = time.monotonic()
    try:
        with pytest.raises(DeadlineExceededError, match=r"deadline 0\.05s"):
            call(chat, mode, "hi")
    finally:
        a.release_hangs()
    assert time.monotonic() - started < 2
    assert b.calls == 0


# -- streaming, tools, structured output -----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("streaming", [True, False])
def test_streaming_invoke_reads_the_providers_stream(mode: str, streaming: bool) -> None:
    clock = FakeClock()
    a, b = fake(http_error(503), clock=clock), fake(clock=clock, text="one two three")
    chat = RouterChatModel(router=two_providers(a, b, clock=clock), streaming=streaming)
    tracer = RunCollectorCallbackHandler()
    answer = call(chat, mode, "hi", {"callbacks": [tracer]})
    assert type(answer) is AIMessage
    assert answer.content == "one two three"
    assert answer.response_metadata["router"] == FAILED_OVER
    assert answer.usage_metadata == USAGE
    served = attempt_runs(tracer)[-1]
    tokens = [e for e in served.events if e["name"] == "new_token"]
    # Three words and the closing usage chunk come from the fake's _stream/_astream.
    assert len(tokens) == (4 if streaming else 0)


@pytest.mark.parametrize("mode", MODES)
def test_bind_tools_binds_on_every_provider_and_the_fallback_calls_them(mode: str) -> None:
    clock = FakeClock()
    a = fake(http_error(503), clock=clock, max_input_tokens=900)
    b = fake(CallTools([ToolCall("add", {"a": 1, "b": 2})]), clock=clock)
    chat = RouterChatModel(router=two_providers(a, b, clock=clock), temperature=0)
    bound = chat.bind_tools([add], tool_choice="any")
    assert isinstance(bound, RunnableBinding)
    assert isinstance(bound.bound, RouterChatModel)
    assert bound.bound.profile == chat.profile
    answer = call(bound, mode, "1 + 2?")
    assert answer.tool_calls == [ADD_CALL]
    assert answer.response_metadata["router"] == FAILED_OVER
    assert [(r.tools, r.tool_choice, r.kwargs) for r in (*a.requests, *b.requests)] == [
        (["add"], "any", {"temperature": 0})
    ] * 2
    assert chat.invoke("no tools").content == "ok"  # the facade itself binds nothing
    assert a.requests[-1].tools == []


@pytest.mark.parametrize("mode", MODES)
def test_streaming_invoke_assembles_the_tool_calls_of_the_chunks(mode: str) -> None:
    clock = FakeClock()
    a = fake(http_error(503), clock=clock)
    b = fake(CallTools([ToolCall("add", {"a": 1, "b": 2})], text="Adding."), clock=clock)
    chat = RouterChatModel(router=two_providers(a, b, clock=clock), streaming=True)
    answer = call(chat.bind_tools([add]), mode, "1 + 2?")
    assert type(answer) is AIMessage
    assert (answer.content, answer.tool_calls) == ("Adding.", [ADD_CALL])
    assert answer.response_metadata["router"] == FAILED_OVER


def invalid_then_oslo() -> tuple[RouterChatModel, ToolCallingChatModel, ToolCallingChatModel]:
    """A facade whose first provider answers what parses to no ``City``: its failure."""
    clock = FakeClock()
    a = fake(Reply('{"wrong": 1}'), clock=clock)
    b = fake(Structured({"name": "Oslo"}), clock=clock)
    return RouterChatModel(router=two_providers(a, b, clock=clock)), a, b


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", [None, "function_calling", "json_schema", "json_mode"])
def test_with_structured_output_fails_over_to_a_valid_object(mode: str, method: str | None) -> None:
    chat, a, b = invalid_then_oslo()
    structured = chat.with_structured_output(City, method=method)
    assert call(structured, mode, "Where?") == City(name="Oslo")
    assert (a.calls, b.calls) == (1, 1)


@pytest.mark.parametrize("mode", MODES)
def test_with_structured_output_include_raw_shows_the_failover(mode: str) -> None:
    structured = invalid_then_oslo()[0].with_structured_output(City, include_raw=True)
    answer = call(structured, mode, "Where?")
    assert (answer["parsed"], answer["parsing_error"]) == (City(name="Oslo"), None)
    assert [t["error"] for t in answer["raw"].response_metadata["router"]["attempts"]] == [
        "InvalidStructuredOutputError",
        None,
    ]


def test_with_structured_output_routes_to_the_facades_model() -> None:
    clock = FakeClock()
    a = fake(Structured({"name": "small"}), clock=clock)
    b = fake(Structured({"name": "large"}), clock=clock)
    router = two_providers(a, b, models=(("small",), ("large",)), clock=clock)
    structured = RouterChatModel(router=router, model="large").with_structured_output(City)
    assert structured.invoke("?") == City(name="large")
    assert (a.calls, b.calls) == (0, 1)


def test_with_structured_output_sends_the_facades_call_options() -> None:
    chat, _, b = outage(temperature=0.3, max_tokens=5)
    b.script.append(Structured({"name": "Oslo"}))
    assert chat.with_structured_output(City).invoke("?") == City(name="Oslo")
    # Set on a copy of the provider's model: a structured chain drops invoke kwargs.
    assert b.requests[-1].options == {"temperature": 0.3, "max_tokens": 5}


# -- tracing parameters, profile, logical models ---------------------------------------


def test_ls_params_report_the_model_and_the_call_options() -> None:
    router = two_providers(
        fake(), fake(), models=(("chat", "big"), ("chat",)), default_model="chat"
    )
    chat = RouterChatModel(router=router, temperature=0.2, max_tokens=7, stop=["END"])
    assert chat._get_ls_params() == {
        "ls_provider": "router-middleware",
        "ls_model_name": "chat",  # the router's default model
        "ls_model_type": "chat",
        "ls_temperature": 0.2,
        "ls_max_tokens": 7,
        "ls_stop": ["END"],
    }
    assert chat._get_ls_params(model="other")["ls_model_name"] == "other"
    assert chat._get_ls_params(stop=["X"])["ls_stop"] == ["X"]
    assert RouterChatModel(router=router, model="big")._get_ls_params() == {
        "ls_provider": "router-middleware",
        "ls_model_name": "big",
        "ls_model_type": "chat",
    }


def test_profile_is_what_every_serving_provider_satisfies() -> None:
    def profile(a: Any, b: Any, **chat: Any) -> Any:
        router = two_providers(a, b, models=(("chat", "small"), ("chat",)))
        return RouterChatModel(router=router, **chat).profile

    assert profile(fake(max_input_tokens=1000), fake(max_input_tokens=500)) == {
        "max_input_tokens": 500,
        "tool_calling": True,
        "structured_output": True,
    }
    mixed = profile(fake(supports_tools=False), fake(structured_output_methods=("json_mode",)))
    assert mixed == {"tool_calling": False, "structured_output": False}
    # Only the providers that serve the model count: b does not serve "small".
    assert profile(fake(max_input_tokens=1000), fake(max_input_tokens=500), model="small") == {
        "max_input_tokens": 1000,
        "tool_calling": True,
        "structured_output": True,
    }
    # A capability needs every provider's word for it; a provider without a profile
    # gives none, so only the known limit remains.
    half = profile(fake(max_input_tokens=1000), FakeListChatModel(responses=["x"]))
    assert half == {"max_input_tokens": 1000}
    assert profile(FakeListChatModel(responses=["x"]), FakeListChatModel(responses=["y"])) is None


@pytest.mark.parametrize("mode", MODES)
def test_model_name_routes_to_that_logical_model(mode: str) -> None:
    clock = FakeClock()
    a, b = fake(clock=clock, text="small one"), fake(clock=clock, text="large one")
    router = two_providers(a, b, models=(("small",), ("large",)), clock=clock)

    def served(chat: RouterChatModel, **kw: Any) -> tuple[str, str]:
        answer = call(chat, mode, "hi", **kw)
        return answer.content, answer.response_metadata["router"]["model"]

    assert served(RouterChatModel(router=router, model="large")) == ("large one", "large")
    assert served(RouterChatModel(router=router, model_name="small")) == ("small one", "small")
    small = RouterChatModel(router=router, model="small")
    assert served(small, model="large") == ("large one", "large")  # per call, it wins
    assert small.model_name == "small"
