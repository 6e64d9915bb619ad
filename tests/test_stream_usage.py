"""Usage on streams: a real ``ChatOpenAI`` against a local OpenAI-compatible server.

Against a ``base_url`` other than OpenAI's, ``ChatOpenAI`` streams no usage unless asked
(``stream_usage`` is ``None``); the router asks, so streamed answers count tokens and cost.
The server here speaks the chat-completions SSE format.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from router_middleware import ResilientRouter
from tests.local_http import JSONHandler, RecordingServer, serving

langchain_openai = pytest.importorskip("langchain_openai")


class _Completions(JSONHandler):
    """Streams a chat completion, with usage only when asked for it."""

    def answer(self) -> None:
        body = self.server.bodies[-1]
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        for i, word in enumerate(["Hello", " there"]):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            self._event({**base, "choices": [choice]})
        self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
            self._event({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with serving(_Completions) as server:
        yield server


def _router(server: RecordingServer) -> ResilientRouter:
    client = langchain_openai.ChatOpenAI(
        model="m", api_key="sk-test", base_url=server.url + "/v1", max_retries=0
    )
    assert client.stream_usage is None  # the case this is about
    config = {
        "providers": [{"name": "local", "models": [{"name": "m", "cost_per_1k_input_tokens": 1.0}]}]
    }
    return ResilientRouter({"local": client}, config)


def test_a_stream_asks_for_usage_and_counts_it(server: RecordingServer) -> None:
    router = _router(server)
    chunks = list(router.stream("hi"))
    total = sum(chunks[1:], chunks[0])
    assert total.content == "Hello there"
    assert server.bodies[-1]["stream_options"] == {"include_usage": True}
    assert total.usage_metadata is not None
    assert total.usage_metadata["input_tokens"] == 7
    local = router.metrics()["providers"]["local"]
    assert (local["input_tokens"], local["output_tokens"]) == (7, 2)
    assert local["cost"] == pytest.approx(0.007)


async def test_an_async_stream_asks_for_usage_too(server: RecordingServer) -> None:
    router = _router(server)
    chunks = [c async for c in router.astream("hi")]
    assert sum(chunks[1:], chunks[0]).usage_metadata["output_tokens"] == 2  # type: ignore[index]
    assert server.bodies[-1]["stream_options"] == {"include_usage": True}


def test_the_callers_own_choice_wins(server: RecordingServer) -> None:
    router = _router(server)
    chunks = list(router.stream("hi", stream_usage=False))
    assert "stream_options" not in server.bodies[-1]
    assert sum(chunks[1:], chunks[0]).usage_metadata is None
