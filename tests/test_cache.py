"""The response cache: its key, its bounds, replay, single flight, what it never keeps."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import BaseModel

from router_middleware import AllProvidersFailedError, IncompleteStreamError, ResilientRouter
from router_middleware._cache_key import Uncacheable, request_key, shape_document
from router_middleware._shape import StructuredShape, ToolShape
from router_middleware.testing import (
    CallTools,
    FakeClock,
    ScriptedChatModel,
    StreamBreak,
    Structured,
    ToolCall,
    ToolCallingChatModel,
)


class Counting(BaseChatModel):
    """Answers ``text`` + its call number; streams word by word, then a finish reason."""

    text: str = "the answer"
    finish: str = "stop"
    calls: int = 0

    @property
    def _llm_type(self) -> str:
        return "counting"

    def _answer(self) -> str:
        self.calls += 1
        return f"{self.text} {self.calls}"

    def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        message = AIMessage(
            self._answer(),
            response_metadata={"finish_reason": self.finish},
            usage_metadata={"input_tokens": 3, "output_tokens": 2, "total_tokens": 5},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> Any:
        for word in self._answer().split(" "):
            yield ChatGenerationChunk(message=AIMessageChunk(content=word + " "))
        last = AIMessageChunk(content="", response_metadata={"finish_reason": self.finish})
        yield ChatGenerationChunk(message=last)


def _router(model: Any, clock: Any = None, **cache: Any) -> ResilientRouter:
    config = {
        "providers": [{"name": "a", "models": [{"name": "m"}]}],
        "retry": {"attempts": 1},
        "cache": {"enabled": True, **cache},
    }
    return ResilientRouter({"a": model}, config, clock=clock)


def _stats(router: ResilientRouter) -> dict[str, Any]:
    return router.metrics()["cache"]  # type: ignore[no-any-return]


# -- the key ---------------------------------------------------------------------------------


def _key(
    input: Any = "hi",
    model: str | None = "m",
    options: dict[str, Any] | None = None,
    shape: Any = None,
    metadata: dict[str, Any] | None = None,
    keys: tuple[str, ...] = ("tenant_id",),
) -> str:
    return request_key(model, input, options or {}, shape, metadata, keys)


def test_key_strips_message_ids_and_run_metadata() -> None:
    a = [HumanMessage("hi", id="1"), AIMessage("yo", id="x", response_metadata={"t": 1})]
    b = [HumanMessage("hi", id="2"), AIMessage("yo", usage_metadata=None)]
    assert _key(a) == _key(b)
    assert _key("hi") != _key([HumanMessage("hi")])  # a prompt and a message list differ
    assert _key([("human", "hi")]) == _key([HumanMessage("hi")])


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ({"input": [HumanMessage("hi")]}, {"input": [HumanMessage("ho")]}),
        ({"input": [HumanMessage("hi")]}, {"input": [AIMessage("hi")]}),
        ({"input": [HumanMessage("hi", name="a")]}, {"input": [HumanMessage("hi", name="b")]}),
        (
            {"input": [ToolMessage("1", tool_call_id="a")]},
            {"input": [ToolMessage("1", tool_call_id="b")]},
        ),
        (
            {"input": [AIMessage("", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c"}])]},
            {"input": [AIMessage("", tool_calls=[{"name": "f", "args": {"x": 2}, "id": "c"}])]},
        ),
        ({"model": "m"}, {"model": "n"}),
        ({"model": "m"}, {"model": None}),
        ({"options": {"temperature": 0}}, {"options": {"temperature": 1}}),
        ({"options": {"stop": ["a"]}}, {"options": {}}),
        ({"metadata": {"tenant_id": "t1"}}, {"metadata": {"tenant_id": "t2"}}),
        ({"metadata": {"tenant_id": None}}, {"metadata": {}}),
        ({"shape": None}, {"shape": ["tools", [], None, {}]}),
    ],
)
def test_key_differs_for_each_part(one: dict[str, Any], other: dict[str, Any]) -> None:
    assert _key(**one) != _key(**other)
    assert _key(**one) == _key(**one)


def test_key_sorts_options_and_ignores_other_metadata() -> None:
    assert _key(options={"a": 1, "b": 2}) == _key(options={"b": 2, "a": 1})
    assert _key(metadata={"tenant_id": "t", "trace": 1}) == _key(metadata={"tenant_id": "t"})
    assert len(_key(input="x" * 100_000)) == 64  # a fixed size, whatever the input


def test_key_of_an_uncanonical_value_is_refused() -> None:
    with pytest.raises(Uncacheable):
        _key(options={"thing": object()})


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _mul(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


class Answer(BaseModel):
    text: str


class Other(BaseModel):
    number: int


def _tools(tools: list[Any], choice: Any = None, **kw: Any) -> Any:
    shape = ToolShape(tools, choice, kw)
    return shape_document(shape, shape.schemas())


def test_shape_document_tools_sorted_choice_and_options() -> None:
    assert _tools([_add, _mul]) == _tools([_mul, _add])
    assert _tools([_add]) != _tools([_add, _mul])
    assert _tools([_add, _mul]) != _tools([_add, _mul], "_add")
    assert _tools([_add]) != _tools([_add], strict=True)
    with pytest.raises(Uncacheable):
        shape_document(ToolShape([_add], None, {}), None)  # no OpenAI-format schema


def test_shape_document_schema_method_and_raw() -> None:
    def doc(schema: Any, method: str | None = None, raw: bool = False) -> Any:
        return shape_document(StructuredShape(schema, method, raw, {}), None)

    assert doc(Answer) == doc(Answer)
    assert doc(Answer) != doc(Other)
    assert doc(Answer) != doc(Answer, "json_schema")
    assert doc(Answer) != doc(Answer, raw=True)
    assert doc({"title": "a", "type": "object"}) != doc({"title": "b", "type": "object"})


# -- through the router --------------------------------------------------------------------------


def test_hit_returns_the_answer_marked_and_free() -> None:
    model = Counting()
    router = _router(model)
    first = router.invoke("hi")
    second = router.invoke("hi")
    assert model.calls == 1
    assert second.content == first.content == "the answer 1"
    info = second.response_metadata["router"]
    assert info["cache"] == "hit"
    assert info["provider"] == "a"
    assert info["model"] == "m"
    assert info["cost"]["total"] == 0
    assert info["attempts"] == []
    assert second.usage_metadata == first.usage_metadata
    assert "cache" not in first.response_metadata["router"]
    second.content = "edited"  # the caller's own copy
    assert router.invoke("hi").content == "the answer 1"
    totals = router.metrics()["totals"]
    assert (totals["cache_hits"], totals["cache_misses"]) == (2, 1)
    assert router.metrics()["providers"]["a"]["total_requests"] == 1
    assert _stats(router)["hits_by_provider"] == {"a": 2}


def test_cache_off_by_default_costs_nothing() -> None:
    model = Counting()
    router = ResilientRouter(
        {"a": model}, {"providers": [{"name": "a", "models": [{"name": "m"}]}]}
    )
    router.invoke("hi")
    router.invoke("hi")
    assert model.calls == 2
    assert router.pipeline.cache is None
    assert "cache" not in router.metrics()


def test_two_tenants_never_share() -> None:
    model = Counting()
    router = _router(model, key_metadata=["tenant_id"])
    one = router.invoke("hi", config={"metadata": {"tenant_id": "t1", "run": 1}})
    two = router.invoke("hi", config={"metadata": {"tenant_id": "t2"}})
    again = router.invoke("hi", config={"metadata": {"tenant_id": "t1", "run": 2}})
    assert (one.content, two.content, again.content) == (
        "the answer 1",
        "the answer 2",
        one.content,
    )


def test_two_tool_sets_never_share_and_order_does_not_matter() -> None:
    model = ToolCallingChatModel(default=CallTools([ToolCall("_add", {"a": 1, "b": 2})]))
    router = _router(model)
    router.bind_tools([_add, _mul]).invoke("go")
    router.bind_tools([_mul, _add]).invoke("go")
    assert len(model.requests) == 1
    router.bind_tools([_add]).invoke("go")
    router.invoke("go")  # no tools at all
    assert len(model.requests) == 3
    hit = router.bind_tools([_add]).invoke("go")
    assert hit.tool_calls[0]["args"] == {"a": 1, "b": 2}


def test_structured_hit_returns_a_parsed_copy() -> None:
    model = ToolCallingChatModel(default=Structured({"text": "yes"}))
    router = _router(model)
    structured = router.with_structured_output(Answer)
    first = structured.invoke("q")
    second = structured.invoke("q")
    assert len(model.requests) == 1
    assert isinstance(second, Answer)
    assert second == first
    assert second is not first
    raw = router.with_structured_output(Answer, include_raw=True).invoke("q")
    assert len(model.requests) == 2  # include_raw is part of the key
    again = router.with_structured_output(Answer, include_raw=True).invoke("q")
    assert again["parsed"] == raw["parsed"]
    assert again["raw"].response_metadata["router"]["cache"]


def test_ttl_on_a_fake_clock() -> None:
    clock = FakeClock()
    model = Counting()
    router = _router(model, clock=clock, ttl_seconds=10)
    router.invoke("hi")
    clock.advance(9.9)
    assert router.invoke("hi").content == "the answer 1"
    clock.advance(0.2)
    assert router.invoke("hi").content == "the answer 2"


def test_bounded_in_entries() -> None:
    model = Counting()
    router = _router(model, max_entries=2, max_bytes=None)
    for prompt in ("a", "b", "c"):
        router.invoke(prompt)
    assert _stats(router)["entries"] == 2
    router.invoke("c")
    assert model.calls == 3


def test_bounded_in_bytes() -> None:
    model = Counting(text="x" * 1_000)
    router = _router(model, max_entries=100, max_bytes=4_000)
    for prompt in ("a", "b", "c", "d"):
        router.invoke(prompt)
    assert _stats(router)["entries"] == 2  # about 1,600 estimated bytes each
    big = _router(Counting(text="x" * 10_000), max_bytes=4_000)
    big.invoke("a")
    big.invoke("a")
    assert _stats(big)["entries"] == 0
    assert _stats(big)["hits"] == 0


def test_stream_replays_a_hit_as_chunks() -> None:
    model = Counting(text="one two three")
    router = _router(model)
    original = router.invoke("hi")
    chunks = list(router.stream("hi"))
    assert len(chunks) > 3
    assert model.calls == 1
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.content == original.content
    assert total.usage_metadata == original.usage_metadata
    assert total.response_metadata["router"]["cache"] == "hit"
    assert total.response_metadata["finish_reason"] == "stop"


def test_a_streamed_answer_is_kept_and_serves_invoke() -> None:
    model = Counting(text="one two")
    router = _router(model)
    streamed = "".join(str(c.content) for c in router.stream("hi"))
    hit = router.invoke("hi")
    assert model.calls == 1
    assert hit.content == streamed
    assert hit.response_metadata["router"]["cache"] == "hit"


async def test_astream_replays_tool_calls() -> None:
    model = ToolCallingChatModel(default=CallTools([ToolCall("_add", {"a": 1, "b": 2})]))
    router = _router(model).bind_tools([_add])
    await router.ainvoke("go")
    chunks = [c async for c in router.astream("go")]
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert len(model.requests) == 1
    assert total.tool_calls[0]["name"] == "_add"
    assert total.tool_calls[0]["args"] == {"a": 1, "b": 2}


def test_errors_and_cut_answers_are_never_kept() -> None:
    failing = ScriptedChatModel(script=[ConnectionError("down")])
    router = _router(failing)
    with pytest.raises(AllProvidersFailedError):
        router.invoke("hi")
    router.invoke("hi")
    assert failing.calls == 2
    cut = Counting(finish="length")
    router = _router(cut)
    router.invoke("hi")
    list(router.stream("hi"))
    router.invoke("hi")
    assert cut.calls == 3
    assert _stats(router)["entries"] == 0


def test_broken_or_abandoned_streams_are_never_kept() -> None:
    broken = ScriptedChatModel(script=[StreamBreak(after=1)], text="a b c")
    router = _router(broken)
    with pytest.raises(IncompleteStreamError):
        list(router.stream("hi"))
    assert _stats(router)["entries"] == 0
    model = Counting(text="one two three")
    router = _router(model)
    stream = router.stream("hi")
    next(stream)
    stream.close()  # the consumer stopped early
    assert _stats(router)["entries"] == 0
    assert _stats(router)["in_flight"] == 0


def test_scope_provider_serves_only_an_allowed_provider() -> None:
    a, b = Counting(text="from a"), Counting(text="from b")
    config = {
        "providers": [
            {"name": "a", "models": [{"name": "m"}], "priority": 1},
            {"name": "b", "models": [{"name": "m"}], "priority": 2},
        ],
        "strategy": "cost_priority_round_robin",
        "cache": {"enabled": True, "scope": "provider"},
    }
    router = ResilientRouter({"a": a, "b": b}, config)
    router.invoke("hi")
    assert router.invoke("hi", exclude_providers=["a"]).content == "from b 1"
    assert router.invoke("hi", only_providers=["b"]).response_metadata["router"]["cache"] == "hit"
    model_scope = ResilientRouter(
        {"a": Counting(), "b": Counting()}, {**config, "cache": {"enabled": True}}
    )
    model_scope.invoke("hi")
    assert model_scope.invoke("hi", exclude_providers=["a"]).response_metadata["router"]["cache"]


def test_reload_keeps_an_unchanged_cache_and_derived_routers_share_it() -> None:
    model = Counting()
    router = _router(model)
    tools = router.bind_tools([_add])
    assert tools.pipeline.cache is router.pipeline.cache
    router.invoke("hi")
    router.apply_config(router.router_config)
    assert router.invoke("hi").response_metadata["router"]["cache"] == "hit"
    assert tools.pipeline.cache is router.pipeline.cache
    changed = router.router_config.model_copy(
        update={"cache": router.router_config.cache.model_copy(update={"ttl_seconds": 5.0})}
    )
    router.apply_config(changed)
    assert "cache" not in router.invoke("hi").response_metadata["router"]


# -- single flight ---------------------------------------------------------------------------


def _wait_for(predicate: Any, seconds: float = 5.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.005)


async def _until(predicate: Any) -> None:
    for _ in range(5_000):
        if predicate():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("timed out")


def _gated_handler(gate: threading.Event, calls: list[int], fail_first: bool = False) -> Any:
    def handler(request: Any) -> str:
        calls.append(1)
        gate.wait(5)
        if fail_first and len(calls) == 1:
            raise ConnectionError("leader failed")
        return f"answer {len(calls)}"

    return handler


def _handler_router(handler: Any, **cache: Any) -> ResilientRouter:
    config = {
        "providers": [{"name": "h", "models": [{"name": "m"}]}],
        "retry": {"attempts": 1},
        "cache": {"enabled": True, **cache},
    }
    return ResilientRouter({"h": handler}, config)


def _threads(router: ResilientRouter, n: int) -> tuple[list[Any], list[threading.Thread]]:
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        try:
            results[i] = router.invoke("same").content
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    return results, threads


def test_identical_requests_in_threads_make_one_call() -> None:
    gate, calls = threading.Event(), []
    router = _handler_router(_gated_handler(gate, calls))
    results, threads = _threads(router, 8)
    _wait_for(lambda: _stats(router)["waiting"] == 7)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 1
    assert results == ["answer 1"] * 8
    assert _stats(router)["coalesced"] == 7


def test_a_failed_leader_releases_its_followers_to_route() -> None:
    gate, calls = threading.Event(), []
    router = _handler_router(_gated_handler(gate, calls, fail_first=True))
    results, threads = _threads(router, 4)
    _wait_for(lambda: _stats(router)["waiting"] == 3)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 4  # the leader's, then each follower's own
    assert sum(isinstance(r, Exception) for r in results) == 1
    assert _stats(router)["in_flight"] == 0


def test_single_flight_off_makes_every_call() -> None:
    gate, calls = threading.Event(), []
    router = _handler_router(_gated_handler(gate, calls), single_flight=False)
    _, threads = _threads(router, 3)
    _wait_for(lambda: len(calls) == 3)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(calls) == 3


async def test_identical_requests_in_tasks_make_one_call() -> None:
    gate, calls = asyncio.Event(), []

    async def handler(request: Any) -> str:
        calls.append(1)
        await gate.wait()
        return "shared"

    router = _handler_router(handler)
    tasks = [asyncio.create_task(router.ainvoke("same")) for _ in range(8)]
    await _until(lambda: _stats(router)["waiting"] == 7)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert len(calls) == 1
    assert [r.content for r in results] == ["shared"] * 8


async def test_a_cancelled_leader_does_not_strand_its_followers() -> None:
    gate, calls = asyncio.Event(), []

    async def handler(request: Any) -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(60)  # the leader: cancelled below
        await gate.wait()
        return f"answer {len(calls)}"

    router = _handler_router(handler)
    leader = asyncio.create_task(router.ainvoke("same"))
    await _until(lambda: bool(calls))
    followers = [asyncio.create_task(router.ainvoke("same")) for _ in range(3)]
    await _until(lambda: _stats(router)["waiting"] == 3)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*followers), 5)
    assert all(r.content.startswith("answer") for r in results)
    assert len(calls) == 4


def test_a_follower_never_waits_for_a_stream_it_is_reading() -> None:
    model = Counting(text="a b c")
    router = _router(model)
    stream = router.stream("hi")
    next(stream)  # this thread leads, mid-stream
    assert router.invoke("hi").content == "a b c 2"  # routed, not stuck waiting for itself
    list(stream)
