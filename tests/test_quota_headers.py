"""Rate-limit quota read from response headers, down to a real ``ChatOpenAI``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

from router_middleware._quota_headers import ProviderQuota, quota_from_headers, quota_from_message
from tests.local_http import JSONHandler, RecordingServer, serving

# 2026-12-06T19:40:00Z, the "now" of every Anthropic test.
NOW = datetime(2026, 12, 6, 19, 40, tzinfo=timezone.utc).timestamp()


def _message(headers: dict[str, Any]) -> AIMessage:
    return AIMessage("hi", response_metadata={"headers": headers, "model_name": "m"})


def test_openai_headers() -> None:
    quota = quota_from_message(
        _message(
            {
                "x-ratelimit-limit-requests": "60",
                "x-ratelimit-remaining-requests": "59",
                "x-ratelimit-remaining-tokens": "149984",
                "x-ratelimit-reset-requests": "1s",
                "x-ratelimit-reset-tokens": "6m0s",
                "content-type": "application/json",
            }
        )
    )
    assert quota == ProviderQuota(
        requests_remaining=59,
        requests_reset_seconds=1.0,
        tokens_remaining=149984,
        tokens_reset_seconds=360.0,
    )


def test_anthropic_headers() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": "2026-12-06T19:40:12Z",
        "anthropic-ratelimit-tokens-remaining": "70000",
        "anthropic-ratelimit-tokens-reset": "2026-12-06T19:41:00Z",
        "anthropic-ratelimit-input-tokens-remaining": "40000",
        "anthropic-ratelimit-input-tokens-reset": "2026-12-06T19:40:30Z",
        "anthropic-ratelimit-output-tokens-remaining": "8000",
        "anthropic-ratelimit-output-tokens-reset": "2026-12-06T19:40:01Z",
    }
    assert quota_from_message(_message(headers), now=NOW) == ProviderQuota(
        requests_remaining=49,
        requests_reset_seconds=12.0,
        tokens_remaining=70000,
        tokens_reset_seconds=60.0,
        input_tokens_remaining=40000,
        input_tokens_reset_seconds=30.0,
        output_tokens_remaining=8000,
        output_tokens_reset_seconds=1.0,
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0.5s", 0.5),
        ("2m59.56s", 179.56),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("100ns", 1e-7),
        (" 7.66s ", 7.66),
        ("0", 0.0),
        ("12", 12.0),
        ("0.25", 0.25),
        ("-3", 0.0),  # a plain number in the past: now
    ],
)
def test_openai_reset_durations(text: str, seconds: float) -> None:
    quota = quota_from_message(_message({"x-ratelimit-reset-requests": text}))
    assert quota is not None
    assert quota.requests_reset_seconds == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("2026-12-06T19:40:12Z", 12.0),
        ("2026-12-06T19:40:12z", 12.0),
        ("2026-12-06T19:40:12.250Z", 12.25),
        ("2026-12-06T19:40:12.123456789Z", 12.123456789),
        ("2026-12-06T20:40:12+01:00", 12.0),
        ("2026-12-06T17:10:12.5-02:30", 12.5),
        ("2026-12-06T19:40:12+00:00", 12.0),
        ("2026-12-06 19:40:12Z", 12.0),
        ("2026-12-06T19:39:00Z", 0.0),  # already past: clamped
        ("2025-01-01T00:00:00Z", 0.0),
    ],
)
def test_anthropic_reset_instants(text: str, seconds: float) -> None:
    quota = quota_from_message(_message({"anthropic-ratelimit-tokens-reset": text}), now=NOW)
    assert quota is not None
    assert quota.tokens_reset_seconds == pytest.approx(seconds)


def test_anthropic_reset_defaults_to_the_wall_clock() -> None:
    later = quota_from_message(
        _message({"anthropic-ratelimit-tokens-reset": "2999-01-01T00:00:00Z"})
    )
    assert later is not None
    assert later.tokens_reset_seconds is not None
    expected = datetime(2999, 1, 1, tzinfo=timezone.utc).timestamp() - NOW
    assert 0 < later.tokens_reset_seconds < expected


def test_header_names_are_case_insensitive() -> None:
    headers = {
        "X-RateLimit-Remaining-Requests": "3",
        "X-RATELIMIT-RESET-TOKENS": "20ms",
        "Anthropic-RateLimit-Output-Tokens-Remaining": "5",
    }
    assert quota_from_message(_message(headers)) == ProviderQuota(
        requests_remaining=3, tokens_reset_seconds=0.02, output_tokens_remaining=5
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-remaining-requests": "many"},
        {"x-ratelimit-remaining-requests": "1.5"},
        {"x-ratelimit-remaining-requests": ""},
        {"x-ratelimit-remaining-requests": None},
        {"x-ratelimit-remaining-requests": True},
        {"x-ratelimit-reset-requests": "soon"},
        {"x-ratelimit-reset-requests": "1x"},
        {"x-ratelimit-reset-requests": "1s2"},
        {"x-ratelimit-reset-requests": "s"},
        {"x-ratelimit-reset-requests": "-1s"},
        {"x-ratelimit-reset-requests": "nan"},
        {"x-ratelimit-reset-requests": "inf"},
        {"x-ratelimit-reset-requests": 5},
        {"anthropic-ratelimit-requests-reset": "tomorrow"},
        {"anthropic-ratelimit-requests-reset": "2026-12-06T19:40:12"},  # no offset
        {"anthropic-ratelimit-requests-reset": "2026-13-06T19:40:12Z"},
        {"anthropic-ratelimit-requests-reset": "2026-12-06T19:40:60Z"},
        {"anthropic-ratelimit-requests-reset": "2026-12-06T19:40:12+25:00"},
        {"anthropic-ratelimit-requests-reset": "2026-12-06T19:40:12Zjunk"},
        {"anthropic-ratelimit-requests-reset": "1s"},  # Anthropic sends instants
        {"content-type": "application/json"},
        {},
    ],
)
def test_malformed_or_absent_values_give_nothing(headers: dict[str, Any]) -> None:
    assert quota_from_message(_message(headers), now=NOW) is None


def test_malformed_values_are_dropped_field_by_field() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "lots",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "-20",
        "x-ratelimit-reset-tokens": "later",
    }
    assert quota_from_message(_message(headers)) == ProviderQuota(
        requests_reset_seconds=1.0, tokens_remaining=0
    )


def test_openai_wins_where_both_families_speak() -> None:
    headers = {
        "anthropic-ratelimit-requests-remaining": "7",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-remaining-tokens": "oops",
        "anthropic-ratelimit-tokens-remaining": "11",
    }
    quota = quota_from_message(_message(headers))
    assert quota == ProviderQuota(requests_remaining=9, tokens_remaining=11)


@pytest.mark.parametrize(
    "metadata", [{}, {"model_name": "m", "finish_reason": "stop"}, {"headers": None}]
)
def test_a_message_without_headers_gives_none(metadata: dict[str, Any]) -> None:
    assert quota_from_message(AIMessage("hi", response_metadata=metadata)) is None


@pytest.mark.parametrize("headers", ["x-ratelimit-remaining-requests: 3", ["a"], 3])
def test_headers_that_are_not_a_mapping_give_none(headers: object) -> None:
    assert quota_from_message(AIMessage("hi", response_metadata={"headers": headers})) is None
    assert quota_from_headers(headers) is None


def test_the_quota_is_a_small_frozen_value() -> None:
    quota = ProviderQuota(requests_remaining=2, tokens_reset_seconds=0.5)
    assert repr(quota) == "ProviderQuota(requests_remaining=2, tokens_reset_seconds=0.5)"
    assert repr(ProviderQuota()) == "ProviderQuota()"
    assert repr(ProviderQuota(tokens_remaining=0)) == "ProviderQuota(tokens_remaining=0)"
    assert not hasattr(quota, "__dict__")
    with pytest.raises(AttributeError):
        quota.requests_remaining = 3  # type: ignore[misc]


# -- a real ChatOpenAI against a local OpenAI-compatible server ---------------------------

# Mixed case as a server may send them; httpx hands them to langchain-openai lowercased.
_SENT = {
    "X-RateLimit-Limit-Requests": "60",
    "X-RateLimit-Remaining-Requests": "59",
    "X-RateLimit-Remaining-Tokens": "149984",
    "X-RateLimit-Reset-Requests": "1s",
    "X-RateLimit-Reset-Tokens": "6ms",
}
_EXPECTED = ProviderQuota(
    requests_remaining=59,
    requests_reset_seconds=1.0,
    tokens_remaining=149984,
    tokens_reset_seconds=0.006,
)


class _RateLimitedCompletions(JSONHandler):
    """A chat completion, plain or streamed, with the rate-limit headers of ``_SENT``."""

    def answer(self) -> None:
        streamed = self.server.bodies[-1].get("stream")
        self.send_response(200)
        for name, value in _SENT.items():
            self.send_header(name, value)
        if not streamed:
            data = json.dumps(self._completion()).encode()
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_header("content-type", "text/event-stream")
        self.end_headers()
        base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        for i, word in enumerate(["Hello", " there"]):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            self._event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        usage = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
        self._event({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")

    def _completion(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": "Hello there"}
        return {
            "id": "c1",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        }

    def _event(self, data: dict[str, Any]) -> None:
        self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    with serving(_RateLimitedCompletions) as server:
        yield server


def _client(server: RecordingServer, *, include_response_headers: bool = True) -> Any:
    # Skipped alone, so the header tests above still run without langchain-openai.
    langchain_openai = pytest.importorskip("langchain_openai")
    return langchain_openai.ChatOpenAI(
        model="m",
        api_key="sk-test",
        base_url=server.url + "/v1",
        max_retries=0,
        stream_usage=True,
        include_response_headers=include_response_headers,
    )


def _summed(chunks: list[BaseMessage]) -> BaseMessage:
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    return sum(chunks[1:], chunks[0])


def test_chat_openai_invoke(server: RecordingServer) -> None:
    message = _client(server).invoke("hi")
    assert message.content == "Hello there"
    assert message.response_metadata["headers"]["x-ratelimit-remaining-requests"] == "59"
    assert quota_from_message(message) == _EXPECTED


def test_chat_openai_stream_puts_headers_on_the_first_chunk(server: RecordingServer) -> None:
    chunks = list(_client(server).stream("hi"))
    with_headers = [i for i, c in enumerate(chunks) if "headers" in c.response_metadata]
    assert with_headers == [0]
    assert [quota_from_message(c) for c in chunks[1:]] == [None] * (len(chunks) - 1)
    total = _summed(chunks)
    assert total.content == "Hello there"
    assert quota_from_message(total) == _EXPECTED


async def test_chat_openai_ainvoke_and_astream(server: RecordingServer) -> None:
    client = _client(server)
    assert quota_from_message(await client.ainvoke("hi")) == _EXPECTED
    chunks = [c async for c in client.astream("hi")]
    assert "headers" in chunks[0].response_metadata
    assert quota_from_message(_summed(chunks)) == _EXPECTED


def test_chat_openai_without_include_response_headers(server: RecordingServer) -> None:
    client = _client(server, include_response_headers=False)
    assert quota_from_message(client.invoke("hi")) is None
    assert quota_from_message(_summed(list(client.stream("hi")))) is None
