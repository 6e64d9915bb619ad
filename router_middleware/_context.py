"""What one request is: the model asked for, its input and options, its run config.

Selection and admission read a :class:`RequestContext`, so a gate weighted by tokens, a
context-window check or a cache key has what it needs without a new parameter each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig

from ._tokens import TokenCounter, approximate_text_tokens, approximate_tokens
from ._types import LLMRequest, request_from_input

if TYPE_CHECKING:
    from ._config_streaming import StreamingConfig
    from ._routing import Routing

__all__ = ["LARGE_INPUT", "Limits", "RequestContext"]


_IMAGE_BLOCKS = frozenset({"image", "image_url", "input_image"})
_OUTPUT_OPTIONS = ("max_tokens", "max_completion_tokens", "max_output_tokens")

LARGE_INPUT = 100_000
"""Characters of input above which the async path counts tokens off the event loop."""


class Limits(NamedTuple):
    """One caller's limits in place of the router's (``None`` keeps the router's)."""

    deadline_seconds: float | None = None
    max_attempts: int | None = None


class RequestContext:
    """One request as the pipeline sees it.

    Attributes:
        model: the model asked for (``None``: any provider's first model).
        input: what the caller passed (chat input or an ``LLMRequest``).
        options: call options (``stop``, ``temperature``, bound tools...).
        config: the run config (its tags, metadata and callbacks).
        stream: whether the caller streams.
        unsupported: provider -> model -> why it cannot serve this router's requests
            (tools or a schema it cannot take); such providers are not candidates.
        prefer: the provider to try first while it is available (the one that made
            the tool calls this turn answers), or ``None``.
        deadline_seconds, max_attempts: this request's limits (the router's by default).
        counter, tools: how the router counts tokens, and the tool schemas it binds.
        routing: the providers it may use, by name and tag (``None``: any).
        streaming: whether and how often a stream that breaks part-way resumes on
            another provider (``None``: never, the default).

    Example:
        >>> ctx = RequestContext("fast", "Hello there, router", {"max_tokens": 50}, {},
        ...                      stream=False)
        >>> ctx.estimated_tokens(), ctx.requested_output()
        (9, 50)
    """

    __slots__ = (
        "_tokens",
        "config",
        "counter",
        "deadline_seconds",
        "input",
        "max_attempts",
        "model",
        "options",
        "prefer",
        "routing",
        "stream",
        "streaming",
        "tools",
        "unsupported",
    )

    def __init__(
        self,
        model: str | None,
        input: Any,
        options: Mapping[str, Any],
        config: RunnableConfig,
        *,
        stream: bool,
        unsupported: Mapping[str, Mapping[str, str]] | None = None,
        prefer: str | None = None,
        deadline_seconds: float | None = None,
        max_attempts: int = 10,
        counter: TokenCounter = approximate_tokens,
        tools: list[dict[str, Any]] | None = None,
        routing: Routing | None = None,
    ) -> None:
        self.model = model
        self.input = input
        self.options = dict(options)
        self.config = config
        self.stream = stream
        self.unsupported = unsupported
        self.prefer = prefer
        self.deadline_seconds = deadline_seconds
        self.max_attempts = max_attempts
        self.counter = counter
        self.tools = tools
        self.routing = routing
        self.streaming: StreamingConfig | None = None
        """How a broken stream resumes (``None``: it does not; see ``_resume``)."""
        self._tokens: int | None = None

    def estimated_tokens(self) -> int:
        """An estimate of the input's tokens, bound tools included, by the router's
        counter (by default about 4 characters each, plus 3 a message); computed once,
        on first use (from any thread: a race counts twice, harmlessly)."""
        tokens = self._tokens
        if tokens is None:
            value = self.input
            counter = self.counter
            if type(value) is str and counter is approximate_tokens and not self.tools:
                self._tokens = tokens = approximate_text_tokens(value)  # without a message
                return tokens
            if isinstance(value, str):
                messages: list[BaseMessage] = [HumanMessage(value)]
            elif isinstance(value, LLMRequest):
                messages = value.to_messages()
            else:
                messages = request_from_input(value, self.model).messages
            self._tokens = tokens = counter(messages, self.tools)
        return tokens

    @property
    def estimated(self) -> bool:
        """Whether the input's tokens are counted already."""
        return self._tokens is not None

    def requested_output(self) -> int | None:
        """The output tokens the request asks for at most (``max_tokens``), if it says."""
        options = self.options
        if options:
            for key in _OUTPUT_OPTIONS:
                value = options.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    return value
        return getattr(self.input, "max_tokens", None)  # an LLMRequest's

    def input_size(self) -> int:
        """Characters of text in the input, counted cheaply (for the offload decision)."""
        value = self.input
        if isinstance(value, str):
            return len(value)
        to_messages = getattr(value, "to_messages", None)  # an LLMRequest
        if to_messages is not None:
            value = to_messages()
        items = value if isinstance(value, list) else [value]
        size = 0
        for item in items:
            content = getattr(item, "content", item)
            if isinstance(content, str):
                size += len(content)
            elif isinstance(content, list):
                for block in content:
                    size += (
                        len(block) if isinstance(block, str) else len(str(block.get("text", "")))
                    )
            elif isinstance(content, tuple) and len(content) == 2:
                size += len(str(content[1]))
        return size

    def has_images(self) -> bool:
        """Whether the input holds an image (a content block of an image type)."""
        value = self.input
        messages = value if isinstance(value, list) else [value]
        for message in messages:
            content = getattr(message, "content", None)
            if isinstance(content, list):
                for block in content:
                    if isinstance(block, dict) and block.get("type") in _IMAGE_BLOCKS:
                        return True
        return False

    def __repr__(self) -> str:
        return f"RequestContext(model={self.model!r}, stream={self.stream})"
