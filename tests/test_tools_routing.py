"""Derived routers end to end: tools bound and structured output over the root's providers.

Each behaviour runs through every entry point (invoke, ainvoke, stream, astream) and is
measured in the provider fakes (what each one received, how often it was called), not
only in the router's own counters.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import re
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.callbacks import get_usage_metadata_callback
from langchain_core.messages import AIMessage, BaseMessageChunk, HumanMessage, ToolMessage
from langchain_core.tracers.context import collect_runs
from langchain_core.tracers.schemas import Run
from pydantic import PrivateAttr

from router_middleware import (
    AllProvidersFailedError,
    ErrorKind,
    FakeClock,
    InvalidStructuredOutputError,
    NoProviderAvailableError,
    default_classifier,
)
from router_middleware.testing import (
    CallTools,
    Reply,
    Structured,
    ToolCall,
    ToolCallingChatModel,
    http_error,
)

from .conftest import provider_config
from .test_testing_tools import (
    DATA,
    METHODS,
    SCHEMAS,
    WEATHER_SCHEMA,
    Weather,
    get_time,
    get_weather,
)

# -- helpers ------------------------------------------------------------------------------

ENTRIES = ["invoke", "ainvoke", "stream", "astream"]


class Entry:
    """One entry point of a router; ``answer`` is what the caller ends up with."""

    def __init__(self, name: str) -> None:
        self.name = name

    def items(self, runnable: Any, value: Any = "hi", **kwargs: Any) -> list[Any]:
        """What the entry point gives: the one answer, or every streamed item."""
        if self.name == "invoke":
            return [runnable.invoke(value, **kwargs)]
        if self.name == "stream":
            return list(runnable.stream(value, **kwargs))

        async def run() -> list[Any]:
            if self.name == "ainvoke":
                return [await runnable.ainvoke(value, **kwargs)]
            return [item async for item in runnable.astream(value, **kwargs)]

        return asyncio.run(run())

    def answer(self, runnable: Any, value: Any = "hi", **kwargs: Any) -> Any:
        """The message (streamed chunks summed) or the one structured object."""
        items = self.items(runnable, value, **kwargs)
        if all(isinstance(item, BaseMessageChunk) for item in items):
            return functools.reduce(operator.add, items)
        assert len(items) == 1, f"{self.name} gave {len(items)} items: {items}"
        return items[0]


@pytest.fixture(params=ENTRIES)
def entry(request: pytest.FixtureRequest) -> Entry:
    """Every behaviour must hold on invoke, ainvoke, stream and astream."""
    return Entry(request.param)


STREAMS = pytest.mark.parametrize("entry", ["stream", "astream"], indirect=True)


@pytest.fixture
def fake(clock: FakeClock) -> Callable[..., ToolCallingChatModel]:
    def make(*script: Any, cls: type = ToolCallingChatModel, **kwargs: Any) -> Any:
        return cls(script=list(script), clock=clock, **kwargs)

    return make


def served_by(message: Any) -> str:
    return str(message.response_metadata["router"]["provider"])


def ranked(*names: str, **extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Provider configs in priority order, with ``extra`` fields per provider name."""
    return [provider_config(n, priority=i, **extra.get(n, {})) for i, n in enumerate(names, 1)]


WEATHER_CALL = {
    "name": "get_weather",
    "args": {"city": "Oslo"},
    "id": "call_w",
    "type": "tool_call",
}


def calls_weather() -> CallTools:
    return CallTools([ToolCall("get_weather", {"city": "Oslo"}, id="call_w")])


BAD = Reply('{"wrong": 1}')
"""A structured answer that fits no method: no tool call, and JSON that does not validate."""

DICT_CHOICE = {"type": "function", "function": {"name": "get_weather"}}


class CountingBinds(ToolCallingChatModel):
    """Counts its ``bind_tools`` calls (the router must bind once per shape, not per call)."""

    _binds: int = PrivateAttr(default=0)

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        self._binds += 1
        return super().bind_tools(tools, **kwargs)


