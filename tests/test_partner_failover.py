"""A tool loop that fails over from a real ``ChatOpenAI`` to a real ``ChatAnthropic``.

Both clients talk to local servers that answer in their API's format and keep every
request body, so what is checked is what each partner package really sends: the turn
after the tool result sticks to OpenAI (which made the calls); when OpenAI fails, the
history Anthropic receives has tool-use ids it accepts, each paired with its result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from router_middleware import ResilientRouter
from tests.local_http import RecordingServer, serving

langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")

# Ids as some gateways mint them: characters Anthropic refuses (ChatAnthropic would
# rewrite those itself), and one of only valid characters but over 40 long (it would not).
FOREIGN_IDS = ["call|" + "a" * 50, "call_" + "c" * 60]
VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


@tool
def weather(city: str) -> str:
    """The weather in a city."""
    return f"rain in {city}"


@pytest.fixture
def openai_server() -> Iterator[RecordingServer]:
    with serving() as server:
        yield server


@pytest.fixture
def anthropic_server() -> Iterator[RecordingServer]:
    with serving() as server:
        yield server


def _openai_answer(content: str | None, calls: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
    }


ANTHROPIC_ANSWER = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test",
    "content": [{"type": "text", "text": "It rains in Oslo and Bergen."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 7},
}


def _router(openai_server: RecordingServer, anthropic_server: RecordingServer) -> ResilientRouter:
    openai = langchain_openai.ChatOpenAI(
        model="gpt-test", api_key="sk-test", base_url=openai_server.url + "/v1", max_retries=0
    )
    anthropic = langchain_anthropic.ChatAnthropic(
        model="claude-test",
        api_key="sk-ant-test",
        base_url=anthropic_server.url,
        max_retries=0,
    )
    config = {
        "strategy": "cost_priority_round_robin",
        "retry": {"attempts": 1},
        "providers": [
            {"name": "openai", "models": [{"name": "m"}], "priority": 1},
            {"name": "anthropic", "models": [{"name": "m"}], "priority": 2},
        ],
    }
    return ResilientRouter({"openai": openai, "anthropic": anthropic}, config)


def _blocks(body: dict[str, Any], kind: str, key: str) -> list[str]:
    """``block[key]`` of every content block of type ``kind`` in an Anthropic request."""
    return [
        block[key]
        for message in body["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block["type"] == kind
    ]


def _tool_turn(router: Any, openai_server: RecordingServer) -> list[Any]:
    """Turn 1 (OpenAI calls two tools under foreign ids) and the tools' results."""
    calls = [
        {"id": i, "type": "function", "function": {"name": "weather", "arguments": json.dumps(a)}}
        for i, a in zip(FOREIGN_IDS, ({"city": "Oslo"}, {"city": "Bergen"}), strict=True)
    ]
    openai_server.answers.append((200, _openai_answer(None, calls)))
    history: list[Any] = [HumanMessage("Weather in Oslo and Bergen?")]
    answer = router.invoke(history)
    assert isinstance(answer, AIMessage)
    assert [c["id"] for c in answer.tool_calls] == FOREIGN_IDS
    assert answer.response_metadata["router"]["provider"] == "openai"
    results = [
        ToolMessage(weather.invoke(c["args"]), tool_call_id=c["id"]) for c in answer.tool_calls
    ]
    return [*history, answer, *results]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_turn_after_the_tools_fails_over_with_ids_anthropic_accepts(
    openai_server: RecordingServer, anthropic_server: RecordingServer, mode: str
) -> None:
    router = _router(openai_server, anthropic_server).bind_tools([weather])
    history = _tool_turn(router, openai_server)
    openai_server.answers.append(
        (503, {"error": {"message": "overloaded", "type": "server_error"}})
    )
    anthropic_server.answers.append((200, ANTHROPIC_ANSWER))

    final = router.invoke(history) if mode == "sync" else await router.ainvoke(history)

    assert final.content == "It rains in Oslo and Bergen."
    assert [a["provider"] for a in final.response_metadata["router"]["attempts"]] == [
        "openai",
        "anthropic",
    ]
    # OpenAI was asked first (it made the calls) and got its own ids back unchanged.
    assert [c["id"] for c in openai_server.bodies[-1]["messages"][1]["tool_calls"]] == FOREIGN_IDS
    # What ChatAnthropic sent: every tool_use id valid, each result paired with its call.
    uses = _blocks(anthropic_server.bodies[-1], "tool_use", "id")
    results = _blocks(anthropic_server.bodies[-1], "tool_result", "tool_use_id")
    assert len(uses) == 2
    assert all(VALID_ID.match(i) for i in uses)
    assert uses == results
    assert {t["name"] for t in anthropic_server.bodies[-1]["tools"]} == {"weather"}
    # The caller's history is untouched.
    assert [m.tool_call_id for m in history[2:]] == FOREIGN_IDS
