"""The tool-calling fake: tool calls, structured output, recorded requests, agents."""

from __future__ import annotations

import functools
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import tool
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict

from router_middleware.testing import (
    CallTools,
    Fail,
    FakeClock,
    Reply,
    StreamBreak,
    Structured,
    ToolCall,
    ToolCallingChatModel,
    http_error,
)

MODES = ["sync", "async"]


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    degrees: int


class WeatherDict(TypedDict):
    """The weather in a city."""

    city: str
    degrees: int


WEATHER_SCHEMA: dict[str, Any] = {
    "title": "Weather",
    "description": "The weather in a city.",
    "type": "object",
    "properties": {"city": {"type": "string"}, "degrees": {"type": "integer"}},
    "required": ["city", "degrees"],
}
SCHEMAS = {"pydantic": Weather, "typeddict": WeatherDict, "json_schema_dict": WEATHER_SCHEMA}
DATA = {"city": "Oslo", "degrees": 4}
METHODS = ["function_calling", "json_schema", "json_mode"]


def get_weather(city: str) -> str:
    """The weather in ``city``."""
    return f"rain in {city}"


def get_time(city: str) -> str:
    """The time in ``city``."""
    return f"noon in {city}"


def fake(*script: Any, **kwargs: Any) -> ToolCallingChatModel:
    kwargs.setdefault("clock", FakeClock())
    return ToolCallingChatModel(script=list(script), **kwargs)


async def invoke(runnable: Runnable[Any, Any], value: Any, mode: str) -> Any:
    return runnable.invoke(value) if mode == "sync" else await runnable.ainvoke(value)


async def stream(runnable: Runnable[Any, Any], value: Any, mode: str) -> list[Any]:
    if mode == "sync":
        return list(runnable.stream(value))
    return [chunk async for chunk in runnable.astream(value)]


