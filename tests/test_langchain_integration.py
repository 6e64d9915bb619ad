"""The router inside real LangChain chains: composition, streams, the run tree, events."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers.base import BaseTracer
from langchain_core.tracers.schemas import Run

from router_middleware import FakeClock, IncompleteStreamError, ResilientRouter
from router_middleware.testing import StreamBreak, http_error

from .conftest import provider_config

PROMPT = ChatPromptTemplate.from_messages([("human", "{question}")])


class Collect(BaseTracer):
    """Keeps every finished root run, with its children."""

    def __init__(self) -> None:
        super().__init__()
        self.roots: list[Run] = []

    def _persist_run(self, run: Run) -> None:
        self.roots.append(run)


class Events(BaseCallbackHandler):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any, UUID]] = []

    def on_custom_event(self, name: str, data: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.events.append((name, data, run_id))


def find(run: Run, name: str) -> Run:
    if run.name == name:
        return run
    for child in run.child_runs:
        try:
            return find(child, name)
        except LookupError:
            pass
    raise LookupError(name)


def test_prompt_router_parser_chain(make_router, scripted) -> None:
    router = make_router({"a": scripted(text="hello world")})
    chain = PROMPT | router | StrOutputParser()
    assert chain.invoke({"question": "hi"}) == "hello world"
    assert asyncio.run(chain.ainvoke({"question": "hi"})) == "hello world"
    assert chain.batch([{"question": "1"}, {"question": "2"}]) == ["hello world"] * 2


def test_bound_model_in_chain(make_router, scripted) -> None:
    router = make_router(
        {"a": scripted(text="A"), "b": scripted(text="B")},
        [provider_config("a", models=("x",)), provider_config("b", models=("y",))],
    )
    chain = PROMPT | router.bind(model="y") | StrOutputParser()
    assert chain.invoke({"question": "hi"}) == "B"


def test_generic_fake_chat_model_provider(clock: FakeClock) -> None:
    model = GenericFakeChatModel(messages=iter([AIMessage("from fake")]))
    router = ResilientRouter({"fake": model}, {"providers": [provider_config("fake")]}, clock=clock)
    assert (PROMPT | router | StrOutputParser()).invoke({"question": "q"}) == "from fake"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "stream", "astream"])
def test_attempts_are_child_runs_of_the_router(make_router, scripted, mode: str) -> None:
    router = make_router({"a": scripted(http_error(500), http_error(500)), "b": scripted()})
    tracer = Collect()
    chain = PROMPT | router | StrOutputParser()
    config = {"callbacks": [tracer], "tags": ["outer"], "metadata": {"user": "u1"}}
    value = {"question": "q"}
    if mode == "invoke":
        chain.invoke(value, config)
    elif mode == "ainvoke":
        asyncio.run(chain.ainvoke(value, config))
    elif mode == "batch":
        chain.batch([value], config)
    elif mode == "stream":
        list(chain.stream(value, config))
    else:

        async def consume() -> None:
            async for _ in chain.astream(value, config):
                pass

        asyncio.run(consume())
    (root,) = tracer.roots
    router_run = find(root, "ResilientRouter")
    attempts = router_run.child_runs
    assert [r.name for r in attempts] == ["ScriptedChatModel"] * 3
    assert [[t for t in r.tags or [] if t.startswith("router:")] for r in attempts] == [
        ["router:provider=a", "router:attempt=1"],
        ["router:provider=a", "router:attempt=2"],
        ["router:provider=b", "router:attempt=3"],
    ]
    assert [r.error is None for r in attempts] == [False, False, True]
    # Run config reaches the providers: inherited tags and metadata.
    assert all("outer" in (r.tags or []) for r in attempts)
    assert all(r.extra["metadata"]["user"] == "u1" for r in attempts)
    assert attempts[2].extra["metadata"]["router_provider"] == "b"
    # The router adds no LLM run of its own (usage is not double counted).
    assert router_run.run_type == "chain"


def test_failover_and_retry_are_custom_events(make_router, scripted) -> None:
    router = make_router(
        {"a": scripted(http_error(500), http_error(500)), "b": scripted()},
        circuit_breaker={"threshold": 2},
    )
    events = Events()
    router.invoke("hi", {"callbacks": [events]})
    names = [name for name, _, _ in events.events]
    assert names == ["router_retry", "router_breaker_change", "router_failover"]
    assert events.events[1][1] == {"provider": "a", "from": "closed", "to": "open"}


def test_astream_events_show_custom_events(make_router, scripted) -> None:
    router = make_router({"a": scripted(http_error(401)), "b": scripted()})

    async def collect() -> list[str]:
        return [
            e["name"]
            async for e in router.astream_events("hi", version="v2")
            if e["event"] == "on_custom_event"
        ]

    assert asyncio.run(collect()) == ["router_failover"]


@pytest.fixture(params=["sync", "async"])
def stream(request: pytest.FixtureRequest) -> Any:
    def run(router: ResilientRouter, value: Any = "hi", **kwargs: Any) -> list[Any]:
        if request.param == "sync":
            return list(router.stream(value, **kwargs))

        async def consume() -> list[Any]:
            return [c async for c in router.astream(value, **kwargs)]

        return asyncio.run(consume())

    return run


def test_stream_fails_over_before_first_chunk(make_router, scripted, stream) -> None:
    a = scripted(StreamBreak(after=0, error=http_error(503)), StreamBreak(0, http_error(503)))
    router = make_router({"a": a, "b": scripted(text="one two three")})
    chunks = stream(router)
    assert "".join(c.content for c in chunks) == "one two three"
    assert chunks[0].response_metadata["router"]["provider"] == "b"
    assert router.providers["a"].metrics.failed_requests == 1


def test_stream_error_after_first_chunk_propagates(make_router, scripted, stream) -> None:
    broken = ConnectionResetError("dropped")
    b = scripted(text="B")
    router = make_router(
        {"a": scripted(StreamBreak(after=2, error=broken), text="w1 w2 w3"), "b": b}
    )
    with pytest.raises(IncompleteStreamError) as info:
        stream(router)
    # A typed error says the answer was cut; the provider's own error is its cause.
    assert info.value.provider == "a"
    assert info.value.__cause__ is broken
    assert b.calls == 0  # never silently continued on another provider
    p = router.providers["a"]
    assert (p.metrics.failed_requests, p.limiter.in_flight) == (1, 0)
    assert p.breaker.failures_in_window() == 1


def test_empty_stream_is_a_valid_result(clock: FakeClock, stream) -> None:
    def silent(request: Any) -> str:
        return ""

    router = ResilientRouter({"h": silent}, {"providers": [provider_config("h")]}, clock=clock)
    assert [c.content for c in stream(router)] == [""]
    assert router.providers["h"].metrics.successful_requests == 1


def test_stream_of_chain(make_router, scripted) -> None:
    router = make_router({"a": scripted(text="a b c")})
    chain = PROMPT | router | StrOutputParser()
    parts = list(chain.stream({"question": "q"}))
    assert parts[:3] == ["a ", "b ", "c"]  # streamed through, chunk by chunk
    assert "".join(parts) == "a b c"
    p = router.providers["a"].metrics
    assert p.successful_requests == 1
    assert p.snapshot()["ttft_p50"] is not None