# -- 1. bind_tools: failover, tool_choice, the cache ----------------------------------------


@pytest.mark.parametrize(
    ("tool_choice", "received"),
    [
        (None, None),
        ("auto", "auto"),
        ("none", "none"),
        ("any", "any"),
        ("required", "any"),
        ("get_weather", "get_weather"),
        (True, "get_weather"),
        pytest.param(DICT_CHOICE, DICT_CHOICE),
    ],
)
def test_tools_fail_over_with_tools_and_choice_bound(
    make_router, fake, entry, tool_choice, received
) -> None:
    a, b = fake(http_error(503), http_error(503)), fake(calls_weather())
    router = make_router({"a": a, "b": b})
    message = entry.answer(router.bind_tools([get_weather], tool_choice=tool_choice))
    assert served_by(message) == "b"
    assert message.tool_calls == [WEATHER_CALL]
    assert (a.calls, b.calls) == (2, 1)  # retried once on a, as configured
    for record in [*a.requests, *b.requests]:
        assert (record.tools, record.tool_choice) == (["get_weather"], received)


@pytest.mark.parametrize(
    ("tools", "tool_choice", "says"),
    [
        ([get_weather], "get_tide", "'get_tide'"),
        ([get_weather, get_time], True, "exactly one tool"),
    ],
)
def test_impossible_tool_choice_fails_at_bind_time(
    make_router, fake, tools, tool_choice, says
) -> None:
    a = fake()
    router = make_router({"a": a})
    with pytest.raises(ValueError, match=says):
        router.bind_tools(tools, tool_choice=tool_choice)
    assert a.requests == []


def test_binding_again_replaces_the_tools(make_router, fake, entry) -> None:
    a = fake()
    router = make_router({"a": a})
    rebound = router.bind_tools([get_weather], tool_choice="any").bind_tools([get_time])
    assert rebound is router.bind_tools([get_time])
    entry.answer(rebound)
    assert (a.requests[0].tools, a.requests[0].tool_choice) == (["get_time"], None)


def test_tools_are_bound_once_per_provider_and_shape(make_router, fake, entry) -> None:
    a, b = fake(cls=CountingBinds), fake(cls=CountingBinds)
    router = make_router({"a": a, "b": b})
    tools = router.bind_tools([get_weather])
    assert router.bind_tools([get_weather]) is tools
    assert tools.bind_tools([get_weather]) is tools
    spec = {"type": "function", "function": {"name": "get_tide", "parameters": {}}}
    assert router.bind_tools([dict(spec)]) is router.bind_tools([dict(spec)])  # by value
    for _ in range(3):
        entry.answer(router.bind_tools([get_weather]))
    assert (a._binds, b._binds, a.calls) == (2, 2, 3)  # get_weather's, the spec's
    router.bind_tools([get_weather], tool_choice="any")  # another shape: bound again
    assert (a._binds, b._binds) == (3, 3)


# -- 2. streaming tool calls ---------------------------------------------------------------


@STREAMS
def test_streamed_tool_calls_add_up_to_the_invoked_ones(make_router, fake, entry) -> None:
    a = fake(calls_weather(), calls_weather())
    router = make_router({"a": a})
    tools = router.bind_tools([get_weather])
    chunks = entry.items(tools)
    assert any(chunk.tool_call_chunks for chunk in chunks)
    assert chunks[-1].usage_metadata["total_tokens"] == 5
    merged = functools.reduce(operator.add, chunks)
    assert merged.tool_calls == tools.invoke("hi").tool_calls == [WEATHER_CALL]
    tokens = router.metrics()["providers"]["a"]
    assert (tokens["input_tokens"], tokens["output_tokens"]) == (6, 4)  # 2 calls of (3, 2)


# -- 3. capabilities ----------------------------------------------------------------------


