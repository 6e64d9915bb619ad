"""A history another provider accepts: portable tool-call ids, foreign content dropped."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_openai import ChatOpenAI

from router_middleware._history import last_tool_provider, portable_history, portable_id

VALID = re.compile(r"[A-Za-z0-9_-]{1,40}")

OPENAI_ID = "call_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0"  # 35 characters, valid everywhere
PIPE_ID = "fc|" + "x" * 57  # 60 characters, a bad character: refused by Anthropic
LONG_ID = "call_" + "a1" * 30  # 65 valid characters: too long for OpenAI
ANTHROPIC_ID = "toolu_01A09q90qw90lq917835lq9"


def router(provider: str) -> dict[str, Any]:
    """The response_metadata the router leaves on an answer from ``provider``."""
    return {"router": {"provider": provider, "model": "m", "attempts": 1}}


def call(call_id: str, name: str = "lookup") -> dict[str, Any]:
    return {"name": name, "args": {"q": call_id[:3]}, "id": call_id, "type": "tool_call"}


def dumps(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    return [m.model_dump() for m in messages]


def openai_loop(*ids: str, origin: str | None = "openai") -> list[BaseMessage]:
    """A tool-loop turn as ChatOpenAI records it: tool_calls in both places, then results."""
    raw = [
        {"id": i, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
        for i in ids
    ]
    answer = AIMessage(
        content="",
        tool_calls=[call(i) for i in ids],
        additional_kwargs={"tool_calls": raw},
        response_metadata=router(origin) if origin else {},
    )
    results = [ToolMessage(f"result {n}", tool_call_id=i) for n, i in enumerate(ids)]
    return [SystemMessage("be brief"), HumanMessage("look it up"), answer, *results]


def anthropic_loop(
    call_id: str = ANTHROPIC_ID, origin: str | None = "anthropic"
) -> list[BaseMessage]:
    """A tool-loop turn as ChatAnthropic records it: list content and matching tool_calls."""
    metadata = {**router(origin), "model_provider": "anthropic"} if origin else {}
    answer = AIMessage(
        content=[
            {"type": "thinking", "thinking": "I should look.", "signature": "c2lnbmF0dXJl"},
            {"type": "redacted_thinking", "data": "ZW5jcnlwdGVk"},
            {"type": "text", "text": "Looking.", "cache_control": {"type": "ephemeral"}},
            {"type": "tool_use", "id": call_id, "name": "lookup", "input": {"q": "x"}},
        ],
        tool_calls=[{"name": "lookup", "args": {"q": "x"}, "id": call_id}],
        response_metadata=metadata,
    )
    return [HumanMessage("look it up"), answer, ToolMessage("42", tool_call_id=call_id)]


# portable_id


@pytest.mark.parametrize("call_id", [OPENAI_ID, ANTHROPIC_ID, "a", "A-b_c", "x" * 40])
def test_a_valid_id_is_unchanged(call_id: str) -> None:
    assert portable_id(call_id) == call_id


@pytest.mark.parametrize(
    "call_id",
    [PIPE_ID, LONG_ID, "x" * 41, "functions.get_weather:0", "a|b", "has space", "", "id\n", "é"],
)
def test_any_other_id_becomes_a_valid_one(call_id: str) -> None:
    new = portable_id(call_id)
    assert new != call_id
    assert VALID.fullmatch(new)
    assert new.startswith("call_")


def test_the_id_is_the_same_in_every_process() -> None:
    # Pinned: a hash() or a salt would change it from one process to the next.
    assert portable_id("functions.get_weather:0") == "call_79ac1aaab216b228c7ab22411b23ccfa39c"
    assert portable_id(PIPE_ID) == portable_id(PIPE_ID)


def test_different_ids_stay_different() -> None:
    ids = [f"functions.tool_{n}:{n % 7}" for n in range(2000)] + [f"{n}" * 41 for n in range(10)]
    assert len({portable_id(i) for i in ids}) == len(ids)


@given(st.text())
def test_portable_id_is_valid_and_idempotent(call_id: str) -> None:
    new = portable_id(call_id)
    assert VALID.fullmatch(new)
    assert portable_id(new) == new


@given(st.from_regex(VALID, fullmatch=True))
def test_portable_id_keeps_every_valid_id(call_id: str) -> None:
    assert portable_id(call_id) == call_id


# portable_history: what is left alone


@pytest.mark.parametrize(
    "history",
    [
        [],
        [SystemMessage("s"), HumanMessage("hi"), AIMessage("hello"), HumanMessage("bye")],
        [HumanMessage("hi"), AIMessage("hello", response_metadata=router("openai"))],
    ],
    ids=["empty", "plain text", "plain text from another provider"],
)
def test_a_history_with_nothing_to_change_is_returned_itself(history: list[BaseMessage]) -> None:
    assert portable_history(history, "anthropic") is history


def test_a_providers_own_history_is_returned_itself() -> None:
    history = anthropic_loop(PIPE_ID)
    # Its own ids and thinking blocks are what it must get back, even odd ones.
    assert portable_history(history, "anthropic") is history


def test_the_input_is_never_mutated() -> None:
    history = [
        *openai_loop(PIPE_ID, LONG_ID),
        *anthropic_loop(),
        *openai_loop("a.b", origin=None),
    ]
    before = dumps(history)
    out = portable_history(history, "gemini")
    assert dumps(out) != before
    assert dumps(history) == before


def test_only_the_messages_that_change_are_copied() -> None:
    history = openai_loop(PIPE_ID, OPENAI_ID)
    out = portable_history(history, "anthropic")
    assert [new is old for new, old in zip(out, history, strict=True)] == [
        True,  # system
        True,  # human
        False,  # the answer holds PIPE_ID
        False,  # PIPE_ID's result
        True,  # OPENAI_ID's result: its id is valid, nothing to follow
    ]


# portable_history: ids


def test_tool_results_follow_their_renamed_calls() -> None:
    out = portable_history(openai_loop(PIPE_ID, LONG_ID, OPENAI_ID), "anthropic")
    answer = out[2]
    assert isinstance(answer, AIMessage)
    expected = [portable_id(PIPE_ID), portable_id(LONG_ID), OPENAI_ID]
    assert [tc["id"] for tc in answer.tool_calls] == expected
    assert [tc["id"] for tc in answer.additional_kwargs["tool_calls"]] == expected
    assert [m.tool_call_id for m in out[3:] if isinstance(m, ToolMessage)] == expected


def test_unknown_origin_ids_are_renamed_but_its_blocks_kept() -> None:
    history = anthropic_loop(PIPE_ID, origin=None)
    out = portable_history(history, "openai")
    new = portable_id(PIPE_ID)
    content = history[1].content
    assert out[1].content == [*content[:3], {**content[3], "id": new}]  # type: ignore[dict-item]
    assert out[1].tool_calls[0]["id"] == new  # type: ignore[attr-defined]
    assert out[2].tool_call_id == new  # type: ignore[attr-defined]


def test_a_target_providers_own_results_keep_their_ids() -> None:
    own_id = "toolu_" + "b" * 50  # too long for portable_id, but the target minted it
    own = AIMessage("", tool_calls=[call(own_id)], response_metadata=router("anthropic"))
    history = [*openai_loop(PIPE_ID), own, ToolMessage("r", tool_call_id=own_id)]
    out = portable_history(history, "anthropic")
    assert out[3].tool_call_id == portable_id(PIPE_ID)  # type: ignore[attr-defined]
    assert out[4] is own
    assert out[5] is history[5]


def test_tool_result_blocks_and_call_blocks_are_renamed() -> None:
    answer = AIMessage(
        content=[
            {"type": "tool_use", "id": PIPE_ID, "name": "lookup", "input": {}},
            {"type": "function_call", "id": "fc_item", "call_id": LONG_ID, "name": "lookup"},
            {"type": "tool_call", "id": "a:b", "name": "lookup", "args": {}},
        ],
        invalid_tool_calls=[{"type": "invalid_tool_call", "id": "c.d", "name": "x", "args": "{"}],
        response_metadata=router("openai"),
    )
    result = HumanMessage([{"type": "tool_result", "tool_use_id": PIPE_ID, "content": "r"}])
    out = portable_history([answer, result], "anthropic")
    blocks = out[0].content
    assert blocks[0]["id"] == portable_id(PIPE_ID)  # type: ignore[index]
    # A Responses function_call's `id` names the output item; only the call id pairs.
    assert blocks[1]["id"] == "fc_item"  # type: ignore[index]
    assert blocks[1]["call_id"] == portable_id(LONG_ID)  # type: ignore[index]
    assert blocks[2]["id"] == portable_id("a:b")  # type: ignore[index]
    assert out[0].invalid_tool_calls[0]["id"] == portable_id("c.d")  # type: ignore[attr-defined]
    assert out[1].content[0]["tool_use_id"] == portable_id(PIPE_ID)  # type: ignore[index]


def test_a_chunk_is_renamed_as_a_message_and_stays_a_chunk() -> None:
    chunk = AIMessageChunk(
        content="",
        tool_call_chunks=[{"name": "lookup", "args": "{}", "id": PIPE_ID, "index": 0}],
        response_metadata=router("openai"),
    )
    out = portable_history([chunk, ToolMessage("r", tool_call_id=PIPE_ID)], "anthropic")
    new = out[0]
    assert isinstance(new, AIMessageChunk)
    assert new.tool_calls[0]["id"] == new.tool_call_chunks[0]["id"] == portable_id(PIPE_ID)
    # What the next merge rebuilds tool_calls from must carry the new id too.
    assert (new + AIMessageChunk(content="")).tool_calls[0]["id"] == portable_id(PIPE_ID)
    assert out[1].tool_call_id == portable_id(PIPE_ID)  # type: ignore[attr-defined]


def test_responses_function_call_ids_map_follows_the_renamed_calls() -> None:
    history = openai_loop(PIPE_ID)
    kwargs = {"__openai_function_call_ids__": {PIPE_ID: "fc_1"}, "reasoning": {"id": "rs_1"}}
    history[2] = history[2].model_copy(update={"additional_kwargs": kwargs})
    out = portable_history(history, "anthropic")
    assert out[2].additional_kwargs == {
        "__openai_function_call_ids__": {portable_id(PIPE_ID): "fc_1"}
    }


# portable_history: provider-only content


def test_foreign_thinking_reasoning_and_cache_marks_are_dropped() -> None:
    history = anthropic_loop()
    history[1].content.append({"type": "reasoning", "summary": []})  # type: ignore[union-attr]
    out = portable_history(history, "openai")
    assert out[1].content == [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": ANTHROPIC_ID, "name": "lookup", "input": {"q": "x"}},
    ]
    assert out[2] is history[2]


def test_foreign_responses_reasoning_item_is_dropped_and_unknown_kept() -> None:
    reasoning = {"id": "rs_1", "summary": [], "type": "reasoning"}
    answer = AIMessage("hi", additional_kwargs={"reasoning": reasoning, "refusal": None})
    assert portable_history([answer], "anthropic")[0] is answer
    foreign = answer.model_copy(update={"response_metadata": router("openai")})
    assert portable_history([foreign], "anthropic")[0].additional_kwargs == {"refusal": None}


def test_content_left_empty_becomes_an_empty_string() -> None:
    thinking = {"type": "thinking", "thinking": "hm", "signature": "s"}
    answer = AIMessage([thinking], tool_calls=[call(ANTHROPIC_ID)], response_metadata=router("a"))
    new = portable_history([answer], "openai")[0]
    assert new.content == ""
    assert new.tool_calls == answer.tool_calls  # type: ignore[attr-defined]


# last_tool_provider


def test_last_tool_provider_is_the_pending_calls_author() -> None:
    history = [*openai_loop("a"), AIMessage("done", response_metadata=router("x"))]
    assert last_tool_provider(history[:-1]) == "openai"
    history = [*anthropic_loop(), *openai_loop("b"), ToolMessage("late", tool_call_id="b")]
    assert last_tool_provider(history) == "openai"


@pytest.mark.parametrize(
    "history",
    [
        [],
        [HumanMessage("hi")],
        [*openai_loop("a"), AIMessage("done", response_metadata=router("openai"))],
        openai_loop("a", origin=None),
        [ToolMessage("orphan", tool_call_id="a")],
    ],
    ids=["empty", "no tool loop", "loop answered", "unknown origin", "no call"],
)
def test_last_tool_provider_is_none_outside_a_known_tool_loop(history: list[BaseMessage]) -> None:
    assert last_tool_provider(history) is None


# Through the partner packages' own request formatting (offline)


@pytest.fixture
def openai() -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", api_key="sk-test")  # type: ignore[arg-type]


@pytest.fixture
def anthropic() -> ChatAnthropic:
    return ChatAnthropic(model="claude-sonnet-4-5", api_key="sk-ant-test")  # type: ignore[arg-type]


def blocks_of(payload: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [
        block
        for message in payload["messages"]
        if isinstance(message["content"], list)
        for block in message["content"]
        if block.get("type") == kind
    ]


def test_openai_loop_sent_to_anthropic_has_valid_paired_ids(anthropic: ChatAnthropic) -> None:
    ids = (OPENAI_ID, PIPE_ID, LONG_ID)
    history = portable_history(openai_loop(*ids), "anthropic")
    payload = anthropic._get_request_payload(history)
    uses = [b["id"] for b in blocks_of(payload, "tool_use")]
    results = [b["tool_use_id"] for b in blocks_of(payload, "tool_result")]
    assert uses == results == [portable_id(i) for i in ids]
    assert all(VALID.fullmatch(i) for i in uses)


def test_a_call_in_tool_calls_and_a_tool_use_block_is_sent_once(anthropic: ChatAnthropic) -> None:
    # Another Anthropic-format provider's answer: ChatAnthropic pairs the block with the
    # tool_call by id, so renaming one and not the other would send the call twice.
    history = portable_history(anthropic_loop(LONG_ID, origin="vertex"), "anthropic")
    payload = anthropic._get_request_payload(history)
    uses = [b["id"] for b in blocks_of(payload, "tool_use")]
    results = [b["tool_use_id"] for b in blocks_of(payload, "tool_result")]
    assert uses == results == [portable_id(LONG_ID)]


def test_anthropic_loop_sent_to_openai_has_no_anthropic_content(openai: ChatOpenAI) -> None:
    payload = openai._get_request_payload(portable_history(anthropic_loop(), "openai"))
    text = json.dumps(payload)
    for foreign in ("thinking", "signature", "reasoning", "cache_control"):
        assert foreign not in text
    assistant, tool = payload["messages"][1:]
    assert assistant["content"] == [{"type": "text", "text": "Looking."}]
    assert [tc["id"] for tc in assistant["tool_calls"]] == [tool["tool_call_id"]] == [ANTHROPIC_ID]
    assert all(VALID.fullmatch(tc["id"]) for tc in assistant["tool_calls"])


def test_anthropic_loop_given_back_to_anthropic_keeps_its_thinking(
    anthropic: ChatAnthropic,
) -> None:
    history = anthropic_loop()
    assert portable_history(history, "anthropic") is history
    assistant = anthropic._get_request_payload(history)["messages"][1]
    assert assistant["content"][0] == {
        "type": "thinking",
        "thinking": "I should look.",
        "signature": "c2lnbmF0dXJl",
    }
    assert assistant["content"][2]["cache_control"] == {"type": "ephemeral"}