def total(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    return functools.reduce(lambda a, b: a + b, chunks)


TWO_CALLS = CallTools(
    [ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_time", {"city": "Rome"}, id="t-7")],
    text="Looking it up",
)


# -- tool calls ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_tool_call_answer_carries_the_calls(mode: str) -> None:
    model = fake(TWO_CALLS)
    message = await invoke(model.bind_tools([get_weather, get_time]), "weather?", mode)
    assert isinstance(message, AIMessage)
    assert message.content == "Looking it up"
    assert message.tool_calls == [
        {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_1", "type": "tool_call"},
        {"name": "get_time", "args": {"city": "Rome"}, "id": "t-7", "type": "tool_call"},
    ]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    assert message.response_metadata["model_name"] == "fake-tools"


@pytest.mark.parametrize("mode", MODES)
async def test_a_streamed_tool_call_adds_up_to_the_invoked_one(mode: str) -> None:
    tools = [get_weather, get_time]
    invoked = await invoke(fake(TWO_CALLS).bind_tools(tools), "weather?", mode)
    chunks = await stream(fake(TWO_CALLS).bind_tools(tools), "weather?", mode)
    summed = total(chunks)
    assert summed.tool_calls == invoked.tool_calls
    assert summed.content == invoked.content
    assert summed.response_metadata["finish_reason"] == "tool_calls"
    assert summed.usage_metadata == invoked.usage_metadata
    for index, call in enumerate(invoked.tool_calls):
        parts = [c for chunk in chunks for c in chunk.tool_call_chunks if c["index"] == index]
        assert len(parts) >= 2  # the args JSON arrives split
        assert (parts[0]["id"], parts[0]["name"]) == (call["id"], call["name"])
        assert all(p["args"] for p in parts)


@pytest.mark.parametrize("mode", MODES)
async def test_a_bare_tool_call_streams_no_text(mode: str) -> None:
    chunks = await stream(fake(CallTools([ToolCall("get_weather", {})])), "hi", mode)
    assert all(chunk.content == "" for chunk in chunks)
    assert total(chunks).tool_calls[0]["args"] == {}


def test_generated_ids_count_up_and_repeat_across_runs() -> None:
    def ids() -> list[str | None]:
        model = fake(TWO_CALLS, CallTools([ToolCall("get_weather", {"city": "Bergen"})]))
        bound = model.bind_tools([get_weather, get_time])
        return [call["id"] for _ in range(2) for call in bound.invoke("x").tool_calls]

    assert ids() == ["call_1", "t-7", "call_2"]
    assert ids() == ids()


@pytest.mark.parametrize(
    "choice", [None, "auto", "any", "required", "none", "get_time", {"type": "function"}]
)
def test_tool_choice_accepts_what_langchain_accepts(choice: Any) -> None:
    model = fake()
    model.bind_tools([get_weather, get_time], tool_choice=choice).invoke("x")
    assert model.requests[0].tool_choice == choice


def test_tool_choice_true_needs_exactly_one_tool() -> None:
    model = fake()
    model.bind_tools([get_weather], tool_choice=True).invoke("x")
    assert model.requests[0].tool_choice is True
    with pytest.raises(ValueError, match="True"):
        model.bind_tools([get_weather, get_time], tool_choice=True)


@pytest.mark.parametrize("choice", ["get_news", False, 3])
def test_tool_choice_outside_the_tools_is_refused_by_name(choice: Any) -> None:
    with pytest.raises(ValueError, match=f"tool_choice {choice!r}"):
        fake().bind_tools([get_weather], tool_choice=choice)


def test_a_provider_without_tool_calling_refuses_tools() -> None:
    model = fake(supports_tools=False)
    with pytest.raises(NotImplementedError, match="tool calling"):
        model.bind_tools([get_weather])
    with pytest.raises(NotImplementedError):
        model.with_structured_output(Weather)
    assert model.profile is not None
    assert model.profile.get("tool_calling") is False


def test_the_profile_says_what_the_fake_supports() -> None:
    assert fake(max_input_tokens=1000).profile == {
        "tool_calling": True,
        "structured_output": True,
        "max_input_tokens": 1000,
    }
    no_schema = fake(structured_output_methods=("function_calling",)).profile
    assert no_schema is not None
    assert no_schema.get("structured_output") is False
    assert "max_input_tokens" not in no_schema


# -- structured output --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(SCHEMAS))
@pytest.mark.parametrize("method", METHODS)
async def test_structured_answers_every_method_and_schema(
    method: str, kind: str, mode: str
) -> None:
    model = fake(Structured(DATA))
    structured = model.with_structured_output(SCHEMAS[kind], method=method)
    parsed = await invoke(structured, "weather in Oslo?", mode)
    assert parsed == (Weather(**DATA) if kind == "pydantic" else DATA)
    request = model.requests[0]
    if method == "function_calling":
        name = "WeatherDict" if kind == "typeddict" else "Weather"
        assert (request.tools, request.tool_choice) == ([name], name)
    else:
        assert request.tools == []
        expected_type = "json_schema" if method == "json_schema" else "json_object"
        assert request.kwargs["response_format"]["type"] == expected_type


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
async def test_structured_output_streams_to_the_same_answer(method: str, mode: str) -> None:
    structured = fake(Structured(DATA)).with_structured_output(WEATHER_SCHEMA, method=method)
    chunks = await stream(structured, "weather?", mode)
    assert chunks[-1] == DATA


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", METHODS)
async def test_include_raw_gives_raw_parsed_and_no_error(method: str, mode: str) -> None:
    structured = fake(Structured(DATA)).with_structured_output(
        Weather, method=method, include_raw=True
    )
    out = await invoke(structured, "weather?", mode)
    assert set(out) == {"raw", "parsed", "parsing_error"}
    assert isinstance(out["raw"], AIMessage)
    assert (out["parsed"], out["parsing_error"]) == (Weather(**DATA), None)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["json_schema", "json_mode"])
@pytest.mark.parametrize("bad", [Reply("not json"), Reply('{"wrong": 1}'), Structured({"x": 1})])
async def test_a_bad_json_answer_is_a_parse_error(method: str, bad: Any, mode: str) -> None:
    with pytest.raises(OutputParserException):
        await invoke(fake(bad).with_structured_output(Weather, method=method), "?", mode)
    structured = fake(bad).with_structured_output(Weather, method=method, include_raw=True)
    out = await invoke(structured, "?", mode)
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], OutputParserException)


@pytest.mark.parametrize("mode", MODES)
async def test_a_bad_tool_call_is_a_validation_error(mode: str) -> None:
    # LangChain's PydanticToolsParser lets pydantic's own error through.
    with pytest.raises(ValidationError):
        await invoke(fake(Structured({"wrong": 1})).with_structured_output(Weather), "?", mode)
    structured = fake(Structured({"wrong": 1})).with_structured_output(Weather, include_raw=True)
    out = await invoke(structured, "?", mode)
    assert out["parsed"] is None
    assert isinstance(out["parsing_error"], ValidationError)


