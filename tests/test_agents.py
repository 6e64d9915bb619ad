"""Agents over the router, end to end and offline: ``create_agent`` (the router, its chat
model facade, ``RouterMiddleware``), LangGraph's ``create_react_agent``, summarization and
deepagents. In every test the first provider fails, so each answer comes after a failover.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import SummarizationMiddleware
from langchain.agents.structured_output import ToolStrategy
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import BaseModel

from router_middleware import (
    AllProvidersFailedError,
    FakeClock,
    IncompleteStreamError,
    ResilientRouter,
)
from router_middleware.agents import RouterMiddleware
from router_middleware.testing import (
    CallTools,
    StreamBreak,
    Structured,
    ToolCall,
    ToolCallingChatModel,
    http_error,
)

from .conftest import provider_config

KINDS = ["router", "chat"]  # the router itself, or router.as_chat_model()
MODES = ["sync", "async"]
EACH_KIND_AND_MODE = pytest.mark.parametrize(
    ("kind", "mode"), [(k, m) for k in KINDS for m in MODES]
)
REACT_DEPRECATED = "ignore::langgraph.warnings.LangGraphDeprecatedSinceV10"
DATA = {"city": "Oslo", "degrees": 4}
ANSWER = "It rains in Oslo."
ASK_WEATHER = CallTools([ToolCall("weather", {"city": "Oslo"})])
LOOP = [ASK_WEATHER, ANSWER]  # a tool call, then the final answer
OUTAGE = [http_error(503)] * 20
EXPECTED_TRAIL = [
    {"provider": "a", "model": "m", "error": "HTTPStatusError"},
    {"provider": "a", "model": "m", "error": "HTTPStatusError"},
    {"provider": "b", "model": "m", "error": None},
]


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    degrees: int


@dataclass
class Setup:
    """A router over a failing provider ``a`` (or the agent's own model) and ``b``."""

    first: ToolCallingChatModel
    backup: ToolCallingChatModel
    router: ResilientRouter
    ran: list[str] = field(default_factory=list)

    @property
    def tool(self) -> BaseTool:
        ran = self.ran

        @tool
        def weather(city: str) -> str:
            """The weather in a city."""
            ran.append(city)
            return f"rain in {city}"

        return weather

    def model(self, kind: str) -> Any:
        return self.router if kind == "router" else self.router.as_chat_model()

    def agent(self, kind: str, **kwargs: Any) -> Runnable[Any, Any]:
        """``create_agent`` over the router (or its chat model) with the weather tool."""
        return create_agent(model=self.model(kind), tools=[self.tool], **kwargs)


@pytest.fixture
def setup(clock: FakeClock) -> Callable[..., Setup]:
    """``setup(*backup_script, names=("a", "b"), first=None, config=None, **fake_options)``."""

    def make(
        *script: Any,
        names: tuple[str, str] = ("a", "b"),
        first: ToolCallingChatModel | None = None,
        config: dict[str, Any] | None = None,
        **options: Any,
    ) -> Setup:
        first = first or ToolCallingChatModel(script=list(OUTAGE), clock=clock, **options)
        backup = ToolCallingChatModel(script=list(script), clock=clock, **options)
        configs = [provider_config(name, priority=i) for i, name in enumerate(names, 1)]
        config = {"retry": {"attempts": 2, "initial_backoff_seconds": 0.01}, **(config or {})}
        router = ResilientRouter(
            dict(zip(names, (first, backup), strict=True)),
            {"providers": configs, **config},
            clock=clock,
        )
        return Setup(first, backup, router)

    return make


def ask(text: str = "Weather in Oslo?") -> dict[str, Any]:
    return {"messages": [HumanMessage(text)]}


async def run(agent: Runnable[Any, Any], value: Any, mode: str, **kwargs: Any) -> Any:
    if mode == "sync":
        return agent.invoke(value, **kwargs)
    return await agent.ainvoke(value, **kwargs)


async def stream(
    agent: Runnable[Any, Any], value: Any, mode: str, into: list[Any] | None = None, **kwargs: Any
) -> list[Any]:
    """What the agent streams, collected in ``into`` as it arrives (kept if it raises)."""
    items = [] if into is None else into
    if mode == "sync":
        items.extend(agent.stream(value, **kwargs))
    else:
        async for item in agent.astream(value, **kwargs):
            items.append(item)
    return items


def ai_messages(out: dict[str, Any]) -> list[AIMessage]:
    return [m for m in out["messages"] if isinstance(m, AIMessage)]


def assert_tool_loop(s: Setup, out: dict[str, Any]) -> None:
    """The tool ran once, the answer is the backup's, and the failover is on record."""
    calling, final = ai_messages(out)
    assert final.content == ANSWER
    assert s.ran == ["Oslo"]
    assert calling.tool_calls[0]["name"] == "weather"
    assert calling.response_metadata["router"]["attempts"] == EXPECTED_TRAIL
    assert final.response_metadata["router"]["provider"] == "b"
    second = s.backup.requests[1]
    assert isinstance(second.messages[-1], ToolMessage)
    assert second.messages[-1].content == "rain in Oslo"


# -- 1, 2: create_agent over the router and over its chat model --------------------------


@EACH_KIND_AND_MODE
async def test_create_agent_runs_a_tool_loop_after_a_failover(
    setup: Callable[..., Setup], kind: str, mode: str
) -> None:
    s = setup(*LOOP)
    out = await run(s.agent(kind), ask(), mode)
    assert_tool_loop(s, out)
    assert s.first.calls == 2  # the turn after the tool result sticks to the backup
    assert s.backup.requests[0].tools == ["weather"]


STRATEGIES = {
    # name: (response_format, fake options, the backup's structured answer, provider-native)
    "tool_strategy": (ToolStrategy(Weather), {}, CallTools([ToolCall("Weather", DATA)]), False),
    "auto_native": (Weather, {}, Structured(DATA), True),
    "auto_no_native": (
        Weather,
        {"structured_output_methods": ("function_calling",)},
        CallTools([ToolCall("Weather", DATA)]),
        False,
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
async def test_create_agent_gives_a_structured_response(
    setup: Callable[..., Setup], strategy: str, mode: str
) -> None:
    response_format, options, answer, native = STRATEGIES[strategy]
    s = setup(ASK_WEATHER, answer, **options)
    chat = s.router.as_chat_model()
    assert chat.profile is not None
    assert chat.profile.get("structured_output") is (not options)  # the fakes' methods
    agent = create_agent(model=chat, tools=[s.tool], response_format=response_format)
    out = await run(agent, ask(), mode)
    assert out["structured_response"] == Weather(**DATA)
    assert s.ran == ["Oslo"]
    assert ai_messages(out)[0].response_metadata["router"]["attempts"] == EXPECTED_TRAIL
    for request in s.backup.requests:
        if native:  # provider strategy: a response_format, no schema tool
            assert request.tools == ["weather"]
            assert request.kwargs["response_format"]["json_schema"]["name"] == "Weather"
        else:  # tool strategy: the schema is a tool, and a tool call is forced
            assert request.tools == ["weather", "Weather"]
            assert "response_format" not in request.kwargs


def test_structured_fake_answers_a_tool_strategy_with_the_schema_tool(
    setup: Callable[..., Setup],
) -> None:
    s = setup(Structured(DATA))
    agent = create_agent(
        model=s.router.as_chat_model(), tools=[s.tool], response_format=ToolStrategy(Weather)
    )
    assert agent.invoke(ask()).get("structured_response") == Weather(**DATA)


# -- 3: LangGraph's prebuilt agent ---------------------------------------------------------


@pytest.mark.filterwarnings(REACT_DEPRECATED)
@pytest.mark.parametrize("mode", MODES)
async def test_create_react_agent_loops_over_the_router(
    setup: Callable[..., Setup], mode: str
) -> None:
    from langgraph.prebuilt import create_react_agent

    s = setup(*LOOP)
    out = await run(create_react_agent(s.router, [s.tool]), ask(), mode)
    assert_tool_loop(s, out)


@pytest.mark.filterwarnings(REACT_DEPRECATED)
@pytest.mark.parametrize("mode", MODES)
async def test_create_react_agent_gives_a_structured_response(
    setup: Callable[..., Setup], mode: str
) -> None:
    from langgraph.prebuilt import create_react_agent

    s = setup(*LOOP, Structured(DATA))
    agent = create_react_agent(s.router.as_chat_model(), [s.tool], response_format=Weather)
    out = await run(agent, ask(), mode)
    assert_tool_loop(s, out)
    assert out["structured_response"] == Weather(**DATA)
    last = s.backup.requests[-1]  # the structured call, a separate one after the loop
    assert (last.tools, last.tool_choice) == (["Weather"], "Weather")


# -- 4: streaming --------------------------------------------------------------------------


@EACH_KIND_AND_MODE
async def test_stream_messages_gives_the_backups_tokens_and_tool_call_chunks(
    setup: Callable[..., Setup], kind: str, mode: str
) -> None:
    s = setup(*LOOP)
    items = await stream(s.agent(kind), ask(), mode, stream_mode="messages")
    chunks = [(m, meta) for m, meta in items if meta["langgraph_node"] == "model"]
    assert chunks
    assert all(isinstance(m, AIMessageChunk) for m, _ in chunks)
    assert {meta["router_provider"] for _, meta in chunks} == {"b"}  # nothing from "a"
    parts = [c for m, _ in chunks for c in m.tool_call_chunks]
    assert len(parts) >= 2  # the call's arguments arrive in pieces
    assert parts[0]["name"] == "weather"
    assert json.loads("".join(p["args"] for p in parts)) == {"city": "Oslo"}
    assert "".join(m.text for m, _ in chunks) == ANSWER
    assert (s.first.calls, s.ran) == (2, ["Oslo"])


@pytest.mark.parametrize("mode", MODES)
async def test_stream_messages_never_shows_a_broken_streams_tokens_twice(
    setup: Callable[..., Setup], clock: FakeClock, mode: str
) -> None:
    # The agent invokes the router, and LangGraph's messages handler makes the provider
    # stream inside that invoke: so the router routes it as a stream. Tokens that reached
    # the reader cannot be taken back, so a stream that breaks after them is an error, not
    # a failover that would print another answer after them.
    first = ToolCallingChatModel(
        script=[StreamBreak(after=2)], text="partial words here", clock=clock
    )
    s = setup(ANSWER, first=first)
    seen: list[Any] = []
    with pytest.raises(IncompleteStreamError):
        await stream(s.agent("router"), ask(), mode, stream_mode="messages", into=seen)
    assert "".join(m.text for m, _ in seen) == "partial words "
    assert s.backup.calls == 0


@pytest.mark.parametrize("mode", MODES)
async def test_stream_messages_fails_over_a_stream_that_broke_before_its_first_token(
    setup: Callable[..., Setup], clock: FakeClock, mode: str
) -> None:
    first = ToolCallingChatModel(script=[StreamBreak(after=0)] * 3, clock=clock)
    s = setup(ANSWER, first=first)
    items = await stream(s.agent("router"), ask(), mode, stream_mode="messages")
    assert "".join(m.text for m, _ in items) == ANSWER
    assert {meta["router_provider"] for _, meta in items} == {"b"}


@pytest.mark.parametrize("kind", KINDS)
async def test_astream_events_has_model_tokens_and_the_routers_events(
    setup: Callable[..., Setup], kind: str
) -> None:
    s = setup(*LOOP)
    agent = s.agent(kind)
    events = [e async for e in agent.astream_events(ask(), version="v2")]
    tokens = [e for e in events if e["event"] == "on_chat_model_stream"]
    assert "".join(e["data"]["chunk"].text for e in tokens) == ANSWER
    assert {e["metadata"]["router_provider"] for e in tokens} == {"b"}
    custom = [(e["name"], e["data"]["provider"]) for e in events if e["event"] == "on_custom_event"]
    assert ("router_retry", "a") in custom
    assert ("router_failover", "a") in custom


# -- 5: summarization and deepagents -------------------------------------------------------


def long_history(turns: int) -> dict[str, Any]:
    messages: list[Any] = []
    for i in range(turns):
        messages += [HumanMessage(f"question {i} " + "word " * 10), AIMessage(f"answer {i}")]
    return {"messages": [*messages, HumanMessage("And now?")]}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("turns", [1, 8])
async def test_summarization_reads_the_smallest_context_window(
    setup: Callable[..., Setup], clock: FakeClock, turns: int, mode: str
) -> None:
    # "a" takes 10k tokens, "b" 200: half of the merged 200 is what triggers a summary.
    first = ToolCallingChatModel(script=list(OUTAGE), clock=clock, max_input_tokens=10_000)
    s = setup("THE SUMMARY", "final", first=first, max_input_tokens=200)
    chat = s.router.as_chat_model()
    assert chat.profile is not None
    assert chat.profile.get("max_input_tokens") == 200
    summarize = SummarizationMiddleware(
        model=chat,
        trigger=("fraction", 0.5),
        keep=("messages", 2),
        summary_prompt="SUMMARIZE {messages}",
    )
    agent = create_agent(model=chat, tools=[s.tool], middleware=[summarize])
    out = await run(agent, long_history(turns), mode)
    first_prompt = s.backup.requests[0].messages[-1].text
    if turns == 1:  # ~30 tokens: no summary
        assert out["messages"][-1].content == "THE SUMMARY"  # the first answer is the reply
        assert not first_prompt.startswith("SUMMARIZE")
        return
    assert first_prompt.startswith("SUMMARIZE")
    assert "question 0" in first_prompt
    assert out["messages"][-1].content == "final"
    seen = [m.text for m in s.backup.requests[1].messages]
    assert any("THE SUMMARY" in text for text in seen)
    assert not any("question 0" in text for text in seen)  # replaced by the summary


@pytest.mark.parametrize("mode", MODES)
async def test_a_deep_agent_answers_over_the_router(setup: Callable[..., Setup], mode: str) -> None:
    from deepagents import create_deep_agent

    s = setup(*LOOP)
    agent = create_deep_agent(model=s.router.as_chat_model(), tools=[s.tool])
    out = await run(agent, ask(), mode)
    assert_tool_loop(s, out)
    tools = s.backup.requests[0].tools
    assert {"weather", "task"} <= set(tools)  # deepagents' own tools come along


# -- 6: RouterMiddleware -------------------------------------------------------------------


def middleware_setup(setup: Callable[..., Setup], *script: Any, **config: Any) -> Setup:
    """The router lists "agent" (the agent's own model, failing) and "backup"; the
    router's runnable for "agent" is a stand-in the middleware must never call."""
    s = setup(*script, names=("agent", "backup"), config=config)
    s.first.script[:] = ["the stand-in answered"] * 20
    return s


def own_agent(s: Setup, own: ToolCallingChatModel, **kwargs: Any) -> Runnable[Any, Any]:
    middleware = RouterMiddleware(s.router, agent_provider="agent")
    return create_agent(own, tools=[s.tool], middleware=[middleware], **kwargs)


def failing(clock: FakeClock, *script: Any) -> ToolCallingChatModel:
    return ToolCallingChatModel(script=list(script or OUTAGE), clock=clock)


@pytest.mark.parametrize("mode", MODES)
async def test_middleware_answers_from_the_backup_with_the_agents_tools(
    setup: Callable[..., Setup], clock: FakeClock, mode: str
) -> None:
    s = middleware_setup(setup, *LOOP)
    own = failing(clock)
    out = await run(own_agent(s, own), ask(), mode)
    calling, final = ai_messages(out)
    assert (final.content, s.ran) == (ANSWER, ["Oslo"])
    assert [a["provider"] for a in calling.response_metadata["router"]["attempts"]] == [
        "agent",
        "agent",
        "backup",
    ]
    assert (own.calls, s.first.calls) == (2, 0)
    assert [r.tools for r in s.backup.requests] == [["weather"], ["weather"]]
    assert isinstance(s.backup.requests[1].messages[-1], ToolMessage)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("response_format", ["native", "tool_strategy"])
async def test_middleware_keeps_the_structured_response(
    setup: Callable[..., Setup], clock: FakeClock, response_format: str, mode: str
) -> None:
    native = response_format == "native"
    answer = Structured(DATA) if native else CallTools([ToolCall("Weather", DATA)])
    s = middleware_setup(setup, ASK_WEATHER, answer)
    strategy = Weather if native else ToolStrategy(Weather)
    agent = own_agent(s, failing(clock), response_format=strategy)
    out = await run(agent, ask(), mode)
    assert out["structured_response"] == Weather(**DATA)
    assert ai_messages(out)[-1].response_metadata["router"]["provider"] == "backup"
    request = s.backup.requests[-1]
    assert ("response_format" in request.kwargs) is native
    assert ("Weather" in request.tools) is not native


@pytest.mark.parametrize("mode", MODES)
async def test_middleware_outage_raises_the_typed_error_and_adds_no_message(
    setup: Callable[..., Setup], clock: FakeClock, mode: str
) -> None:
    s = middleware_setup(setup, *OUTAGE)
    agent = own_agent(s, failing(clock), checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t"}}
    with pytest.raises(AllProvidersFailedError) as caught:
        await run(agent, ask(), mode, config=config)
    assert set(caught.value.errors) == {"agent", "backup"}
    assert caught.value.attempts == 4
    messages = agent.get_state(config).values["messages"]
    assert [type(m) for m in messages] == [HumanMessage]


@pytest.mark.parametrize("mode", MODES)
async def test_middleware_opens_the_agent_models_breaker(
    setup: Callable[..., Setup], clock: FakeClock, mode: str
) -> None:
    s = middleware_setup(setup, *["from the backup"] * 5, circuit_breaker={"threshold": 3})
    own = failing(clock)
    agent = own_agent(s, own)
    calls, states = [], []
    for _ in range(4):
        out = await run(agent, ask(), mode)
        assert out["messages"][-1].content == "from the backup"
        calls.append(own.calls)
        states.append(s.router.providers["agent"].circuit_breaker_state)
    # 2 tries, then the 3rd failure opens it (no retry on an open breaker), then skipped
    assert calls == [2, 3, 3, 3]
    assert states[1:] == ["open"] * 3
    assert s.first.calls == 0


# -- 7: usage ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async", "stream"])
@pytest.mark.parametrize("kind", [*KINDS, "middleware"])
async def test_usage_is_counted_once_over_a_run_with_a_failover(
    setup: Callable[..., Setup], clock: FakeClock, kind: str, mode: str
) -> None:
    if kind == "middleware":
        s = middleware_setup(setup, *LOOP)
        agent = own_agent(s, failing(clock))
    else:
        s = setup(*LOOP)
        agent = s.agent(kind)
    s.backup.usage = (7, 4)
    with get_usage_metadata_callback() as counted:
        if mode == "stream":
            await stream(agent, ask(), "sync", stream_mode="messages")
        else:
            await run(agent, ask(), mode)
    assert s.ran == ["Oslo"]
    assert counted.usage_metadata == {
        "fake-tools": {"input_tokens": 14, "output_tokens": 8, "total_tokens": 22}
    }