def test_a_provider_without_tools_is_skipped_only_for_tools(make_router, fake, entry) -> None:
    a, b = fake(supports_tools=False), fake(calls_weather())
    router = make_router({"a": a, "b": b})
    message = entry.answer(router.bind_tools([get_weather]))
    assert (served_by(message), a.calls, b.requests[0].tools) == ("b", 0, ["get_weather"])
    assert served_by(entry.answer(router)) == "a"  # the plain router still uses it
    assert a.calls == 1


@pytest.mark.parametrize(
    ("capabilities", "why"),
    [
        ({}, "its model profile says it cannot call tools"),
        ({"tools": True}, "it cannot bind tools"),  # its bind_tools: NotImplementedError
    ],
)
def test_no_provider_for_tools_says_why(make_router, fake, entry, capabilities, why) -> None:
    a = fake(supports_tools=False)
    router = make_router({"a": a}, ranked("a", a={"capabilities": capabilities}))
    with pytest.raises(NoProviderAvailableError) as info:
        entry.answer(router.bind_tools([get_weather]))
    assert info.value.reasons == {"a": why}
    assert a.calls == 0


@pytest.mark.parametrize(
    ("capabilities", "bind", "excluded"),
    [
        ({"tools": False}, {}, True),
        ({"tool_choice": False}, {"tool_choice": "any"}, True),
        ({"tool_choice": False}, {"tool_choice": "required"}, True),
        ({"tool_choice": False}, {"tool_choice": "get_weather"}, True),
        ({"tool_choice": False}, {"tool_choice": True}, True),
        ({"tool_choice": False}, {"tool_choice": "auto"}, False),
        ({"tool_choice": False}, {}, False),
        ({"strict": False}, {"strict": True}, True),
        ({"strict": False}, {}, False),
        ({"parallel_tool_calls": False}, {"parallel_tool_calls": False}, True),
    ],
)
def test_configured_capabilities_exclude_providers(
    make_router, fake, entry, capabilities, bind, excluded
) -> None:
    a, b = fake(calls_weather()), fake(calls_weather())
    router = make_router({"a": a, "b": b}, ranked("a", "b", a={"capabilities": capabilities}))
    message = entry.answer(router.bind_tools([get_weather], **bind))
    assert served_by(message) == ("b" if excluded else "a")
    assert a.calls == (0 if excluded else 1)
    assert served_by(entry.answer(router)) == "a"


FUNCTION_CALLING = {"method": "function_calling"}


@pytest.mark.parametrize(
    ("capabilities", "methods", "options", "excluded"),
    [
        ({"structured_output": ["function_calling"]}, None, {"method": "json_schema"}, True),
        ({"structured_output": ["function_calling"]}, None, FUNCTION_CALLING, False),
        ({"structured_output": []}, None, {}, True),
        # Its with_structured_output raises ValueError; its profile says no native output.
        ({}, ("function_calling",), {"method": "json_mode"}, True),
        ({}, ("function_calling",), {"method": "json_schema"}, True),
        ({}, ("function_calling",), FUNCTION_CALLING, False),
        pytest.param({"tools": False}, None, FUNCTION_CALLING, True),
        pytest.param(
            {"strict": False},
            None,
            {**FUNCTION_CALLING, "strict": True},
            True,
        ),
    ],
)
def test_structured_methods_exclude_providers(
    make_router, fake, entry, capabilities, methods, options, excluded
) -> None:
    a = fake(Structured(DATA), **({"structured_output_methods": methods} if methods else {}))
    b = fake(Structured(DATA))
    router = make_router({"a": a, "b": b}, ranked("a", "b", a={"capabilities": capabilities}))
    assert entry.answer(router.with_structured_output(Weather, **options)) == Weather(**DATA)
    assert (a.calls, b.calls) == ((0, 1) if excluded else (1, 0))


