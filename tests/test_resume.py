"""Resuming a broken stream on another provider (``streaming.resume: continue``).

Every test reads the stream as a consumer would, with ``stream`` and with ``astream``,
and checks what it printed: the whole answer once, no token twice, and that the chunks'
sum is exactly that text.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from router_middleware import (
    IncompleteStreamError,
    PartialStreamError,
    ProviderTimeoutError,
    ResilientRouter,
    SystemClock,
)
from router_middleware.testing import ScriptedChatModel, StreamBreak
from tests.conftest import provider_config

TEXT = "The quick brown fox jumps over the lazy dog"
RESUME = {"resume": "continue"}


def consume(router: ResilientRouter, mode: str, **kwargs: Any) -> list[Any]:
    """Every chunk a consumer gets, by ``stream`` or ``astream``."""
    if mode == "sync":
        return list(router.stream("tell me", model="m", **kwargs))

    async def read() -> list[Any]:
        return [c async for c in router.astream("tell me", model="m", **kwargs)]

    return asyncio.run(read())


def consume_until_error(
    router: ResilientRouter, mode: str, **kwargs: Any
) -> tuple[list[Any], BaseException]:
    """The chunks a consumer got before the stream raised, and the error."""
    got: list[Any] = []
    if mode == "sync":
        with pytest.raises(Exception) as info:  # noqa: PT011 - the test checks its type
            got.extend(router.stream("tell me", model="m", **kwargs))
        return got, info.value

    async def read() -> None:
        async for chunk in router.astream("tell me", model="m", **kwargs):
            got.append(chunk)

    with pytest.raises(Exception) as info:  # noqa: PT011
        asyncio.run(read())
    return got, info.value


def printed(chunks: list[Any]) -> str:
    text = "".join(c.text for c in chunks)
    assert sum(chunks[1:], chunks[0]).text == text  # the merged message is what was read
    return text


def resumed(chunks: list[Any]) -> list[dict[str, Any]]:
    router = sum(chunks[1:], chunks[0]).response_metadata["router"]
    return router["resumed"]  # type: ignore[no-any-return]


def two(
    make_router: Callable[..., ResilientRouter],
    a: BaseChatModel,
    b: BaseChatModel,
    *,
    prefill: bool = False,
    **config: Any,
) -> ResilientRouter:
    configs = [
        provider_config("a", priority=1),
        provider_config("b", priority=2, capabilities={"prefill": prefill}),
    ]
    config.setdefault("streaming", RESUME)
    return make_router({"a": a, "b": b}, configs, **config)


modes = pytest.mark.parametrize("mode", ["sync", "async"])


@modes
def test_off_by_default_a_broken_stream_raises_as_before(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a, b = scripted(StreamBreak(3), text=TEXT), scripted(text=TEXT)
    router = make_router({"a": a, "b": b})
    got, error = consume_until_error(router, mode)
    assert isinstance(error, IncompleteStreamError)
    assert not isinstance(error, PartialStreamError)
    assert printed(got) == "The quick brown "
    assert b.calls == 0


@modes
def test_a_prefill_provider_continues_from_the_text_given(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a = scripted(StreamBreak(3), text=TEXT)
    b = scripted(text=TEXT, prefill=True)
    router = two(make_router, a, b, prefill=True)
    chunks = consume(router, mode)
    assert printed(chunks) == TEXT
    # White space ends no prefix (Anthropic refuses one that does); the continuation's
    # leading space is then the one the consumer already has, skipped.
    assert b.prefixes == ["The quick brown"]
    [mark] = resumed(chunks)
    assert mark == {
        "from": "a",
        "to": "b",
        "offset": len("The quick brown "),
        "how": "prefill",
        "error": "ConnectionResetError",
    }


@modes
def test_a_regenerated_answer_is_spliced_where_it_repeats_the_text_given(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a, b = scripted(StreamBreak(4), text=TEXT), scripted(text=TEXT)
    router = two(make_router, a, b)
    chunks = consume(router, mode)
    assert printed(chunks) == TEXT
    assert [c.text for c in chunks if c.text][:5] == ["The ", "quick ", "brown ", "fox ", "jumps "]
    assert resumed(chunks)[0]["how"] == "regenerate"
    assert b.prefixes == []  # asked the question afresh


@modes
def test_a_regenerated_answer_that_diverges_raises_with_the_partial_text(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a = scripted(StreamBreak(3), text=TEXT)
    b = scripted(text="The quick red fox")
    router = two(make_router, a, b)
    got, error = consume_until_error(router, mode)
    assert printed(got) == "The quick brown "  # nothing of b's answer, nothing twice
    assert isinstance(error, PartialStreamError)
    assert error.partial == "The quick brown "
    assert isinstance(error.error, ConnectionResetError)
    assert "differs at character 10" in str(error)


@modes
def test_a_regenerated_answer_shorter_than_the_text_given_raises(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a, b = scripted(StreamBreak(3), text=TEXT), scripted(text="The quick")
    got, error = consume_until_error(two(make_router, a, b), mode)
    assert printed(got) == "The quick brown "
    assert isinstance(error, PartialStreamError)
    assert "ended at character" in str(error)


@modes
def test_a_malformed_chunk_is_the_providers_fault_and_resumes(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    bad = json.JSONDecodeError("Expecting value", 'data: {"choices": [', 19)
    a, b = scripted(StreamBreak(2, bad), text=TEXT), scripted(text=TEXT)
    chunks = consume(two(make_router, a, b), mode)
    assert printed(chunks) == TEXT
    assert resumed(chunks)[0]["error"] == "IncompleteStreamError"


@modes
def test_a_malformed_chunk_before_the_first_fails_over_even_without_resume(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    bad = json.JSONDecodeError("Expecting value", "data: {", 6)
    a, b = scripted(StreamBreak(0, bad), StreamBreak(0, bad), text=TEXT), scripted(text=TEXT)
    router = make_router({"a": a, "b": b})
    assert printed(consume(router, mode)) == TEXT


@modes
def test_a_stalled_stream_resumes_after_its_idle_timeout(
    make_router: Callable[..., ResilientRouter], mode: str
) -> None:
    # Real time: the idle limit is measured on the wall clock (50 ms here).
    a = ScriptedChatModel(text=TEXT, chunk_latency=0.5, clock=SystemClock())
    b = ScriptedChatModel(text=TEXT)
    router = two(make_router, a, b, timeouts={"idle_seconds": 0.05})
    chunks = consume(router, mode)
    assert printed(chunks) == TEXT
    assert resumed(chunks)[0]["error"] == ProviderTimeoutError.__name__
    a.release_hangs()


class _ToolCallThenBreak(BaseChatModel):
    """Streams the start of a tool call, then its connection resets."""

    @property
    def _llm_type(self) -> str:
        return "tool-call-then-break"

    def _generate(self, messages: list[BaseMessage], *a: Any, **k: Any) -> ChatResult:
        raise NotImplementedError

    def _stream(
        self, messages: list[BaseMessage], *a: Any, **k: Any
    ) -> Iterator[ChatGenerationChunk]:
        call = {"name": "search", "args": '{"q": "fo', "id": "call_1", "index": 0}
        yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[call]))
        raise ConnectionResetError("reset in a tool call")


@modes
def test_a_stream_broken_in_a_tool_call_is_not_resumed(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    b = scripted(text=TEXT)
    router = two(make_router, _ToolCallThenBreak(), b)
    got, error = consume_until_error(router, mode)
    assert isinstance(error, IncompleteStreamError)
    assert not isinstance(error, PartialStreamError)
    assert got[0].tool_call_chunks
    assert b.calls == 0


@modes
def test_max_resumes_bounds_how_often_a_stream_goes_on(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    def router(max_resumes: int) -> tuple[ResilientRouter, ScriptedChatModel]:
        a, b = scripted(StreamBreak(2), text=TEXT), scripted(StreamBreak(5), text=TEXT)
        c = scripted(text=TEXT)
        configs = [provider_config(n, priority=i) for i, n in enumerate("abc", start=1)]
        streaming = {**RESUME, "max_resumes": max_resumes}
        made = make_router({"a": a, "b": b, "c": c}, configs, streaming=streaming)
        return made, c

    once, c = router(1)
    got, error = consume_until_error(once, mode)
    assert printed(got) == "The quick brown fox jumps "  # b got further before it broke
    assert isinstance(error, PartialStreamError)
    assert error.partial == "The quick brown fox jumps "
    assert "max_resumes 1 reached" in str(error)
    assert c.calls == 0

    twice, c = router(2)
    chunks = consume(twice, mode)
    assert printed(chunks) == TEXT
    assert [(m["from"], m["to"], m["offset"]) for m in resumed(chunks)] == [
        ("a", "b", len("The quick ")),
        ("b", "c", len("The quick brown fox jumps ")),
    ]


@modes
def test_no_resume_once_the_deadline_has_run_out(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    # The fake clock moves 0.6 s a chunk: the third arrives past the 1 s deadline.
    a = scripted(text=TEXT, chunk_latency=0.6)
    b = scripted(text=TEXT)
    router = two(make_router, a, b, deadline_seconds=1.0)
    got, error = consume_until_error(router, mode)
    assert TEXT.startswith(printed(got))
    assert isinstance(error, TimeoutError)
    assert not isinstance(error, PartialStreamError)
    assert b.calls == 0


@modes
def test_no_provider_left_to_continue_raises_partial_stream_error(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a = scripted(StreamBreak(2), text=TEXT)
    router = make_router({"a": a}, streaming=RESUME)
    got, error = consume_until_error(router, mode)
    assert printed(got) == "The quick "
    assert isinstance(error, PartialStreamError)
    assert error.partial == "The quick "


@modes
def test_a_call_turns_resume_on_for_itself(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a, b = scripted(StreamBreak(3), text=TEXT), scripted(text=TEXT)
    router = make_router({"a": a, "b": b})
    assert printed(consume(router, mode, streaming=RESUME)) == TEXT
    a, b = scripted(StreamBreak(3), text=TEXT), scripted(text=TEXT)
    router = make_router({"a": a, "b": b})
    config = {"configurable": {"streaming": RESUME}}
    assert printed(consume(router, mode, config=config)) == TEXT


@modes
def test_a_call_turns_resume_off_for_itself(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any], mode: str
) -> None:
    a, b = scripted(StreamBreak(3), text=TEXT), scripted(text=TEXT)
    router = two(make_router, a, b)
    _, error = consume_until_error(router, mode, streaming={"resume": "off"})
    assert not isinstance(error, PartialStreamError)
    assert b.calls == 0


class _Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append((name, data))


def test_a_resume_is_an_event_an_attempt_and_usage_per_provider(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., Any]
) -> None:
    a = scripted(StreamBreak(3), text=TEXT, usage=(5, 3))
    b = scripted(text=TEXT, usage=(7, 9))
    router = two(make_router, a, b)
    events = _Events()
    chunks = list(router.stream("tell me", model="m", config={"callbacks": [events]}))
    assert printed(chunks) == TEXT
    resumes = [data for name, data in events.events if name == "router_stream_resumed"]
    assert resumes == [resumed(chunks)[0]]
    metrics = router.metrics()["providers"]
    assert (metrics["a"]["failed_requests"], metrics["a"]["fallbacks"]) == (1, 1)
    assert metrics["b"]["successful_requests"] == 1
    assert (metrics["b"]["input_tokens"], metrics["b"]["output_tokens"]) == (7, 9)
    message = sum(chunks[1:], chunks[0])
    assert message.usage_metadata["output_tokens"] == 9  # type: ignore[index]
    assert message.response_metadata["router"]["provider"] == "a"
    trail = message.response_metadata["router"]["attempts"]
    assert [(t["provider"], t["error"]) for t in trail] == [("a", None), ("b", None)]
