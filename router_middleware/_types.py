"""Requests and responses in the seed's shape, and their bridges to LangChain messages.

Handlers (plain functions, the seed's providers) take an :class:`LLMRequest` and return
an :class:`LLMResponse`; chat-model providers speak LangChain messages. The router
converts between the two, so either kind serves a chain or ``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, convert_to_messages
from langchain_core.messages.ai import UsageMetadata
from langchain_core.prompt_values import PromptValue

from ._errors import InvalidInputError, InvalidProviderOutputError

__all__ = ["LLMRequest", "LLMResponse"]


@dataclass(slots=True)
class LLMRequest:
    """A request as a handler sees it.

    ``model`` is the model the router chose for this attempt: a handler serving several
    models must use it. ``messages`` holds the full conversation; ``prompt`` the text
    of its last message (the seed's single-prompt field).

    Example:
        >>> LLMRequest(prompt="Explain quantum computing", model="claude-3-sonnet").model
        'claude-3-sonnet'
    """

    prompt: str = ""
    model: str | None = None
    messages: list[BaseMessage] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_messages(self) -> list[BaseMessage]:
        """The conversation to send to a chat model."""
        return self.messages or [HumanMessage(self.prompt)]

    def options(self) -> dict[str, Any]:
        """The generation options set here, as a chat model takes them (invoke kwargs)."""
        found = {"max_tokens": self.max_tokens, "temperature": self.temperature}
        return {k: v for k, v in found.items() if v is not None}

    def with_options(self, options: Mapping[str, Any]) -> LLMRequest:
        """This request with call options folded in: known ones as fields, others in metadata.

        Example:
            >>> LLMRequest("hi").with_options({"temperature": 0.2, "stop": ["\\n"]}).metadata
            {'stop': ['\\n']}
        """
        fields = {k: v for k, v in options.items() if k in ("max_tokens", "temperature")}
        rest = {k: v for k, v in options.items() if k not in fields}
        return replace(self, **fields, metadata={**self.metadata, **rest})

    @classmethod
    def coerce(cls, value: LLMRequest | Mapping[str, Any]) -> LLMRequest:
        """Accept a request or a seed-style dict (``{"prompt": ..., "model": ...}``)."""
        if isinstance(value, LLMRequest):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - set(cls.__slots__)
            if unknown:
                raise InvalidInputError(
                    f"unknown LLMRequest field(s): {', '.join(sorted(unknown))}"
                )
            return cls(**value)
        raise InvalidInputError(f"expected an LLMRequest or a mapping, got {type(value).__name__}")


@dataclass(slots=True)
class LLMResponse:
    """A response in the seed's shape.

    Example:
        >>> LLMResponse(text="Hi", provider="openai", model="gpt-4").text
        'Hi'
    """

    text: str
    provider: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_message(self) -> AIMessage:
        """This response as the ``AIMessage`` a chain receives."""
        message = AIMessage(self.text, response_metadata=dict(self.metadata))
        if self.input_tokens or self.output_tokens:
            message.usage_metadata = usage(self.input_tokens, self.output_tokens)
        return message

    @classmethod
    def from_message(
        cls, message: BaseMessage, provider: str | None, model: str | None
    ) -> LLMResponse:
        usage = getattr(message, "usage_metadata", None) or {}
        return cls(
            text=message.text,
            provider=provider,
            model=model,
            input_tokens=usage.get("input_tokens", 0),
            output_tokens=usage.get("output_tokens", 0),
            metadata=dict(message.response_metadata),
        )


def usage(input_tokens: int, output_tokens: int) -> UsageMetadata:
    """``usage_metadata`` for a message (the token details are optional)."""
    return cast(
        UsageMetadata,
        {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    )


def message_from_handler_output(value: Any, provider: str) -> BaseMessage:
    """Turn what a handler returned into a message, or say clearly what is wrong."""
    if isinstance(value, LLMResponse):
        return value.to_message()
    if isinstance(value, BaseMessage):
        return value
    if isinstance(value, str):
        return AIMessage(value)
    if isinstance(value, Mapping) and isinstance(value.get("text"), str):
        extra = set(value) - {
            "text",
            "provider",
            "model",
            "input_tokens",
            "output_tokens",
            "metadata",
        }
        if not extra:
            return LLMResponse(**value).to_message()
    raise InvalidProviderOutputError(
        provider,
        f"handler returned {type(value).__name__}; expected LLMResponse, a message, a str "
        "or a mapping with 'text'",
    )


_MESSAGE_LIKE = (BaseMessage, str, tuple, list, Mapping)


def check_input(value: Any) -> None:
    """Reject input no provider could take, before any provider sees it.

    A list of messages passes as is; any other list is converted once here, so a
    malformed item (a one-element tuple, an unknown role) is the caller's error, not a
    failure counted against every provider in turn.
    """
    if isinstance(value, (str, PromptValue, LLMRequest)):
        return
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if not value:
            raise InvalidInputError("the router got an empty message list")
        plain = True
        for i, item in enumerate(value):
            if not isinstance(item, _MESSAGE_LIKE):
                raise InvalidInputError(
                    f"message {i} is a {type(item).__name__}; expected a message, a str, "
                    "a (role, content) pair or a dict"
                )
            plain = plain and isinstance(item, BaseMessage)
        if not plain:
            try:
                convert_to_messages(value)
            except (ValueError, TypeError, KeyError, NotImplementedError) as exc:
                raise InvalidInputError(f"cannot read the input as chat messages: {exc}") from None
        return
    raise InvalidInputError(
        f"the router takes a str, a list of messages or a PromptValue, not {type(value).__name__}"
    )


def request_from_input(value: Any, model: str | None) -> LLMRequest:
    """The handler's view of a chat input."""
    if isinstance(value, str):
        return LLMRequest(prompt=value, model=model, messages=[HumanMessage(value)])
    try:
        messages = (
            value.to_messages() if isinstance(value, PromptValue) else convert_to_messages(value)
        )
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise InvalidInputError(f"cannot read the input as chat messages: {exc}") from exc
    prompt = messages[-1].text if messages else ""
    return LLMRequest(prompt=prompt, model=model, messages=messages)