# -- 4. structured output -----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_each_method_and_schema_kind_gives_a_valid_object(
    make_router, fake, entry, method, kind
) -> None:
    a = fake(Structured(DATA))
    router = make_router({"a": a})
    result = entry.answer(router.with_structured_output(SCHEMAS[kind], method=method))
    assert result == (Weather(**DATA) if kind == "pydantic" else DATA)
    # The provider's own with_structured_output built the method: a forced tool, or a format.
    record = a.requests[0]
    name = "WeatherDict" if kind == "typeddict" else "Weather"
    built = {
        "function_calling": (name, None),
        "json_schema": (None, "json_schema"),
        "json_mode": (None, "json_object"),
    }
    assert (record.tool_choice, record.kwargs.get("response_format", {}).get("type")) == (
        built[method]
    )


@pytest.mark.parametrize("method", METHODS)
def test_an_invalid_answer_fails_over_without_retry(make_router, fake, entry, method) -> None:
    a, b = fake(BAD), fake(Structured(DATA))
    router = make_router({"a": a, "b": b})  # 2 tries per provider: not for invalid answers
    assert entry.answer(router.with_structured_output(Weather, method=method)) == Weather(**DATA)
    assert (a.calls, b.calls) == (1, 1)


def test_every_answer_invalid_names_each_provider_and_the_schema(make_router, fake, entry) -> None:
    a, b = fake(BAD), fake(Reply("not json"))
    router = make_router({"a": a, "b": b})
    with pytest.raises(AllProvidersFailedError) as info:
        entry.answer(router.with_structured_output(Weather, method="json_schema"))
    errors = info.value.errors
    assert list(errors) == ["a", "b"]
    assert "a: InvalidStructuredOutputError" in str(info.value)
    for name, error in errors.items():
        assert isinstance(error, InvalidStructuredOutputError)
        assert (error.provider, error.schema) == (name, "Weather")
        assert f"provider '{name}': answer does not match Weather" in str(error)
        assert isinstance(error.raw, AIMessage)
        assert default_classifier(error).kind is ErrorKind.INVALID_OUTPUT
    assert (a.calls, b.calls) == (1, 1)


@pytest.mark.parametrize(("counts", "state", "calls"), [(True, "open", 1), (False, "closed", 2)])
def test_invalid_answers_count_for_the_breaker_as_configured(
    make_router, fake, entry, counts, state, calls
) -> None:
    a, b = fake(BAD, BAD), fake(Structured(DATA), Structured(DATA))
    router = make_router(
        {"a": a, "b": b},
        circuit_breaker={"threshold": 1},
        structured_output={"counts_for_breaker": counts},
    )
    structured = router.with_structured_output(Weather)
    assert [entry.answer(structured) for _ in range(2)] == [Weather(**DATA)] * 2
    assert router.providers["a"].circuit_breaker_state == state
    assert (a.calls, b.calls) == (calls, 2)  # an open breaker keeps a out of the second


def test_retry_setting_asks_the_same_provider_again(make_router, fake, entry) -> None:
    a, b = fake(BAD, Structured(DATA)), fake(Structured(DATA))
    router = make_router({"a": a, "b": b}, structured_output={"retry": True})
    assert entry.answer(router.with_structured_output(Weather)) == Weather(**DATA)
    assert (a.calls, b.calls) == (2, 0)


def test_include_raw_gives_the_served_message(make_router, fake, entry) -> None:
    a, b = fake(http_error(503), http_error(503)), fake(Structured(DATA))
    router = make_router({"a": a, "b": b})
    result = entry.answer(router.with_structured_output(Weather, include_raw=True))
    assert set(result) == {"raw", "parsed", "parsing_error"}
    assert (result["parsed"], result["parsing_error"]) == (Weather(**DATA), None)
    assert isinstance(result["raw"], AIMessage)
    assert served_by(result["raw"]) == "b"


@STREAMS
def test_a_structured_stream_yields_the_one_invoked_object(make_router, fake, entry) -> None:
    a = fake(Structured(DATA), Structured(DATA))
    structured = make_router({"a": a}).with_structured_output(WEATHER_SCHEMA)
    assert entry.items(structured) == [structured.invoke("hi")] == [DATA]


