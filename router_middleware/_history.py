"""A conversation history that another provider accepts.

After a failover inside a tool loop, the history holds one provider's answers: its tool-call
ids (which another API may refuse: Anthropic wants ``^[a-zA-Z0-9_-]+$``, OpenAI caps ids at
40 characters) and its own content (thinking signatures, reasoning items, cache marks) that
another API rejects. :func:`portable_history` gives the history as a provider should receive
it. Invariants:

- :func:`portable_id` is a pure function of the id: a valid id (at most 40 characters of
  ``[A-Za-z0-9_-]``) stays as it is, any other becomes ``call_`` + sha256 hex, 40 characters,
  the same in every process. It is idempotent.
- Ids are rewritten on every AI message not known to come from the target provider (another
  provider's, or of unknown origin), in ``tool_calls``, ``invalid_tool_calls``, the OpenAI
  ``additional_kwargs``, chunks and call content blocks. A tool result (``ToolMessage``, a
  ``tool_result`` block) is rewritten exactly when its call was, by the same function of the
  same original id, so every call stays paired with its result.
- Provider-only content (``thinking``, ``redacted_thinking`` and ``reasoning`` blocks, OpenAI
  Responses reasoning items, ``cache_control`` marks) is dropped only from AI messages known
  to come from another provider: of unknown origin, it may be the target's own.
- The target provider's own messages are returned as they are: it must get its thinking back.
- The input is never mutated: only messages that change are copied, and when none does, the
  input sequence itself is returned.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, ToolMessage

__all__ = ["last_tool_provider", "portable_history", "portable_id"]

MAX_ID_LENGTH = 40
"""The longest tool-call id every partner API takes (OpenAI refuses longer ones)."""

_VALID_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}")
_ID_PREFIX = "call_"
_PROVIDER_ONLY = frozenset({"thinking", "redacted_thinking", "reasoning"})
"""Block types only their author can read back (Anthropic checks a thinking signature)."""
_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "function_call", "invalid_tool_call"})
_CALL_FIELDS = ("tool_calls", "invalid_tool_calls")
_CHUNK_CALL_FIELDS = (*_CALL_FIELDS, "tool_call_chunks")
"""A chunk's tool_calls are rebuilt from its tool_call_chunks on the next merge."""
_FUNCTION_CALL_IDS = "__openai_function_call_ids__"
"""ChatOpenAI's (v0.3 Responses) map from tool-call id to function-call item id."""

Rename = Callable[[str], str | None]
"""The id that replaces an id, or None when it stays."""


def portable_id(tool_call_id: str) -> str:
    """The tool-call id every partner API accepts; a valid one is returned unchanged.

    >>> portable_id("call_abc-123")
    'call_abc-123'
    >>> new = portable_id("functions.get_weather:0")
    >>> new.startswith("call_"), len(new)
    (True, 40)
    """
    if _VALID_ID.fullmatch(tool_call_id):
        return tool_call_id
    # sha256, not hash(): the id must be the same on the next turn, in another process.
    digest = hashlib.sha256(tool_call_id.encode("utf-8", "surrogatepass")).hexdigest()
    return (_ID_PREFIX + digest)[:MAX_ID_LENGTH]


def portable_history(messages: Sequence[BaseMessage], provider: str) -> Sequence[BaseMessage]:
    """The history as ``provider`` should receive it (``messages`` itself if nothing changes)."""
    renamed: dict[str, str] = {}

    def mint(old: str) -> str | None:
        new = portable_id(old)
        if new == old:
            return None
        renamed[old] = new
        return new

    out: list[BaseMessage] | None = None
    for index, message in enumerate(messages):
        new = message
        if isinstance(message, AIMessage):
            # Plain text with no calls and no extras is portable as it is: most of a long
            # history, so it costs no metadata lookup.
            if (
                message.tool_calls
                or message.invalid_tool_calls
                or message.additional_kwargs
                or type(message.content) is not str
            ):
                origin = _origin(message)
                if origin != provider:
                    new = _portable_answer(message, mint, strip=origin is not None)
        elif renamed:
            # Results come after their calls, so `renamed` already holds their new ids.
            new = _follow_calls(message, renamed.get)
        if new is not message and out is None:
            out = list(messages[:index])
        if out is not None:
            out.append(new)
    return messages if out is None else out


def last_tool_provider(messages: Sequence[BaseMessage]) -> str | None:
    """The provider that made the pending tool calls, in a tool-loop follow-up turn.

    None when the last message is not a ``ToolMessage``, or the calls' origin is unknown.
    """
    if not messages or not isinstance(messages[-1], ToolMessage):
        return None
    for message in reversed(messages):
        if isinstance(message, AIMessage) and message.tool_calls:
            return _origin(message)
    return None


