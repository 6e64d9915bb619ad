"""What the response cache keeps, and what a hit gives back.

An :class:`Entry` is the final message of an answer (an ``AIMessage`` with its usage and
metadata) and, for a structured router, the parsed value, with an estimate of its size. A
:class:`Hit` hands each caller its own deep copy (a caller that edits its answer never
edits the cache), marked ``response_metadata["router"]["cache"] == "hit"`` with the
provider and model that made it, at cost 0 (no provider was called); streamed, it is
replayed word by word, then one last chunk with the tool calls, usage and metadata.
:func:`cut_short` tells the answers never kept.

Example:
    >>> hit = Hit(Entry(AIMessage("two words", response_metadata={"router": {"provider": "a"}})),
    ...           include_raw=False)
    >>> [c.content for c in hit.chunks()], hit.message().response_metadata["router"]["cache"]
    (['two ', 'words', ''], 'hit')
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

__all__ = ["NO_VALUE", "Entry", "Hit", "cut_short"]

_CUT = frozenset(
    {
        *("length", "max_tokens", "max_output_tokens", "incomplete", "refusal"),
        *("content_filter", "safety", "recitation", "blocklist", "prohibited_content", "spii"),
        *("malformed_function_call", "model_context_window_exceeded"),
    }
)
"""Finish reasons (of OpenAI, Anthropic, Google, Ollama...) that say an answer was cut."""

_REASONS = ("finish_reason", "stop_reason", "done_reason")
_WORDS = re.compile(r"\S+\s*|\s+")
NO_VALUE: Any = object()
_OVERHEAD = 512  # bytes counted per entry besides its text: the objects around it


def cut_short(message: Any) -> bool:
    """Whether an answer was cut (by a token limit, a filter) or holds broken tool calls.

    Example:
        >>> cut_short(AIMessage("Once upon", response_metadata={"finish_reason": "length"}))
        True
    """
    metadata = getattr(message, "response_metadata", None) or {}
    for key in _REASONS:
        reason = metadata.get(key)
        if reason is not None and str(reason).rsplit(".", 1)[-1].lower() in _CUT:
            return True
    return metadata.get("status") == "incomplete" or bool(
        getattr(message, "invalid_tool_calls", None)
    )


class Entry:
    """One stored answer: the final message, the parsed value (structured), their origin."""

    __slots__ = ("currency", "message", "model", "parsed", "provider", "size")

    def __init__(self, message: BaseMessage, parsed: Any = NO_VALUE) -> None:
        self.message = message
        self.parsed = parsed
        router = message.response_metadata.get("router") or {}
        self.provider: str | None = router.get("provider")
        self.model: str | None = router.get("model")
        self.currency = (router.get("cost") or {}).get("currency", "USD")
        # An estimate (str() of the parts), made once, when stored.
        self.size = _OVERHEAD + sum(
            len(str(part))
            for part in (
                message.content,
                getattr(message, "tool_calls", None) or "",
                message.response_metadata,
                getattr(message, "usage_metadata", None) or "",
                "" if parsed is NO_VALUE else parsed,
            )
        )


class Hit:
    """A request answered from the cache: each read makes the caller's own copy."""

    __slots__ = ("entry", "include_raw")

    def __init__(self, entry: Entry, include_raw: bool) -> None:
        self.entry = entry
        self.include_raw = include_raw

    def message(self) -> AIMessage:
        """The answer, marked as a hit, at cost 0."""
        entry = self.entry
        message = entry.message.model_copy(deep=True)
        message.response_metadata["router"] = self._marked()
        return message  # type: ignore[return-value]

    def value(self) -> Any:
        """What ``invoke`` returns: the message, or a structured router's value."""
        message = self.message()
        if self.entry.parsed is NO_VALUE:
            return message
        parsed = copy.deepcopy(self.entry.parsed)
        if self.include_raw:
            return {"raw": message, "parsed": parsed, "parsing_error": None}
        return parsed

    def chunks(self) -> Iterator[AIMessageChunk]:
        """The answer replayed as a stream: its text word by word, then one last chunk with
        its tool calls, usage and metadata; they sum to :meth:`message`."""
        message = self.entry.message
        content = message.content
        pieces = _WORDS.findall(content) if isinstance(content, str) else [content]
        first = True
        for piece in pieces:
            metadata = {"router": self._marked()} if first else {}
            yield AIMessageChunk(content=piece, id=message.id, response_metadata=metadata)
            first = False
        metadata = copy.deepcopy(message.response_metadata)
        metadata["router"] = self._marked()
        if not first:
            del metadata["router"]  # the first chunk has it: the sum merges the two
        calls = getattr(message, "tool_calls", None) or []
        yield AIMessageChunk(
            content="",
            id=message.id,
            response_metadata=metadata,
            additional_kwargs=copy.deepcopy(message.additional_kwargs),
            usage_metadata=copy.deepcopy(getattr(message, "usage_metadata", None)),
            tool_call_chunks=[
                {
                    "name": c["name"],
                    "args": json.dumps(c["args"], ensure_ascii=False),
                    "id": c.get("id"),
                    "index": i,
                }
                for i, c in enumerate(calls)
            ],
        )

    def _marked(self) -> dict[str, Any]:
        entry = self.entry
        free = {"input": 0.0, "output": 0.0, "total": 0.0, "currency": entry.currency}
        return {
            "provider": entry.provider,
            "model": entry.model,
            "attempts": [],
            "cache": "hit",
            "cost": free,
        }
