"""Resuming real ``ChatOpenAI`` streams that a local server cuts, stalls or corrupts.

The server speaks OpenAI's chat-completions stream (server-sent events over a chunked
HTTP/1.1 body) and, per request, either streams the whole answer or breaks after a few
tokens: it drops the connection mid-body, falls silent, or sends a chunk that is not
JSON. Two real ``ChatOpenAI`` clients (``max_retries=0``) share it; with
``streaming.resume: continue`` the consumer must read the complete answer, token for
token, with ``stream`` and with ``astream``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from router_middleware import ResilientRouter
from tests.conftest import provider_config
from tests.local_http import RecordingServer, serving

langchain_openai = pytest.importorskip("langchain_openai")

TEXT = "Streams break, and the reader should never notice it at all"
TOKENS = [w + " " for w in TEXT.split(" ")[:-1]] + TEXT.split(" ")[-1:]


class SSEHandler(BaseHTTPRequestHandler):
    """Answers each request by the next queued ``(how, after)``: ``("full", 0)``, or
    ``("cut" | "stall" | "corrupt" | "ended", n)`` after ``n`` tokens."""

    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)
        how, after = self.server.answers.pop(0)
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        tokens = TOKENS if how == "full" else TOKENS[:after]
        for i, token in enumerate(tokens):
            delta = {"role": "assistant", "content": token} if i == 0 else {"content": token}
            self._event(_chunk(delta, None))
        if how == "cut":
            return  # the connection closes mid-body: no end of the chunked stream
        if how == "stall":
            time.sleep(1.0)
            return
        if how == "corrupt":
            self._send(b'data: {"id": "chatcmpl-1", "choices": [\n\n')
        elif how == "ended":
            pass  # a clean end of the body, without a finish reason or [DONE]: truncated
        else:
            self._event(_chunk({}, "stop"))
            usage = {"prompt_tokens": 11, "completion_tokens": len(TOKENS), "total_tokens": 23}
            self._event({**_chunk({}, None), "choices": [], "usage": usage})
            self._send(b"data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _event(self, data: dict[str, Any]) -> None:
        self._send(f"data: {json.dumps(data)}\n\n".encode())

    def _send(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "gpt-test",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with serving(SSEHandler) as server:
        yield server


def _router(make_router: Callable[..., ResilientRouter], server: RecordingServer) -> Any:
    clients = {
        name: langchain_openai.ChatOpenAI(
            model="gpt-test", api_key="sk-test", base_url=server.url + "/v1", max_retries=0
        )
        for name in ("first", "second")
    }
    configs = [provider_config(n, priority=i) for i, n in enumerate(clients, start=1)]
    return make_router(
        clients,
        configs,
        streaming={"resume": "continue"},
        timeouts={"idle_seconds": 0.3},
    )


def _read(router: ResilientRouter, mode: str) -> list[Any]:
    if mode == "sync":
        return list(router.stream("Say it", model="m"))

    async def read() -> list[Any]:
        return [c async for c in router.astream("Say it", model="m")]

    return asyncio.run(read())


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("how", ["cut", "stall", "corrupt", "ended"])
def test_a_broken_openai_stream_reads_as_the_complete_answer(
    make_router: Callable[..., ResilientRouter],
    server: RecordingServer,
    how: str,
    mode: str,
) -> None:
    server.answers[:] = [(how, 4), ("full", 0)]
    chunks = _read(_router(make_router, server), mode)
    tokens = [c.text for c in chunks if c.text]
    assert tokens == TOKENS  # token for token: none lost, none twice
    message = sum(chunks[1:], chunks[0])
    assert message.text == TEXT
    [mark] = message.response_metadata["router"]["resumed"]
    assert (mark["from"], mark["to"], mark["how"]) == ("first", "second", "regenerate")
    assert mark["offset"] == len("".join(TOKENS[:4]))
    assert message.usage_metadata["output_tokens"] == len(TOKENS)  # type: ignore[index]
    assert len(server.bodies) == 2
    assert server.bodies[0]["messages"] == server.bodies[1]["messages"]  # asked afresh