def test_structured_routers_drop_tools_and_bind_none(make_router, fake, entry) -> None:
    a = fake(Structured(DATA))
    router = make_router({"a": a})
    structured = router.bind_tools([get_weather]).with_structured_output(Weather)
    assert structured is router.with_structured_output(Weather)
    with pytest.raises(AttributeError, match="bind_tools"):
        structured.bind_tools([get_weather])  # type: ignore[attr-defined]
    assert entry.answer(structured) == Weather(**DATA)
    assert a.requests[0].tools == ["Weather"]


# -- 5. reload ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"providers": ranked("b", "a")},
        {"providers": ranked("b")},
        {"providers": ranked("a", "b", a={"enabled": False})},
        {"providers": ranked("a", "b", a={"capabilities": {"tool_choice": False}})},
    ],
    ids=["reprioritised", "removed", "disabled", "denied"],
)
def test_a_tools_router_follows_a_reload(make_router, fake, entry, change) -> None:
    a, b = fake(), fake()
    router = make_router({"a": a, "b": b})
    tools = router.bind_tools([get_weather], tool_choice="get_weather")
    assert served_by(entry.answer(tools)) == "a"
    router.apply_config(change)
    assert served_by(entry.answer(tools)) == "b"
    assert router.bind_tools([get_weather], tool_choice="get_weather") is tools
    assert (b.requests[0].tools, b.requests[0].tool_choice) == (["get_weather"], "get_weather")
    assert a.calls == 1


def test_a_provider_added_by_a_reload_gets_the_tools(make_router, fake, entry) -> None:
    a, c = fake(), fake(calls_weather())
    router = make_router({"a": a})
    tools = router.bind_tools([get_weather], tool_choice=True)
    tools.apply_config({"providers": ranked("c", "a")}, {"c": c})  # reaches the root
    assert entry.answer(tools).tool_calls == [WEATHER_CALL]
    assert (c.requests[0].tools, c.requests[0].tool_choice, a.calls) == (
        ["get_weather"],
        "get_weather",
        0,
    )


# -- 6. tool loops ------------------------------------------------------------------------

LONG_ID = "call|" + "x" * 50


def tool_loop(provider: str) -> list[Any]:
    """A turn after ``provider``'s tool call (an id no other API takes) and its result."""
    call = {"name": "get_weather", "args": {"city": "Oslo"}, "id": LONG_ID}
    made = AIMessage("", tool_calls=[call], response_metadata={"router": {"provider": provider}})
    return [HumanMessage("weather?"), made, ToolMessage("rain", tool_call_id=LONG_ID)]


@pytest.mark.parametrize(("stick", "first"), [(True, "b"), (False, "a")])
def test_the_turn_after_tool_results_goes_to_their_caller(
    make_router, fake, entry, stick, first
) -> None:
    a, b = fake(), fake()
    router = make_router({"a": a, "b": b}, tool_loop={"stick_to_provider": stick})
    assert served_by(entry.answer(router.bind_tools([get_weather]), tool_loop("b"))) == first
    assert (a.calls, b.calls) == ((0, 1) if stick else (1, 0))


def test_a_tool_loop_failing_over_gets_portable_ids(make_router, fake, entry) -> None:
    a, b = fake(), fake(http_error(503), http_error(503))
    router = make_router({"a": a, "b": b})
    assert served_by(entry.answer(router.bind_tools([get_weather]), tool_loop("b"))) == "a"
    (sent_to_b, *_), (sent_to_a,) = b.requests, a.requests
    assert sent_to_b.messages[1].tool_calls[0]["id"] == LONG_ID  # its own: unchanged
    assert sent_to_b.messages[2].tool_call_id == LONG_ID
    new_id = sent_to_a.messages[1].tool_calls[0]["id"]
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", new_id)
    assert sent_to_a.messages[2].tool_call_id == new_id


