"""Token estimation (``_tokens``): counters, tools in the count, calibration, usage."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import tiktoken
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from router_middleware import FakeClock, LLMRequest, ResilientRouter
from router_middleware._context import RequestContext
from router_middleware._tokens import (
    Calibration,
    TiktokenCounter,
    approximate_text_tokens,
    approximate_tokens,
    counter_named,
    usage_of,
)


def byte_encoding() -> Any:
    """A real tiktoken encoding that needs no download: one token per byte."""
    ranks = {bytes([i]): i for i in range(256)}
    return tiktoken.Encoding(
        name="bytes", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={}
    )


def get_weather(city: str) -> str:
    """Get the weather in a city."""
    return "sunny"


@pytest.mark.parametrize("length", [0, 1, 3, 4, 5, 399, 400, 401, 4000, 100_003])
def test_the_plain_text_shortcut_counts_as_langchain_does(length: int) -> None:
    text = "é" * length
    assert approximate_text_tokens(text) == approximate_tokens([HumanMessage(text)])
    ctx = RequestContext("m", text, {}, {}, stream=False)
    assert ctx.estimated_tokens() == approximate_tokens([HumanMessage(text)])


def test_tools_bound_count_toward_the_estimate() -> None:
    messages = [HumanMessage("What is the weather in Paris?")]
    from langchain_core.utils.function_calling import convert_to_openai_tool

    tools = [convert_to_openai_tool(get_weather)]
    assert approximate_tokens(messages, tools) > approximate_tokens(messages) + 5


def test_tiktoken_counts_text_names_messages_tools_and_the_reply_primer() -> None:
    counter = TiktokenCounter(byte_encoding())
    one = counter([HumanMessage("hello")])
    assert one == 3 + 3 + 5  # primer, per message, five bytes
    assert counter([SystemMessage("ab"), HumanMessage("hello")]) == one + 3 + 2
    named = counter([HumanMessage("hello", name="bob")])
    assert named == one + 1 + 3
    with_tools = counter([HumanMessage("hello")], [{"type": "function", "function": {}}])
    assert with_tools > one
    assert repr(counter) == "TiktokenCounter('bytes')"


def test_a_tiktoken_encoding_named_is_loaded_once_on_first_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads: list[str] = []

    def load(name: str) -> Any:
        loads.append(name)
        return byte_encoding()

    monkeypatch.setattr(tiktoken, "get_encoding", load)
    counter = counter_named("tiktoken")
    assert isinstance(counter, TiktokenCounter)
    assert loads == []  # nothing at configuration time
    counter([HumanMessage("a")])
    counter([HumanMessage("b")])
    assert loads == ["o200k_base"]
    assert counter_named("approximate") is approximate_tokens


def test_the_tiktoken_counter_serves_a_router_through_the_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tiktoken, "get_encoding", lambda name: byte_encoding())

    def handler(request: LLMRequest) -> AIMessage:
        return AIMessage("ok")

    router = ResilientRouter(
        {"a": handler},
        {
            "token_counter": "tiktoken",
            "providers": [{"name": "a", "models": [{"name": "m", "max_input_tokens": 3 + 3 + 10}]}],
        },
    )
    router.invoke("x" * 10)  # 16 tokens by the byte count: fits exactly
    from router_middleware import NoProviderAvailableError

    with pytest.raises(NoProviderAvailableError):
        router.invoke("x" * 11)


def test_calibration_errs_high_and_forgets_old_ratios() -> None:
    c = Calibration(keep=2)
    c.observe(100, 150)
    c.observe(100, 110)
    assert c.apply(100) == 150  # the larger of the recent ratios
    c.observe(100, 105)
    assert c.apply(100) == 110  # 1.5 forgotten
    c.observe(0, 50)  # nothing to learn from
    c.observe(100, 0)
    assert c.ratio == pytest.approx(1.1)


def test_calibration_is_safe_across_threads() -> None:
    c = Calibration(keep=8)
    threads = [
        threading.Thread(target=lambda: [c.observe(100, 100 + i % 7) for i in range(500)])
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert c.ratio == pytest.approx(1.06)


def test_usage_of_reads_cache_reads_and_missing_usage() -> None:
    assert usage_of(AIMessage("x")) is None
    assert usage_of("not a message") is None
    usage = {"input_tokens": 9, "output_tokens": 1, "total_tokens": 10}
    assert usage_of(AIMessage("x", usage_metadata=usage)) == (9, 1, 0)


def test_the_request_reads_its_output_limit_from_options_or_the_request() -> None:
    ctx = RequestContext("m", "hi", {"max_completion_tokens": 40}, {}, stream=False)
    assert ctx.requested_output() == 40
    assert (
        RequestContext("m", "hi", {"max_tokens": True}, {}, stream=False).requested_output() is None
    )
    request = LLMRequest(prompt="hi", max_tokens=12)
    assert RequestContext("m", request, {}, {}, stream=False).requested_output() == 12


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("abc", 3),
        ([HumanMessage("ab"), AIMessage("cde")], 5),
        ([HumanMessage([{"type": "text", "text": "abcd"}, "ef"])], 6),
        ([("human", "abc")], 3),
        (LLMRequest(prompt="abcd"), 4),
    ],
)
def test_input_size_is_counted_in_characters_cheaply(value: Any, size: int) -> None:
    assert RequestContext("m", value, {}, {}, stream=False).input_size() == size


def test_a_tools_router_counts_its_tools(clock: FakeClock) -> None:
    counted: list[Any] = []

    def counter(messages: Any, tools: Any = None) -> int:
        counted.append(tools)
        return 10

    from router_middleware.testing import ToolCallingChatModel

    router = ResilientRouter(
        {"a": ToolCallingChatModel()},
        {
            "providers": [
                {
                    "name": "a",
                    "models": [{"name": "m"}],
                    "rate_limit": {"tokens_per_minute": 10_000},
                }
            ]
        },
        clock=clock,
        token_counter=counter,
    )
    router.bind_tools([get_weather]).invoke("weather?")
    assert counted[0][0]["function"]["name"] == "get_weather"


def test_a_long_text_is_counted_in_pieces_as_it_would_be_whole() -> None:
    """Pieces cut before a space leave every pre-token whole, so merges come out the same
    (the pieces keep the event loop free: see TiktokenCounter._count)."""
    ranks = {bytes([i]): i for i in range(256)}
    for extra, token in enumerate([b"lo", b"low", b" low", b"er", b" lower", b"  "]):
        ranks[token] = 256 + extra
    enc = tiktoken.Encoding(
        name="mini", pat_str=r" ?[a-z]+| +|[^a-z ]+", mergeable_ranks=ranks, special_tokens={}
    )
    text = " ".join(["lower", "low", "slow", "x", " lowerlow"] * 9_000)
    whole = len(enc.encode(text))
    assert whole < len(text)  # merges happened
    assert TiktokenCounter(enc)._count(text) == whole