def _origin(message: AIMessage) -> str | None:
    router = message.response_metadata.get("router")
    provider = router.get("provider") if isinstance(router, Mapping) else None
    return provider if isinstance(provider, str) else None


def _portable_answer(message: AIMessage, rename: Rename, *, strip: bool) -> AIMessage:
    """``message`` with its call ids renamed, and without provider-only content if ``strip``."""
    update: dict[str, Any] = {}
    if message.tool_calls or message.invalid_tool_calls:
        chunk = isinstance(message, AIMessageChunk)
        for field in _CHUNK_CALL_FIELDS if chunk else _CALL_FIELDS:
            if (new_calls := _renamed_items(getattr(message, field), "id", rename)) is not None:
                update[field] = new_calls
    if (kwargs := _portable_kwargs(message.additional_kwargs, rename, strip=strip)) is not None:
        update["additional_kwargs"] = kwargs
    if (content := _portable_blocks(message.content, rename, strip=strip)) is not None:
        # An empty list is sent as `"content": []` by ChatOpenAI, which OpenAI refuses.
        update["content"] = content or ""
    return message.model_copy(update=update) if update else message


def _follow_calls(message: BaseMessage, rename: Rename) -> BaseMessage:
    """A non-AI message whose tool-result ids follow their renamed calls."""
    update: dict[str, Any] = {}
    if isinstance(message, ToolMessage) and (new_id := rename(message.tool_call_id)):
        update["tool_call_id"] = new_id
    if (content := _portable_blocks(message.content, rename, strip=False)) is not None:
        update["content"] = content
    return message.model_copy(update=update) if update else message


def _portable_kwargs(
    kwargs: Mapping[str, Any], rename: Rename, *, strip: bool
) -> dict[str, Any] | None:
    """``additional_kwargs`` with OpenAI-format call ids renamed and, if ``strip``, without the
    Responses reasoning item (None if unchanged)."""
    if not kwargs:
        return None
    update: dict[str, Any] = {}
    calls = kwargs.get("tool_calls")
    if isinstance(calls, list) and (new_calls := _renamed_items(calls, "id", rename)):
        update["tool_calls"] = new_calls
    ids = kwargs.get(_FUNCTION_CALL_IDS)
    if isinstance(ids, Mapping) and any(rename(k) for k in ids):
        # Keyed by tool-call id: ChatOpenAI looks items up by the (renamed) tool_calls id.
        update[_FUNCTION_CALL_IDS] = {rename(k) or k: v for k, v in ids.items()}
    # ChatOpenAI replays this Responses reasoning item; it is OpenAI's alone.
    drop = strip and "reasoning" in kwargs
    if not update and not drop:
        return None
    new = {**kwargs, **update}
    if drop:
        del new["reasoning"]
    return new


def _portable_blocks(
    content: str | list[str | dict[Any, Any]], rename: Rename, *, strip: bool
) -> list[str | dict[Any, Any]] | None:
    """List content with call and result ids renamed, provider-only content dropped if
    ``strip`` (None if unchanged)."""
    if isinstance(content, str):
        return None
    changed = False
    blocks: list[str | dict[Any, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            blocks.append(block)
            continue
        kind = block.get("type")
        if strip and kind in _PROVIDER_ONLY:
            changed = True
            continue
        new = block
        if strip and "cache_control" in new:
            # A cache mark is the author's pricing hint; others refuse the unknown key.
            new = {k: v for k, v in new.items() if k != "cache_control"}
        if kind in _CALL_BLOCKS:
            # A Responses function_call's `id` names the item; the tool call is `call_id`.
            new = _with_id(new, "call_id" if "call_id" in new else "id", rename) or new
        elif kind == "tool_result":
            new = _with_id(new, "tool_use_id", rename) or new
        changed = changed or new is not block
        blocks.append(new)
    return blocks if changed else None


def _renamed_items(
    items: Sequence[Mapping[str, Any]], key: str, rename: Rename
) -> list[Mapping[str, Any]] | None:
    """``items`` with ``item[key]`` renamed (None if no item changes)."""
    renamed = [_with_id(item, key, rename) for item in items]
    if all(item is None for item in renamed):
        return None
    return [old if new is None else new for old, new in zip(items, renamed, strict=True)]


def _with_id(item: Mapping[str, Any], key: str, rename: Rename) -> dict[str, Any] | None:
    """A copy of ``item`` with ``item[key]`` renamed (None if it stays)."""
    old = item.get(key)
    new = rename(old) if isinstance(old, str) else None
    return None if new is None else {**item, key: new}