def test_a_text_answer_to_function_calling_parses_to_none() -> None:
    # As with real providers: no tool call, nothing to parse (and no error).
    assert fake(Reply('{"city": "Oslo"}')).with_structured_output(Weather).invoke("?") is None


@pytest.mark.parametrize("method", METHODS)
def test_a_method_the_provider_lacks_is_refused_by_name(method: str) -> None:
    others = tuple(m for m in METHODS if m != method)
    with pytest.raises(ValueError, match=method):
        fake(structured_output_methods=others).with_structured_output(Weather, method=method)


def test_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="'xml'"):
        fake().with_structured_output(Weather, method="xml")


def test_json_mode_needs_no_schema() -> None:
    assert fake(Structured(DATA)).with_structured_output(None, method="json_mode").invoke("?") == (
        DATA
    )
    with pytest.raises(ValueError, match="needs a schema"):
        fake().with_structured_output(None)


# -- requests and faults ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_each_request_is_recorded_as_received(mode: str) -> None:
    model = fake("first", "second")
    bound = model.bind_tools(
        [get_weather, get_time], tool_choice="any", parallel_tool_calls=False, strict=True
    )
    await invoke(bound, "hello", mode)
    history = [HumanMessage("hello"), AIMessage("first"), HumanMessage("and?")]
    await stream(model.bind(temperature=0.5), history, mode)
    tooled, plain = model.requests
    assert (tooled.tools, tooled.tool_choice) == (["get_weather", "get_time"], "any")
    assert tooled.kwargs == {"parallel_tool_calls": False, "strict": True}
    assert [m.content for m in tooled.messages] == ["hello"]
    assert (plain.tools, plain.tool_choice, plain.kwargs) == ([], None, {"temperature": 0.5})
    assert [m.content for m in plain.messages] == ["hello", "first", "and?"]


def test_strict_tools_are_formatted_strict() -> None:
    model = fake()
    model.with_structured_output(Weather, strict=True).invoke("?")
    assert model.requests[0].kwargs == {"strict": True}


@pytest.mark.parametrize("mode", MODES)
async def test_faults_still_come_first(mode: str) -> None:
    model = fake(Fail(http_error(503)), CallTools([ToolCall("get_weather", {"city": "Oslo"})]))
    bound = model.bind_tools([get_weather])
    with pytest.raises(Exception, match="HTTP 503"):
        await invoke(bound, "weather?", mode)
    assert (await invoke(bound, "weather?", mode)).tool_calls[0]["name"] == "get_weather"
    assert (model.calls, len(model.requests), model.in_flight) == (2, 2, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_broken_stream_still_breaks(mode: str) -> None:
    model = fake(StreamBreak(after=1), text="one two three")
    with pytest.raises(ConnectionResetError):
        await stream(model.bind_tools([get_weather]), "hi", mode)
    assert model.in_flight == 0


@pytest.mark.parametrize("mode", MODES)
async def test_chunk_latency_paces_tool_call_chunks(mode: str) -> None:
    clock = FakeClock()
    call = CallTools([ToolCall("get_weather", {"city": "Oslo"})])
    model = fake(call, clock=clock, chunk_latency=0.5)
    chunks = await stream(model.bind_tools([get_weather]), "hi", mode)
    assert len(chunks) == 3  # two halves of the call, then usage
    assert clock.now() == pytest.approx(0.5)  # paced between the pieces, not before the first


# -- a real agent -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_agent_calls_the_tool_then_answers(mode: str) -> None:
    ran: list[str] = []

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"rain in {city}"

    model = fake(CallTools([ToolCall("weather", {"city": "Oslo"})]), "It rains in Oslo.")
    agent = create_agent(model=model, tools=[weather])
    out = await invoke(agent, {"messages": [HumanMessage("Weather in Oslo?")]}, mode)
    assert out["messages"][-1].content == "It rains in Oslo."
    assert ran == ["Oslo"]
    second = model.requests[1]
    assert second.tools == ["weather"]
    assert isinstance(second.messages[-1], ToolMessage)
    assert second.messages[-1].content == "rain in Oslo"
    assert second.messages[-1].tool_call_id == "call_1"
