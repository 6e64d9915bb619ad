"""Counting a request's tokens before it is sent, and learning how far off the count is.

Token limits, context windows and budgets need a request's input tokens before any
provider has seen it. A :class:`TokenCounter` estimates them from the messages and the
bound tools' schemas; the default, :func:`approximate_tokens`, is LangChain's
``count_tokens_approximately`` (about 4 characters a token, 3 a message), fast and
dependency-free; :class:`TiktokenCounter` counts exactly for OpenAI's models (the
``tiktoken`` extra). Each provider then corrects the estimate by its own
:class:`Calibration`, learnt from the usage it reports, since providers tokenize
differently.

A request is counted once, on first need (``RequestContext.estimated_tokens``); a large
one is counted off the event loop (the pipeline's ``Estimate`` step).
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from langchain_core.messages import BaseMessage
from langchain_core.messages.utils import count_tokens_approximately

__all__ = [
    "PRIOR_RATIO",
    "Calibration",
    "TiktokenCounter",
    "TokenCounter",
    "Usage",
    "approximate_text_tokens",
    "approximate_tokens",
    "counter_named",
    "usage_of",
]


class TokenCounter(Protocol):
    """Estimates the input tokens of ``messages`` with ``tools`` bound (OpenAI-format
    tool schemas); called from any thread, possibly off the event loop."""

    def __call__(
        self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int: ...


def approximate_tokens(
    messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] | None = None
) -> int:
    """LangChain's ``count_tokens_approximately``, tool schemas included.

    Example:
        >>> from langchain_core.messages import HumanMessage
        >>> approximate_tokens([HumanMessage("Hello there, router")])
        9
    """
    return count_tokens_approximately(messages, tools=list(tools) if tools else None)


def approximate_text_tokens(text: str) -> int:
    """:func:`approximate_tokens` of one human message ``text`` without building it: the
    router's common case, on every request that a limit weighs (a test keeps the two
    equal).

    Example:
        >>> approximate_text_tokens("Hello there, router")
        9
    """
    return math.ceil((len(text) + 4) / 4) + 3  # 4: the characters of its role, "user"


_PIECE = 8_000
_CUT = re.compile(r"(?<=\S) (?=\S)")


class TiktokenCounter:
    """Exact token counts with a ``tiktoken`` encoding (OpenAI's models), plus OpenAI's
    overhead per message (3 tokens, and 3 priming the reply).

    ``encoding`` is an encoding name (``"o200k_base"``, loaded on first use, which
    tiktoken downloads once and caches) or a ``tiktoken.Encoding``.

    Example:
        >>> import tiktoken  # doctest: +SKIP
        >>> TiktokenCounter("o200k_base")([HumanMessage("Hello")])  # doctest: +SKIP
        8
    """

    __slots__ = ("_encoding", "_lock", "tokens_per_image", "tokens_per_message")

    def __init__(
        self,
        encoding: Any = "o200k_base",
        *,
        tokens_per_message: int = 3,
        tokens_per_image: int = 85,
    ) -> None:
        self._encoding = encoding
        self._lock = threading.Lock()
        self.tokens_per_message = tokens_per_message
        self.tokens_per_image = tokens_per_image

    @property
    def encoding(self) -> Any:
        if isinstance(self._encoding, str):
            with self._lock:
                if isinstance(self._encoding, str):
                    self._encoding = _load_encoding(self._encoding)
        return self._encoding

    def __call__(
        self, messages: Sequence[BaseMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> int:
        count = self._count
        total = 3  # every reply is primed with <|start|>assistant<|message|>
        for message in messages:
            total += self.tokens_per_message + count(message.text)
            if message.name:
                total += 1 + count(message.name)
            content = message.content
            if isinstance(content, list):
                total += self.tokens_per_image * sum(
                    1 for b in content if isinstance(b, dict) and "image" in str(b.get("type"))
                )
            for call in getattr(message, "tool_calls", None) or ():
                total += count(json.dumps(call.get("args")))
        if tools:
            total += count(json.dumps(list(tools), sort_keys=True))
        return total

    def _count(self, text: str) -> int:
        """Tokens of ``text``, encoded in pieces cut before a single space between two
        words (where pre-tokenizers start a new pre-token): tiktoken releases the GIL
        while it encodes, but builds the list of token ids under it, and a list of 100,000
        ids would stop an event loop on another thread for a millisecond."""
        encode = self.encoding.encode
        if len(text) <= _PIECE:
            return len(encode(text, disallowed_special=()))
        total, start = 0, 0
        while start < len(text):
            cut = _CUT.search(text, start + _PIECE)
            end = cut.start() if cut else len(text)
            total += len(encode(text[start:end], disallowed_special=()))
            start = end
        return total

    def __repr__(self) -> str:
        name = self._encoding if isinstance(self._encoding, str) else self._encoding.name
        return f"TiktokenCounter({name!r})"


def _load_encoding(name: str) -> Any:
    try:
        import tiktoken
    except ImportError:
        needs = "TiktokenCounter needs tiktoken: pip install 'router-middleware[tiktoken]'"
        raise ImportError(needs) from None
    return tiktoken.get_encoding(name)


def counter_named(name: str) -> TokenCounter:
    """The counter a config names: ``"approximate"`` or ``"tiktoken"``."""
    if name == "tiktoken":
        return TiktokenCounter()
    return approximate_tokens


PRIOR_RATIO = 1.25
"""The correction before a provider has reported usage once: tokenizers count English
prose at about 4 characters a token, code and JSON at about 3 (a third more), so the first
calls, admitted together before any usage comes back, are charged a little high rather
than let through what the provider then refuses with a 429."""


class Calibration:
    """How many tokens one provider counts per estimated token, learnt from its usage.

    The ratio is the largest of the last ``keep`` observed ratios: an estimate too low
    lets through what the provider then refuses with a 429, one too high only leaves a
    little room unused, so the correction errs high. Before any usage, charges are made at
    ``PRIOR_RATIO`` (:meth:`apply`), while context windows take the estimate as it is
    (:meth:`expect`): sending a request elsewhere on a guess costs more than a 400, which
    teaches the router.

    Example:
        >>> c = Calibration()
        >>> c.apply(100), c.expect(100)
        (125, 100)
        >>> c.observe(estimated=100, actual=120)
        >>> c.observe(estimated=200, actual=230)
        >>> c.apply(100), c
        (120, Calibration(ratio=1.2, samples=2))
    """

    __slots__ = ("_lock", "_ratios", "ratio")

    def __init__(self, keep: int = 16) -> None:
        self._ratios: deque[float] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self.ratio = PRIOR_RATIO

    def apply(self, estimated: int) -> int:
        """What to charge for an ``estimated`` input here: the provider's likely count,
        erring high."""
        return math.ceil(estimated * self.ratio - 1e-9)

    def expect(self, estimated: int) -> int:
        """The provider's likely count for an ``estimated`` input, once it has reported
        usage; the estimate itself before."""
        if not self._ratios:
            return estimated
        return math.ceil(estimated * self.ratio - 1e-9)

    def observe(self, estimated: int, actual: int) -> None:
        """The provider counted ``actual`` input tokens where ``estimated`` were estimated."""
        if estimated > 0 and actual > 0:
            with self._lock:
                self._ratios.append(actual / estimated)
                self.ratio = max(self._ratios)

    def __repr__(self) -> str:
        return f"Calibration(ratio={self.ratio:.4g}, samples={len(self._ratios)})"


class Usage(NamedTuple):
    """Tokens a provider reported for one call."""

    input: int
    output: int
    cache_read: int = 0


def usage_of(message: Any) -> Usage | None:
    """A message's ``usage_metadata`` as :class:`Usage`; ``None`` when it reports none.

    Example:
        >>> from langchain_core.messages import AIMessage
        >>> usage = {"input_tokens": 70, "output_tokens": 5, "total_tokens": 75,
        ...          "input_token_details": {"cache_read": 60}}
        >>> usage_of(AIMessage("hi", usage_metadata=usage))
        Usage(input=70, output=5, cache_read=60)
    """
    usage = getattr(message, "usage_metadata", None)
    if not usage:
        return None
    details = usage.get("input_token_details") or {}
    return Usage(
        int(usage.get("input_tokens") or 0),
        int(usage.get("output_tokens") or 0),
        int(details.get("cache_read") or 0),
    )