# -- 7. usage counted once across a failover ----------------------------------------------


@pytest.mark.parametrize(
    ("first", "structured", "total"),
    [
        (http_error(503), False, (3, 2)),
        (http_error(503), True, (3, 2)),
        (BAD, True, (6, 4)),  # an invalid answer was billed too: each answer once
    ],
    ids=["tools", "structured", "structured-invalid-first"],
)
def test_usage_is_counted_once_across_a_failover(
    make_router, fake, entry, first, structured, total
) -> None:
    a, b = fake(first, first), fake(Structured(DATA))
    router = make_router({"a": a, "b": b})
    derived = router.with_structured_output(Weather) if structured else router.bind_tools([Weather])
    with get_usage_metadata_callback() as usage:
        entry.answer(derived)
    (tokens,) = usage.usage_metadata.values()
    assert (tokens["input_tokens"], tokens["output_tokens"]) == total
    providers = router.metrics()["providers"]
    assert (providers["b"]["input_tokens"], providers["b"]["output_tokens"]) == (3, 2)
    # The router's own books agree: an answer that did not fit was billed to its provider.
    billed = (providers["a"]["input_tokens"], providers["a"]["output_tokens"])
    assert billed == tuple(t - s for t, s in zip(total, (3, 2), strict=True))
    assert b.calls == 1


# -- 8. run tree --------------------------------------------------------------------------


def llm_runs(run: Run) -> int:
    return (run.run_type == "llm") + sum(llm_runs(child) for child in run.child_runs)


@pytest.mark.parametrize("structured", [False, True], ids=["tools", "structured"])
def test_a_failover_traces_one_router_run_with_an_llm_run_per_attempt(
    make_router, fake, entry, structured
) -> None:
    a, b = fake(http_error(503), http_error(503)), fake(Structured(DATA))
    router = make_router({"a": a, "b": b})
    derived = router.with_structured_output(Weather) if structured else router.bind_tools([Weather])
    with collect_runs() as runs:
        entry.answer(derived)
    (root,) = runs.traced_runs
    assert (root.name, root.run_type, llm_runs(root)) == ("ResilientRouter", "chain", 3)
    # One child run per attempt (the provider's chat model run, or its structured chain).
    assert {c.run_type for c in root.child_runs} == {"chain" if structured else "llm"}
    assert [(c.error is None, llm_runs(c)) for c in root.child_runs] == [
        (False, 1),
        (False, 1),
        (True, 1),
    ]
    tags = [sorted(t for t in c.tags or [] if t.startswith("router:")) for c in root.child_runs]
    assert tags == [
        [f"router:attempt={n}", f"router:provider={p}"] for p, n in [("a", 1), ("a", 2), ("b", 3)]
    ]
    assert (a.calls, b.calls) == (2, 1)


# -- 9. the async path does not block -----------------------------------------------------


async def answer_on_the_loop(tools: Any, how: str) -> Any:
    if how == "ainvoke":
        return await tools.ainvoke("hi")
    return functools.reduce(operator.add, [chunk async for chunk in tools.astream("hi")])


@pytest.mark.parametrize("how", ["ainvoke", "astream"])
async def test_concurrent_async_tool_calls_overlap_in_the_provider(
    make_router, fake, clock, how
) -> None:
    a = fake(*[CallTools(calls_weather().calls, latency=0.5) for _ in range(20)])
    tools = make_router({"a": a}).bind_tools([get_weather])
    messages = await asyncio.gather(*(answer_on_the_loop(tools, how) for _ in range(20)))
    assert [m.tool_calls for m in messages] == [[WEATHER_CALL]] * 20
    # Each call waited its latency on the loop, so all 20 were in the provider at once.
    assert (a.calls, a.max_in_flight, a.in_flight) == (20, 20, 0)
    assert clock.slept == [0.5] * 20
